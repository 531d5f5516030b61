"""Stage 6: predict every candidate, rank, and choose the next candidates to label.

Prediction runs per shard (one job per shard on a cluster), in blocks of ``screen.block_rows``
rows, with every model of ``model.json`` (one per ``train.target``): each target's prediction
and calibrated uncertainty are the columns ``pred__<target>`` and ``std__<target>``.
:func:`rank` gathers the shards. Only candidates inside every ``screen.filters`` window (on
predicted targets, e.g. a band gap between 1 and 3 eV) are ranked; the score is an optimistic
(lower-confidence-bound) estimate of the ``screen.rank_by`` target, minimised:
``score = prediction - kappa * uncertainty`` (``maximize`` flips the sign), so that
``kappa = 0`` ranks by prediction alone. The next candidates to label are those with the best
score among the not yet labeled (neither a label target of the run nor a compound the external
labels give the ranking target), which trades exploitation against exploration through the
same ``kappa``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matscreen import tables
from matscreen.atomic import atomic_path, outputs_together
from matscreen.config import build_settings, settings_dict
from matscreen.provenance import provenance
from matscreen.train import Ensemble, load_models

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScreenSettings:
    """The ``screen:`` config section, resolved once; the schema holds the defaults."""

    rank_by: str | None
    filters: tuple[Mapping[str, Any], ...]
    kappa: float
    maximize: bool
    top_n: int
    next_to_label: int
    block_rows: int
    threads: int


def settings(section: Mapping[str, Any] | ScreenSettings | None) -> ScreenSettings:
    return build_settings(ScreenSettings, "screen", section)


def pred_column(target: str) -> str:
    return f"pred__{target}"


def std_column(target: str) -> str:
    return f"std__{target}"


def predict(
    model: Ensemble | Mapping[str, Ensemble], candidates: pd.DataFrame, features: pd.DataFrame,
    candidates_name: str = "candidates", features_name: str = "features",
    block_rows: int = 100_000, threads: int = 1,
) -> pd.DataFrame:
    """Predictions for one shard, in the PREDICTIONS contract (score and rank not yet set).

    Each candidate must have exactly one feature row and each feature row its candidate
    (:func:`matscreen.tables.join_one_to_one`): a swapped or empty feature shard would
    otherwise give every candidate NaN features and the same prediction. ``prediction`` and
    ``uncertainty`` are the first (primary) target's; every target has its own columns.
    """
    models = {model.target: model} if isinstance(model, Ensemble) else dict(model)
    out = candidates[["candidate_id", "family", "formula"]].reset_index(drop=True)
    # the rows of the join of candidates with their features (one to one), without copying the features
    pos = tables.one_to_one_positions(out, features, "candidate_id", left_name=candidates_name,
                                      right_name=features_name, complete="both")
    n = len(out)
    in_order = bool((pos == np.arange(n)).all())
    cols: dict[str, np.ndarray] = {}
    for target, ens in models.items():
        mean, std = np.empty(n), np.empty(n)
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            rows = features.iloc[start:stop] if in_order else features.iloc[pos[start:stop]]
            mean[start:stop], std[start:stop] = ens.predict(rows, num_threads=threads)
        cols[pred_column(target)], cols[std_column(target)] = mean, std
    primary = next(iter(models))
    out["target"] = primary
    out["prediction"] = cols[pred_column(primary)]
    out["uncertainty"] = cols[std_column(primary)]
    out["passes_filters"] = pd.array([pd.NA] * n, dtype="boolean")
    out["score"] = np.nan
    out["rank"] = pd.array([pd.NA] * n, dtype="Int64")
    for name, values in cols.items():
        out[name] = values
    return out


def score(predictions: pd.DataFrame, settings_: Mapping[str, Any] | ScreenSettings) -> np.ndarray:
    s = settings(settings_)
    sign = -1.0 if s.maximize else 1.0
    return sign * predictions["prediction"].to_numpy(dtype=np.float64) - \
        float(s.kappa) * predictions["uncertainty"].fillna(0).to_numpy(dtype=np.float64)


def _column(df: pd.DataFrame, target: str, kind: str, key: str) -> np.ndarray:
    col = pred_column(target) if kind == "pred" else std_column(target)
    if col in df.columns:
        return df[col].to_numpy(dtype=np.float64)
    if kind == "pred" and "target" in df.columns and len(df) and (df["target"] == target).all():
        return df["prediction"].to_numpy(dtype=np.float64)
    have = sorted(c[len("pred__"):] for c in df.columns if c.startswith("pred__"))
    raise ValueError(f"{key}: no predictions of {target!r} (the model predicts {', '.join(have) or 'one target only'})")


def filter_mask(predictions: pd.DataFrame, s: ScreenSettings) -> np.ndarray:
    """Candidates inside every ``screen.filters`` window (on the predicted mean)."""
    ok = np.ones(len(predictions), dtype=bool)
    for i, f in enumerate(s.filters):
        values = _column(predictions, f["target"], "pred", f"screen.filters[{i}].target")
        with np.errstate(invalid="ignore"):
            if f.get("min") is not None:
                ok &= values >= float(f["min"])
            if f.get("max") is not None:
                ok &= values <= float(f["max"])
    return ok


def rank(predictions: pd.DataFrame, settings_: Mapping[str, Any] | ScreenSettings) -> pd.DataFrame:
    """Filter, score and rank all candidates (ties broken by candidate_id for reproducibility).

    Candidates outside a filter window stay in the table after the ranked ones, with no rank.
    """
    s = settings(settings_)
    df = predictions.copy()
    if "passes_filters" not in df.columns:  # shards of a one-target model written by older code
        df["target"] = df.get("target")
        df["passes_filters"] = pd.NA
    if s.rank_by is not None:
        df["prediction"] = _column(df, s.rank_by, "pred", "screen.rank_by")
        if std_column(s.rank_by) in df.columns:
            df["uncertainty"] = df[std_column(s.rank_by)]
        df["target"] = s.rank_by
    passes = filter_mask(df, s)
    df["passes_filters"] = passes
    df["score"] = score(df, s)
    df = df.take(_rank_order(passes, df["score"].to_numpy(dtype=np.float64), df["candidate_id"])).reset_index(drop=True)
    n_pass = int(passes.sum())
    rank_ = np.zeros(len(df), dtype=np.int64)
    rank_[:n_pass] = np.arange(1, n_pass + 1)
    df["rank"] = pd.arrays.IntegerArray(rank_, np.arange(len(df)) >= n_pass)
    return df


def _rank_order(passes: np.ndarray, score_: np.ndarray, candidate_id: pd.Series) -> np.ndarray:
    """Row order of the ranking: passing candidates first, then by score (NaN last), then by
    candidate_id; stable (what ``sort_values([...], kind="mergesort")`` gives). Only the rows that
    tie on (passes, score) have their ids compared: sorting a million id strings takes seconds."""
    out = ~np.asarray(passes, dtype=bool)
    order = np.lexsort((score_, out))
    s, o = score_[order], out[order]
    same = (o[1:] == o[:-1]) & ((s[1:] == s[:-1]) | (np.isnan(s[1:]) & np.isnan(s[:-1])))
    if not same.any():
        return order
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    rows = order[tied]
    ids = candidate_id.to_numpy(dtype=object)[rows]
    id_rank = np.zeros(len(order), dtype=np.int64)
    id_rank[rows] = np.unique(ids, return_inverse=True)[1].reshape(-1)
    return np.lexsort((id_rank, score_, out))


def rank_target(predictions: pd.DataFrame, settings_: Mapping[str, Any] | ScreenSettings) -> str:
    """The target ranked by: ``screen.rank_by``, else the model's first (the predictions' ``target``)."""
    s = settings(settings_)
    return s.rank_by or (str(predictions["target"].iloc[0]) if len(predictions) else "")


def trained_formulas(external: pd.DataFrame | None, target: str) -> set[str]:
    """Reduced formulas that the prepared external labels (EXTERNAL_LABELS) give ``target`` for:
    compounds the model already trains on, so neither the next-to-label list nor an
    active-learning round proposes them (their check would test the model on its training data)."""
    if external is None or not len(external):
        return set()
    from pymatgen.core import Composition

    return {Composition(f).reduced_formula for f in external.loc[external["target"] == target, "formula"].unique()}


def next_to_label(ranked: pd.DataFrame, labeled_candidates: set[str],
                  settings_: Mapping[str, Any] | ScreenSettings, trained: set[str] = frozenset()) -> pd.DataFrame:
    """The best-scored candidates that pass the filters and have no label yet (no candidate id of
    the run's label targets, no reduced formula of ``trained``), at most ``next_to_label``."""
    s = settings(settings_)
    fresh = ranked[~ranked["candidate_id"].isin(labeled_candidates) & ranked["rank"].notna()]
    if trained and len(fresh):
        from pymatgen.core import Composition

        reduced = {f: Composition(f).reduced_formula for f in fresh["formula"].unique()}
        fresh = fresh[~fresh["formula"].map(reduced).isin(trained)]
    return fresh.head(s.next_to_label).reset_index(drop=True)


def run_predict(model_path: str, candidates_path: str, features_path: str, out_path: str, config_hash: str = "",
                settings_: Mapping[str, Any] | ScreenSettings | None = None) -> None:
    s = settings(settings_)
    models = load_models(model_path)
    candidates = tables.read_table(candidates_path, tables.CANDIDATES)
    features = tables.read_table(features_path, tables.CANDIDATE_FEATURES)
    preds = predict(models, candidates, features, str(candidates_path), str(features_path), s.block_rows, s.threads)
    tables.write_table(preds, out_path, tables.PREDICTIONS,
                       provenance("screen", {"model": Path(model_path).name, "targets": list(models)}, config_hash))
    log.info("%s: predicted %d candidates (%s)", candidates_path, len(preds), ", ".join(models))


def run_rank(
    prediction_paths: list[str], targets_path: str, ranked_out: str, top_csv: str, next_out: str,
    settings_: Mapping[str, Any] | ScreenSettings, config_hash: str = "", external_paths: Sequence[str] = (),
) -> None:
    """The rule ``rank``: gather the shards, rank, write the top list and the next candidates to
    label (``external_paths``: the prepared external labels, whose compounds are not proposed)."""
    s = settings(settings_)
    preds = tables.read_tables(prediction_paths, tables.PREDICTIONS)
    ranked = rank(preds, s)
    targets = tables.read_table(targets_path, tables.LABEL_TARGETS)
    labeled = set(targets["candidate_id"].dropna())
    external = tables.read_tables(external_paths, tables.EXTERNAL_LABELS) if external_paths else None
    trained = trained_formulas(external, rank_target(preds, s))
    prov = provenance("screen", settings_dict(s), config_hash)
    top = ranked[ranked["rank"].notna()].head(s.top_n)
    with outputs_together([ranked_out, next_out, top_csv]):
        tables.write_tables([(ranked, ranked_out, tables.PREDICTIONS),
                             (next_to_label(ranked, labeled, s, trained), next_out, tables.PREDICTIONS)], prov)
        with atomic_path(top_csv) as tmp:
            top.to_csv(tmp, index=False, float_format="%.6g")
    n_pass = int(ranked["rank"].notna().sum())
    log.info("ranked %d of %d candidates (%d outside the screen.filters windows); top %d written to %s",
             n_pass, len(ranked), len(ranked) - n_pass, len(top), top_csv)
