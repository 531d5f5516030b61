"""The report's figures, each drawn from one run table.

Every ``*_plot`` function takes the table(s), writes the figure through the one atomic writer
(:func:`_save`) and returns the numbers it drew as a DataFrame; ``summary.md`` prints the same
frames (:mod:`matscreen.report.summary`), so a reader without a browser sees every number of a
figure, and a test can check that a changed table row changes the figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matscreen.atomic import atomic_path  # noqa: E402

if TYPE_CHECKING:
    from matscreen.train import Ensemble

#: Multiples of sigma at which the calibration figure compares observed with Gaussian coverage.
CALIBRATION_K = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: Features shown in the importance figure.
TOP_FEATURES = 20


def _save(fig: Any, path: str | Path) -> None:
    """Save a figure through the one atomic writer (the format from ``path``'s suffix, not the temp name's)."""
    with atomic_path(path) as tmp:
        # no timestamp in the metadata: the same tables give the same bytes
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", metadata={"Software": None})
    plt.close(fig)


def _panels(n: int, width: float = 4.0, height: float = 4.0) -> tuple[Any, list[Any]]:
    """A figure with ``n`` panels (at most 3 a row) and the list of their axes."""
    cols = max(1, min(3, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=110, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _families(df: pd.DataFrame) -> list[str]:
    return sorted(df["family"].fillna("unknown").astype(str).unique()) if len(df) else []


def _sigma(oof: pd.DataFrame) -> pd.Series:
    """The uncertainty the screen ranks with: calibrated where the table has it, else the raw ensemble std."""
    if "y_std_calibrated" in oof.columns and oof["y_std_calibrated"].notna().any():
        return oof["y_std_calibrated"]
    return oof["y_std"]


def parity_stats(oof: pd.DataFrame) -> pd.DataFrame:
    """Per family (and 'all'): held-out rows, MAE and RMSE of the out-of-fold predictions."""
    rows = []
    fam = oof["family"].fillna("unknown").astype(str)
    for name, sel in [("all", np.ones(len(oof), bool)), *((f, (fam == f).to_numpy()) for f in _families(oof))]:
        err = (oof["y_pred"] - oof["y_true"]).to_numpy()[sel]
        rows.append(
            {
                "family": name,
                "n": int(sel.sum()),
                "mae": float(np.mean(np.abs(err))) if len(err) else float("nan"),
                "rmse": float(np.sqrt(np.mean(err**2))) if len(err) else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["family", "n", "mae", "rmse"])


def parity_plot(oof: pd.DataFrame, target: str, path: str | Path) -> pd.DataFrame:
    """One panel per family: out-of-fold prediction against the PySCF label, sigma as error bars."""
    stats = parity_stats(oof).set_index("family")
    fams = _families(oof) or ["all"]
    fig, axes = _panels(len(fams))
    sigma = _sigma(oof)
    for ax, f in zip(axes, fams):
        sel = oof["family"].fillna("unknown").astype(str).eq(f) if len(oof) else oof.index.notna()
        d = oof[sel]
        ax.errorbar(d["y_true"], d["y_pred"], yerr=sigma[sel], fmt="o", ms=4, alpha=0.8, elinewidth=0.8)
        vals = pd.concat([d["y_true"], d["y_pred"]])
        lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        s = stats.loc[f] if f in stats.index else None
        ax.set_title(f"{f}: n={int(s['n'])}, MAE={s['mae']:.4g}" if s is not None else f, fontsize=9)
        ax.set_xlabel(f"PySCF {target}")
        ax.set_ylabel("out-of-fold prediction")
    fig.suptitle("Cross-validated predictions per family")
    fig.tight_layout()
    _save(fig, path)
    return stats.reset_index()


def calibration_table(oof: pd.DataFrame, ks: Sequence[float] = CALIBRATION_K) -> pd.DataFrame:
    """Fraction of |error| <= k sigma, per family and overall, next to a Gaussian's ``erf(k / sqrt 2)``.

    ``sigma`` 'calibrated' is the screen's uncertainty (``y_std_calibrated``); 'raw' is the
    ensemble std before calibration, overall only. At k = 1 these are the CV metrics'
    ``coverage_1sigma`` (raw, family 'all'; calibrated, per family).
    """
    err = (oof["y_pred"] - oof["y_true"]).abs().to_numpy()
    fam = oof["family"].fillna("unknown").astype(str).to_numpy()
    groups: list[tuple[str, str, np.ndarray, np.ndarray]] = [
        ("all", "calibrated", np.ones(len(oof), bool), _sigma(oof).to_numpy())
    ]
    if "y_std_calibrated" in oof.columns and oof["y_std_calibrated"].notna().any():
        groups.append(("all", "raw", np.ones(len(oof), bool), oof["y_std"].to_numpy()))
    groups += [(f, "calibrated", fam == f, _sigma(oof).to_numpy()) for f in _families(oof)]
    rows = []
    for name, kind, sel, s in groups:
        ok = sel & np.isfinite(s)
        for k in ks:
            rows.append(
                {
                    "family": name,
                    "sigma": kind,
                    "k": float(k),
                    "n": int(ok.sum()),
                    "expected": math.erf(k / math.sqrt(2)),
                    "observed": float(np.mean(err[ok] <= k * s[ok])) if ok.any() else float("nan"),
                }
            )
    return pd.DataFrame(rows, columns=["family", "sigma", "k", "n", "expected", "observed"])


def calibration_plot(oof: pd.DataFrame, target: str, path: str | Path) -> pd.DataFrame:
    table = calibration_table(oof)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    ks = np.linspace(0, max(CALIBRATION_K), 61)
    ax.plot(ks, [math.erf(k / math.sqrt(2)) for k in ks], "k-", lw=1, label="Gaussian")
    for (name, kind), grp in table.groupby(["family", "sigma"], sort=True):
        ax.plot(
            grp["k"],
            grp["observed"],
            "o--" if kind == "raw" else "o-",
            ms=4,
            label=f"{name} ({kind}, n={int(grp['n'].iloc[0])})",
        )
    ax.set_xlabel("k (multiples of the predicted sigma)")
    ax.set_ylabel("fraction of |error| <= k sigma")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title(f"Uncertainty calibration ({target}, out-of-fold)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return table


def importance_table(model: Ensemble, top: int = TOP_FEATURES) -> pd.DataFrame:
    """Gain importance of each feature, the mean over the ensemble's boosters: the ``top`` largest above 0."""
    gains = np.mean([b.feature_importance(importance_type="gain") for b in model.boosters], axis=0)
    # the boosters were trained on model.features in this order (LightGBM may rewrite the names)
    df = pd.DataFrame({"feature": list(model.features), "gain": gains.astype(float)})
    df = df[df["gain"] > 0]  # a feature no split used says nothing
    df = df.sort_values(["gain", "feature"], ascending=[False, True], kind="mergesort").head(top)
    return df.reset_index(drop=True)


def importance_plot(model: Ensemble, path: str | Path) -> pd.DataFrame:
    table = importance_table(model)
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(table), 4) + 1.2), dpi=110)
    ax.barh(table["feature"][::-1], table["gain"][::-1])
    ax.set_xlabel("gain (mean over the ensemble's boosters)")
    ax.set_title(f"Feature importance, top {len(table)} ({model.target})", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    _save(fig, path)
    return table


def funnel_plot(funnel: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Candidates left after each enumeration filter, one panel per family (log scale)."""
    table = funnel.sort_values(["family", "step"]).reset_index(drop=True)
    fams = _families(table) or ["(none)"]
    fig, axes = _panels(len(fams), width=4.5, height=3.8)
    for ax, f in zip(axes, fams):
        d = table[table["family"] == f]
        bars = ax.barh(d["filter"][::-1], d["remaining"][::-1].clip(lower=0.8))
        ax.bar_label(bars, labels=[str(v) for v in d["remaining"][::-1]], fontsize=7, padding=2)
        ax.set_xscale("log")
        ax.set_xlim(left=0.7)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on short ranges
        ax.set_xlabel("candidates remaining")
        ax.set_title(f, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Enumeration funnel per family")
    fig.tight_layout()
    _save(fig, path)
    return table


def prediction_stats(ranked: pd.DataFrame) -> pd.DataFrame:
    """Per family: candidates, and min, quartiles, max of the predictions."""
    rows = []
    for f in _families(ranked):
        p = ranked.loc[ranked["family"].fillna("unknown").astype(str) == f, "prediction"].dropna()
        q = p.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).to_numpy() if len(p) else [float("nan")] * 5
        rows.append({"family": f, "n": int(len(p)), "min": q[0], "q25": q[1], "median": q[2], "q75": q[3], "max": q[4]})
    return pd.DataFrame(rows, columns=["family", "n", "min", "q25", "median", "q75", "max"])


def prediction_plot(ranked: pd.DataFrame, target: str, path: str | Path) -> pd.DataFrame:
    """Histogram of the predictions per family, the quartiles as a box underneath."""
    stats = prediction_stats(ranked)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for f in stats["family"]:
        p = ranked.loc[ranked["family"].fillna("unknown").astype(str) == f, "prediction"].dropna()
        ax.hist(p, bins=40, alpha=0.6, label=f"{f} ({len(p)})")
    ax.set_xlabel(f"predicted {target}")
    ax.set_ylabel("candidates")
    if len(stats):
        ax.legend(fontsize=8)
    ax.set_title("Screened candidates per family")
    fig.tight_layout()
    _save(fig, path)
    return stats


def learning_curve_plot(curve: pd.DataFrame, target: str, path: str | Path) -> pd.DataFrame:
    """MAE and RMSE of the learning-curve table (LEARNING_CURVE) against the training-set size."""
    c = curve[curve["target"] == target].sort_values("n_train") if len(curve) else curve
    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
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
    return c[["train_fraction", "n_train", "n_test", "mae", "rmse"]].reset_index(drop=True) if len(c) else c


ROUND_COLUMNS = [
    "round",
    "acquisition",
    "n_chosen",
    "n_new_ok",
    "n_train",
    "new_mae",
    "new_rmse",
    "n_held_up",
    "cv_mae",
    "best_label",
    "label_cpu_hours",
]


def rounds_plot(rounds: pd.DataFrame, target: str, path: str | Path) -> pd.DataFrame:
    """Per active-learning round (ROUNDS): the previous model's error on the round's new labels
    and the round's CV error (left), the best label so far (right)."""
    r = rounds.sort_values("round")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 4), dpi=110)
    ax.plot(r["round"], r["new_mae"], "o-", label="MAE on the round's new labels (previous model)")
    ax.plot(r["round"], r["cv_mae"], "s--", label="out-of-fold MAE (round's model)")
    ax.set_xlabel("round")
    ax.set_ylabel(f"error ({target})")
    ax.set_title("Error per round")
    ax.legend(fontsize=7)
    bx.plot(r["round"], r["best_label"], "o-")
    bx.set_xlabel("round")
    bx.set_ylabel(f"best PySCF label so far ({target})")
    bx.set_title("Best labeled compound")
    for a in (ax, bx):
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    fig.tight_layout()
    _save(fig, path)
    return r[ROUND_COLUMNS].reset_index(drop=True)


def draw_all(
    *,
    oof: pd.DataFrame,
    funnel: pd.DataFrame,
    ranked: pd.DataFrame,
    model: Ensemble | None,
    curve: pd.DataFrame | None,
    target: str,
    files: Mapping[str, str | Path],
    rounds: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Every figure whose file ``files`` names (keys: parity, calibration, importance, funnel,
    predictions, learning_curve, rounds); the data each one drew, under the same key."""
    drawn: dict[str, pd.DataFrame] = {}
    if "parity" in files:
        drawn["parity"] = parity_plot(oof, target, files["parity"])
    if "calibration" in files:
        drawn["calibration"] = calibration_plot(oof, target, files["calibration"])
    if "importance" in files and model is not None:
        drawn["importance"] = importance_plot(model, files["importance"])
    if "funnel" in files:
        drawn["funnel"] = funnel_plot(funnel, files["funnel"])
    if "predictions" in files:
        drawn["predictions"] = prediction_plot(ranked, target, files["predictions"])
    if "learning_curve" in files and curve is not None:
        drawn["learning_curve"] = learning_curve_plot(curve, target, files["learning_curve"])
    if "rounds" in files and rounds is not None:
        drawn["rounds"] = rounds_plot(rounds, target, files["rounds"])
    return drawn
