# Stage 5: LightGBM ensemble with grouped cross-validation on the PySCF labels.
rule train:
    input:
        features=rules.featurize_labeled.output[0],
        labels=rules.gather_labels.output.labels,
    output:
        model="results/train/model.json",
        metrics="results/train/cv_metrics.parquet",
        oof="results/train/oof_predictions.parquet",
    params:
        settings=config["train"],
        seed=config["seed"],
        config_hash=CONFIG_HASH,
    log:
        "logs/train/train.log",
    benchmark:
        "results/benchmarks/train.tsv"
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/train.py"
