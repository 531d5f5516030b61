"""Choosing what gets a PySCF label: ingested structures and candidate prototypes.

Label calculations are the expensive part of the pipeline, so the choice is explicit and
reproducible: ingested structures that are unique, computable with the label settings
and small enough (primitive cell), plus a seeded random choice of candidates whose
prototype structures are built here (and only here: the full candidate space is never
turned into structures).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from matscreen import tables
from matscreen.families import SITE_LABELS
from matscreen.ids import structure_id
from matscreen.provenance import provenance
from matscreen.structjson import structure_from_json

log = logging.getLogger(__name__)

_SITE_COLS = [c.name for c in tables.SITE_COLUMNS]


def _unsupported(elements: list[str], label_settings: Mapping[str, Any]) -> list[str]:
    from matscreen.label import unsupported_elements

    return unsupported_elements(elements, dict(label_settings))


def from_structures(structures: pd.DataFrame, select: Mapping[str, Any]) -> pd.DataFrame:
    """Ingested structures to label: unique, supported, at most ``max_sites`` atoms when primitive."""
    if not select.get("ingested", True) or structures.empty:
        return tables.empty_frame(tables.LABEL_TARGETS)
    keep = structures[structures["duplicate_of"].isna() & (structures["label_supported"].fillna(False).astype(bool))]
    rows = []
    for rec in keep.to_dict("records"):
        prim = structure_from_json(rec["structure"], f"structures table, structure {rec['structure_id']}").get_primitive_structure()
        if len(prim) > int(select.get("max_sites", 14)):
            log.info("not labeling %s (%s): %d atoms in the primitive cell > label.select.max_sites",
                     rec["structure_id"], rec["formula"], len(prim))
            continue
        rows.append({
            "structure_id": rec["structure_id"], "origin": "ingest", "candidate_id": None,
            "family": rec["family"], "formula": prim.composition.formula, "nsites": len(prim),
            **{c: rec.get(c) for c in _SITE_COLS}, "structure": prim.to_json(),
        })
    return tables.conform(pd.DataFrame(rows), tables.LABEL_TARGETS) if rows else tables.empty_frame(tables.LABEL_TARGETS)


def _elements(row: Mapping[str, Any]) -> set[str]:
    from matscreen.families import parse_occupancy

    return {ion.element for s in SITE_LABELS if isinstance(row.get(f"{s}_species"), str) for ion in parse_occupancy(row[f"{s}_species"])}


def from_candidates(
    candidates: pd.DataFrame, select: Mapping[str, Any], label_settings: Mapping[str, Any], seed: int
) -> pd.DataFrame:
    """A seeded random choice of ``candidates`` candidates, built as prototype structures."""
    from matscreen.prototypes import build_prototype

    n = int(select.get("candidates", 0))
    if n == 0 or candidates.empty:
        return tables.empty_frame(tables.LABEL_TARGETS)
    pool = candidates[candidates["family"].isin(select.get("families") or [])]
    allowed = select.get("elements")
    elements = pool.apply(lambda r: _elements(r), axis=1) if len(pool) else pd.Series([], dtype=object)
    ok = elements.map(lambda els: (allowed is None or els <= set(allowed)))
    pool = pool[ok.to_numpy(dtype=bool)] if len(pool) else pool
    pool = pool.sort_values("candidate_id").reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(pool))
    rows, seen = [], set()
    for i in order:
        rec = pool.iloc[int(i)].to_dict()
        reduced = Composition(rec["formula"]).reduced_formula
        if reduced in seen:  # one polymorph/arrangement per composition keeps the labels diverse
            continue
        if _unsupported(sorted(_elements(rec)), label_settings):
            continue
        s = build_prototype(rec)
        rows.append({
            "structure_id": structure_id(s), "origin": "candidate", "candidate_id": rec["candidate_id"],
            "family": rec["family"], "formula": s.composition.formula, "nsites": len(s),
            **{c: rec.get(c) for c in _SITE_COLS}, "structure": s.to_json(),
        })
        seen.add(reduced)
        if len(rows) == n:
            break
    if len(rows) < n:
        log.warning("only %d candidates could be chosen for labels (label.select.candidates = %d)", len(rows), n)
    return tables.conform(pd.DataFrame(rows), tables.LABEL_TARGETS) if rows else tables.empty_frame(tables.LABEL_TARGETS)


def select_targets(
    structures: pd.DataFrame, candidates: pd.DataFrame, label_settings: Mapping[str, Any], seed: int
) -> pd.DataFrame:
    select = label_settings.get("select") or {}
    parts = [from_structures(structures, select), from_candidates(candidates, select, label_settings, seed)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return tables.empty_frame(tables.LABEL_TARGETS)
    df = pd.concat(parts, ignore_index=True).drop_duplicates("structure_id").reset_index(drop=True)
    log.info("label targets: %d ingested, %d candidate prototypes",
             int((df["origin"] == "ingest").sum()), int((df["origin"] == "candidate").sum()))
    return df


def run(
    structures_path: str, candidate_paths: list[str], out_path: str, label_settings: dict[str, Any], seed: int,
    config_hash: str = "",
) -> None:
    structures = tables.read_table(structures_path, tables.STRUCTURES)
    candidates = tables.read_tables(candidate_paths, tables.CANDIDATES)
    targets = select_targets(structures, candidates, label_settings, seed)
    tables.write_table(targets, out_path, tables.LABEL_TARGETS,
                       provenance("select_label_targets", {"select": label_settings.get("select"), "seed": seed}, config_hash))
