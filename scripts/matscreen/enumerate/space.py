"""The chemical space of one family as parallel arrays: ion tables per site and every site assignment.

:func:`build_combos` is the cartesian product of the site lists (double perovskites: unordered B/B'
pairs; spinels: normal and inverse); :func:`mixed_combos` adds the charge-neutral mixed-site rows
of ``enumerate.mixing`` without building the non-neutral product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from matscreen import chemistry
from matscreen.enumerate.settings import EnumerateSettings, mixing_sites, site_ions
from matscreen.families import Family, Ion, format_occupancy


@dataclass(frozen=True)
class IonTable:
    """The ions of one site as arrays (one entry per ion), for vectorised filtering."""

    element: np.ndarray  #: object array of symbols
    oxidation: np.ndarray  #: float
    radius: dict[int, np.ndarray]  #: Shannon ionic radius (Å) by coordination number, NaN if not tabulated
    electronegativity: np.ndarray  #: Pauling, NaN if unknown
    label: np.ndarray  #: object array of occupancy strings, e.g. 'Sr2+'

    def __len__(self) -> int:
        return len(self.element)


def ion_table(ions: Sequence[tuple[str, float]], cns: Sequence[int]) -> IonTable:
    radius = {
        cn: np.array([np.nan if (r := chemistry.shannon_radius(e, o, cn)) is None else r for e, o in ions], dtype=float)
        for cn in sorted(set(cns))
    }
    return IonTable(
        element=np.array([e for e, _ in ions], dtype=object),
        oxidation=np.array([o for _, o in ions], dtype=float),
        radius=radius,
        electronegativity=np.array([chemistry.electronegativity(e) for e, _ in ions], dtype=float),
        label=np.array([format_occupancy([Ion(e, o)]) for e, o in ions], dtype=object),
    )


def _grid(*sizes: int) -> list[np.ndarray]:
    """Flattened index arrays of the cartesian product (C order: last index fastest)."""
    if 0 in sizes:
        return [np.zeros(0, dtype=np.int32) for _ in sizes]
    return [a.ravel().astype(np.int32) for a in np.meshgrid(*(np.arange(n) for n in sizes), indexing="ij")]


@dataclass
class Combos:
    """Candidates of one family as parallel arrays; one entry per candidate.

    ``sites[label]`` is a list of terms (ion table, index array, fraction array): one term with
    fraction 1 for an ordered site; for the spinel two terms per cation site whose fractions
    depend on the arrangement (a term with fraction 0 is inert).
    """

    family: Family
    arrangement: np.ndarray
    sites: dict[str, list[tuple[IonTable, np.ndarray, np.ndarray]]]

    def __len__(self) -> int:
        return len(self.arrangement)

    def take(self, mask: np.ndarray) -> Combos:
        return Combos(
            self.family,
            self.arrangement[mask],
            {k: [(t, idx[mask], frac[mask]) for t, idx, frac in terms] for k, terms in self.sites.items()},
        )


def build_combos(family: Family, settings: EnumerateSettings) -> Combos:
    cn_x = settings.anion_radius_cn
    tab = {}
    for s in family.sites:
        ions = site_ions(settings, family.name, s.label)
        # spinel ions of either role may sit on either cation site (inverse arrangement)
        cns = [cn_x] if s.is_anion else ([4, 6] if family.name == "spinel" else [s.cn])
        tab[s.label] = ion_table(ions, cns)
    labels = family.site_labels
    idx = _grid(*(len(tab[s]) for s in labels))
    if family.name == "double_perovskite":
        # Unordered pairs of distinct B ions, written canonically: B holds the ion whose label sorts
        # first, whichever list it came from, so a compound has one id whatever the lists' order.
        # Both B sites index one union table; a pair (i < j) is allowed if one ion is on the B list
        # and the other on the B2 list.
        union_ions = sorted(
            set(site_ions(settings, family.name, "B")) | set(site_ions(settings, family.name, "B2")),
            key=lambda ion: format_occupancy([Ion(*ion)]),
        )
        union = ion_table(union_ions, [family.site("B").cn])
        in_b = np.isin(union.label, tab["B"].label)
        in_b2 = np.isin(union.label, tab["B2"].label)
        allowed = np.triu(np.outer(in_b, in_b2) | np.outer(in_b2, in_b), k=1)
        lo, hi = (a.astype(np.int32) for a in np.nonzero(allowed))
        ia, ip, ix = _grid(len(tab["A"]), len(lo), len(tab["X"]))
        idx = [ia, lo[ip], hi[ip], ix]
        tab["B"] = tab["B2"] = union
    n = len(idx[0])
    ones = np.ones(n)
    if family.name != "spinel":
        sites = {s: [(tab[s], i, ones)] for s, i in zip(labels, idx)}
        return Combos(family, np.full(n, "", dtype=object), sites)
    # spinel: every (A, B, X) in both arrangements; inverse = B on tet, A+B half-and-half on oct
    ia, ib, ix = (np.concatenate([i, i]) for i in idx)
    inverse = np.arange(2 * n) >= n
    arrangement = np.where(inverse, "inverse", "normal").astype(object)
    one, zero, half = np.ones(2 * n), np.zeros(2 * n), np.full(2 * n, 0.5)
    a, b, x = tab["A"], tab["B"], tab["X"]
    sites = {
        "A": [(a, ia, np.where(inverse, zero, one)), (b, ib, np.where(inverse, one, zero))],
        "B": [(a, ia, np.where(inverse, half, zero)), (b, ib, np.where(inverse, half, one))],
        "X": [(x, ix, one)],
    }
    return Combos(family, arrangement, sites)


def _pair_options(t: IonTable, denominator: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every mixed occupancy of a site: ions i < j with fractions k/d and (d-k)/d, k = 1..d-1."""
    i, j = (a.astype(np.int32) for a in np.triu_indices(len(t), k=1))
    k = np.arange(1, denominator, dtype=np.int64)
    ii, kk = np.repeat(i, len(k)), np.tile(k, len(i))
    jj = np.repeat(j, len(k))
    return ii, jj, kk


def mixed_combos(family: Family, settings: EnumerateSettings) -> tuple[Combos, int]:
    """The pure combinations plus, for every site in enumerate.mixing.sites, every combination with
    that one site mixed, kept only if charge-neutral. Returns (combos, combinations before the
    charge-neutrality check), so the funnel still counts the whole space.

    Neutral combinations are found by a join on charge (in units of 1/denominator): the other
    sites' charge of each pure combination must cancel the mixed site's, so the non-neutral
    product is never built. Every mixing site has two terms (the second inert, fraction 0, in
    rows where it is not mixed), like the spinel's sites.
    """
    d = int(settings.mixing.denominator)
    base = build_combos(family, settings)
    labels = mixing_sites(family, settings)
    n_raw = len(base)
    n_base = len(base)
    parts = []  # (mixed label, other-site rows of base, option index into pairs)
    charge = {s.label: site_value(base, s.label, "oxidation") * s.multiplicity for s in family.sites}
    for label in labels:
        site = family.site(label)
        ((t, idx, _),) = base.sites[label]
        ii, jj, kk = _pair_options(t, d)
        q_opt = np.rint(site.multiplicity * (kk * t.oxidation[ii] + (d - kk) * t.oxidation[jj])).astype(np.int64)
        others = [s.label for s in family.sites if s.label != label]
        keys = np.stack([base.sites[o][0][1] for o in others], axis=1)
        uniq, first = np.unique(keys, axis=0, return_index=True)
        q_other = np.rint(sum(charge[o] for o in others)[first] * d).astype(np.int64)
        n_raw += len(first) * len(ii)
        order = np.argsort(q_opt, kind="stable")
        q_sorted = q_opt[order]
        lo = np.searchsorted(q_sorted, -q_other, side="left")
        hi = np.searchsorted(q_sorted, -q_other, side="right")
        counts = hi - lo
        rows = np.repeat(first, counts)
        starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
        opt = order[np.arange(counts.sum()) + starts] if counts.sum() else np.zeros(0, dtype=np.int64)
        parts.append((label, rows, ii[opt], jj[opt], kk[opt] / d))
    n_mixed = sum(len(p[1]) for p in parts)
    n = n_base + n_mixed
    sites: dict[str, list[tuple[IonTable, np.ndarray, np.ndarray]]] = {}
    for s in family.sites:
        (t, idx, frac), *rest = base.sites[s.label]
        first_idx = [idx] + [idx[p[1]] if p[0] != s.label else p[2] for p in parts]
        first_frac = [frac] + [frac[p[1]] if p[0] != s.label else p[4] for p in parts]
        sites[s.label] = [(t, np.concatenate(first_idx).astype(np.int32), np.concatenate(first_frac))]
        if s.label in labels:
            second_idx = [idx] + [idx[p[1]] if p[0] != s.label else p[3] for p in parts]
            second_frac = [np.zeros(n_base)] + [np.zeros(len(p[1])) if p[0] != s.label else 1.0 - p[4] for p in parts]
            sites[s.label].append((t, np.concatenate(second_idx).astype(np.int32), np.concatenate(second_frac)))
    arrangement = np.full(n, "", dtype=object)
    return Combos(family, arrangement, sites), n_raw


def site_value(combos: Combos, label: str, what: str, cn: int | None = None) -> np.ndarray:
    """Fraction-weighted oxidation, radius (at cn) or electronegativity of a site."""
    total = np.zeros(len(combos))
    for t, idx, frac in combos.sites[label]:
        vals = (
            t.oxidation[idx]
            if what == "oxidation"
            else t.radius[cn][idx]
            if what == "radius"
            else t.electronegativity[idx]
        )
        total = total + np.where(frac > 0, frac * vals, 0.0)  # 0 * NaN must not poison an inert term
    return total


def max_cation_en(combos: Combos) -> np.ndarray:
    """Largest electronegativity of any cation present (unknown counts as +inf: fails the filter)."""
    out = np.full(len(combos), -np.inf)
    for s in combos.family.cation_sites:
        for t, idx, frac in combos.sites[s.label]:
            en = np.where(np.isnan(t.electronegativity[idx]), np.inf, t.electronegativity[idx])
            out = np.where(frac > 0, np.maximum(out, en), out)
    return out
