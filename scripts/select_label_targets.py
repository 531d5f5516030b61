# Snakemake adapter: checkpoint select_label_targets -> matscreen.label.targets.run (targets, store, resources)
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen.label import targets  # noqa: E402

targets.run(snakemake.input.structures, list(snakemake.input.candidates), snakemake.output.targets,
            snakemake.params.settings, snakemake.params.seed, config_hash(snakemake.config), snakemake.output.references)
