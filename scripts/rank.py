# Snakemake adapter: rule rank (gather shards) -> matscreen.screen.run_rank
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import screen  # noqa: E402

screen.run_rank(list(snakemake.input.predictions), snakemake.input.targets, snakemake.output.ranked,
                snakemake.output.top, snakemake.output.next, snakemake.params.settings, config_hash(snakemake.config),
                list(snakemake.input.external))
