# Stage 4: the same featurizer for candidates (per shard) and for labeled structures.
rule featurize_candidates:
    input:
        paths.CANDIDATE_SHARD,
    output:
        paths.CANDIDATE_FEATURES,
    params:
        id_column="candidate_id",
        settings=config["featurize"],
    log:
        "logs/featurize/candidates-{shard}.log",
    benchmark:
        "results/benchmarks/featurize/candidates-{shard}.tsv"
    conda:
        "../../envs/featurize.yaml"
    script:
        "../../scripts/featurize.py"


rule featurize_labeled:
    input:
        paths.round_targets(FINAL),
    output:
        paths.LABELED_FEATURES,
    params:
        id_column="structure_id",
        settings=config["featurize"],
    log:
        "logs/featurize/labeled.log",
    conda:
        "../../envs/featurize.yaml"
    script:
        "../../scripts/featurize.py"


rule featurize_external:
    input:
        paths.EXTERNAL_LABELS,
    output:
        paths.EXTERNAL_FEATURES,
    params:
        id_column="structure_id",
        settings=config["featurize"],
    log:
        "logs/featurize/external.log",
    conda:
        "../../envs/featurize.yaml"
    script:
        "../../scripts/featurize.py"
