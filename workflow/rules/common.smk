# Shared set-up: config validation, the package on sys.path, input functions and resource estimates.
import os
import sys
from functools import lru_cache

from snakemake.exceptions import WorkflowError

sys.path.insert(0, os.path.join(workflow.basedir, "scripts"))

from matscreen import paths  # noqa: E402  (every result path: rules read them from here)
from matscreen.config import ConfigError, validate  # noqa: E402

# A bad config fails here, before any job runs, naming the key ("config key 'screen.kappa': ...").
# matscreen's own validator, not snakemake.utils.validate: same schema, but its messages name the
# key instead of a JSON-schema path, numbers must be finite and integers must be ints. It fills
# the schema's defaults into Snakemake's ``config`` dict in place, then runs the semantic checks.
try:
    validate(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

SHARDS = list(range(config["enumerate"]["shards"]))


wildcard_constraints:
    shard=r"\d+",
    structure_id=r"s-[0-9a-f]+",
    element=r"[A-Z][a-z]?",


def ingest_input_files(wildcards=None):
    """Every readable file named by ingest.inputs, so that a new or changed file reruns ingest.

    The ingest job expands ingest.inputs again itself and records unreadable entries (broken
    links, fifos) as rejects; they are left out here only because Snakemake cannot track them.
    """
    from matscreen.ingest import expand_inputs

    files, missing = expand_inputs(list(config["ingest"]["inputs"]), config["ingest"]["ignore"])
    if missing:
        raise WorkflowError("config key 'ingest.inputs': " + "; ".join(f"{p}: {d}" for p, d in missing))
    return [f for f in files if os.path.isfile(f)]


def external_label_inputs(wildcards):
    """The prepared external labels and their features, when train.external_labels names tables."""
    if not config["train"]["external_labels"]:
        return {}
    return {"external_labels": paths.EXTERNAL_LABELS, "external_features": paths.EXTERNAL_FEATURES}


def _targets(path):
    """A targets table of the checkpoint, read once per version of the file."""
    st = os.stat(path)
    return _read_table(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _read_table(path, mtime_ns, size):
    import pandas as pd

    return pd.read_parquet(path)


def label_targets_path():
    return checkpoints.select_label_targets.get().output.targets


def _jobs(targets):
    """Targets that are label jobs: the checkpoint found no store entry for them."""
    if "stored" not in targets.columns:  # a targets table of an older matscreen: everything is a job
        return targets
    return targets[~targets["stored"].astype("boolean").fillna(False).astype(bool)]


def label_outputs(wildcards):
    """One file per label job (targets without a store entry): compounds under structures/, their
    competing phases under competing/. Stored labels are read from the store by gather_labels."""
    targets = _jobs(_targets(label_targets_path()))  # raises until the checkpoint has run
    competing = targets["origin"] == "competing"
    return expand(
        "results/label/structures/{structure_id}.parquet", structure_id=sorted(targets.loc[~competing, "structure_id"])
    ) + expand(
        "results/label/competing/{structure_id}.parquet", structure_id=sorted(targets.loc[competing, "structure_id"])
    )


def reference_outputs(wildcards):
    """One file per reference job: elements whose reference the store does not hold."""
    refs = _targets(checkpoints.select_label_targets.get().output.references)
    return expand(
        "results/label/references/{element}.parquet", element=sorted(refs.loc[~refs["stored"].astype(bool), "element"])
    )


def _label_resources(structure_id, attempt):
    """The checkpoint's estimate for this target, scaled for Snakemake retry ``attempt``. Reads the
    targets table only: no PySCF, no pymatgen in the controller."""
    from matscreen.label.resources import scale_resources

    row = _targets("results/label/targets.parquet").set_index("structure_id").loc[structure_id]
    r = config["label"]["resources"]
    mem = row.get("mem_mb")
    runtime = row.get("runtime_min")
    mem = int(mem) if pd_notna(mem) else r["min_mem_mb"]  # no estimate (older table): the configured floor
    runtime = int(runtime) if pd_notna(runtime) else r["min_runtime"]
    return scale_resources({"mem_mb": mem, "runtime": runtime}, attempt, r["attempt_factor"])


def pd_notna(value):
    import pandas as pd

    return bool(pd.notna(value))


def label_mem_mb(wildcards, attempt):
    return _label_resources(wildcards.structure_id, attempt)["mem_mb"]


def label_runtime(wildcards, attempt):
    return _label_resources(wildcards.structure_id, attempt)["runtime"]


# A failed run is recorded in the run history, so the next report says what failed and why.
onerror:
    from matscreen.history import record_failure

    if config["report"]["history"]:
        record_failure(config["report"]["history"], log)
