"""The Markdown summary of a run: ``results/report/summary.md``.

It answers what a reader asks first: what went in (and what was rejected, why), how large the
candidate space is after each filter, which labels were computed and at what level of theory,
how good the model is on held-out data (per family, with the uncertainty's calibration), which
features it leans on, and which candidates come out on top and should be labeled next. Every
number a figure or the HTML table of the report shows is printed here too (the frames the
figure functions of :mod:`matscreen.report.figures` return), for readers without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from matscreen import markdown, paths


def _md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return markdown.table(list(df.columns), df.itertuples(index=False), floatfmt)


def compared_with(formula: str, labels: pd.DataFrame) -> str:
    """The ok competing phases of ``labels`` inside ``formula``'s chemical system, e.g. 'SrO (rock_salt), TiO2 (rutile)'."""
    from pymatgen.core import Composition

    elements = {el.symbol for el in Composition(formula).elements}
    comp = labels[labels["origin"].eq("competing") & labels["status"].eq("ok")]
    names = sorted(
        {
            f"{Composition(f).reduced_formula} ({p})"
            for f, p in zip(comp["formula"], comp["prototype"])
            if {el.symbol for el in Composition(f).elements} <= elements
        }
    )
    return ", ".join(names)


def summary(
    *,
    structures: pd.DataFrame,
    rejects: pd.DataFrame,
    funnel: pd.DataFrame,
    labels: pd.DataFrame,
    references: pd.DataFrame,
    metrics: pd.DataFrame,
    ranked: pd.DataFrame,
    next_up: pd.DataFrame,
    target: str,
    label_settings: Mapping[str, Any],
    top_n: int,
    changes: str | None = None,
    drawn: Mapping[str, pd.DataFrame] | None = None,
    top: pd.DataFrame | None = None,
) -> str:
    """The Markdown summary; ``changes`` is the "Changes since the last run" section
    (:func:`matscreen.history.update`), placed first because it is what a nightly reader wants.

    ``drawn`` holds the data of each figure drawn (:func:`matscreen.report.figures.draw_all`),
    printed under the figure's link; ``top`` is the top-candidates table (:func:`top_candidates`,
    also the report's HTML table), computed here from ``ranked`` when not given.
    """
    drawn = dict(drawn or {})
    img = {k: paths.relative(p, paths.REPORT) for k, p in FIGURES.items()}
    kept = structures[structures["duplicate_of"].isna()]
    out = ["# matscreen run summary", ""]
    if changes:
        out += [changes, ""]
    out += [
        "## Ingest",
        "",
        f"{len(structures) + len(rejects)} structures read: {len(kept)} kept, "
        f"{len(structures) - len(kept)} duplicates, {len(rejects)} rejected.",
        "",
    ]
    if len(kept):
        out += [_md_table(kept.groupby("family").size().rename("structures").reset_index())]
    if len(rejects):
        out += [
            "Rejected:",
            "",
            _md_table(rejects[["source", "reason", "detail"]].assign(detail=rejects["detail"].str.slice(0, 100))),
        ]
    out += ["## Candidate space", ""]
    if len(funnel):
        last = funnel.sort_values("step").groupby("family").tail(1)
        first = funnel[funnel["step"] == 0].set_index("family")["remaining"]
        out += [
            _md_table(
                pd.DataFrame(
                    {
                        "family": last["family"],
                        "combinations": last["family"].map(first),
                        "candidates": last["remaining"],
                    }
                )
            ),
            "Funnel (candidates left after each filter; the funnel figure):",
            "",
            *([f"![funnel]({img['funnel']})", ""] if "funnel" in drawn else []),
            _md_table(drawn.get("funnel", funnel)),
        ]
    theory = ", ".join(
        f"{k}={label_settings[k]}" for k in ("xc", "basis", "pseudo", "density_fit", "relax") if k in label_settings
    )
    n_ok = int((labels["status"] == "ok").sum())
    out += [
        "## PySCF labels",
        "",
        f"Level of theory: {theory or 'see config'}.",
        f"{len(labels)} structures: {n_ok} ok, {int((labels['status'] == 'failed').sum())} failed, "
        f"{int((labels['status'] == 'unsupported').sum())} unsupported. "
        f"{int((references['status'] == 'ok').sum())}/{len(references)} elemental references ok.",
        "",
    ]
    competing = labels["origin"].eq("competing")
    show = [
        "structure_id",
        "origin",
        "formula",
        "status",
        "energy_per_atom_ev",
        "formation_energy_ev_per_atom",
        "e_above_hull_ev_per_atom",
        "decomposes_to",
        "gap_ev",
        "volume_ang3",
        "kmesh",
        "wall_s",
        "error",
        "hull_error",
    ]
    out += [_md_table(labels.loc[~competing, [c for c in show if c in labels.columns]].sort_values("formula"))]
    if competing.any():
        comp = labels[competing]
        out += [
            "Competing phases (binaries of the labeled compounds' chemical systems; the lowest polymorph of each "
            "composition counts on the hull):",
            "",
            _md_table(
                comp[
                    [
                        "formula",
                        "prototype",
                        "status",
                        "energy_per_atom_ev",
                        "formation_energy_ev_per_atom",
                        "e_above_hull_ev_per_atom",
                        "error",
                    ]
                ].sort_values(["formula", "prototype"])
            ),
        ]
    out += ["## Model (LightGBM, grouped cross-validation)", "", f"Target: `{target}`.", ""]
    if len(metrics):
        from matscreen.train import pooled_metrics

        pooled = pooled_metrics(
            metrics, target if "target" in metrics.columns and (metrics["target"] == target).any() else None
        )[["metric", "value"]]
        out += [_md_table(pooled)]
    if "parity" in drawn:
        out += [
            f"![parity per family]({img['parity']})",
            "",
            "Out-of-fold error per family (the parity figure's panels):",
            "",
            _md_table(drawn["parity"]),
        ]
    if "calibration" in drawn:
        cal = drawn["calibration"]
        wide = cal.pivot_table(index=["family", "sigma", "n"], columns="k", values="observed", sort=False).reset_index()
        wide.columns = [c if isinstance(c, str) else f"k={c:g}" for c in wide.columns]
        gauss = cal.drop_duplicates("k")
        wide = pd.concat(
            [
                pd.DataFrame(
                    [
                        {
                            "family": "Gaussian (expected)",
                            "sigma": "",
                            "n": None,
                            **{f"k={k:g}": e for k, e in zip(gauss["k"], gauss["expected"])},
                        }
                    ]
                ),
                wide,
            ]
        )
        out += [
            f"![uncertainty calibration]({img['calibration']})",
            "",
            "Fraction of out-of-fold |error| within k sigma (the calibration figure):",
            "",
            _md_table(wide),
        ]
    if "learning_curve" in drawn:
        out += [f"![learning curve]({img['learning_curve']})", "", _md_table(drawn["learning_curve"])]
    if "importance" in drawn:
        out += [
            f"![feature importance]({img['importance']})",
            "",
            f"Top {len(drawn['importance'])} features by gain (mean over the ensemble's boosters):",
            "",
            _md_table(drawn["importance"]),
        ]
    if top is None:
        top = top_candidates(ranked, labels, top_n)
    out += [
        f"## Top {top_n} candidates",
        "",
        f"{len(ranked)} candidates screened. Score = prediction - kappa x uncertainty (lower is better).",
        "",
        _md_table(top),
        "`compared_with`: the competing phases labeled in this run whose elements the candidate contains "
        "(the hulls the model learned from); a candidate whose system has none was ranked by extrapolation.",
        "",
    ]
    if "predictions" in drawn:
        out += [
            f"![predictions]({img['predictions']})",
            "",
            "Predictions per family (the distribution figure):",
            "",
            _md_table(drawn["predictions"]),
        ]
    if "rounds" in drawn:
        out += [
            "## Active-learning rounds",
            "",
            "Each round after round 0 labels the candidates the previous round's model rated best "
            "(rounds.acquisition) and retrains. `new_mae`: the previous model's error on the round's new "
            "PySCF labels (an out-of-sample test of the screen); `n_held_up`: new labels at least as good "
            "as predicted within one sigma; CPU hours are the label jobs' (`results/rounds.parquet`).",
            "",
            f"![rounds]({img['rounds']})",
            "",
            _md_table(drawn["rounds"]),
        ]
    out += [
        "## Next to label",
        "",
        _md_table(next_up[["candidate_id", "family", "formula", "prediction", "uncertainty"]]),
    ]
    return "\n".join(out)


#: The report's figure files (paths.py), by the key of :func:`matscreen.report.figures.draw_all`.
FIGURES = {
    "parity": paths.PARITY_PLOT,
    "calibration": paths.CALIBRATION_PLOT,
    "importance": paths.IMPORTANCE_PLOT,
    "funnel": paths.FUNNEL_PLOT,
    "predictions": paths.PREDICTIONS_PLOT,
    "learning_curve": paths.LEARNING_CURVE_PLOT,
    "rounds": paths.ROUNDS_PLOT,
}

#: Columns of the top-candidates table (summary.md and the report's HTML table).
TOP_COLUMNS = ["rank", "candidate_id", "family", "formula", "prediction", "uncertainty", "score"]


def top_candidates(ranked: pd.DataFrame, labels: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """The ``top_n`` first rows of ``ranked`` with the competing phases each was compared with."""
    top = ranked.head(top_n)[TOP_COLUMNS].reset_index(drop=True)
    return top.assign(compared_with=[compared_with(f, labels) for f in top["formula"]])
