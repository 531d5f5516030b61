# External label tables (train.external_labels), featurized by the same code as candidates.
rule prepare_external_labels:
    input:
        config["train"]["external_labels"],
    output:
        paths.EXTERNAL_LABELS,
    params:
        target=config["train"]["target"],
        label=config["label"],  # a table with a settings_hash column must be at the run's level of theory
    log:
        "logs/train/prepare_external_labels.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/prepare_external_labels.py"


# Stage 5: LightGBM ensembles (one per train.target) with grouped cross-validation on the PySCF
# (and external) labels, calibrated uncertainty and a learning curve.
rule train:
    input:
        unpack(external_label_inputs),
        features=rules.featurize_labeled.output[0],
        labels=rules.gather_labels.output.labels,
        targets=paths.round_targets(FINAL),
    output:
        model=paths.MODEL,
        metrics=paths.CV_METRICS,
        oof=paths.OOF_PREDICTIONS,
        learning_curve=paths.LEARNING_CURVE,
    params:
        settings=config["train"],
        seed=config["seed"],
    log:
        "logs/train/train.log",
    benchmark:
        "results/benchmarks/train.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/train.py"
