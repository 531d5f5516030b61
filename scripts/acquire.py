# Snakemake adapter: checkpoint acquire (round >= 1) -> matscreen.rounds.run_acquire
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import rounds  # noqa: E402

rounds.run_acquire(
    list(snakemake.input.predictions),
    list(snakemake.input.candidates),
    snakemake.input.previous,
    snakemake.input.labels,
    snakemake.output.targets,
    snakemake.output.references,
    int(snakemake.wildcards.round),
    snakemake.params.rounds,
    snakemake.params.label,
    snakemake.params.screen,
    config_hash(snakemake.config),
    snakemake.params.stability,
    list(snakemake.input.external),
)
