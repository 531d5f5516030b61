# Snakemake adapter: rule label_structure -> matscreen.label.run_structure (one structure, one SCF)
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import label  # noqa: E402

label.run_structure(snakemake.input.targets, snakemake.wildcards.structure_id, snakemake.output[0],
                    snakemake.params.settings, snakemake.params.config_hash)
