# Snakemake adapter: rule rounds -> matscreen.rounds.run_rounds_table (results/rounds.parquet)
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import rounds  # noqa: E402

shards = snakemake.params.shards
flat = list(snakemake.input.predictions)  # round-major (expand: round, then shard)
per_round = [flat[i : i + shards] for i in range(0, len(flat), shards)]
rounds.run_rounds_table(
    list(snakemake.input.plans),
    snakemake.input.labels,
    per_round,
    list(snakemake.input.metrics),
    snakemake.output[0],
    snakemake.params.settings,
    snakemake.params.screen,
    config_hash(snakemake.config),
)
