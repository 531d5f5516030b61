"""Which targets exist, and the ``train:``/``screen:`` config checks the JSON schema cannot express.

Run by the Snakemake controller (:func:`matscreen.config.check_semantics`) before any job: light,
it imports neither LightGBM nor matminer (only the table contracts and, for a Parquet header, pyarrow).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matscreen import tables
from matscreen.config import ConfigError
from matscreen.train.settings import target_list


def target_columns() -> list[str]:
    """Columns of the labels table a model can be trained on: numeric, not part of the key."""
    return [
        c.name
        for c in tables.LABELS.columns
        if c.dtype in ("float64", "float32", "int64", "int32") and c.name not in tables.LABELS.key
    ]


#: Columns of an external table that are never targets.
_EXTERNAL_NON_TARGETS = {
    "formula",
    "family",
    "structure_id",
    "source",
    "row",
    *(f"{s}_species" for s in tables.SITE_LABELS),
}


def external_columns(path: str) -> list[str]:
    """Column names of an external label table, read cheaply (CSV header / Parquet schema only)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        import pandas as pd

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
            raise ConfigError(
                f"config key 'train.external_labels[{i}]': {path!r} does not exist "
                f"(paths are relative to the working directory {Path.cwd()})"
            ) from None
        except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for unreadable files
            raise ConfigError(
                f"config key 'train.external_labels[{i}]': cannot read the header of {path!r} "
                f"({type(exc).__name__}: {exc})"
            ) from None
    avail = available_targets(paths)
    for i, target in enumerate(targets):
        if target in avail:
            continue
        key = "train.target" if isinstance(train.get("target"), str) else f"train.target[{i}]"
        what = " (a text column)" if target in tables.LABELS.column_names else ""
        where = "the labels table" + (f" or of the external label tables ({', '.join(paths)})" if paths else "")
        raise ConfigError(
            f"config key '{key}': {target!r} is not a numeric label column of {where}{what}; "
            f"available: {', '.join(sorted(avail))}"
        )


def check_screen(config: dict[str, Any]) -> None:
    """screen.rank_by and screen.filters name targets that a model is trained for."""
    targets = target_list((config.get("train") or {}).get("target"))
    scr = config.get("screen") or {}
    if not targets:
        return
    if scr.get("rank_by") is not None and scr["rank_by"] not in targets:
        raise ConfigError(
            f"config key 'screen.rank_by': {scr['rank_by']!r} is not one of train.target ({', '.join(targets)})"
        )
    for i, f in enumerate(scr.get("filters") or []):
        if f.get("target") not in targets:
            raise ConfigError(
                f"config key 'screen.filters[{i}].target': {f.get('target')!r} is not one of "
                f"train.target ({', '.join(targets)})"
            )
        if f.get("min") is not None and f.get("max") is not None and f["min"] > f["max"]:
            raise ConfigError(f"config key 'screen.filters[{i}]': min {f['min']} > max {f['max']}")
