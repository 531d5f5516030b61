# Snakemake adapter: rule prepare_external_labels -> matscreen.train.external.run
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen.label import settings_hash  # noqa: E402
from matscreen.train import external  # noqa: E402

external.run(
    list(snakemake.input),
    snakemake.output[0],
    snakemake.params.target,
    config_hash(snakemake.config),
    settings_hash(snakemake.params.label),
)
