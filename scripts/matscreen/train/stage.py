"""The stage: training data from features and labels, :func:`train` per target, :func:`run` (the rule's)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from matscreen import tables
from matscreen.atomic import outputs_together, write_text
from matscreen.config import settings_dict
from matscreen.provenance import provenance
from matscreen.train.checks import external_columns
from matscreen.train.cv import cross_validate, cv_group_labels, fit_model, learning_curve
from matscreen.train.model import Ensemble, feature_columns, models_to_json
from matscreen.train.settings import TrainSettings, resolve_settings

log = logging.getLogger(__name__)


# --- data ----------------------------------------------------------------------------------------


def training_frame(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    target: str,
    features_name: str = "structure features",
    labels_name: str = "labels",
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
    df = tables.join_one_to_one(
        ok, features, "structure_id", left_name=labels_name, right_name=features_name, complete="left"
    )
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
        log.warning(
            "%s: labels of %d settings hashes; training on the configured one (%s, %d of %d rows)",
            labels_path,
            len(hashes),
            wanted,
            len(keep),
            len(labels),
        )
        return keep.reset_index(drop=True)
    raise ValueError(
        f"{labels_path}: labels of {len(hashes)} label settings (settings_hash {', '.join(hashes)}), none of them "
        f"the configured one ({wanted}); train on the labels of one level of theory "
        "(re-run gather/label with the current label: settings)"
    )


@dataclass
class TrainResult:
    models: dict[str, Ensemble]
    metrics: pd.DataFrame
    oof: pd.DataFrame
    learning_curve: pd.DataFrame

    def __iter__(self):  # (ensemble of the primary target, metrics, oof): the one-target API
        return iter((next(iter(self.models.values())), self.metrics, self.oof))


def train(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    settings_: TrainSettings | Mapping[str, Any],
    seed: int,
    names: Mapping[str, str] | None = None,
    families: Mapping[str, str] | None = None,
) -> TrainResult:
    """Per target: cross-validate, calibrate, then fit the final ensemble on all labeled rows.

    Unpacks as ``(ensemble of the first target, metrics, oof)``; ``.models`` has every target's.
    """
    s = resolve_settings(settings_)
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
        pooled = cv.metrics[(cv.metrics["fold"] == "all") & (cv.metrics["family"] == "all")].set_index("metric")[
            "value"
        ]
        log.info(
            "%s CV (pooled out-of-fold): MAE %.4f, RMSE %.4f, R2 %.3f, 1-sigma coverage %.2f -> %.2f "
            "calibrated (factor %.2f)",
            target,
            pooled["mae"],
            pooled["rmse"],
            pooled["r2"],
            pooled["coverage_1sigma"],
            pooled["coverage_1sigma_calibrated"],
            pooled["calibration_factor"],
        )
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
        log.info(
            "%d external rows are compounds this run labeled itself at the same level of theory "
            "(%s): the run's own labels are used",
            int(dup.sum()),
            ", ".join(sorted(same_level)),
        )
    return ext[~dup].reset_index(drop=True)


def run(
    features_path: str,
    labels_path: str,
    model_out: str,
    metrics_out: str,
    oof_out: str,
    settings_: TrainSettings | Mapping[str, Any],
    seed: int,
    config_hash: str = "",
    external_features_path: str | None = None,
    external_labels_path: str | None = None,
    label_settings_hash: str | None = None,
    learning_curve_out: str | None = None,
    targets_path: str | None = None,
) -> None:
    """Train on the PySCF labels, plus the external labels (``train.external_labels``) if given.

    ``label_settings_hash`` (the hash of the configured ``label:`` section) picks the labels when
    the file holds several levels of theory (:func:`one_settings_hash`). ``targets_path`` (the
    label-targets table) gives each PySCF label its family for per-family metrics. The outputs
    are written together or not at all: everything is checked first, and a failure removes them.
    """
    s = resolve_settings(settings_)
    features = tables.read_table(features_path, tables.STRUCTURE_FEATURES)
    labels = one_settings_hash(tables.read_table(labels_path, tables.LABELS), labels_path, label_settings_hash)
    names = {"features_name": str(features_path), "labels_name": str(labels_path)}
    families: dict[str, str] = {}
    if targets_path:
        t = tables.read_table(targets_path, tables.LABEL_TARGETS)
        families.update(zip(t["structure_id"], t["family"]))
    if external_labels_path:
        from matscreen.train.external import as_labels

        ext = same_level_duplicates_dropped(
            tables.read_table(external_labels_path, tables.EXTERNAL_LABELS), labels, families
        )
        ext_features = tables.read_table(external_features_path, tables.STRUCTURE_FEATURES)
        ext_features = ext_features[ext_features["structure_id"].isin(set(ext["structure_id"]))].reset_index(drop=True)
        if list(ext_features.columns) != list(features.columns):
            raise ValueError(f"{external_features_path}: feature columns differ from {features_path}")
        features = pd.concat([features, ext_features], ignore_index=True)
        labels = pd.concat([labels, as_labels(ext, s.targets)], ignore_index=True)
        families.update(zip(ext["structure_id"], ext["family"]))
        names = {
            "features_name": f"{features_path} + {external_features_path}",
            "labels_name": f"{labels_path} + {external_labels_path}",
        }
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
