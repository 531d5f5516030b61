# Snakemake adapter: rule report -> matscreen.report.run
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import report  # noqa: E402

report.run(dict(snakemake.input.items()), snakemake.params.out_dir, snakemake.params.settings,
           snakemake.params.label_settings, snakemake.params.target)
