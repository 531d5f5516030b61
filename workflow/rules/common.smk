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
# Active-learning rounds 0..FINAL: the stage folders hold the final state, results/rounds/<r>/ the
# earlier rounds' (matscreen.paths).
FINAL = config["rounds"]["count"] - 1
EARLIER = list(range(FINAL))


wildcard_constraints:
    shard=r"\d+",
    structure_id=r"s-[0-9a-f]+",
    element=r"[A-Z][a-z]?",
    round=r"\d+",


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


def external_labels_table(wildcards):
    """The prepared external labels alone (rank and acquire do not propose their compounds)."""
    return [paths.EXTERNAL_LABELS] if config["train"]["external_labels"] else []


def _targets(path):
    """A targets table of the checkpoint, read once per version of the file."""
    st = os.stat(path)
    return _read_table(path, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=8)
def _read_table(path, mtime_ns, size):
    import pandas as pd

    return pd.read_parquet(path)


def _plan(r):
    """Round ``r``'s checkpoint outputs (targets, references); raises until that checkpoint has run."""
    r = int(r)
    if r == 0:
        return checkpoints.select_label_targets.get().output
    return checkpoints.acquire.get(round=str(r)).output


def _jobs(targets):
    """Targets that are label jobs: the checkpoint found no store entry for them."""
    if "stored" not in targets.columns:  # a targets table of an older matscreen: everything is a job
        return targets
    return targets[~targets["stored"].astype("boolean").fillna(False).astype(bool)]


def round_label_outputs(r):
    """One file per label job of round ``r``'s plan (targets without a store entry): compounds
    under structures/, their competing phases under competing/. Everything earlier rounds labeled
    is in the store by then, so only the round's new targets are jobs; gather reads the rest there."""
    targets = _jobs(_targets(_plan(r).targets))
    competing = targets["origin"] == "competing"
    return expand(
        paths.round_jobs(paths.LABEL_STRUCTURE, r), structure_id=sorted(targets.loc[~competing, "structure_id"])
    ) + expand(paths.round_jobs(paths.LABEL_COMPETING, r), structure_id=sorted(targets.loc[competing, "structure_id"]))


def round_reference_outputs(r):
    """One file per reference job of round ``r``: elements whose reference the store does not hold."""
    refs = _targets(_plan(r).references)
    return expand(
        paths.round_jobs(paths.LABEL_REFERENCE, r), element=sorted(refs.loc[~refs["stored"].astype(bool), "element"])
    )


def round_plan(wildcards):
    """Round ``wildcards.round``'s plan, for the state after it (labels, features, model)."""
    return paths.round_targets(wildcards.round)


def label_outputs(wildcards):
    """The final round's label jobs (rule gather_labels)."""
    return round_label_outputs(FINAL)


def reference_outputs(wildcards):
    return round_reference_outputs(FINAL)


def _label_resources(structure_id, round_, attempt):
    """The checkpoint's estimate for this target, scaled for Snakemake retry ``attempt``. Reads the
    targets table only: no PySCF, no pymatgen in the controller."""
    from matscreen.label.resources import scale_resources

    row = _targets(paths.round_targets(round_)).set_index("structure_id").loc[structure_id]
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
    return _label_resources(wildcards.structure_id, wildcards.get("round", 0), attempt)["mem_mb"]


def label_runtime(wildcards, attempt):
    return _label_resources(wildcards.structure_id, wildcards.get("round", 0), attempt)["runtime"]


# A failed run is recorded in the run history, so the next report says what failed and why.
onerror:
    from matscreen.history import record_failure

    if config["report"]["history"]:
        record_failure(config["report"]["history"], log)
