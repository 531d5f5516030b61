"""Fitting, honest grouped cross-validation, calibration of the ensemble spread, metrics, learning curve."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from matscreen import tables
from matscreen.train.model import Ensemble, lgbm_params, model_params
from matscreen.train.settings import TrainSettings, resolve_settings

log = logging.getLogger(__name__)


#: Fraction of a normal distribution within one standard deviation.
ONE_SIGMA = 0.6826894921370859

# --- fitting -------------------------------------------------------------------------------------


def fit_ensemble(
    X: pd.DataFrame,
    y: np.ndarray,
    s: TrainSettings | Mapping[str, Any],
    seed: int,
    params: Mapping[str, Any] | None = None,
    n_models: int | None = None,
) -> list[lgb.Booster]:
    """Train ``ensemble_size`` boosters, each on a seeded bootstrap resample (the first on all rows)."""
    s = resolve_settings(s)
    n_models = s.ensemble_size if n_models is None else n_models
    params = model_params(s, len(y)) if params is None else dict(params)
    rng = np.random.default_rng(seed)
    arr = X.to_numpy(dtype=np.float32)
    boosters = []
    for i in range(n_models):
        idx = np.arange(len(y)) if i == 0 else rng.integers(0, len(y), len(y))
        data = lgb.Dataset(
            arr[idx],
            label=y[idx],
            feature_name=list(X.columns),
            free_raw_data=True,
            params={"verbosity": -1, "min_data_in_bin": params.get("min_data_in_bin", 3)},
        )
        boosters.append(lgb.train(lgbm_params(params, seed + i), data, num_boost_round=s.num_boost_round))
    return boosters


def chemical_system(formula: str) -> str:
    from pymatgen.core import Composition

    return "-".join(sorted(el.symbol for el in Composition(formula).elements))


def cv_group_labels(formulas: pd.Series, how: str = "formula") -> np.ndarray:
    """The CV group of every row: reduced formula or chemical system (sorted elements, e.g. 'O-Sr-Ti')."""
    from pymatgen.core import Composition

    uniq = pd.unique(formulas.astype(str))
    if how == "chemical_system":
        m = {f: chemical_system(f) for f in uniq}
    elif how == "formula":
        m = {f: Composition(f).reduced_formula for f in uniq}
    else:
        raise ValueError(f"train.cv_groups must be 'formula' or 'chemical_system', got {how!r}")
    return formulas.astype(str).map(m).to_numpy(dtype=object)


def assign_folds(groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of every row: groups in a seeded random order, each to the fold with fewest rows so far."""
    unique, counts = np.unique(groups.astype(str), return_counts=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    sizes = np.zeros(n_folds, dtype=np.int64)
    fold_of = {}
    for j, g in enumerate(order):
        k = int(np.argmin(sizes)) if j >= n_folds else j  # first n_folds groups seed the folds
        fold_of[unique[g]] = k
        sizes[k] += counts[g]
    return np.array([fold_of[g] for g in groups.astype(str)], dtype=np.int64)


def _n_folds(groups: np.ndarray, wanted: int) -> int:
    n_groups = len(set(groups))
    n_folds = min(wanted, n_groups)
    if n_folds < 2:
        raise ValueError(f"cross-validation needs labels of at least 2 groups (train.cv_groups), got {n_groups}")
    return n_folds


def tune(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, s: TrainSettings, seed: int) -> dict[str, Any]:
    """The grid point of ``train.tuning.grid`` with the lowest inner grouped-CV MAE (single boosters)."""
    grid = dict(s.tuning.grid or {})
    if not grid:
        return {}
    n_inner = min(s.tuning.inner_folds, len(set(groups)))
    if n_inner < 2:
        return {}
    folds = assign_folds(groups, n_inner, seed)
    keys = sorted(grid)
    best, best_mae = {}, np.inf
    for values in itertools.product(*(list(grid[k]) for k in keys)):
        point = dict(zip(keys, values))
        err = np.empty(len(y))
        for k in range(n_inner):
            test = folds == k
            params = model_params(s, int((~test).sum()), point)
            (b,) = fit_ensemble(X[~test], y[~test], s, seed, params, n_models=1)
            err[test] = b.predict(X[test].to_numpy(np.float32), num_threads=1) - y[test]
        mae = float(np.mean(np.abs(err)))
        if mae < best_mae - 1e-12:
            best, best_mae = point, mae
    log.info("tuning: best %s (inner MAE %.4f)", best, best_mae)
    return best


def fit_model(
    X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, s: TrainSettings, seed: int
) -> tuple[list[lgb.Booster], dict[str, Any]]:
    """Boosters and their parameters for one training set (tuned first if ``train.tuning.enabled``)."""
    tuned = tune(X, y, groups, s, seed + 7) if s.tuning.enabled else {}
    params = model_params(s, len(y), tuned)
    return fit_ensemble(X, y, s, seed, params), params


# --- calibration and metrics ---------------------------------------------------------------------


def calibration_factor(err: np.ndarray, std: np.ndarray) -> float:
    """Factor c such that |err| <= c * std for 68.3 % of the rows (1.0 when std carries no information)."""
    ok = np.isfinite(err) & np.isfinite(std) & (std > 0)
    if ok.sum() < 2:
        return 1.0
    c = float(np.quantile(np.abs(err[ok]) / std[ok], ONE_SIGMA))
    return c if np.isfinite(c) and c > 0 else 1.0


def cross_fitted_coverage(err: np.ndarray, std: np.ndarray, folds: np.ndarray) -> float:
    """1-sigma coverage when each fold's factor is fitted on the other folds' residuals (honest)."""
    covered = np.zeros(len(err), dtype=bool)
    for k in np.unique(folds):
        test = folds == k
        c = calibration_factor(err[~test], std[~test])
        covered[test] = np.abs(err[test]) <= c * std[test]
    return float(covered.mean()) if len(err) else float("nan")


def regression_metrics(y: np.ndarray, p: np.ndarray, s: np.ndarray) -> dict[str, float]:
    err = p - y
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return {
        "mae": float(np.mean(np.abs(err))) if len(y) else float("nan"),
        "rmse": float(np.sqrt(np.mean(err**2))) if len(y) else float("nan"),
        "r2": float(1 - np.sum(err**2) / ss_tot) if ss_tot > 0 else float("nan"),
        "spearman": float(spearmanr(y, p).statistic)
        if len(y) > 2 and np.ptp(p) > 0 and np.ptp(y) > 0
        else float("nan"),
        "coverage_1sigma": float(np.mean(np.abs(err) <= s)) if len(y) else float("nan"),
    }


def stability_metrics(y: np.ndarray, p: np.ndarray, threshold: float, top_n: int) -> dict[str, float]:
    """Precision, recall, F1 of 'value < threshold' and the enrichment of truly stable rows in the top N."""
    true, pred = y < threshold, p < threshold
    tp = float(np.sum(true & pred))
    precision = tp / pred.sum() if pred.sum() else float("nan")
    recall = tp / true.sum() if true.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    n = min(int(top_n), len(y))
    base = float(true.mean()) if len(y) else float("nan")
    top = np.argsort(p, kind="mergesort")[:n]
    hit = float(true[top].mean()) if n else float("nan")
    return {
        "stable_fraction": base,
        "stable_precision": precision,
        "stable_recall": recall,
        "stable_f1": f1,
        "stable_top_n_hit_rate": hit,
        "stable_enrichment_top_n": hit / base if base > 0 else float("nan"),
    }


def _rows(target: str, fold: str, family: str, metrics: Mapping[str, float]) -> list[tuple[str, str, str, str, float]]:
    return [(target, fold, family, k, float(v)) for k, v in metrics.items()]


@dataclass
class CVResult:
    metrics: pd.DataFrame
    oof: pd.DataFrame
    factor: float
    folds: np.ndarray


def cross_validate(
    data: pd.DataFrame,
    features: list[str],
    target: str,
    s: TrainSettings | Mapping[str, Any],
    seed: int,
    families: Mapping[str, str] | None = None,
) -> CVResult:
    """Grouped K-fold CV; metrics (CV_METRICS contract), out-of-fold predictions, calibration factor."""
    s = resolve_settings(s)
    groups = cv_group_labels(data["formula"], s.cv_groups)
    n_folds = _n_folds(groups, s.cv_folds)
    folds = assign_folds(groups, n_folds, seed)
    y = data[target].to_numpy(dtype=np.float64)
    pred = np.full(len(y), np.nan)
    std = np.full(len(y), np.nan)
    rows = []
    for k in range(n_folds):
        test = folds == k
        boosters, _ = fit_model(data.loc[~test, features], y[~test], groups[~test], s, seed + 1000 * k)
        pred[test], std[test] = Ensemble(features, target, boosters, {}).predict(data.loc[test])
        m = regression_metrics(y[test], pred[test], std[test])
        rows += _rows(target, str(k), "all", {**m, "n_train": (~test).sum(), "n_test": test.sum()})
        log.info(
            "%s fold %d/%d: %d train, %d test, MAE %.4f", target, k + 1, n_folds, (~test).sum(), test.sum(), m["mae"]
        )
    err = pred - y
    factor = calibration_factor(err, std) if s.calibrate else 1.0
    pooled = regression_metrics(y, pred, std)
    pooled.update(
        coverage_1sigma_calibrated=cross_fitted_coverage(err, std, folds) if s.calibrate else pooled["coverage_1sigma"],
        calibration_factor=factor,
        n_train=len(y),
        n_test=len(y),
        n_folds=n_folds,
    )
    if target in s.stability.targets:
        pooled.update(stability_metrics(y, pred, s.stability.threshold_ev_per_atom, s.stability.top_n))
    rows = _rows(target, "all", "all", pooled) + rows
    fam = data["structure_id"].map(dict(families or {})).fillna("unknown").to_numpy(dtype=object)
    if families is not None:
        for f in sorted(set(fam)):
            sel = fam == f
            m = regression_metrics(y[sel], pred[sel], factor * std[sel])
            m["n_test"] = float(sel.sum())
            if target in s.stability.targets:
                m.update(stability_metrics(y[sel], pred[sel], s.stability.threshold_ev_per_atom, s.stability.top_n))
            rows += _rows(target, "all", str(f), m)
    oof = pd.DataFrame(
        {
            "target": target,
            "structure_id": data["structure_id"].to_numpy(),
            "family": fam,
            "fold": folds.astype("int64"),
            "y_true": y,
            "y_pred": pred,
            "y_std": std,
            "y_std_calibrated": std * factor,
        }
    )
    metrics = pd.DataFrame(rows, columns=["target", "fold", "family", "metric", "value"])
    return CVResult(metrics, oof, factor, folds)


def learning_curve(
    data: pd.DataFrame, features: list[str], target: str, s: TrainSettings, folds: np.ndarray, seed: int
) -> pd.DataFrame:
    """Out-of-fold error of single boosters trained on a fraction of each training fold's groups."""
    groups = cv_group_labels(data["formula"], s.cv_groups)
    y = data[target].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed + 99)
    rows = []
    for frac in sorted(set(s.learning_curve.fractions)):
        err, n_train = [], []
        for k in np.unique(folds):
            test = folds == k
            train_groups = np.unique(groups[~test].astype(str))
            keep = rng.permutation(train_groups)[: max(1, int(round(frac * len(train_groups))))]
            sel = ~test & np.isin(groups.astype(str), keep)
            if sel.sum() < 2:
                continue
            (b,) = fit_ensemble(
                data.loc[sel, features], y[sel], s, seed + int(k), model_params(s, int(sel.sum())), n_models=1
            )
            err.append(b.predict(data.loc[test, features].to_numpy(np.float32), num_threads=1) - y[test])
            n_train.append(int(sel.sum()))
        if not err:
            continue
        e = np.concatenate(err)
        rows.append(
            {
                "target": target,
                "train_fraction": float(frac),
                "n_train": float(np.mean(n_train)),
                "n_test": int(len(e)),
                "mae": float(np.mean(np.abs(e))),
                "rmse": float(np.sqrt(np.mean(e**2))),
            }
        )
    return pd.DataFrame(rows, columns=tables.LEARNING_CURVE.column_names).astype({"n_test": "int64"})
