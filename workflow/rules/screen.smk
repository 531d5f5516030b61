# Stage 6: predict every candidate shard, then rank and pick the next candidates to label.
rule predict:
    input:
        model=rules.train.output.model,
        candidates=paths.CANDIDATE_SHARD,
        features=paths.CANDIDATE_FEATURES,
    output:
        paths.PREDICTION_SHARD,
    params:
        settings=config["screen"],
    threads: config["screen"]["threads"]
    log:
        "logs/screen/predict-{shard}.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/predict.py"


rule rank:
    input:
        predictions=expand(paths.PREDICTION_SHARD, shard=SHARDS),
        targets=paths.round_targets(FINAL),
        external=external_labels_table,
    output:
        ranked=paths.RANKED,
        top=report(paths.TOP, caption="../report/top.rst", category="Screening"),
        next=paths.NEXT_TO_LABEL,
    params:
        settings=config["screen"],
    log:
        "logs/screen/rank.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/rank.py"
