# Snakemake adapter: rules featurize_candidates / featurize_labeled -> matscreen.featurize.run
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import featurize  # noqa: E402

featurize.run(list(snakemake.input), snakemake.output[0], snakemake.params.id_column, snakemake.params.settings,
              config_hash(snakemake.config))
