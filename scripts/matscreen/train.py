"""Stage 5: LightGBM models with honest cross-validation and calibrated ensemble uncertainty.

Honest means: folds are grouped (``train.cv_groups``: by reduced formula, so polymorphs of one
composition never sit on both sides of a split, or by chemical system, so no element set does),
every metric is computed on held-out rows only, and the uncertainty of a prediction is the
spread of an ensemble of models trained on bootstrap resamples with different seeds, rescaled by
a factor fitted on the out-of-fold residuals so that the 1-sigma band covers about 68 % of the
errors (coverage before and after is reported; "after" is cross-fitted: each fold's factor comes
from the other folds' residuals).

One model per target (``train.target``: a column name or a list). Hyperparameters scale with
the training-set size (:func:`auto_params`) unless ``train.hyperparameters: fixed``; optional
nested-CV tuning (``train.tuning``). The fitted models are one JSON file (``model.json``):
per target the feature list, the settings, the calibration factor and the ensemble's boosters as
LightGBM text models (``lightgbm.Booster(model_str=...)``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from matscreen import tables
from matscreen.atomic import outputs_together, write_text
from matscreen.config import ConfigError, build_settings, settings_dict
from matscreen.predict_fast import Forest
from matscreen.provenance import provenance

log = logging.getLogger(__name__)

#: Prefix of features that only structures have (never used for a model that screens compositions).
STRUCTURE_ONLY_PREFIX = "struct_"

#: Rows from which :meth:`Ensemble.predict` compiles the boosters (:mod:`matscreen.predict_fast`, ~1 ms
#: per tree, once per ensemble) instead of calling ``Booster.predict`` (~130 ns per tree and row).
FAST_MIN_ROWS = 10_000

#: Fraction of a normal distribution within one standard deviation.
ONE_SIGMA = 0.6826894921370859


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TuningSettings:
    enabled: bool
    inner_folds: int
    grid: dict[str, Any]


@dataclass(frozen=True)
class StabilitySettings:
    targets: tuple[str, ...]
    threshold_ev_per_atom: float
    top_n: int


@dataclass(frozen=True)
class LearningCurveSettings:
    enabled: bool
    fractions: tuple[float, ...]


@dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` config section, resolved once (:func:`settings`); the schema holds the defaults."""

    target: str | tuple[str, ...]
    cv_folds: int
    cv_groups: str
    ensemble_size: int
    num_boost_round: int
    external_labels: tuple[str, ...]
    min_labels: int
    hyperparameters: str
    lightgbm: dict[str, Any]
    tuning: TuningSettings
    calibrate: bool
    stability: StabilitySettings
    learning_curve: LearningCurveSettings

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)


def settings(section: Mapping[str, Any] | TrainSettings | None) -> TrainSettings:
    """:class:`TrainSettings` from a (partial) ``train:`` section, or the instance unchanged."""
    return build_settings(TrainSettings, "train", section)


def target_list(target: str | Sequence[str] | None) -> list[str]:
    if target is None:
        return []
    return [target] if isinstance(target, str) else list(target)


# --- which targets exist -------------------------------------------------------------------------


def target_columns() -> list[str]:
    """Columns of the labels table a model can be trained on: numeric, not part of the key."""
    return [c.name for c in tables.LABELS.columns
            if c.dtype in ("float64", "float32", "int64", "int32") and c.name not in tables.LABELS.key]


#: Columns of an external table that are never targets.
_EXTERNAL_NON_TARGETS = {"formula", "family", "structure_id", "source", "row",
                         *(f"{s}_species" for s in tables.SITE_LABELS)}


def external_columns(path: str) -> list[str]:
    """Column names of an external label table, read cheaply (CSV header / Parquet schema only)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return list(pd.read_csv(path, nrows=0).columns)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    raise ValueError("external label tables must be .csv or .parquet")


def available_targets(external_paths: Sequence[str]) -> dict[str, list[str]]:
    """Target name -> where it exists ('labels' and/or external file paths)."""
    out: dict[str, list[str]] = {c: ["labels"] for c in target_columns()}
    for path in external_paths:
        for col in external_columns(path):
            if col not in _EXTERNAL_NON_TARGETS:
                out.setdefault(col, []).append(str(path))
    return out


def check_train(config: dict[str, Any]) -> None:
    train = config.get("train") or {}
    targets = target_list(train.get("target"))
    if not targets:
        return
    paths = list(train.get("external_labels") or [])
    for i, path in enumerate(paths):
        try:
            external_columns(path)
        except FileNotFoundError:
            raise ConfigError(f"config key 'train.external_labels[{i}]': {path!r} does not exist "
                              f"(paths are relative to the working directory {Path.cwd()})") from None
        except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for unreadable files
            raise ConfigError(f"config key 'train.external_labels[{i}]': cannot read the header of {path!r} "
                              f"({type(exc).__name__}: {exc})") from None
    avail = available_targets(paths)
    for i, target in enumerate(targets):
        if target in avail:
            continue
        key = "train.target" if isinstance(train.get("target"), str) else f"train.target[{i}]"
        what = " (a text column)" if target in tables.LABELS.column_names else ""
        where = "the labels table" + (f" or of the external label tables ({', '.join(paths)})" if paths else "")
        raise ConfigError(f"config key '{key}': {target!r} is not a numeric label column of {where}{what}; "
                          f"available: {', '.join(sorted(avail))}")


def check_screen(config: dict[str, Any]) -> None:
    """screen.rank_by and screen.filters name targets that a model is trained for."""
    targets = target_list((config.get("train") or {}).get("target"))
    scr = config.get("screen") or {}
    if not targets:
        return
    if scr.get("rank_by") is not None and scr["rank_by"] not in targets:
        raise ConfigError(f"config key 'screen.rank_by': {scr['rank_by']!r} is not one of train.target "
                          f"({', '.join(targets)})")
    for i, f in enumerate(scr.get("filters") or []):
        if f.get("target") not in targets:
            raise ConfigError(f"config key 'screen.filters[{i}].target': {f.get('target')!r} is not one of "
                              f"train.target ({', '.join(targets)})")
        if f.get("min") is not None and f.get("max") is not None and f["min"] > f["max"]:
            raise ConfigError(f"config key 'screen.filters[{i}]': min {f['min']} > max {f['max']}")


def primary_target(config: Mapping[str, Any]) -> str:
    """The target screens rank by: screen.rank_by, else the first train.target."""
    scr = config.get("screen") or {}
    return scr.get("rank_by") or target_list((config.get("train") or {}).get("target"))[0]


# --- the model -----------------------------------------------------------------------------------


@dataclass
class Ensemble:
    """An ensemble of LightGBM boosters over a fixed feature list, for one target.

    The prediction is the first booster's (trained on all rows); the uncertainty is the standard
    deviation over all boosters (the others trained on bootstrap resamples) times ``std_scale``,
    the calibration factor (1.0 = uncalibrated). Averaging the bootstrap members was measured
    worse: each sees 63 % of the distinct rows (synthetic 2,000 rows: MAE 0.069 vs 0.059).
    """

    features: list[str]
    target: str
    boosters: list[lgb.Booster]
    settings: dict[str, Any]
    std_scale: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    _fast: tuple[tuple[int, ...], Any] | None = field(default=None, init=False, repr=False, compare=False)

    def predict(self, X: pd.DataFrame, num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Prediction (the all-rows booster) and (calibrated) standard deviation over the ensemble.

        From :data:`FAST_MIN_ROWS` rows on, the boosters are evaluated by
        :mod:`matscreen.predict_fast` (the same doubles as ``Booster.predict``, ~10x faster).
        """
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise ValueError(f"features missing from the table: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        arr = X[self.features].to_numpy(dtype=np.float32)
        forest = self.fast_forest() if arr.shape[0] >= FAST_MIN_ROWS else None
        if forest is not None:
            preds = forest.predict(arr, num_threads=num_threads)
        else:
            preds = np.stack([b.predict(arr, num_threads=num_threads) for b in self.boosters])
        std = preds.std(axis=0, ddof=1) if len(self.boosters) > 1 else np.zeros(arr.shape[0])
        return preds[0], std * self.std_scale

    def fast_forest(self) -> Forest | None:
        """The boosters compiled for :mod:`matscreen.predict_fast` (once), or None where LightGBM predicts."""
        key = tuple(id(b) for b in self.boosters)
        if self._fast is None or self._fast[0] != key:
            self._fast = (key, Forest.from_boosters(self.boosters, len(self.features)))
        return self._fast[1]

    def as_dict(self) -> dict[str, Any]:
        return {"features": self.features, "target": self.target, "settings": self.settings,
                "std_scale": self.std_scale, "params": self.params,
                "boosters": [b.model_to_string() for b in self.boosters]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ensemble:
        return cls(list(d["features"]), d["target"], [lgb.Booster(model_str=s) for s in d["boosters"]],
                   dict(d["settings"]), float(d.get("std_scale", 1.0)), dict(d.get("params") or {}))

    @classmethod
    def from_json(cls, text: str) -> Ensemble:
        """One ensemble; from a several-target model file, the primary (first) target's."""
        d = json.loads(text)
        if "models" in d:
            d = d["models"][d["targets"][0]]
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        """Read ``model.json`` (its primary target); a missing, truncated or foreign file is named."""
        models = load_models(path)
        return next(iter(models.values()))


def models_to_json(models: Mapping[str, Ensemble]) -> str:
    """``model.json``: ``{"format": 2, "targets": [...], "models": {target: ensemble}}``."""
    return json.dumps({"format": 2, "targets": list(models), "models": {t: m.as_dict() for t, m in models.items()}})


def load_models(path: str | Path) -> dict[str, Ensemble]:
    """Every target's ensemble of ``model.json``, primary target first (a format-1 file has one)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read the model ({exc.strerror or exc})") from None
    try:
        d = json.loads(text)
        if "models" in d:
            return {t: Ensemble.from_dict(d["models"][t]) for t in d["targets"]}
        ens = Ensemble.from_dict(d)
        return {ens.target: ens}
    except (ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
        raise ValueError(f"{path}: not a matscreen model.json (truncated or from another tool?): "
                         f"{type(exc).__name__}: {exc}") from None


# --- hyperparameters -----------------------------------------------------------------------------


def auto_params(n: int) -> dict[str, Any]:
    """LightGBM parameters for ``n`` training rows.

    Small sets (n <= 200) get what suits a dozen to a few hundred labels (num_leaves 15,
    min_data_in_leaf 2: LightGBM's default of 20 never splits 12 rows); larger sets move towards
    LightGBM's defaults: min_data_in_leaf = n/100 (2..20), num_leaves = 15 sqrt(n/200) (15..31),
    min_data_in_bin 3 and feature_fraction 1 (LightGBM's defaults) from n = 1000 on.
    """
    n = max(int(n), 1)
    return {
        "learning_rate": 0.05,
        "num_leaves": int(np.clip(round(15 * math.sqrt(n / 200)), 15, 31)),
        "min_data_in_leaf": int(np.clip(round(n / 100), 2, 20)),
        "min_data_in_bin": 1 if n < 1000 else 3,
        "feature_fraction": 0.8 if n < 1000 else 1.0,
        "lambda_l2": 1.0,
    }


def model_params(s: TrainSettings, n: int, tuned: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The LightGBM parameters of a model trained on ``n`` rows (seed and threads added later)."""
    params = auto_params(n) if s.hyperparameters == "auto" else {}
    params.update(s.lightgbm or {})
    params.update(tuned or {})
    return params


def lgbm_params(params: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """LightGBM parameters: the model's ones plus what makes runs reproducible."""
    out = dict(params)
    out.update(
        objective="regression",
        seed=seed,
        deterministic=True,
        force_row_wise=True,
        num_threads=1,  # measured: 2 threads are 4x slower than 1 on a 2-core machine
        verbosity=-1,
    )
    return out


def feature_columns(features: pd.DataFrame) -> list[str]:
    """Numeric feature columns usable for screening (keys, errors and structure-only ones excluded)."""
    skip = {"structure_id", "candidate_id", "featurize_error"}
    return [c for c in features.columns if c not in skip and not c.startswith(STRUCTURE_ONLY_PREFIX)]


# --- data ----------------------------------------------------------------------------------------


def training_frame(
    features: pd.DataFrame, labels: pd.DataFrame, target: str,
    features_name: str = "structure features", labels_name: str = "labels",
) -> pd.DataFrame:
    """Join features and ok labels on ``structure_id``; rows without a target are dropped, and so are
    competing phases (binaries computed for the hulls, not members of the screened families).

    Every ok label must have exactly one feature row (:func:`matscreen.tables.join_one_to_one`);
    features of structures without an ok label (failed, not yet labeled) are simply not used.
    Labels must not be absurd (:data:`matscreen.tables.MAX_ABS_LABEL`): the error names the file and the row.
    """
    if target not in labels.columns:
        raise ValueError(f"{labels_name}: no column {target!r} (train.target) in the labels or external tables")
    competing = labels["origin"].eq("competing") if "origin" in labels.columns else pd.Series(False, index=labels.index)
    ok = labels[(labels["status"] == "ok") & labels[target].notna() & ~competing][["structure_id", "formula", target]]
    values = ok[target].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (np.abs(values) > tables.MAX_ABS_LABEL)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise tables.ContractError(
            f"{labels_name}: row {int(ok.index[i]) + 1} (structure_id {ok['structure_id'].iloc[i]}): "
            f"{target} = {values[i]!r} is not a plausible label (|x| > {tables.MAX_ABS_LABEL:g} or not finite); "
            f"{int(bad.sum())} such row(s)"
        )
    df = tables.join_one_to_one(ok, features, "structure_id", left_name=labels_name, right_name=features_name,
                                complete="left")
    return df.sort_values("structure_id").reset_index(drop=True)


def one_settings_hash(labels: pd.DataFrame, labels_path: str, wanted: str | None = None) -> pd.DataFrame:
    """The labels of one label-settings hash: a structure labeled at two levels of theory is two rows.

    One hash in the file: used as is. Several: the configured one (``wanted``, the hash of the
    ``label:`` section) if the file has it, else a ValueError naming the file and the hashes
    found, because mixing levels of theory in one model is never what was meant.
    """
    hashes = sorted(labels["settings_hash"].dropna().unique())
    if len(hashes) <= 1:
        return labels
    if wanted in hashes:
        keep = labels[labels["settings_hash"] == wanted]
        log.warning("%s: labels of %d settings hashes; training on the configured one (%s, %d of %d rows)",
                    labels_path, len(hashes), wanted, len(keep), len(labels))
        return keep.reset_index(drop=True)
    raise ValueError(
        f"{labels_path}: labels of {len(hashes)} label settings (settings_hash {', '.join(hashes)}), none of them "
        f"the configured one ({wanted}); train on the labels of one level of theory "
        "(re-run gather/label with the current label: settings)"
    )


# --- fitting -------------------------------------------------------------------------------------


def fit_ensemble(
    X: pd.DataFrame, y: np.ndarray, s: TrainSettings | Mapping[str, Any], seed: int,
    params: Mapping[str, Any] | None = None, n_models: int | None = None,
) -> list[lgb.Booster]:
    """Train ``ensemble_size`` boosters, each on a seeded bootstrap resample (the first on all rows)."""
    s = settings(s)
    n_models = s.ensemble_size if n_models is None else n_models
    params = model_params(s, len(y)) if params is None else dict(params)
    rng = np.random.default_rng(seed)
    arr = X.to_numpy(dtype=np.float32)
    boosters = []
    for i in range(n_models):
        idx = np.arange(len(y)) if i == 0 else rng.integers(0, len(y), len(y))
        data = lgb.Dataset(arr[idx], label=y[idx], feature_name=list(X.columns), free_raw_data=True,
                           params={"verbosity": -1, "min_data_in_bin": params.get("min_data_in_bin", 3)})
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


def fit_model(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, s: TrainSettings, seed: int
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


def _regression_metrics(y: np.ndarray, p: np.ndarray, s: np.ndarray) -> dict[str, float]:
    err = p - y
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return {
        "mae": float(np.mean(np.abs(err))) if len(y) else float("nan"),
        "rmse": float(np.sqrt(np.mean(err**2))) if len(y) else float("nan"),
        "r2": float(1 - np.sum(err**2) / ss_tot) if ss_tot > 0 else float("nan"),
        "spearman": float(spearmanr(y, p).statistic) if len(y) > 2 and np.ptp(p) > 0 and np.ptp(y) > 0 else float("nan"),
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
    return {"stable_fraction": base, "stable_precision": precision, "stable_recall": recall, "stable_f1": f1,
            "stable_top_n_hit_rate": hit, "stable_enrichment_top_n": hit / base if base > 0 else float("nan")}


def _rows(target: str, fold: str, family: str, metrics: Mapping[str, float]) -> list[tuple[str, str, str, str, float]]:
    return [(target, fold, family, k, float(v)) for k, v in metrics.items()]


@dataclass
class CVResult:
    metrics: pd.DataFrame
    oof: pd.DataFrame
    factor: float
    folds: np.ndarray


def cross_validate(
    data: pd.DataFrame, features: list[str], target: str, s: TrainSettings | Mapping[str, Any], seed: int,
    families: Mapping[str, str] | None = None,
) -> CVResult:
    """Grouped K-fold CV; metrics (CV_METRICS contract), out-of-fold predictions, calibration factor."""
    s = settings(s)
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
        m = _regression_metrics(y[test], pred[test], std[test])
        rows += _rows(target, str(k), "all", {**m, "n_train": (~test).sum(), "n_test": test.sum()})
        log.info("%s fold %d/%d: %d train, %d test, MAE %.4f", target, k + 1, n_folds, (~test).sum(), test.sum(), m["mae"])
    err = pred - y
    factor = calibration_factor(err, std) if s.calibrate else 1.0
    pooled = _regression_metrics(y, pred, std)
    pooled.update(coverage_1sigma_calibrated=cross_fitted_coverage(err, std, folds) if s.calibrate
                  else pooled["coverage_1sigma"], calibration_factor=factor, n_train=len(y), n_test=len(y),
                  n_folds=n_folds)
    if target in s.stability.targets:
        pooled.update(stability_metrics(y, pred, s.stability.threshold_ev_per_atom, s.stability.top_n))
    rows = _rows(target, "all", "all", pooled) + rows
    fam = data["structure_id"].map(dict(families or {})).fillna("unknown").to_numpy(dtype=object)
    if families is not None:
        for f in sorted(set(fam)):
            sel = fam == f
            m = _regression_metrics(y[sel], pred[sel], factor * std[sel])
            m["n_test"] = float(sel.sum())
            if target in s.stability.targets:
                m.update(stability_metrics(y[sel], pred[sel], s.stability.threshold_ev_per_atom, s.stability.top_n))
            rows += _rows(target, "all", str(f), m)
    oof = pd.DataFrame({"target": target, "structure_id": data["structure_id"].to_numpy(), "family": fam,
                        "fold": folds.astype("int64"), "y_true": y, "y_pred": pred, "y_std": std,
                        "y_std_calibrated": std * factor})
    metrics = pd.DataFrame(rows, columns=["target", "fold", "family", "metric", "value"])
    return CVResult(metrics, oof, factor, folds)


def learning_curve(data: pd.DataFrame, features: list[str], target: str, s: TrainSettings,
                   folds: np.ndarray, seed: int) -> pd.DataFrame:
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
            (b,) = fit_ensemble(data.loc[sel, features], y[sel], s, seed + int(k), model_params(s, int(sel.sum())),
                                n_models=1)
            err.append(b.predict(data.loc[test, features].to_numpy(np.float32), num_threads=1) - y[test])
            n_train.append(int(sel.sum()))
        if not err:
            continue
        e = np.concatenate(err)
        rows.append({"target": target, "train_fraction": float(frac), "n_train": float(np.mean(n_train)),
                     "n_test": int(len(e)), "mae": float(np.mean(np.abs(e))), "rmse": float(np.sqrt(np.mean(e**2)))})
    return pd.DataFrame(rows, columns=tables.LEARNING_CURVE.column_names).astype({"n_test": "int64"})


@dataclass
class TrainResult:
    models: dict[str, Ensemble]
    metrics: pd.DataFrame
    oof: pd.DataFrame
    learning_curve: pd.DataFrame

    def __iter__(self):  # (ensemble of the primary target, metrics, oof): the one-target API
        return iter((next(iter(self.models.values())), self.metrics, self.oof))


def train(
    features: pd.DataFrame, labels: pd.DataFrame, settings_: TrainSettings | Mapping[str, Any], seed: int,
    names: Mapping[str, str] | None = None, families: Mapping[str, str] | None = None,
) -> TrainResult:
    """Per target: cross-validate, calibrate, then fit the final ensemble on all labeled rows.

    Unpacks as ``(ensemble of the first target, metrics, oof)``; ``.models`` has every target's.
    """
    s = settings(settings_)
    feats = feature_columns(features)
    models: dict[str, Ensemble] = {}
    metrics, oofs, curves = [], [], []
    for target in s.targets:
        data = training_frame(features, labels, target, **(names or {}))
        if len(data) < s.min_labels:
            raise ValueError(
                f"only {len(data)} labeled structures with an ok '{target}' (need train.min_labels = "
                f"{s.min_labels}); label more structures (label.select) or check labels.parquet"
            )
        log.info("training %s on %d labeled rows, %d features", target, len(data), len(feats))
        cv = cross_validate(data, feats, target, s, seed, families)
        groups = cv_group_labels(data["formula"], s.cv_groups)
        boosters, params = fit_model(data[feats], data[target].to_numpy(np.float64), groups, s, seed)
        models[target] = Ensemble(feats, target, boosters, settings_dict(s), cv.factor, params)
        metrics.append(cv.metrics)
        oofs.append(cv.oof)
        if s.learning_curve.enabled:
            curves.append(learning_curve(data, feats, target, s, cv.folds, seed))
        pooled = cv.metrics[(cv.metrics["fold"] == "all") & (cv.metrics["family"] == "all")].set_index("metric")["value"]
        log.info("%s CV (pooled out-of-fold): MAE %.4f, RMSE %.4f, R2 %.3f, 1-sigma coverage %.2f -> %.2f "
                 "calibrated (factor %.2f)", target, pooled["mae"], pooled["rmse"], pooled["r2"],
                 pooled["coverage_1sigma"], pooled["coverage_1sigma_calibrated"], pooled["calibration_factor"])
    curve = pd.concat(curves, ignore_index=True) if curves else tables.empty_frame(tables.LEARNING_CURVE)
    return TrainResult(models, pd.concat(metrics, ignore_index=True), pd.concat(oofs, ignore_index=True), curve)


def pooled_metrics(metrics: pd.DataFrame, target: str | None = None) -> pd.DataFrame:
    """The pooled out-of-fold rows (fold 'all', all families) of one target (default: the first)."""
    if "target" not in metrics.columns:  # tables of older runs
        return metrics[metrics["fold"] == "all"]
    target = target if target is not None else (metrics["target"].iloc[0] if len(metrics) else None)
    return metrics[(metrics["fold"] == "all") & (metrics["family"] == "all") & (metrics["target"] == target)]


def same_level_duplicates_dropped(ext: pd.DataFrame, labels: pd.DataFrame, families: Mapping[str, str]) -> pd.DataFrame:
    """External rows without the compounds the run labeled itself, for tables at the run's own level
    of theory (a ``settings_hash`` column, checked equal when the table was read: the shipped
    reference set): the same compound twice would weigh double. Other tables keep every row (their
    labels are another method's, which the user chose to mix in)."""
    from pymatgen.core import Composition

    same_level = {src for src in ext["source"].unique() if "settings_hash" in external_columns(str(src))}
    if ext.empty or not same_level:
        return ext
    ok = labels[labels["status"] == "ok"]
    own = {(Composition(f).reduced_formula, families.get(sid, "")) for sid, f in zip(ok["structure_id"], ok["formula"])}
    key = [(Composition(f).reduced_formula, fam) for f, fam in zip(ext["formula"], ext["family"])]
    dup = ext["source"].isin(same_level).to_numpy() & np.array([k in own for k in key], dtype=bool)
    if dup.any():
        log.info("%d external rows are compounds this run labeled itself at the same level of theory "
                 "(%s): the run's own labels are used", int(dup.sum()), ", ".join(sorted(same_level)))
    return ext[~dup].reset_index(drop=True)


def run(
    features_path: str, labels_path: str, model_out: str, metrics_out: str, oof_out: str,
    settings_: TrainSettings | Mapping[str, Any], seed: int, config_hash: str = "",
    external_features_path: str | None = None, external_labels_path: str | None = None,
    label_settings_hash: str | None = None, learning_curve_out: str | None = None,
    targets_path: str | None = None,
) -> None:
    """Train on the PySCF labels, plus the external labels (``train.external_labels``) if given.

    ``label_settings_hash`` (the hash of the configured ``label:`` section) picks the labels when
    the file holds several levels of theory (:func:`one_settings_hash`). ``targets_path`` (the
    label-targets table) gives each PySCF label its family for per-family metrics. The outputs
    are written together or not at all: everything is checked first, and a failure removes them.
    """
    s = settings(settings_)
    features = tables.read_table(features_path, tables.STRUCTURE_FEATURES)
    labels = one_settings_hash(tables.read_table(labels_path, tables.LABELS), labels_path, label_settings_hash)
    names = {"features_name": str(features_path), "labels_name": str(labels_path)}
    families: dict[str, str] = {}
    if targets_path:
        t = tables.read_table(targets_path, tables.LABEL_TARGETS)
        families.update(zip(t["structure_id"], t["family"]))
    if external_labels_path:
        from matscreen.external import as_labels

        ext = same_level_duplicates_dropped(tables.read_table(external_labels_path, tables.EXTERNAL_LABELS), labels, families)
        ext_features = tables.read_table(external_features_path, tables.STRUCTURE_FEATURES)
        ext_features = ext_features[ext_features["structure_id"].isin(set(ext["structure_id"]))].reset_index(drop=True)
        if list(ext_features.columns) != list(features.columns):
            raise ValueError(f"{external_features_path}: feature columns differ from {features_path}")
        features = pd.concat([features, ext_features], ignore_index=True)
        labels = pd.concat([labels, as_labels(ext, s.targets)], ignore_index=True)
        families.update(zip(ext["structure_id"], ext["family"]))
        names = {"features_name": f"{features_path} + {external_features_path}",
                 "labels_name": f"{labels_path} + {external_labels_path}"}
        log.info("adding %d external label rows from %s", ext["structure_id"].nunique(), external_labels_path)
    outputs = [model_out, metrics_out, oof_out] + ([learning_curve_out] if learning_curve_out else [])
    with outputs_together(outputs):
        result = train(features, labels, s, seed, names, families or None)
        prov = provenance("train", {**settings_dict(s), "seed": seed}, config_hash)
        tables.check_frame(result.metrics, tables.CV_METRICS)  # every output valid before the first is written
        tables.check_frame(result.oof, tables.OOF_PREDICTIONS)
        tables.check_frame(result.learning_curve, tables.LEARNING_CURVE)
        write_text(model_out, models_to_json(result.models))
        todo = [(result.metrics, metrics_out, tables.CV_METRICS), (result.oof, oof_out, tables.OOF_PREDICTIONS)]
        if learning_curve_out:
            todo.append((result.learning_curve, learning_curve_out, tables.LEARNING_CURVE))
        tables.write_tables(todo, prov)
