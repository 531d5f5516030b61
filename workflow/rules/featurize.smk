# Stage 4: the same featurizer for candidates (per shard) and for labeled structures.
rule featurize_candidates:
    input:
        "results/enumerate/candidates/part-{shard}.parquet",
    output:
        "results/featurize/candidates/part-{shard}.parquet",
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
        "results/label/targets.parquet",
    output:
        "results/featurize/labeled.parquet",
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
        "results/train/external_labels.parquet",
    output:
        "results/featurize/external.parquet",
    params:
        id_column="structure_id",
        settings=config["featurize"],
    log:
        "logs/featurize/external.log",
    conda:
        "../../envs/featurize.yaml"
    script:
        "../../scripts/featurize.py"
