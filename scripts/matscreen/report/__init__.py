"""Stage 6b: the report of a run, in ``results/report/``.

``summary.md`` (:mod:`.summary`) for readers without a browser; the figures (:mod:`.figures`:
parity per family, uncertainty calibration, feature importance, the enumeration funnel, the
predictions per family, the learning curve) and the top candidates as a sortable HTML table
(:mod:`.table_html`), which ``snakemake --report`` embeds with the captions of
``workflow/report/``. Each figure function returns the numbers it drew and ``summary.md`` prints
them, so both show the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matscreen import paths, tables
from matscreen.atomic import write_text
from matscreen.config import build_settings
from matscreen.report import figures, table_html
from matscreen.report.summary import FIGURES, compared_with, summary, top_candidates

__all__ = [
    "FIGURES",
    "INPUTS",
    "ReportSettings",
    "compared_with",
    "resolve_settings",
    "run",
    "summary",
    "top_candidates",
]

log = logging.getLogger(__name__)

#: The tables :func:`run` reads, by input name (the rule's input names); the last three are optional.
INPUTS = {
    "structures": paths.STRUCTURES,
    "rejects": paths.REJECTS,
    "funnel": paths.FUNNEL,
    "labels": paths.LABELS,
    "references": paths.REFERENCES,
    "metrics": paths.CV_METRICS,
    "oof": paths.OOF_PREDICTIONS,
    "ranked": paths.RANKED,
    "next_up": paths.NEXT_TO_LABEL,
    "targets": paths.LABEL_TARGETS,
    "learning_curve": paths.LEARNING_CURVE,
    "model": paths.MODEL,
    "rounds": paths.ROUNDS_TABLE,
}
OPTIONAL_INPUTS = ("targets", "learning_curve", "model", "rounds")


def inputs_under(results: str | Path) -> dict[str, str]:
    """:data:`INPUTS` under a results folder (``results/`` of a run), optional ones only where they
    exist; ``targets`` is the last active-learning round's plan when the run had rounds."""
    found = {k: Path(results) / paths.relative(v, paths.RESULTS) for k, v in INPUTS.items()}
    plans = {int(p.parts[-3]): p for p in Path(results).glob("rounds/*/label/targets.parquet") if p.parts[-3].isdigit()}
    if plans:
        found["targets"] = plans[max(plans)]
    return {k: str(p) for k, p in found.items() if k not in OPTIONAL_INPUTS or p.exists()}


@dataclass(frozen=True)
class ReportSettings:
    """``report:`` (keys and meanings: ``config/README.md``; defaults: the schema)."""

    top_n: int
    #: folder of run snapshots (nightly refresh: what changed since the last run); None = off
    history: str | None


def resolve_settings(settings: ReportSettings | Mapping[str, Any] | None) -> ReportSettings:
    """:class:`ReportSettings` from a (partial) ``report:`` section; an instance passes through."""
    return build_settings(ReportSettings, "report", settings)


def run(
    inputs: Mapping[str, str],
    out_dir: str,
    settings: ReportSettings | Mapping[str, Any] | None,
    label_settings: Mapping[str, Any],
    target: str,
) -> dict[str, Any]:
    """Write summary.md, the figures and the top-candidates table into ``out_dir``.

    ``inputs`` maps the names below to table paths; ``targets`` (the LABEL_TARGETS table: gives
    new labels their origin), ``learning_curve``, ``model`` (``model.json``: the feature
    importances) and ``rounds`` (ROUNDS: the per-round figure) are
    optional. With ``settings.history`` (the ``report.history`` folder) set, a
    snapshot of this run is recorded there and the summary starts with what changed since the
    previous run (:mod:`matscreen.history`). Returns the data of every figure and table drawn
    (``drawn`` by figure key, ``top``), for tests and callers that check what was plotted.
    """
    read = {
        "structures": tables.STRUCTURES,
        "rejects": tables.REJECTS,
        "funnel": tables.FUNNEL,
        "labels": tables.LABELS,
        "references": tables.REFERENCES,
        "metrics": tables.CV_METRICS,
        "oof": tables.OOF_PREDICTIONS,
        "ranked": tables.PREDICTIONS,
        "next_up": tables.PREDICTIONS,
    }
    data = {k: tables.read_table(inputs[k], t) for k, t in read.items()}
    targets = tables.read_table(inputs["targets"], tables.LABEL_TARGETS) if inputs.get("targets") else None
    curve = tables.read_table(inputs["learning_curve"], tables.LEARNING_CURVE) if inputs.get("learning_curve") else None
    rounds = tables.read_table(inputs["rounds"], tables.ROUNDS) if inputs.get("rounds") else None
    model = None
    if inputs.get("model"):
        from matscreen.train import load_models

        models = load_models(inputs["model"])
        model = models.get(target) or next(iter(models.values()))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {k: out / paths.relative(p, paths.REPORT) for k, p in FIGURES.items()}
    if curve is None:
        del files["learning_curve"]
    if model is None:
        del files["importance"]
    if rounds is None:
        del files["rounds"]
    oof = data["oof"]
    if (oof["target"] == target).any():
        oof = oof[oof["target"] == target].reset_index(drop=True)
    drawn = figures.draw_all(
        oof=oof,
        funnel=data["funnel"],
        ranked=data["ranked"],
        model=model,
        curve=curve,
        target=target,
        files=files,
        rounds=rounds,
    )
    settings = resolve_settings(settings)
    top_n = settings.top_n
    top = top_candidates(data["ranked"], data["labels"], top_n)
    table_html.write(
        top,
        out / paths.relative(paths.TOP_TABLE, paths.REPORT),
        f"Top {top_n} candidates ({target})",
        note="Click a column header to sort; click again to reverse. Score = prediction - kappa x "
        "uncertainty (lower is better).",
    )
    changes = None
    if settings.history:
        from matscreen import history

        snap = history.snapshot(
            structures=data["structures"],
            labels=data["labels"],
            metrics=data["metrics"],
            ranked=data["ranked"],
            top_n=top_n,
            targets=targets,
            run_key=history.inputs_key(inputs.values()),
            config_hash=str(tables.read_provenance(inputs["ranked"]).get("config_hash", "")),
        )
        changes, _ = history.update(settings.history, snap)
    text = summary(
        **{k: v for k, v in data.items() if k != "oof"},
        target=target,
        label_settings=label_settings,
        top_n=top_n,
        changes=changes,
        drawn=drawn,
        top=top,
    )
    write_text(out / paths.relative(paths.SUMMARY, paths.REPORT), text)
    log.info("report written to %s", out / paths.relative(paths.SUMMARY, paths.REPORT))
    return {"drawn": drawn, "top": top}
