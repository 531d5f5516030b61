"""Stage 6: predict every candidate, rank, and choose the next candidates to label.

Prediction runs per shard (one job per shard on a cluster); :func:`rank` gathers the
shards. The score is an optimistic (lower-confidence-bound) estimate for a target that is
minimised: ``score = prediction - kappa * uncertainty`` (``maximize`` flips the sign), so
that ``kappa = 0`` ranks by prediction alone. The next candidates to label are those with
the best score among the not yet labeled, which trades exploitation against exploration
through the same ``kappa``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matscreen import tables
from matscreen.atomic import atomic_path, outputs_together
from matscreen.provenance import provenance
from matscreen.train import Ensemble

log = logging.getLogger(__name__)


def predict(
    model: Ensemble, candidates: pd.DataFrame, features: pd.DataFrame,
    candidates_name: str = "candidates", features_name: str = "features",
) -> pd.DataFrame:
    """Predictions for one shard, in the PREDICTIONS contract (score and rank not yet set).

    Each candidate must have exactly one feature row and each feature row its candidate
    (:func:`matscreen.tables.join_one_to_one`): a swapped or empty feature shard would
    otherwise give every candidate NaN features and the same prediction.
    """
    df = tables.join_one_to_one(candidates[["candidate_id", "family", "formula"]], features, "candidate_id",
                                left_name=candidates_name, right_name=features_name, complete="both")
    if len(df):
        mean, std = model.predict(df)
    else:
        mean = std = np.zeros(0)
    out = df[["candidate_id", "family", "formula"]].copy()
    out["prediction"] = mean
    out["uncertainty"] = std
    out["score"] = np.nan
    out["rank"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out


def score(predictions: pd.DataFrame, settings: Mapping[str, Any]) -> np.ndarray:
    kappa = float(settings.get("kappa", 1.0))
    sign = -1.0 if settings.get("maximize", False) else 1.0
    return sign * predictions["prediction"].to_numpy() - kappa * predictions["uncertainty"].fillna(0).to_numpy()


def rank(predictions: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    """Score and rank all candidates (ties broken by candidate_id for reproducibility)."""
    df = predictions.copy()
    df["score"] = score(df, settings)
    df = df.sort_values(["score", "candidate_id"], kind="mergesort").reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1, dtype="int64")
    return df


def next_to_label(ranked: pd.DataFrame, labeled_candidates: set[str], settings: Mapping[str, Any]) -> pd.DataFrame:
    """The best-scored candidates that have no label yet, at most ``next_to_label`` of them."""
    n = int(settings.get("next_to_label", 10))
    fresh = ranked[~ranked["candidate_id"].isin(labeled_candidates)]
    return fresh.head(n).reset_index(drop=True)


def run_predict(model_path: str, candidates_path: str, features_path: str, out_path: str, config_hash: str = "") -> None:
    model = Ensemble.load(model_path)
    candidates = tables.read_table(candidates_path, tables.CANDIDATES)
    features = tables.read_table(features_path, tables.CANDIDATE_FEATURES)
    preds = predict(model, candidates, features, str(candidates_path), str(features_path))
    tables.write_table(preds, out_path, tables.PREDICTIONS, provenance("screen", {"model": Path(model_path).name}, config_hash))
    log.info("%s: predicted %d candidates", candidates_path, len(preds))


def run_rank(
    prediction_paths: list[str], targets_path: str, ranked_out: str, top_csv: str, next_out: str,
    settings: dict[str, Any], config_hash: str = "",
) -> None:
    preds = tables.read_tables(prediction_paths, tables.PREDICTIONS)
    ranked = rank(preds, settings)
    targets = tables.read_table(targets_path, tables.LABEL_TARGETS)
    labeled = set(targets["candidate_id"].dropna())
    prov = provenance("screen", settings, config_hash)
    top = ranked.head(int(settings.get("top_n", 50)))
    with outputs_together([ranked_out, next_out, top_csv]):
        tables.write_tables([(ranked, ranked_out, tables.PREDICTIONS),
                             (next_to_label(ranked, labeled, settings), next_out, tables.PREDICTIONS)], prov)
        with atomic_path(top_csv) as tmp:
            top.to_csv(tmp, index=False, float_format="%.6g")
    log.info("ranked %d candidates; top %d written to %s", len(ranked), len(top), top_csv)
