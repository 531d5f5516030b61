"""Featurizing a frame: blocks of rows through the fast paths, the rest through matminer row by row,
errors per row in ``featurize_error``; the output columns depend only on the settings."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from matscreen.families import SITE_LABELS
from matscreen.featurize import site as featurize_site
from matscreen.featurize.compositions import composition_block, is_null, row_composition
from matscreen.featurize.sets import FeatureSet, feature_names, feature_sets
from matscreen.featurize.settings import FeaturizeSettings, resolve_settings

log = logging.getLogger(__name__)


class _Errors:
    """Per-row error messages, joined with '; '."""

    def __init__(self, n: int) -> None:
        self.msgs: list[list[str] | None] = [None] * n

    def add(self, i: int, msg: str) -> None:
        if self.msgs[i] is None:
            self.msgs[i] = []
        self.msgs[i].append(msg)

    def add_many(self, errs: np.ndarray) -> None:
        for i in np.flatnonzero(pd.notna(errs)):
            self.add(int(i), str(errs[i]))

    def column(self) -> np.ndarray:
        return np.array([None if m is None else "; ".join(m) for m in self.msgs], dtype=object)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _run_matminer(
    fs: FeatureSet, objects: Sequence[Any], rows: np.ndarray, out: np.ndarray, errors: _Errors, every_s: float
) -> None:
    """Featurize ``objects[rows]`` one by one with matminer (the reference and the slow path)."""
    if len(rows) == 0:
        return
    name = type(fs.featurizer).__name__
    log.info("%s: %d rows through matminer (no fast path)", fs.key, len(rows))
    t0 = last = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, i in enumerate(rows):
            try:
                out[i] = np.asarray(fs.featurizer.featurize(objects[i]), dtype=float)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the shard
                errors.add(int(i), f"{name}: {_short(exc)}")
            now = time.monotonic()
            if now - last >= every_s:
                last = now
                rate = (k + 1) / (now - t0)
                log.info(
                    "%s: %d/%d rows (%.0f rows/s, %.0f s left)",
                    fs.key,
                    k + 1,
                    len(rows),
                    rate,
                    (len(rows) - k - 1) / rate,
                )
    log.info("%s: %d rows in %.1f s", fs.key, len(rows), time.monotonic() - t0)


class _Compositions:
    """Lazily built pymatgen Compositions of a block's rows (only the matminer path needs them)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.cache: dict[int, Any] = {}

    def __getitem__(self, i: int) -> Any:
        if i not in self.cache:
            row = self.df.iloc[i]
            occ = {s: row.get(f"{s}_species") for s in SITE_LABELS}
            self.cache[i] = row_composition(str(row["family"]), occ, row.get("formula"))
        return self.cache[i]


def _structures(df: pd.DataFrame, errors: _Errors) -> tuple[list[Any], np.ndarray]:
    from matscreen.structjson import UnsafeStructureJSON, structure_from_json

    objs: list[Any] = [None] * len(df)
    if "structure" not in df.columns:
        return objs, np.zeros(0, dtype=np.int64)
    texts = df["structure"].to_numpy(dtype=object)
    ids = df["structure_id"].to_numpy(dtype=object) if "structure_id" in df.columns else [None] * len(df)
    rows = []
    for i, t in enumerate(texts):
        if is_null(t):
            continue
        try:
            objs[i] = structure_from_json(t, f"structure of row {i}" + (f" ({ids[i]})" if ids[i] is not None else ""))
            rows.append(i)
        except UnsafeStructureJSON:
            raise  # a table that names code to import is not a per-row error: stop
        except Exception as exc:  # noqa: BLE001
            errors.add(i, f"structure JSON: {_short(exc)}")
    return objs, np.array(rows, dtype=np.int64)


def _featurize_block(
    df: pd.DataFrame,
    sets: Sequence[FeatureSet],
    s: FeaturizeSettings,
    out: np.ndarray,
    fast_rows: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Fill ``out`` (len(df), n_features) for one block; returns the error column.

    ``fast_rows`` (optional, filled in): per composition feature set, which rows the fast path produced.
    """
    n = len(df)
    errors = _Errors(n)
    need_comp = any(fs.kind == "composition" for fs in sets)
    block = None
    if need_comp:
        block, comp_err = composition_block(df)
        errors.add_many(comp_err)
    comps = _Compositions(df)
    structs: list[Any] | None = None
    struct_rows = np.zeros(0, dtype=np.int64)
    col = 0
    for fs in sets:
        width = len(fs.names)
        view = out[:, col : col + width]  # written in place
        view[:] = np.nan
        if fs.kind == "composition":
            assert block is not None
            todo = np.flatnonzero(block.valid)
            fast_done = np.zeros(n, dtype=bool)
            if s.fast_path and fs.fast is not None:
                try:
                    vals, handled = fs.fast(block)
                    view[:] = vals
                    fast_done = block.valid & np.asarray(handled, dtype=bool)
                    todo = np.flatnonzero(block.valid & ~fast_done)
                except Exception as exc:  # noqa: BLE001 - fall back to the reference for this block
                    log.warning("%s: fast path failed on a block (%s); using matminer", fs.key, _short(exc))
            if fast_rows is not None:
                fast_rows[fs.key] = fast_done
            _run_matminer(fs, comps, todo, view, errors, s.progress_every_s)
        elif fs.kind == "site":
            species = {
                lab: (
                    df[f"{lab}_species"].to_numpy(dtype=object)
                    if f"{lab}_species" in df.columns
                    else np.full(n, None, dtype=object)
                )
                for lab in SITE_LABELS
            }
            vals, errs = featurize_site.site_features(
                df["family"].astype(object).to_numpy(), species, s.anion_cn, s.radius_fallback
            )
            view[:] = vals
            errors.add_many(errs)
        elif fs.kind == "structure":
            if structs is None:
                structs, struct_rows = _structures(df, errors)
            _run_matminer(fs, structs, struct_rows, view, errors, s.progress_every_s)
        col += width
    return errors.column()


def feature_values(
    df: pd.DataFrame,
    settings: FeaturizeSettings | Mapping[str, Any] | None,
    dtype: type = np.float64,
    fast_rows: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (len(df), len(feature_names)) in ``dtype`` and the error column (object).

    :func:`featurize_frame` is this plus the id column, in float32; the float64 matrix is what
    the tests compare with matminer. Pass a dict as ``fast_rows`` to learn, per composition
    feature set (key ``FeatureSet.key``), which rows the fast path produced (a bool array): the
    others fell back to matminer (rows the fast path does not handle, or a block where it raised).
    """
    s = resolve_settings(settings)
    if "family" not in df.columns:
        raise KeyError(f"featurize: input frame lacks column 'family' (has {list(df.columns)[:12]}...)")
    sets = feature_sets(s)
    names = [nm for fs in sets for nm in fs.names]
    n = len(df)
    values = np.empty((n, len(names)), dtype=dtype)
    errors = np.full(n, None, dtype=object)
    step = s.block_rows
    if fast_rows is not None:
        fast_rows.clear()
        fast_rows.update({fs.key: np.zeros(n, dtype=bool) for fs in sets if fs.kind == "composition"})
    t0 = last = time.monotonic()
    for start in range(0, n, step):
        stop = min(start + step, n)
        block_out = np.empty((stop - start, len(names)))
        block_fast: dict[str, np.ndarray] | None = {} if fast_rows is not None else None
        errors[start:stop] = _featurize_block(df.iloc[start:stop], sets, s, block_out, block_fast)
        values[start:stop] = block_out
        if fast_rows is not None and block_fast is not None:
            for key, done in block_fast.items():
                fast_rows[key][start:stop] = done
        now = time.monotonic()
        if now - last >= s.progress_every_s or stop == n:
            last = now
            log.info("featurized %d/%d rows (%.0f rows/s)", stop, n, stop / max(now - t0, 1e-9))
    return values, errors


def featurize_frame(
    df: pd.DataFrame, id_column: str, settings: FeaturizeSettings | Mapping[str, Any] | None
) -> pd.DataFrame:
    """Features of every row of ``df``: ``id_column``, ``featurize_error``, then float32 features.

    ``df`` carries ``id_column``, ``family``, ``formula`` and the site columns
    ``{S}_species`` (others are ignored; absent site columns count as null), optionally a
    ``structure`` JSON column. Columns depend only on ``settings`` (see :func:`feature_names`).
    """
    if id_column not in df.columns:
        raise KeyError(f"featurize: input frame lacks id column {id_column!r} (has {list(df.columns)[:12]}...)")
    values, errors = feature_values(df, settings, np.float32)
    n = len(df)
    out = pd.DataFrame(values, columns=feature_names(settings), copy=False)
    out.insert(0, "featurize_error", pd.array(errors, dtype="object"))
    out.insert(0, id_column, df[id_column].to_numpy(dtype=object))
    n_err = int(pd.notna(errors).sum())
    if n_err:
        log.warning(
            "%d of %d rows have featurize errors (first: %s)", n_err, n, next(e for e in errors if e is not None)
        )
    return out
