"""Run history: one JSON snapshot per report run, and what changed since the previous one.

A nightly refresh is only useful if its report says what the night brought: which structures
and labels are new, how the model's cross-validated metrics moved, which candidates entered or
left the top of the ranking. The report stage records a small snapshot of each run (ids,
statuses, pooled CV metrics, top-N) in a history folder (``report.history``) and compares the
current run with the previous snapshot.

The folder is deliberately not a Snakemake output (Snakemake deletes declared outputs before a
job reruns, which would erase the history). Snapshots are written atomically (temporary file
and rename). A report job that is killed after writing its snapshot and then rerun with
``--rerun-incomplete`` sees the same input files (same sizes and modification times, hence the
same ``run_key``): it replaces its own snapshot and compares with the same baseline as before,
so a kill never turns "what changed" into "nothing changed".
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from matscreen import markdown
from matscreen.atomic import write_text
from matscreen.provenance import stable_hash

log = logging.getLogger(__name__)

#: Bump when the snapshot layout changes; older snapshots are still read (missing keys are empty).
SNAPSHOT_FORMAT = 1

_PREFIX = "run-"
_FAILED_PREFIX = "failed-"


# --- snapshots ----------------------------------------------------------------------------------


def inputs_key(paths: Iterable[str | os.PathLike[str]]) -> str:
    """Fingerprint of a job's input files (path, size, modification time in ns).

    Two report jobs over the very same files (a killed job and its rerun) get the same key; a
    job after any upstream rerun gets a new one, even when the content happens to be equal.
    """
    items = []
    for p in sorted({str(p) for p in paths}):
        try:
            st = os.stat(p)
            items.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            items.append((p, None, None))
    return stable_hash(items)


def _num(v: Any) -> float | None:
    """A JSON-safe float: NaN and missing values become None."""
    if v is None or v is pd.NA:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _str(v: Any) -> str | None:
    return None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


def snapshot(
    *,
    structures: pd.DataFrame,
    labels: pd.DataFrame,
    metrics: pd.DataFrame,
    ranked: pd.DataFrame,
    top_n: int,
    targets: pd.DataFrame | None = None,
    run_key: str = "",
    config_hash: str = "",
) -> dict[str, Any]:
    """What a later run needs to say what changed: ids, statuses, pooled metrics, the top-N.

    ``structures`` (STRUCTURES: only entries that are not duplicates are kept), ``labels``
    (LABELS), ``metrics`` (CV_METRICS: the pooled ``fold == 'all'`` rows), ``ranked``
    (PREDICTIONS, in rank order), ``targets`` (LABEL_TARGETS, optional: gives each label its
    origin, ``ingest`` or ``candidate``).
    """
    kept = structures[structures["duplicate_of"].isna()] if "duplicate_of" in structures else structures
    origin = dict(zip(targets["structure_id"], targets["origin"], strict=True)) if targets is not None else {}
    from matscreen.train import pooled_metrics

    pooled = pooled_metrics(metrics) if len(metrics) else metrics
    top = ranked.sort_values("rank").head(int(top_n)) if "rank" in ranked else ranked.head(int(top_n))
    return {
        "format": SNAPSHOT_FORMAT,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_key": run_key,
        "baseline": None,
        "config_hash": config_hash,
        "structures": {
            str(r["structure_id"]): {"formula": _str(r.get("reduced_formula")), "family": _str(r.get("family")),
                                     "source": _str(r.get("source"))}
            for r in kept.to_dict("records")
        },
        "labels": {
            str(r["structure_id"]): {"formula": _str(r.get("formula")), "status": _str(r.get("status")),
                                     "formation_energy_ev_per_atom": _num(r.get("formation_energy_ev_per_atom")),
                                     "origin": _str(origin.get(r["structure_id"]))}
            for r in labels.to_dict("records")
        },
        "metrics": {str(m): _num(v) for m, v in zip(pooled["metric"], pooled["value"], strict=True)},
        "top_n": int(top_n),
        "top": [
            {"candidate_id": str(r["candidate_id"]), "formula": _str(r.get("formula")), "family": _str(r.get("family")),
             "prediction": _num(r.get("prediction")), "rank": None if pd.isna(r.get("rank")) else int(r["rank"])}
            for r in top.to_dict("records")
        ],
        "n_candidates": len(ranked),
    }


# --- the history folder ---------------------------------------------------------------------


def load_history(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every readable snapshot in ``folder``, oldest first (file names sort by time).

    A snapshot that cannot be read (a disk that filled up, a hand edit) is skipped with a
    warning naming the file: the history is a convenience, never a reason to fail a run.
    """
    out = []
    for p in sorted(Path(folder).glob(f"{_PREFIX}*.json")):
        try:
            snap = json.loads(p.read_text())
            if not isinstance(snap, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            log.warning("run history: %s is unreadable (%s); skipped", p, exc)
            continue
        snap["_file"] = str(p)
        out.append(snap)
    return out


def previous_snapshot(history: list[dict[str, Any]], run_key: str) -> dict[str, Any] | None:
    """The snapshot the current run is compared with.

    Normally the latest one. If the latest has the current ``run_key`` (the same report job
    ran again over the same input files, e.g. after a kill), it is the current run's own
    snapshot: use the baseline it was compared with.
    """
    if not history:
        return None
    last = history[-1]
    if run_key and last.get("run_key") == run_key:
        base = last.get("baseline")
        for snap in reversed(history[:-1]):
            if base is not None and snap.get("run_key") == base:
                return snap
        return None
    return last


def record(folder: str | os.PathLike[str], snap: Mapping[str, Any], previous: Mapping[str, Any] | None) -> Path:
    """Write ``snap`` (with ``baseline`` = ``previous``'s run_key) into ``folder``, atomically.

    A snapshot with the same run_key as the latest one replaces it (same run, see
    :func:`previous_snapshot`); otherwise a new ``run-<UTC time>-<run_key>.json`` is added.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in snap.items() if not k.startswith("_")}
    data["baseline"] = previous.get("run_key") if previous else None
    history = load_history(folder)
    if history and snap.get("run_key") and history[-1].get("run_key") == snap["run_key"]:
        path = Path(history[-1]["_file"])
    else:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = folder / f"{_PREFIX}{stamp}-{str(snap.get('run_key') or 'nokey')[:12]}.json"
    _write_json(path, data)
    return path


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never a half file)."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True))


# --- failed runs ---------------------------------------------------------------------------------

_ERROR_RE = re.compile(r"^Error in rule (?P<rule>\S+):\s*$")
_FIELD_RE = re.compile(r"^\s+(?P<key>jobid|input|output|log|wildcards|message):\s*(?P<value>.*)$")
_CAUSE_RE = re.compile(r"(died with <Signals\.(?P<signal>\w+): \d+>|returned non-zero exit status (?P<status>-?\d+))")

#: What a job's death by a signal usually means here.
_SIGNAL_HINTS = {
    "SIGKILL": "killed (SIGKILL): most often the kernel's OOM killer or a cluster memory limit (raise the job's mem_mb), or a manual kill",
    "SIGSEGV": "crashed (SIGSEGV): PySCF's C code segfaults when an allocation fails under a hard memory limit (ulimit -v)",
    "SIGTERM": "terminated (SIGTERM): usually the scheduler's time limit (raise the job's runtime)",
}


def failed_jobs(snakemake_log: str) -> list[dict[str, Any]]:
    """The failed jobs in the text of a Snakemake log: rule, jobid, output, log, cause.

    Snakemake writes one ``Error in rule <name>:`` block per failed job (preceded by the
    command's fate: ``died with <Signals.SIGKILL: 9>`` or ``returned non-zero exit status 1``).
    A job that was retried and then succeeded still appears: ``restarted`` says so.
    """
    lines = snakemake_log.splitlines()
    jobs: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        m = _ERROR_RE.match(line)
        if not m:
            continue
        job: dict[str, Any] = {"rule": m.group("rule"), "cause": None, "restarted": False}
        for prev in reversed(lines[max(0, i - 4):i]):
            if c := _CAUSE_RE.search(prev):
                sig = c.group("signal")
                job["cause"] = _SIGNAL_HINTS.get(sig, f"killed by {sig}") if sig else f"exit status {c.group('status')}"
                break
        for nxt in lines[i + 1:i + 12]:
            f = _FIELD_RE.match(nxt)
            if f:
                value = f.group("value")
                job[f.group("key")] = value.split(" (check log file(s)")[0] if f.group("key") == "log" else value
            elif nxt.startswith("Trying to restart job"):
                job["restarted"] = True
                break
            elif not nxt.startswith(" "):
                break
        jobs.append(job)
    return jobs


def _log_tail(path: Path, n: int = 5) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


def record_failure(folder: str | os.PathLike[str],
                   snakemake_log: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   workdir: str | os.PathLike[str] = ".") -> Path:
    """Record a failed run in the history folder: ``failed-<UTC time>.json``.

    Meant for the Snakefile's ``onerror:`` handler (``record_failure(config["report"]["history"],
    log)``; Snakemake 9 passes ``log`` as a list of log files): which jobs failed, why (exit
    status or signal, with what a signal usually means), the job's log file and its last lines.
    The next successful report lists the failed runs since the previous snapshot. Never raises
    for an unreadable Snakemake log (it records that).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [snakemake_log] if isinstance(snakemake_log, str | os.PathLike) else list(snakemake_log)
    text = ""
    for p in paths:
        try:
            text += Path(p).read_text(errors="replace") + "\n"
        except OSError as exc:
            log.warning("run history: Snakemake log %s is unreadable (%s)", p, exc)
    jobs = failed_jobs(text)
    for job in jobs:
        if job.get("log"):
            job["log_tail"] = _log_tail(Path(workdir) / job["log"].split(",")[0].strip())
    final = [j for j in jobs if not j["restarted"]]
    data = {
        "format": SNAPSHOT_FORMAT, "status": "failed",
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "snakemake_log": [str(p) for p in paths], "failed_jobs": final, "retried_jobs": [j for j in jobs if j["restarted"]],
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{_FAILED_PREFIX}{stamp}.json"
    _write_json(path, data)
    log.error("run failed: %s", "; ".join(f"{j['rule']} ({j.get('log') or 'no log'}): {j['cause'] or 'see log'}"
                                         for j in final) or "no failed job found in the Snakemake log")
    return path


def failures_since(folder: str | os.PathLike[str], since: str | None) -> list[dict[str, Any]]:
    """Failed-run records in ``folder`` with ``recorded_at`` after ``since`` (ISO time; None: all)."""
    out = []
    for p in sorted(Path(folder).glob(f"{_FAILED_PREFIX}*.json")):
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            log.warning("run history: %s is unreadable (%s); skipped", p, exc)
            continue
        if since is None or str(rec.get("recorded_at", "")) >= since:
            out.append({**rec, "_file": str(p)})
    return out


# --- what changed -------------------------------------------------------------------------------


@dataclass
class Changes:
    """Differences between two snapshots; every list holds plain dicts (one per row)."""

    new_structures: list[dict[str, Any]] = field(default_factory=list)
    removed_structures: list[dict[str, Any]] = field(default_factory=list)
    new_labels: list[dict[str, Any]] = field(default_factory=list)
    changed_labels: list[dict[str, Any]] = field(default_factory=list)
    removed_labels: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    entered_top: list[dict[str, Any]] = field(default_factory=list)
    left_top: list[dict[str, Any]] = field(default_factory=list)
    top_n: int = 0

    @property
    def nothing(self) -> bool:
        """True when no id, status, metric or top-N member changed."""
        moved = any(m["before"] != m["after"] for m in self.metrics)
        return not (self.new_structures or self.removed_structures or self.new_labels or self.changed_labels
                    or self.removed_labels or self.entered_top or self.left_top or moved)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def diff(previous: Mapping[str, Any], current: Mapping[str, Any]) -> Changes:
    """What changed from ``previous`` to ``current`` (two :func:`snapshot` dicts)."""
    ch = Changes()
    ps, cs = previous.get("structures") or {}, current.get("structures") or {}
    ch.new_structures = [{"structure_id": k, **v} for k, v in cs.items() if k not in ps]
    ch.removed_structures = [{"structure_id": k, **v} for k, v in ps.items() if k not in cs]
    pl, cl = previous.get("labels") or {}, current.get("labels") or {}
    ch.new_labels = [{"structure_id": k, **v} for k, v in cl.items() if k not in pl]
    ch.removed_labels = [{"structure_id": k, **v} for k, v in pl.items() if k not in cl]
    for k, v in cl.items():
        if k in pl:
            before, after = pl[k], v
            if before.get("status") != after.get("status") or not _same(
                    before.get("formation_energy_ev_per_atom"), after.get("formation_energy_ev_per_atom")):
                ch.changed_labels.append({
                    "structure_id": k, "formula": after.get("formula"),
                    "status_before": before.get("status"), "status_after": after.get("status"),
                    "formation_energy_before": before.get("formation_energy_ev_per_atom"),
                    "formation_energy_after": after.get("formation_energy_ev_per_atom"),
                })
    pm, cm = previous.get("metrics") or {}, current.get("metrics") or {}
    for m in [*cm, *(k for k in pm if k not in cm)]:
        before, after = pm.get(m), cm.get(m)
        ch.metrics.append({"metric": m, "before": before, "after": after,
                           "change": None if before is None or after is None else after - before})
    n = min(int(previous.get("top_n") or 0), int(current.get("top_n") or 0))
    ch.top_n = n
    pt = {r["candidate_id"]: r for r in (previous.get("top") or [])[:n]}
    ct = {r["candidate_id"]: r for r in (current.get("top") or [])[:n]}
    ch.entered_top = [r for k, r in ct.items() if k not in pt]
    ch.left_top = [{**r, "rank_before": r.get("rank")} for k, r in pt.items() if k not in ct]
    return ch


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    return markdown.table(cols, ([r.get(c) for c in cols] for r in rows))


def _failures_markdown(failures: list[dict[str, Any]]) -> list[str]:
    if not failures:
        return []
    rows = [{"recorded_at": f.get("recorded_at"), "rule": j.get("rule"), "log": j.get("log"), "cause": j.get("cause")}
            for f in failures for j in (f.get("failed_jobs") or [{}])]
    return [f"{len(failures)} failed run(s) since then (recorded in `failed-*.json`):", "",
            _table(rows, ["recorded_at", "rule", "log", "cause"])]


def changes_markdown(changes: Changes | None, previous: Mapping[str, Any] | None, folder: str | os.PathLike[str],
                     failures: list[dict[str, Any]] | None = None) -> str:
    """The report's "Changes since the last run" section (Markdown, with its heading)."""
    out = ["## Changes since the last run", ""]
    failed = _failures_markdown(failures or [])
    if previous is None or changes is None:
        out += failed
        out += [f"No earlier run is recorded in `{folder}`: this run is the baseline the next run is compared with.", ""]
        return "\n".join(out)
    out += [f"Compared with the run recorded at {previous.get('recorded_at', '?')} "
            f"(`{Path(str(previous.get('_file', '?'))).name}`).", ""]
    out += failed
    if changes.nothing:
        out += ["Nothing changed: same structures, labels, model metrics and top candidates.", ""]
        return "\n".join(out)
    out += [f"Structures ingested: {len(changes.new_structures)} new, {len(changes.removed_structures)} removed.", ""]
    if changes.new_structures:
        out += ["New structures:", "", _table(changes.new_structures, ["structure_id", "formula", "family", "source"])]
    if changes.removed_structures:
        out += ["Removed structures:", "", _table(changes.removed_structures, ["structure_id", "formula", "family", "source"])]
    out += [f"PySCF labels: {len(changes.new_labels)} new, {len(changes.changed_labels)} changed, "
            f"{len(changes.removed_labels)} no longer selected.", ""]
    if changes.new_labels:
        out += ["New labels:", "", _table(changes.new_labels, ["structure_id", "formula", "origin", "status",
                                                                 "formation_energy_ev_per_atom"])]
    if changes.changed_labels:
        out += ["Changed labels:", "", _table(changes.changed_labels, [
            "structure_id", "formula", "status_before", "status_after", "formation_energy_before",
            "formation_energy_after"])]
    if changes.removed_labels:
        out += ["Labels no longer selected:", "", _table(changes.removed_labels, ["structure_id", "formula", "status"])]
    out += ["Model cross-validation (pooled out-of-fold metrics), before and after:", "",
            _table(changes.metrics, ["metric", "before", "after", "change"])]
    out += [f"Top {changes.top_n} candidates: {len(changes.entered_top)} entered, {len(changes.left_top)} left.", ""]
    if changes.entered_top:
        out += ["Entered:", "", _table(changes.entered_top, ["rank", "candidate_id", "family", "formula", "prediction"])]
    if changes.left_top:
        out += ["Left:", "", _table(changes.left_top, ["rank_before", "candidate_id", "family", "formula", "prediction"])]
    return "\n".join(out)


def update(folder: str | os.PathLike[str], snap: dict[str, Any]) -> tuple[str, Path]:
    """Compare ``snap`` with the previous run in ``folder``, record it; return (Markdown, snapshot path)."""
    history = load_history(folder)
    previous = previous_snapshot(history, snap.get("run_key", ""))
    changes = diff(previous, snap) if previous is not None else None
    failures = failures_since(folder, previous.get("recorded_at") if previous else None)
    text = changes_markdown(changes, previous, folder, failures)
    path = record(folder, snap, previous)
    log.info("run history: snapshot %s (compared with %s)", path,
             Path(previous["_file"]).name if previous else "nothing: first recorded run")
    return text, path
