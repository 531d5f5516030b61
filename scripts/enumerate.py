# Snakemake adapter: rule enumerate -> matscreen.enumerate.run
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import enumerate as enumerate_stage  # noqa: E402

enumerate_stage.run(snakemake.params.settings, list(snakemake.output.shards), snakemake.output.funnel,
                    config_hash(snakemake.config))
