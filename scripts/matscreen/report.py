"""Stage 6b: a short Markdown summary of a run and its figures.

``results/report/summary.md`` answers what a reader asks first: what went in (and what was
rejected, why), how large the candidate space is after each filter, which labels were
computed and at what level of theory, how good the model is on held-out data, and which
candidates come out on top and should be labeled next. Snakemake's ``--report`` embeds
the same figures and tables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matscreen import tables  # noqa: E402
from matscreen.atomic import atomic_path, write_text  # noqa: E402
from matscreen.config import build_settings  # noqa: E402

log = logging.getLogger(__name__)


def _md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else format(v, floatfmt))
            else:
                cells.append("" if v is None or v is pd.NA else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: str | Path) -> None:
    """Save a figure through the one atomic writer (the format from ``path``'s suffix, not the temp name's)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")


def parity_plot(oof: pd.DataFrame, target: str, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.errorbar(oof["y_true"], oof["y_pred"], yerr=oof["y_std"], fmt="o", ms=4, alpha=0.8, elinewidth=0.8)
    lo = float(np.nanmin([oof["y_true"].min(), oof["y_pred"].min()])) if len(oof) else 0.0
    hi = float(np.nanmax([oof["y_true"].max(), oof["y_pred"].max()])) if len(oof) else 1.0
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.set_xlabel(f"PySCF {target}")
    ax.set_ylabel("out-of-fold prediction")
    ax.set_title("Cross-validated predictions")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def learning_curve_plot(curve: pd.DataFrame, target: str, path: str | Path) -> None:
    """MAE and RMSE of the learning-curve table (LEARNING_CURVE) against the training-set size."""
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    c = curve[curve["target"] == target].sort_values("n_train") if len(curve) else curve
    if len(c):
        ax.plot(c["n_train"], c["mae"], "o-", label="MAE")
        ax.plot(c["n_train"], c["rmse"], "s--", label="RMSE")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("training rows")
    ax.set_ylabel(f"out-of-fold error ({target})")
    ax.set_title("Learning curve")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def prediction_plot(ranked: pd.DataFrame, target: str, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for family, grp in ranked.groupby("family", sort=True):
        ax.hist(grp["prediction"], bins=40, alpha=0.6, label=f"{family} ({len(grp)})")
    ax.set_xlabel(f"predicted {target}")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=8)
    ax.set_title("Screened candidates")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def compared_with(formula: str, labels: pd.DataFrame) -> str:
    """The ok competing phases of ``labels`` inside ``formula``'s chemical system, e.g. 'SrO (rock_salt), TiO2 (rutile)'."""
    from pymatgen.core import Composition

    elements = {el.symbol for el in Composition(formula).elements}
    comp = labels[labels["origin"].eq("competing") & labels["status"].eq("ok")]
    names = sorted({
        f"{Composition(f).reduced_formula} ({p})" for f, p in zip(comp["formula"], comp["prototype"])
        if {el.symbol for el in Composition(f).elements} <= elements
    })
    return ", ".join(names)


def summary(
    *, structures: pd.DataFrame, rejects: pd.DataFrame, funnel: pd.DataFrame, labels: pd.DataFrame,
    references: pd.DataFrame, metrics: pd.DataFrame, ranked: pd.DataFrame, next_up: pd.DataFrame,
    target: str, label_settings: Mapping[str, Any], top_n: int, changes: str | None = None,
) -> str:
    """The Markdown summary; ``changes`` is the "Changes since the last run" section
    (:func:`matscreen.history.update`), placed first because it is what a nightly reader wants."""
    kept = structures[structures["duplicate_of"].isna()]
    out = ["# matscreen run summary", ""]
    if changes:
        out += [changes, ""]
    out += ["## Ingest", "",
            f"{len(structures) + len(rejects)} structures read: {len(kept)} kept, "
            f"{len(structures) - len(kept)} duplicates, {len(rejects)} rejected.", ""]
    if len(kept):
        out += [_md_table(kept.groupby("family").size().rename("structures").reset_index())]
    if len(rejects):
        out += ["Rejected:", "", _md_table(rejects[["source", "reason", "detail"]].assign(
            detail=rejects["detail"].str.slice(0, 100)))]
    out += ["## Candidate space", ""]
    if len(funnel):
        last = funnel.sort_values("step").groupby("family").tail(1)
        first = funnel[funnel["step"] == 0].set_index("family")["remaining"]
        out += [_md_table(pd.DataFrame({"family": last["family"], "combinations": last["family"].map(first),
                                        "candidates": last["remaining"]})),
                "Funnel (candidates left after each filter):", "", _md_table(funnel)]
    theory = ", ".join(f"{k}={label_settings[k]}" for k in ("xc", "basis", "pseudo", "density_fit", "relax") if k in label_settings)
    n_ok = int((labels["status"] == "ok").sum())
    out += ["## PySCF labels", "", f"Level of theory: {theory or 'see config'}.",
            f"{len(labels)} structures: {n_ok} ok, {int((labels['status'] == 'failed').sum())} failed, "
            f"{int((labels['status'] == 'unsupported').sum())} unsupported. "
            f"{int((references['status'] == 'ok').sum())}/{len(references)} elemental references ok.", ""]
    competing = labels["origin"].eq("competing")
    show = ["structure_id", "origin", "formula", "status", "energy_per_atom_ev", "formation_energy_ev_per_atom",
            "e_above_hull_ev_per_atom", "decomposes_to", "gap_ev", "volume_ang3", "kmesh", "wall_s", "error", "hull_error"]
    out += [_md_table(labels.loc[~competing, [c for c in show if c in labels.columns]].sort_values("formula"))]
    if competing.any():
        comp = labels[competing]
        out += ["Competing phases (binaries of the labeled compounds' chemical systems; the lowest polymorph of each "
                "composition counts on the hull):", "",
                _md_table(comp[["formula", "prototype", "status", "energy_per_atom_ev", "formation_energy_ev_per_atom",
                                "e_above_hull_ev_per_atom", "error"]].sort_values(["formula", "prototype"]))]
    out += ["## Model (LightGBM, grouped cross-validation)", "", f"Target: `{target}`.", ""]
    if len(metrics):
        from matscreen.train import pooled_metrics

        pooled = pooled_metrics(metrics, target if "target" in metrics.columns and (metrics["target"] == target).any()
                                else None)[["metric", "value"]]
        out += [_md_table(pooled), "![parity](parity.png)", "![learning curve](learning_curve.png)", ""]
    out += [f"## Top {top_n} candidates", "", f"{len(ranked)} candidates screened. Score = prediction "
            "- kappa x uncertainty (lower is better).", "",
            _md_table(ranked.head(top_n)[["rank", "candidate_id", "family", "formula", "prediction", "uncertainty", "score"]]
                      .assign(compared_with=lambda d: [compared_with(f, labels) for f in d["formula"]])),
            "`compared_with`: the competing phases labeled in this run whose elements the candidate contains "
            "(the hulls the model learned from); a candidate whose system has none was ranked by extrapolation.", "",
            "![predictions](predictions.png)", "",
            "## Next to label", "", _md_table(next_up[["candidate_id", "family", "formula", "prediction", "uncertainty"]])]
    return "\n".join(out)


@dataclass(frozen=True)
class ReportSettings:
    """``report:`` (keys and meanings: ``config/README.md``; defaults: the schema)."""

    top_n: int
    #: folder of run snapshots (nightly refresh: what changed since the last run); None = off
    history: str | None


def resolve_settings(settings: ReportSettings | Mapping[str, Any] | None) -> ReportSettings:
    """:class:`ReportSettings` from a (partial) ``report:`` section; an instance passes through."""
    return build_settings(ReportSettings, "report", settings)


def run(inputs: Mapping[str, str], out_dir: str, settings: ReportSettings | Mapping[str, Any] | None,
        label_settings: Mapping[str, Any], target: str) -> None:
    """Write summary.md and the figures into ``out_dir``.

    ``inputs`` maps the names below to table paths (``targets``, the LABEL_TARGETS table, is
    optional: it gives new labels their origin). With ``settings.history`` (the
    ``report.history`` folder) set, a snapshot of this run is recorded there and the summary
    starts with what changed since the previous run (:mod:`matscreen.history`).
    """
    read = {
        "structures": tables.STRUCTURES, "rejects": tables.REJECTS, "funnel": tables.FUNNEL, "labels": tables.LABELS,
        "references": tables.REFERENCES, "metrics": tables.CV_METRICS, "oof": tables.OOF_PREDICTIONS,
        "ranked": tables.PREDICTIONS, "next_up": tables.PREDICTIONS,
    }
    data = {k: tables.read_table(inputs[k], t) for k, t in read.items()}
    targets = tables.read_table(inputs["targets"], tables.LABEL_TARGETS) if inputs.get("targets") else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    oof = data["oof"]
    parity_plot(oof[oof["target"] == target] if "target" in oof.columns and (oof["target"] == target).any() else oof,
                target, out / "parity.png")
    if inputs.get("learning_curve"):
        learning_curve_plot(tables.read_table(inputs["learning_curve"], tables.LEARNING_CURVE), target,
                            out / "learning_curve.png")
    prediction_plot(data["ranked"], target, out / "predictions.png")
    settings = resolve_settings(settings)
    top_n = settings.top_n
    changes = None
    if settings.history:
        from matscreen import history

        snap = history.snapshot(
            structures=data["structures"], labels=data["labels"], metrics=data["metrics"], ranked=data["ranked"],
            top_n=top_n, targets=targets, run_key=history.inputs_key(inputs.values()),
            config_hash=str(tables.read_provenance(inputs["ranked"]).get("config_hash", "")),
        )
        changes, _ = history.update(settings.history, snap)
    text = summary(**{k: v for k, v in data.items() if k != "oof"}, target=target, label_settings=label_settings,
                   top_n=top_n, changes=changes)
    write_text(out / "summary.md", text)
    log.info("report written to %s", out / "summary.md")
