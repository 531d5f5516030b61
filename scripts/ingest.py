# Snakemake adapter: rule ingest -> matscreen.ingest.run
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import ingest  # noqa: E402

ingest.run(list(snakemake.params.inputs), snakemake.output.structures, snakemake.output.rejects,
           snakemake.params.settings, snakemake.params.existing or None,
           config_hash(snakemake.config))
