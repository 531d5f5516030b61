# Stage 6: predict every candidate shard, then rank and pick the next candidates to label.
rule predict:
    input:
        model=rules.train.output.model,
        candidates="results/enumerate/candidates/part-{shard}.parquet",
        features="results/featurize/candidates/part-{shard}.parquet",
    output:
        "results/screen/predictions/part-{shard}.parquet",
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
        predictions=expand("results/screen/predictions/part-{shard}.parquet", shard=SHARDS),
        targets="results/label/targets.parquet",
    output:
        ranked="results/screen/ranked.parquet",
        top=report("results/screen/top.csv", caption="../report/top.rst", category="Screening"),
        next="results/screen/next_to_label.parquet",
    params:
        settings=config["screen"],
    log:
        "logs/screen/rank.log",
    conda:
        "../../envs/train.yaml"
    script:
        "../../scripts/rank.py"
