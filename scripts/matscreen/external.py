"""External label tables: labels computed elsewhere (another code, a database) to train on.

A user table (Parquet or CSV) needs a ``formula`` column and the column named by
``train.target`` (in the target's units, e.g. eV/atom); it may also give ``family`` and the site
columns (``A_species`` ... ``X_species``, occupancy strings as in every matscreen table), in
which case the site-aware features are computed too, exactly as for candidates. Rows are
featurized by the same code as candidates and labeled structures. A bad row (unparsable formula
or site, missing target) is left out with a warning naming the file and row; the good rows are
kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from matscreen import tables
from matscreen.families import FAMILIES, OTHER, SITE_LABELS, parse_occupancy
from matscreen.provenance import provenance, stable_hash

log = logging.getLogger(__name__)

_SPECIES = [f"{s}_species" for s in SITE_LABELS]


def _read_user_table(path: str) -> pd.DataFrame:
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise tables.ContractError(f"{path}: cannot read external label table ({type(exc).__name__}: {exc})") from exc
    raise tables.ContractError(f"{path}: external label tables must be .csv or .parquet")


def _text(value: object) -> str | None:
    """A non-empty string cell, or None (CSV readers give NaN for empty cells)."""
    return value.strip() or None if isinstance(value, str) else None


def _row_problem(rec: dict, target: str) -> str | None:
    from pymatgen.core import Composition

    value = rec.get(target)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"no {target}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{target} {value!r} is not a number"
    if not np.isfinite(number) or abs(number) > tables.MAX_ABS_LABEL:
        return f"{target} {value!r} is not a plausible label (|x| > {tables.MAX_ABS_LABEL:g} or not finite)"
    try:
        comp = Composition(str(rec["formula"]))
    except Exception as exc:  # pymatgen raises ValueError and others for bad formulas
        return f"bad formula {rec['formula']!r} ({exc})"
    if comp.num_atoms <= 0 or not comp.valid:  # 'valid' is False for dummy species such as 'Xx'
        return f"bad formula {rec['formula']!r} (not made of known elements)"
    family = _text(rec.get("family")) or OTHER
    if family != OTHER and family not in FAMILIES:
        return f"unknown family {family!r}"
    for col in _SPECIES:
        text = _text(rec.get(col))
        if text:
            try:
                parse_occupancy(text)
            except ValueError as exc:
                return str(exc)
    return None


def read_external(paths: Iterable[str], target: str) -> pd.DataFrame:
    """All usable rows of the external tables, in the EXTERNAL_LABELS contract."""
    rows = []
    for path in paths:
        df = _read_user_table(path)
        missing = [c for c in ("formula", target) if c not in df.columns]
        if missing:
            raise tables.ContractError(f"{path}: external label table lacks column(s) {missing} "
                                       f"(needs 'formula' and the train.target column '{target}')")
        kept = 0
        for i, rec in enumerate(df.to_dict("records")):
            problem = _row_problem(rec, target)
            if problem:
                log.warning("%s row %d: left out: %s", path, i + 1, problem)
                continue
            sites = {c: _text(rec.get(c)) for c in _SPECIES}
            family = _text(rec.get("family")) or OTHER
            if family == OTHER:
                sites = dict.fromkeys(_SPECIES)
            rows.append({
                "structure_id": "x-" + stable_hash({"formula": str(rec["formula"]), "family": family, **sites,
                                                    "source": Path(path).name, "row": i}),
                "source": str(path), "row": i + 1, "family": family, "formula": str(rec["formula"]),
                **sites, "target": target, "value": float(rec[target]),
            })
            kept += 1
        log.info("%s: %d of %d rows usable as external labels", path, kept, len(df))
    if not rows:
        return tables.empty_frame(tables.EXTERNAL_LABELS)
    return tables.conform(pd.DataFrame(rows), tables.EXTERNAL_LABELS)


def as_labels(external: pd.DataFrame, target: str) -> pd.DataFrame:
    """External rows in the shape :func:`matscreen.train.training_frame` expects of labels."""
    return pd.DataFrame({"structure_id": external["structure_id"], "formula": external["formula"],
                         "status": "ok", target: external["value"].astype("float64")})


def run(paths: list[str], out_path: str, target: str, config_hash: str = "") -> None:
    ext = read_external(paths, target)
    tables.write_table(ext, out_path, tables.EXTERNAL_LABELS,
                       provenance("external_labels", {"files": [Path(p).name for p in paths], "target": target}, config_hash))
