"""The model: an ensemble of LightGBM boosters per target, its JSON file and its parameters."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from matscreen.train.predict_fast import Forest
from matscreen.train.settings import TrainSettings

#: Prefix of features that only structures have (never used for a model that screens compositions).
STRUCTURE_ONLY_PREFIX = "struct_"

#: Rows from which :meth:`Ensemble.predict` compiles the boosters (:mod:`matscreen.train.predict_fast`, ~1 ms
#: per tree, once per ensemble) instead of calling ``Booster.predict`` (~130 ns per tree and row).
FAST_MIN_ROWS = 10_000


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
        :mod:`matscreen.train.predict_fast` (the same doubles as ``Booster.predict``, ~10x faster).
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
        """The boosters compiled for :mod:`matscreen.train.predict_fast` (once), or None where LightGBM predicts."""
        key = tuple(id(b) for b in self.boosters)
        if self._fast is None or self._fast[0] != key:
            self._fast = (key, Forest.from_boosters(self.boosters, len(self.features)))
        return self._fast[1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "target": self.target,
            "settings": self.settings,
            "std_scale": self.std_scale,
            "params": self.params,
            "boosters": [b.model_to_string() for b in self.boosters],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ensemble:
        return cls(
            list(d["features"]),
            d["target"],
            [lgb.Booster(model_str=s) for s in d["boosters"]],
            dict(d["settings"]),
            float(d.get("std_scale", 1.0)),
            dict(d.get("params") or {}),
        )

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
        raise ValueError(
            f"{path}: not a matscreen model.json (truncated or from another tool?): {type(exc).__name__}: {exc}"
        ) from None


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
