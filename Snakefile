# matscreen: high-throughput screening of perovskites, spinels and garnets.
# Stages: ingest -> enumerate -> label (PySCF) -> featurize -> train (LightGBM) -> screen -> report,
# with optional active-learning rounds (screen -> acquire -> label -> train) in between.
from snakemake.utils import min_version

min_version("9.0")


# The shipped default config, unless --configfile names another. A config file is complete on its own
# (keys it leaves out take the schema's defaults), as with `matscreen --config`; without this guard
# Snakemake would merge the named file over config/config.yaml when run from the repository.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/enumerate.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/featurize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/screen.smk"
include: "workflow/rules/rounds.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        paths.RANKED,
        paths.TOP,
        paths.SUMMARY,
