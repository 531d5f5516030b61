# Stage 2: enumerate candidate compositions per family, filtered, into sharded Parquet.
# Downstream featurize/predict jobs run once per shard.
rule enumerate:
    output:
        shards=expand("results/enumerate/candidates/part-{shard}.parquet", shard=SHARDS),
        funnel="results/enumerate/funnel.parquet",
    params:
        settings=config["enumerate"],
    log:
        "logs/enumerate/enumerate.log",
    benchmark:
        "results/benchmarks/enumerate.tsv"
    conda:
        "../../envs/enumerate.yaml"
    script:
        "../../scripts/enumerate.py"
