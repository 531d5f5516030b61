# Snakemake adapter: rule train -> matscreen.train.run
from matscreen.config import config_hash
from matscreen.logs import setup_logging

setup_logging(snakemake.log[0])
from matscreen import train  # noqa: E402
from matscreen.label import settings_hash  # noqa: E402

train.run(snakemake.input.features, snakemake.input.labels, snakemake.output.model, snakemake.output.metrics,
          snakemake.output.oof, train.resolve_settings(snakemake.params.settings), snakemake.params.seed,
          config_hash(snakemake.config), snakemake.input.get("external_features"),
          snakemake.input.get("external_labels"), label_settings_hash=settings_hash(snakemake.config["label"]),
          learning_curve_out=snakemake.output.learning_curve, targets_path=snakemake.input.targets)
