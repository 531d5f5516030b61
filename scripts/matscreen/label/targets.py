"""The checkpoint of the label stage: what gets a PySCF label, what is already stored, what it costs.

Label calculations are the expensive part of the pipeline, so the choice is explicit and
reproducible: ingested structures that are unique, computable with the label settings
and small enough (primitive cell), plus a seeded random choice of candidates whose
prototype structures are built here (and only here: the full candidate space is never
turned into structures), plus the competing phases of their chemical systems.

Everything PySCF-specific about the plan is decided here, once, in the ``select_label_targets``
job, so that the Snakemake controller never imports PySCF:

* *preflight*: whether PySCF can describe a structure's elements with the configured basis and
  pseudopotential (:func:`matscreen.label.cell.unsupported_elements`) is asked here only;
* *the store*: a target (or reference element) whose label the store already holds under the
  settings hash is marked ``stored``; it is no label job, gather reads the store entry;
* *resources*: ``mem_mb``, ``runtime_min`` and ``threads`` of every remaining label job
  (:func:`matscreen.label.resources.estimate_resources`); the rules only scale them per attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from matscreen import tables
from matscreen.config import settings_dict
from matscreen.families import SITE_LABELS
from matscreen.ids import structure_id
from matscreen.label.settings import LabelSettings, Select, as_settings
from matscreen.provenance import provenance
from matscreen.structjson import structure_from_json

log = logging.getLogger(__name__)

_SITE_COLS = [c.name for c in tables.SITE_COLUMNS]


def _unsupported(elements: list[str], settings: LabelSettings) -> list[str]:
    from matscreen.label.cell import unsupported_elements

    return unsupported_elements(elements, settings)


def _select(select: Select | Mapping[str, Any]) -> Select:
    """``label.select`` as a :class:`Select`; a (partial) mapping gets the schema's defaults (public edge)."""
    return select if isinstance(select, Select) else as_settings({"select": dict(select)}).select


def from_structures(
    structures: pd.DataFrame,
    select: Select | Mapping[str, Any],
    settings: LabelSettings | Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Ingested structures to label: unique, computable with ``settings``' basis and
    pseudopotential (asked here, not in ingest), at most ``max_sites`` atoms when primitive."""
    select = _select(select)
    settings = as_settings(settings)
    if not select.ingested or structures.empty:
        return tables.empty_frame(tables.LABEL_TARGETS)
    keep = structures[structures["duplicate_of"].isna()]
    rows = []
    for rec in keep.to_dict("records"):
        prim = structure_from_json(
            rec["structure"], f"structures table, structure {rec['structure_id']}"
        ).get_primitive_structure()
        bad = _unsupported(sorted({el.symbol for el in prim.composition.elements}), settings)
        if bad:
            log.info(
                "not labeling %s (%s): no basis/pseudopotential for %s in basis %r / pseudo %r",
                rec["structure_id"],
                rec["formula"],
                ", ".join(bad),
                settings.basis,
                settings.pseudo,
            )
            continue
        if len(prim) > int(select.max_sites):
            log.info(
                "not labeling %s (%s): %d atoms in the primitive cell > label.select.max_sites",
                rec["structure_id"],
                rec["formula"],
                len(prim),
            )
            continue
        rows.append(
            {
                "structure_id": rec["structure_id"],
                "origin": "ingest",
                "candidate_id": None,
                "family": rec["family"],
                "formula": prim.composition.formula,
                "nsites": len(prim),
                **{c: rec.get(c) for c in _SITE_COLS},
                "structure": prim.to_json(),
            }
        )
    return (
        tables.conform(pd.DataFrame(rows), tables.LABEL_TARGETS) if rows else tables.empty_frame(tables.LABEL_TARGETS)
    )


def _elements(row: Mapping[str, Any]) -> set[str]:
    from matscreen.families import parse_occupancy

    return {
        ion.element
        for s in SITE_LABELS
        if isinstance(row.get(f"{s}_species"), str)
        for ion in parse_occupancy(row[f"{s}_species"])
    }


def _stratum(rec: Mapping[str, Any]) -> tuple[str, str]:
    """Candidates are interleaved over (anion, spinel arrangement) strata, so that a small sample
    spans oxides and halides, normal and inverse spinels, instead of following the pool's mix."""
    from matscreen.families import parse_occupancy

    x = rec.get("X_species")
    anion = parse_occupancy(x)[0].element if isinstance(x, str) else ""
    return anion, str(rec.get("arrangement") or "")


def _choose(
    pool: pd.DataFrame, n: int, select: Select, label_settings: LabelSettings, seed: int, *, stratify: bool, what: str
) -> list[dict[str, Any]]:
    """Up to ``n`` prototype rows from ``pool`` in seeded random order: one per reduced formula, at
    most ``select.max_per_system`` per set of elements, elements in ``select.elements`` and computable."""
    allowed = select.elements
    cap = select.max_per_system
    if n <= 0 or pool.empty:
        return []
    elements = pool.apply(lambda r: _elements(r), axis=1)
    pool = pool[elements.map(lambda els: allowed is None or els <= set(allowed)).to_numpy(dtype=bool)]
    pool = pool.sort_values("candidate_id").reset_index(drop=True)
    order = [int(i) for i in np.random.default_rng(seed).permutation(len(pool))]
    if stratify and order:
        strata: dict[tuple[str, str], list[int]] = {}
        for i in order:
            strata.setdefault(_stratum(pool.iloc[i]), []).append(i)
        queues = list(strata.values())  # in order of first appearance: seeded too
        order = [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]
    rows, seen, per_system = [], set(), {}
    for i in order:
        rec = pool.iloc[i].to_dict()
        reduced = Composition(rec["formula"]).reduced_formula
        if reduced in seen:  # one polymorph/arrangement per composition keeps the labels diverse
            continue
        system = frozenset(_elements(rec))
        if cap is not None and per_system.get(system, 0) >= int(cap):
            continue
        if _unsupported(sorted(system), label_settings):
            continue
        rows.append(prototype_target(rec))
        seen.add(reduced)
        per_system[system] = per_system.get(system, 0) + 1
        if len(rows) == n:
            break
    if len(rows) < n:
        log.warning("only %d candidates could be chosen for labels (%s = %d)", len(rows), what, n)
    return rows


def prototype_target(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """A LABEL_TARGETS row (without the plan columns) for a candidate: its prototype structure."""
    from matscreen.prototypes import build_prototype

    s = build_prototype(candidate)
    return {
        "structure_id": structure_id(s),
        "origin": "candidate",
        "candidate_id": candidate["candidate_id"],
        "family": candidate["family"],
        "formula": s.composition.formula,
        "nsites": len(s),
        **{c: candidate.get(c) for c in _SITE_COLS},
        "structure": s.to_json(),
    }


def computable(elements: list[str], settings: LabelSettings) -> bool:
    """Whether PySCF has the label settings' basis and pseudopotential for every element."""
    return not _unsupported(sorted(elements), settings)


def elements_of(candidate: Mapping[str, Any]) -> set[str]:
    """The elements of a candidate row (from its site columns)."""
    return _elements(candidate)


def from_candidates(
    candidates: pd.DataFrame,
    select: Select | Mapping[str, Any],
    label_settings: LabelSettings | Mapping[str, Any],
    seed: int,
) -> pd.DataFrame:
    """A seeded random choice of candidates, built as prototype structures.

    ``select.per_family`` (family -> count) draws each family's sample on its own, interleaved
    over anion and spinel-arrangement strata (a diversity-aware sample for reference sets);
    otherwise ``select.candidates`` are drawn from the pool of ``select.families`` as a whole.
    """
    select, label_settings = _select(select), as_settings(label_settings)
    per_family = select.per_family
    if per_family:
        rows = []
        from matscreen.families import FAMILIES

        for family, n in sorted(per_family.items()):
            # seed + the family's place in families.FAMILIES: a family's sample does not depend
            # on which other families are listed (a set can be labeled family by family)
            k = list(FAMILIES).index(family) if family in FAMILIES else len(FAMILIES)
            rows += _choose(
                candidates[candidates["family"] == family],
                int(n),
                select,
                label_settings,
                seed + k,
                stratify=True,
                what=f"label.select.per_family.{family}",
            )
    else:
        pool = candidates[candidates["family"].isin(list(select.families or []))]
        rows = _choose(
            pool, int(select.candidates), select, label_settings, seed, stratify=False, what="label.select.candidates"
        )
    return (
        tables.conform(pd.DataFrame(rows), tables.LABEL_TARGETS) if rows else tables.empty_frame(tables.LABEL_TARGETS)
    )


def anion_of(formula: str) -> str:
    """The anion of a compound: its most electronegative element (the X site of every family)."""
    comp = Composition(formula)
    return max(comp.elements, key=lambda el: (el.X if el.X == el.X else 0.0, el.Z)).symbol


def competing_targets(
    targets: pd.DataFrame, label_settings: LabelSettings, known: set[str] | frozenset[str] = frozenset()
) -> pd.DataFrame:
    """The competing binary phases of every target's chemical system, as LABEL_TARGETS rows.

    One set per (cation elements, anion) of the targets, from the shipped structure library
    (:mod:`matscreen.label.competing`) plus the user's ``label.competing.files``; phases with elements
    the label settings cannot compute are left out (the hull then names them as missing).
    Phases whose structure id is in ``known`` (already planned) are left out too.
    """
    from matscreen.label.competing import competing_phases

    comp = label_settings.competing
    if not comp.enabled or targets.empty:
        return tables.empty_frame(tables.LABEL_TARGETS)
    rows, seen = [], set(targets["structure_id"]) | set(known)
    systems = sorted(
        {(frozenset(el.symbol for el in Composition(f).elements), anion_of(f)) for f in targets["formula"]},
        key=lambda s: (sorted(s[0]), s[1]),
    )
    for elements, anion in systems:
        if len(elements) < 2:  # an element competes only with its own reference
            continue
        kw = dict(
            oxidation_states=comp.oxidation_states,
            max_polymorphs=int(comp.max_polymorphs),
            include_expensive=bool(comp.include_expensive),
        )
        for ph in competing_phases(sorted(elements), anion, user_files=tuple(comp.files), **kw):
            if _unsupported(sorted(el.symbol for el in ph.structure.composition.elements), label_settings):
                continue
            sid = structure_id(ph.structure)
            if sid in seen:
                continue
            seen.add(sid)
            rows.append(
                {
                    "structure_id": sid,
                    "origin": "competing",
                    "candidate_id": None,
                    "family": "other",
                    "formula": ph.structure.composition.formula,
                    "nsites": len(ph.structure),
                    "prototype": ph.prototype,
                    "structure": ph.structure.to_json(),
                }
            )
    if not rows:
        return tables.empty_frame(tables.LABEL_TARGETS)
    return tables.conform(pd.DataFrame(rows), tables.LABEL_TARGETS)


def select_targets(
    structures: pd.DataFrame, candidates: pd.DataFrame, label_settings: LabelSettings | Mapping[str, Any], seed: int
) -> pd.DataFrame:
    """The label targets (LABEL_TARGETS rows without the store and resource columns)."""
    s = as_settings(label_settings)
    parts = [from_structures(structures, s.select, s), from_candidates(candidates, s.select, s, seed)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return tables.empty_frame(tables.LABEL_TARGETS)
    df = pd.concat(parts, ignore_index=True).drop_duplicates("structure_id").reset_index(drop=True)
    competing = competing_targets(df, s)
    if len(competing):
        df = pd.concat([df, competing], ignore_index=True)
    df["round"] = pd.Series([0] * len(df), index=df.index, dtype="Int64")
    log.info(
        "label targets: %d ingested, %d candidate prototypes, %d competing phases",
        int((df["origin"] == "ingest").sum()),
        int((df["origin"] == "candidate").sum()),
        int((df["origin"] == "competing").sum()),
    )
    return df


def job_cpu_hours(structure_id: str, structure_json: str, settings: LabelSettings) -> float:
    """Estimated CPU hours of the label job of one target, as charged to ``rounds.budget``: 0 when
    a seed store holds its label (no job runs), else the resource model's runtime x threads, as
    :func:`plan_jobs` records them. The run's own store is not asked: what a rerun or a resumed
    run has already cached must not change which candidates a round chooses."""
    from matscreen.label.resources import estimate_resources
    from matscreen.label.store import in_seed_store

    if in_seed_store(settings, "structures", structure_id):
        return 0.0
    res = estimate_resources(structure_from_json(structure_json, f"label target {structure_id}"), settings)
    return res["runtime"] * res["threads"] / 60.0


def plan_jobs(targets: pd.DataFrame, settings: LabelSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The targets with ``stored``, ``mem_mb``, ``runtime_min``, ``threads`` filled, and the
    REFERENCE_TARGETS of their elements: what is in the store is no job; every target gets its
    resource estimate (built from the PySCF cell, here and nowhere else)."""
    from matscreen.label.gathering import reference_elements
    from matscreen.label.resources import estimate_resources
    from matscreen.label.store import has_entry

    out = targets.copy()
    stored, mem, runtime = [], [], []
    for rec in out.itertuples():
        stored.append(has_entry(settings, "structures", rec.structure_id))
        # estimated for stored targets too: the table's numbers depend on the targets, not on the store
        res = estimate_resources(structure_from_json(rec.structure, f"label target {rec.structure_id}"), settings)
        mem.append(res["mem_mb"])
        runtime.append(res["runtime"])
    out["stored"] = pd.Series(stored, index=out.index, dtype="boolean")
    out["mem_mb"] = pd.Series(mem, index=out.index, dtype="Int64")
    out["runtime_min"] = pd.Series(runtime, index=out.index, dtype="Int64")
    out["threads"] = pd.Series([int(settings.resources.threads)] * len(out), index=out.index, dtype="Int64")
    elements = reference_elements(out)
    refs = pd.DataFrame({"element": elements, "stored": [has_entry(settings, "references", el) for el in elements]})
    log.info(
        "label jobs: %d of %d targets and %d of %d references already in the label store %s (no job)",
        int(out["stored"].sum()),
        len(out),
        int(refs["stored"].sum()),
        len(refs),
        Path(settings.store) / settings.hash,
    )
    return tables.conform(out, tables.LABEL_TARGETS), tables.conform(refs, tables.REFERENCE_TARGETS)


def run(
    structures_path: str,
    candidate_paths: list[str],
    out_path: str,
    label_settings: LabelSettings | Mapping[str, Any],
    seed: int,
    config_hash: str = "",
    references_out: str | None = None,
) -> None:
    """The checkpoint ``select_label_targets``: the targets table (and, with ``references_out``,
    the reference-targets table), after checking that PySCF knows the configured names."""
    from matscreen.label.checks import check_pyscf_names

    s = as_settings(label_settings)
    check_pyscf_names(s)
    structures = tables.read_table(structures_path, tables.STRUCTURES)
    candidates = tables.read_tables(candidate_paths, tables.CANDIDATES)
    targets, refs = plan_jobs(select_targets(structures, candidates, s, seed), s)
    prov = provenance(
        "select_label_targets",
        {
            "select": settings_dict(s)["select"],
            "competing": settings_dict(s)["competing"],
            "seed": seed,
            "settings_hash": s.hash,
        },
        config_hash,
    )
    if references_out is None:
        tables.write_table(targets, out_path, tables.LABEL_TARGETS, prov)
    else:
        tables.write_tables(
            [(targets, out_path, tables.LABEL_TARGETS), (refs, references_out, tables.REFERENCE_TARGETS)], prov
        )
