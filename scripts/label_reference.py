# Snakemake adapter: rule label_reference -> matscreen.label.run_reference (one element)
import os

os.environ["OMP_NUM_THREADS"] = str(snakemake.threads)  # before numpy/PySCF start their thread pools
from matscreen.config import config_hash  # noqa: E402
from matscreen.logs import setup_logging  # noqa: E402

setup_logging(snakemake.log[0])
from matscreen import label  # noqa: E402

label.run_reference(snakemake.wildcards.element, snakemake.output[0], snakemake.params.settings,
                    config_hash(snakemake.config))
