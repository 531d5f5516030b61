"""Compositions of rows: what matminer featurizes (:func:`row_composition`, the reference) and the
parsed blocks the fast path reads (:func:`composition_block`)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from matscreen.families import FAMILIES, SITE_LABELS, parse_occupancy
from matscreen.featurize import fast as ff

SITE_SPECIES_COLUMNS = tuple(f"{s}_species" for s in SITE_LABELS)


def is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def row_composition(family: str, occupancy: dict[str, Any], formula: Any = None) -> Any:
    """The pymatgen ``Composition`` matminer featurizes for a row (the reference of the fast path).

    For a known family with all its site columns: species with oxidation states, amounts per
    formula unit of the prototype (fraction x site multiplicity, added site by site and ion by
    ion in the family's site order). Otherwise the ``formula`` (no oxidation states).
    Raises ``ValueError`` naming the problem when neither is usable.
    """
    from pymatgen.core import Composition, Species

    problems = []
    fam = FAMILIES.get(family)
    if fam is not None:
        try:
            amounts: dict[tuple[str, float], float] = {}
            for site in fam.sites:
                text = occupancy.get(site.label)
                if is_null(text):
                    raise ValueError(f"site {site.label} has no occupancy")
                for ion in parse_occupancy(str(text)):
                    k = (ion.element, ion.oxidation)
                    amounts[k] = amounts.get(k, 0.0) + ion.fraction * site.multiplicity
            return Composition({Species(el, oxi): a for (el, oxi), a in amounts.items()})
        except (ValueError, KeyError) as exc:
            problems.append(str(exc))
    if not is_null(formula) and str(formula).strip():
        try:
            return Composition(str(formula), strict=True)
        except Exception as exc:  # noqa: BLE001 - pymatgen raises several types for bad formulas
            problems.append(f"formula {formula!r}: {exc}")
    else:
        problems.append("no formula")
    raise ValueError("; ".join(problems))


@lru_cache(maxsize=65536)
def _parsed_site(text: str) -> tuple[tuple[tuple[int, float, float], ...], str | None]:
    """Ions of an occupancy string as (Z, oxidation, fraction), or an error message."""
    from pymatgen.core import Element

    try:
        ions = parse_occupancy(text)
        return tuple((Element(i.element).Z, i.oxidation, i.fraction) for i in ions), None
    except (ValueError, KeyError) as exc:
        return (), str(exc)


@lru_cache(maxsize=262144)
def _parsed_formula(formula: str | None) -> tuple[tuple[tuple[int, float], ...], str | None]:
    """(Z, amount) of a formula-only row, parsed once per distinct formula, or an error message."""
    try:
        comp = row_composition("other", {}, formula)
        return tuple((el.Z, amt) for el, amt in comp.element_composition.items()), None
    except ValueError as exc:
        return (), str(exc)


def composition_block(df: pd.DataFrame) -> tuple[ff.CompositionBlock, np.ndarray]:
    """Compositions of all rows as padded arrays (vectorised over site columns).

    Returns the block and per-row error messages (None where the composition is fine).
    Equivalent to :func:`row_composition` per row, without building pymatgen objects for
    family rows.
    """
    n = len(df)
    fams = df["family"].astype(object).to_numpy()
    use_formula = np.ones(n, dtype=bool)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    width = 1
    site_errors = np.full(n, None, dtype=object)
    for fname, fam in FAMILIES.items():
        rows = np.flatnonzero(fams == fname)
        if len(rows) == 0:
            continue
        zs, oxs, ams = [], [], []
        ok = np.ones(len(rows), dtype=bool)
        for site in fam.sites:
            col = f"{site.label}_species"
            vals = df[col].to_numpy(dtype=object)[rows] if col in df.columns else np.full(len(rows), None, object)
            codes, uniques = pd.factorize(vals)
            parsed = [_parsed_site(str(u)) for u in uniques]
            k = max([len(p[0]) for p in parsed] + [1])
            uz = np.zeros((len(uniques) + 1, k), dtype=np.int64)
            uo = np.full((len(uniques) + 1, k), np.nan)
            uf = np.zeros((len(uniques) + 1, k))
            uerr = np.empty(len(uniques) + 1, dtype=object)
            for u, (ions, err) in enumerate(parsed):
                uerr[u] = None if err is None else f"site {site.label}: {err}"
                for j, (z, o, fr) in enumerate(ions):
                    uz[u, j], uo[u, j], uf[u, j] = z, o, fr
            uerr[-1] = f"site {site.label} has no occupancy"
            bad_u = np.array([e is not None for e in uerr])
            ok &= ~bad_u[codes]
            for i in np.flatnonzero(bad_u[codes]):
                if site_errors[rows[i]] is None:
                    site_errors[rows[i]] = uerr[codes[i]]
            zs.append(uz[codes])
            oxs.append(uo[codes])
            ams.append(uf[codes] * float(site.multiplicity))
        z = np.concatenate(zs, axis=1)
        z[~ok] = 0
        parts.append((rows[ok], z[ok], np.concatenate(oxs, axis=1)[ok], np.concatenate(ams, axis=1)[ok]))
        use_formula[rows[ok]] = False
        width = max(width, z.shape[1])
    sp_z = np.zeros((n, width), dtype=np.int64)
    sp_oxi = np.full((n, width), np.nan)
    sp_amt = np.zeros((n, width))
    has_oxi = np.zeros(n, dtype=bool)
    valid = np.zeros(n, dtype=bool)
    for rows, z, o, a in parts:
        sp_z[rows, : z.shape[1]] = z
        sp_oxi[rows, : z.shape[1]] = o
        sp_amt[rows, : z.shape[1]] = a
        has_oxi[rows] = True
        valid[rows] = True
    errors = np.full(n, None, dtype=object)
    formula_rows = np.flatnonzero(use_formula)
    if len(formula_rows):
        formulas = df["formula"].to_numpy(dtype=object) if "formula" in df.columns else np.full(n, None, object)
        extra: list[list[tuple[int, float]]] = []
        for i in formula_rows:
            items, err = _parsed_formula(formulas[i] if isinstance(formulas[i], str) else None)
            extra.append(list(items))
            if err is None:
                valid[i] = True
            else:
                prefix = f"{site_errors[i]}; " if site_errors[i] else ""
                errors[i] = f"no composition: {prefix}{err}"
        w = max([len(e) for e in extra] + [width])
        if w > width:
            pad = w - width
            sp_z = np.pad(sp_z, ((0, 0), (0, pad)))
            sp_oxi = np.pad(sp_oxi, ((0, 0), (0, pad)), constant_values=np.nan)
            sp_amt = np.pad(sp_amt, ((0, 0), (0, pad)))
        for i, items in zip(formula_rows, extra):
            for j, (z, a) in enumerate(items):
                sp_z[i, j], sp_amt[i, j] = z, a
    block = ff.block_from_species_slots(sp_z, sp_oxi, sp_amt, has_oxi, valid)
    return block, errors
