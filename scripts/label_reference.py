# Snakemake adapter: rule label_reference -> matscreen.label.run_reference (one element)
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import label  # noqa: E402

label.run_reference(snakemake.wildcards.element, snakemake.output[0], snakemake.params.settings,
                    snakemake.params.config_hash)
