# Snakemake adapter: rule gather_labels -> matscreen.label.gather (job files + store entries, formation energies, hulls)
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import label  # noqa: E402

label.gather(list(snakemake.input.labels), list(snakemake.input.references), snakemake.output.labels,
             snakemake.output.references, snakemake.params.settings, config_hash(snakemake.config),
             targets_path=snakemake.input.targets, reference_targets_path=snakemake.input.reference_targets)
