# Snakemake adapter: rule predict (one shard) -> matscreen.screen.run_predict
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import screen  # noqa: E402

screen.run_predict(snakemake.input.model, snakemake.input.candidates, snakemake.input.features, snakemake.output[0],
                   config_hash(snakemake.config), screen.settings(snakemake.params.settings))
