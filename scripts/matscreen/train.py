"""Stage 5: LightGBM models with honest cross-validation and ensemble uncertainty.

Honest means: folds are grouped by reduced formula (polymorphs of one composition never
sit on both sides of a split), every metric is computed on held-out rows only, and the
uncertainty of a prediction is the spread of an ensemble of models trained on bootstrap
resamples with different seeds, whose calibration (how often the error is within one
standard deviation) is reported next to the error.

The fitted model is one JSON file: the feature list, the target, the settings and the
ensemble's boosters as LightGBM text models (``lightgbm.Booster(model_str=...)``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from matscreen import tables
from matscreen.atomic import outputs_together, write_text
from matscreen.config import ConfigError, semantic_check
from matscreen.provenance import provenance

log = logging.getLogger(__name__)

#: Prefix of features that only structures have (never used for a model that screens compositions).
STRUCTURE_ONLY_PREFIX = "struct_"


def target_columns() -> list[str]:
    """Columns of the labels table a model can be trained on: numeric, not part of the key."""
    return [c.name for c in tables.LABELS.columns
            if c.dtype in ("float64", "float32", "int64", "int32") and c.name not in tables.LABELS.key]


@semantic_check
def _check_train(config: dict[str, Any]) -> None:
    train = config.get("train") or {}
    target = train.get("target")
    if target is not None and target not in target_columns():
        what = "is not a column of the labels table" if target not in tables.LABELS.column_names \
            else "is not a numeric label column"
        raise ConfigError(f"config key 'train.target': {target!r} {what} (choose one of {', '.join(target_columns())})")


@dataclass
class Ensemble:
    """An ensemble of LightGBM boosters over a fixed feature list."""

    features: list[str]
    target: str
    boosters: list[lgb.Booster]
    settings: dict[str, Any]

    def predict(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over the ensemble."""
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise ValueError(f"features missing from the table: {missing[:5]}{'...' if len(missing) > 5 else ''}")
        arr = X[self.features].to_numpy(dtype=np.float64)
        preds = np.stack([b.predict(arr, num_threads=1) for b in self.boosters])
        return preds.mean(axis=0), preds.std(axis=0, ddof=1) if len(self.boosters) > 1 else np.zeros(arr.shape[0])

    def to_json(self) -> str:
        return json.dumps(
            {
                "features": self.features,
                "target": self.target,
                "settings": self.settings,
                "boosters": [b.model_to_string() for b in self.boosters],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Ensemble:
        d = json.loads(text)
        return cls(d["features"], d["target"], [lgb.Booster(model_str=s) for s in d["boosters"]], d["settings"])

    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        """Read ``model.json``; a missing, truncated or foreign file is a ValueError naming it."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise FileNotFoundError(f"{path}: cannot read the model ({exc.strerror or exc})") from None
        try:
            return cls.from_json(text)
        except (ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
            raise ValueError(f"{path}: not a matscreen model.json (truncated or from another tool?): "
                             f"{type(exc).__name__}: {exc}") from None


def lgbm_params(settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """LightGBM parameters: the configured ones plus what makes runs reproducible."""
    params = dict(settings.get("lightgbm") or {})
    params.update(
        objective="regression",
        seed=seed,
        deterministic=True,
        force_row_wise=True,
        num_threads=1,  # measured: 2 threads are 4x slower than 1 on a 2-core machine
        verbosity=-1,
    )
    return params


def feature_columns(features: pd.DataFrame) -> list[str]:
    """Numeric feature columns usable for screening (keys, errors and structure-only ones excluded)."""
    skip = {"structure_id", "candidate_id", "featurize_error"}
    return [c for c in features.columns if c not in skip and not c.startswith(STRUCTURE_ONLY_PREFIX)]


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


def fit_ensemble(X: pd.DataFrame, y: np.ndarray, settings: Mapping[str, Any], seed: int) -> list[lgb.Booster]:
    """Train ``ensemble_size`` boosters, each on a seeded bootstrap resample (the first on all rows)."""
    n_models = int(settings.get("ensemble_size", 5))
    rounds = int(settings.get("num_boost_round", 300))
    rng = np.random.default_rng(seed)
    arr = X.to_numpy(dtype=np.float64)
    boosters = []
    for i in range(n_models):
        idx = np.arange(len(y)) if i == 0 else rng.integers(0, len(y), len(y))
        data = lgb.Dataset(arr[idx], label=y[idx], feature_name=list(X.columns), free_raw_data=True,
                           params={"verbosity": -1})
        boosters.append(lgb.train(lgbm_params(settings, seed + i), data, num_boost_round=rounds))
    return boosters


def _groups(formulas: pd.Series) -> np.ndarray:
    from pymatgen.core import Composition

    return np.array([Composition(f).reduced_formula for f in formulas])


def cross_validate(
    data: pd.DataFrame, features: list[str], target: str, settings: Mapping[str, Any], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grouped K-fold CV; returns (metrics in the CV_METRICS contract, out-of-fold predictions)."""
    groups = _groups(data["formula"])
    unique = np.array(sorted(set(groups)))
    n_folds = min(int(settings.get("cv_folds", 5)), len(unique))
    if n_folds < 2:
        raise ValueError(f"cross-validation needs labels of at least 2 compositions, got {len(unique)}")
    rng = np.random.default_rng(seed)
    fold_of_group = dict(zip(rng.permutation(unique), np.arange(len(unique)) % n_folds))
    folds = np.array([fold_of_group[g] for g in groups])
    y = data[target].to_numpy(dtype=np.float64)
    pred = np.full(len(y), np.nan)
    std = np.full(len(y), np.nan)
    rows = []
    for k in range(n_folds):
        test = folds == k
        ens = Ensemble(features, target, fit_ensemble(data.loc[~test, features], y[~test], settings, seed + 1000 * k), {})
        pred[test], std[test] = ens.predict(data.loc[test])
        rows += _metrics(str(k), y[test], pred[test], std[test], int((~test).sum()))
        log.info("fold %d/%d: %d train, %d test, MAE %.4f", k + 1, n_folds, (~test).sum(), test.sum(),
                 np.mean(np.abs(y[test] - pred[test])))
    rows += _metrics("all", y, pred, std, len(y))
    oof = pd.DataFrame({"structure_id": data["structure_id"], "fold": folds.astype("int64"),
                        "y_true": y, "y_pred": pred, "y_std": std})
    return pd.DataFrame(rows, columns=["fold", "metric", "value"]), oof


def _metrics(fold: str, y: np.ndarray, p: np.ndarray, s: np.ndarray, n_train: int) -> list[tuple[str, str, float]]:
    err = p - y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    out = {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": float(1 - np.sum(err**2) / ss_tot) if ss_tot > 0 else float("nan"),
        "spearman": float(spearmanr(y, p).statistic) if len(y) > 2 and np.ptp(p) > 0 and np.ptp(y) > 0 else float("nan"),
        "coverage_1sigma": float(np.mean(np.abs(err) <= s)),
        "n_train": float(n_train),
        "n_test": float(len(y)),
    }
    return [(fold, k, v) for k, v in out.items()]


def train(
    features: pd.DataFrame, labels: pd.DataFrame, settings: Mapping[str, Any], seed: int,
    names: Mapping[str, str] | None = None,
) -> tuple[Ensemble, pd.DataFrame, pd.DataFrame]:
    """Cross-validate, then fit the final ensemble on all labeled rows."""
    target = settings.get("target", "formation_energy_ev_per_atom")
    data = training_frame(features, labels, target, **(names or {}))
    feats = feature_columns(features)
    if len(data) < int(settings.get("min_labels", 4)):
        raise ValueError(
            f"only {len(data)} labeled structures with an ok '{target}' (need train.min_labels = "
            f"{settings.get('min_labels', 4)}); label more structures (label.select) or check labels.parquet"
        )
    log.info("training on %d labeled structures, %d features, target %s", len(data), len(feats), target)
    metrics, oof = cross_validate(data, feats, target, settings, seed)
    ens = Ensemble(feats, target, fit_ensemble(data[feats], data[target].to_numpy(np.float64), settings, seed), dict(settings))
    return ens, metrics, oof


def run(
    features_path: str, labels_path: str, model_out: str, metrics_out: str, oof_out: str,
    settings: dict[str, Any], seed: int, config_hash: str = "",
    external_features_path: str | None = None, external_labels_path: str | None = None,
    label_settings_hash: str | None = None,
) -> None:
    """Train on the PySCF labels, plus the external labels (``train.external_labels``) if given.

    ``label_settings_hash`` (the hash of the configured ``label:`` section) picks the labels when
    the file holds several levels of theory (:func:`one_settings_hash`). The three outputs are
    written together or not at all: everything is checked first, and a failure removes them.
    """
    features = tables.read_table(features_path, tables.STRUCTURE_FEATURES)
    labels = one_settings_hash(tables.read_table(labels_path, tables.LABELS), labels_path, label_settings_hash)
    names = {"features_name": str(features_path), "labels_name": str(labels_path)}
    if external_labels_path:
        from matscreen.external import as_labels

        target = settings.get("target", "formation_energy_ev_per_atom")
        ext = tables.read_table(external_labels_path, tables.EXTERNAL_LABELS)
        ext_features = tables.read_table(external_features_path, tables.STRUCTURE_FEATURES)
        if list(ext_features.columns) != list(features.columns):
            raise ValueError(f"{external_features_path}: feature columns differ from {features_path}")
        features = pd.concat([features, ext_features], ignore_index=True)
        labels = pd.concat([labels, as_labels(ext, target)], ignore_index=True)
        names = {"features_name": f"{features_path} + {external_features_path}",
                 "labels_name": f"{labels_path} + {external_labels_path}"}
        log.info("adding %d external labels from %s", len(ext), external_labels_path)
    with outputs_together([model_out, metrics_out, oof_out]):
        ens, metrics, oof = train(features, labels, settings, seed, names)
        prov = provenance("train", {**settings, "seed": seed}, config_hash)
        tables.check_frame(metrics, tables.CV_METRICS)  # every output valid before the first is written
        tables.check_frame(oof, tables.OOF_PREDICTIONS)
        write_text(model_out, ens.to_json())
        tables.write_tables([(metrics, metrics_out, tables.CV_METRICS), (oof, oof_out, tables.OOF_PREDICTIONS)], prov)
    pooled = metrics[metrics["fold"] == "all"].set_index("metric")["value"]
    log.info("CV (pooled out-of-fold): MAE %.4f, RMSE %.4f, R2 %.3f, 1-sigma coverage %.2f",
             pooled["mae"], pooled["rmse"], pooled["r2"], pooled["coverage_1sigma"])
