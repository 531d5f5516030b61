# Stage 2: enumerate candidate compositions per family, filtered, into sharded Parquet.
# Downstream featurize/predict jobs run once per shard.
rule enumerate:
    output:
        shards=expand(paths.CANDIDATE_SHARD, shard=SHARDS),
        funnel=paths.FUNNEL,
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
