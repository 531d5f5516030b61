"""Stage 2: enumerate candidate compositions of every family, filter them with crystal chemistry.

The chemical space of a family is the cartesian product of its site lists (ions = element +
oxidation state). Each site list comes from config (``enumerate.sites.<family>.<site>``); an
entry is either an ion (``"Fe3+"``: exactly that state) or an element (``"Fe"``: every state
pymatgen lists for it under ``enumerate.oxidation_states`` with the sign of the site). A site
left ``null`` takes the shared cation pool ``enumerate.cations``.

The product is filtered in a fixed order; each filter can be switched off and its thresholds are
config keys. The funnel table records how many candidates of each family survive each step:

0. ``all_combinations`` - every site assignment (spinels: times two, normal and inverse);
1. ``charge_neutrality`` - the formula unit is neutral with the chosen oxidation states. Mixed
   valence (Fe2+ and Fe3+ in Fe3O4, Fe2+/Mo6+ in Sr2FeMoO6) arises naturally because each site
   takes its own ion and the inverse spinel puts two ions on the octahedral site;
2. ``shannon_radius`` - every cation has a Shannon radius at its site's coordination number
   (``families.Site.cn``) and the anion at ``enumerate.anion_radius_cn``;
3. ``electronegativity`` - every cation is less electronegative (Pauling) than the anion;
4. perovskites: ``tolerance_factor`` (Goldschmidt t in [min, max]), ``octahedral_factor``
   (mu = rB/rX in [min, max]) and ``tau`` (Bartel et al. 2019, tau < max);
   spinels and garnets: ``radius_ratio`` (r_site / r_X inside a window per site).

A descriptor that cannot be computed (missing radius when ``shannon_radius`` is off, Bartel
tau where rA <= rB) counts as failing the filter that needs it: a candidate passes only what it
can be shown to satisfy.

Site lists for the spinel are the formula roles A (1 per formula unit) and B (2 per formula
unit). The *normal* arrangement puts A on the tetrahedral site; the *inverse* one puts B on the
tetrahedral site and A and B half-and-half on the octahedral site (``"Fe2+:0.5 Fe3+:0.5"``).
Both have the same charge, so every charge-balanced pair gives two candidates, which the radius
filters then judge separately (the ions sit at different coordination numbers).

Double perovskites take unordered pairs of distinct B-site ions (rock-salt ordering makes B and
B' equivalent, so ``B`` holds the ion that sorts first); the tolerance descriptors use the mean
B radius.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.core import Element

from matscreen import chemistry, tables
from matscreen.config import ConfigError, build_settings, settings_dict
from matscreen.families import FAMILIES, SITE_LABELS, Family, Ion, format_occupancy, get_family
from matscreen.ids import candidate_id
from matscreen.provenance import provenance

log = logging.getLogger(__name__)

#: Filters in the order they are applied, per family.
FILTERS: dict[str, tuple[str, ...]] = {
    "perovskite": ("charge_neutrality", "shannon_radius", "electronegativity", "tolerance_factor", "octahedral_factor", "tau"),
    "double_perovskite": ("charge_neutrality", "shannon_radius", "electronegativity", "tolerance_factor", "octahedral_factor", "tau"),
    "spinel": ("charge_neutrality", "shannon_radius", "electronegativity", "radius_ratio"),
    "garnet": ("charge_neutrality", "shannon_radius", "electronegativity", "radius_ratio"),
}

_ION_RE = re.compile(r"^([A-Z][a-z]?)(?:(\d*)([+-]))?$")


# --- settings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeFilter:
    """``enumerate.filters.tolerance_factor`` / ``octahedral_factor``: keep min <= value <= max."""

    enabled: bool
    min: float
    max: float


@dataclass(frozen=True)
class TauFilter:
    """``enumerate.filters.tau``: keep tau < max (Bartel et al. 2019)."""

    enabled: bool
    max: float


@dataclass(frozen=True)
class RadiusRatioFilter:
    """``enumerate.filters.radius_ratio``: r_site / r_X inside ``windows[family][site]`` = [min, max]."""

    enabled: bool
    windows: Mapping[str, Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class EnumerateFilters:
    """``enumerate.filters``, in the order they are applied (:data:`FILTERS`)."""

    charge_neutrality: bool
    shannon_radius: bool
    electronegativity: bool
    tolerance_factor: RangeFilter
    octahedral_factor: RangeFilter
    tau: TauFilter
    radius_ratio: RadiusRatioFilter


@dataclass(frozen=True)
class MixingSettings:
    """``enumerate.mixing``: two ions sharing one cation site in fractions k/denominator."""

    enabled: bool
    denominator: int
    #: family -> cation sites that may be mixed
    sites: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class EnumerateSettings:
    """``enumerate:`` (keys and meanings: ``config/README.md``; defaults: the schema)."""

    families: tuple[str, ...]
    shards: int
    cations: tuple[str, ...]
    oxidation_states: str
    anion_radius_cn: int
    #: family -> site -> element/ion entries, or None for the shared ``cations`` pool
    sites: Mapping[str, Mapping[str, Sequence[str] | None]]
    filters: EnumerateFilters
    mixing: MixingSettings


def resolve_settings(settings: EnumerateSettings | Mapping[str, Any] | None) -> EnumerateSettings:
    """:class:`EnumerateSettings` from a (partial) ``enumerate:`` section, checked; an instance passes through.

    Accepts ``{}`` or a partial section, so the library behaves the same whether or not the
    whole config was validated first. Raises :class:`ConfigError` naming the key.
    """
    if isinstance(settings, EnumerateSettings):
        return settings
    out = build_settings(EnumerateSettings, "enumerate", settings)
    check_settings(out)
    return out


def parse_ion_entry(entry: str, *, anion: bool, policy: str, key: str) -> list[tuple[str, float]]:
    """Expand one site-list entry into (element, oxidation state) pairs.

    ``"Fe3+"`` gives exactly Fe3+; ``"Fe"`` gives Fe in every state of the pymatgen list named by
    ``policy`` (``common``, ``icsd`` or ``all``) with the site's sign. ``key`` names the config
    key in errors: an unknown element, a state pymatgen does not know for the element, a sign that
    does not fit the site, or an element with no state of the right sign.
    """
    m = _ION_RE.match(str(entry).strip())
    if not m:
        raise ConfigError(f"config key {key!r}: cannot read {entry!r} (expected an element like 'Fe' or an ion like 'Fe3+')")
    symbol, mag, sign = m.groups()
    if not Element.is_valid_symbol(symbol):
        raise ConfigError(f"config key {key!r}: unknown element {symbol!r}")
    el = Element(symbol)
    if sign:
        oxi = (int(mag) if mag else 1) * (1 if sign == "+" else -1)
        if oxi not in el.oxidation_states:
            raise ConfigError(
                f"config key {key!r}: pymatgen knows no oxidation state {oxi:+d} for {symbol} "
                f"(known: {', '.join(f'{o:+d}' for o in el.oxidation_states) or 'none'})"
            )
        if (oxi < 0) != anion:
            raise ConfigError(f"config key {key!r}: {entry!r} is {'a cation' if oxi > 0 else 'an anion'} on {'an anion' if anion else 'a cation'} site")
        return [(symbol, float(oxi))]
    states = {"common": el.common_oxidation_states, "icsd": el.icsd_oxidation_states, "all": el.oxidation_states}[policy]
    picked = sorted({int(o) for o in states if (o < 0) == anion and o != 0})
    if not states:  # pymatgen has no data for this element in that list: it contributes no ion
        log.warning("config key %r: %s has no oxidation states in pymatgen's %s list; skipped", key, symbol, policy)
        return []
    if not picked:
        raise ConfigError(
            f"config key {key!r}: {symbol} has no {'negative' if anion else 'positive'} oxidation state in "
            f"pymatgen's {policy} list ({tuple(states)}); name the ion explicitly, e.g. '{symbol}2{'-' if anion else '+'}'"
        )
    return [(symbol, float(o)) for o in picked]


def site_ions(settings: EnumerateSettings, family: str, site: str) -> list[tuple[str, float]]:
    """The ions (element, oxidation) allowed on ``site`` of ``family``, in config order, without repeats."""
    fam = get_family(family)
    s = fam.site(site)
    entries = settings.sites[family][site]
    key = f"enumerate.sites.{family}.{site}"
    if entries is None:
        entries, key = settings.cations, "enumerate.cations"
    if len(entries) == 0:
        raise ConfigError(f"config key {key!r}: the site list is empty")
    seen: dict[tuple[str, float], None] = {}
    for i, entry in enumerate(entries):
        for ion in parse_ion_entry(entry, anion=s.is_anion, policy=settings.oxidation_states, key=f"{key}[{i}]"):
            seen.setdefault(ion, None)
    if not seen:
        raise ConfigError(f"config key {key!r}: no ion left for {family} site {site!r} with oxidation_states {settings.oxidation_states!r}")
    return list(seen)


def check_settings(settings: EnumerateSettings) -> None:
    """Raise :class:`ConfigError` for what the JSON schema cannot see."""
    for i, name in enumerate(settings.families):
        if name not in FAMILIES:
            raise ConfigError(f"config key 'enumerate.families[{i}]': unknown family {name!r} (known: {', '.join(FAMILIES)})")
    for fam_name, sites in settings.sites.items():
        fam = FAMILIES.get(fam_name)
        if fam is None:
            raise ConfigError(f"config key 'enumerate.sites.{fam_name}': unknown family {fam_name!r} (known: {', '.join(FAMILIES)})")
        for label in sites:
            if label not in fam.site_labels:
                raise ConfigError(f"config key 'enumerate.sites.{fam_name}.{label}': family {fam_name} has no site {label!r} (sites: {', '.join(fam.site_labels)})")
        for label in fam.site_labels:
            site_ions(settings, fam_name, label)  # raises on bad entries
    for fam_name, windows in settings.filters.radius_ratio.windows.items():
        fam = FAMILIES.get(fam_name)
        if fam is None:
            raise ConfigError(f"config key 'enumerate.filters.radius_ratio.windows.{fam_name}': unknown family {fam_name!r}")
        for label, (lo, hi) in windows.items():
            key = f"enumerate.filters.radius_ratio.windows.{fam_name}.{label}"
            if label not in fam.site_labels or fam.site(label).is_anion:
                raise ConfigError(f"config key {key!r}: family {fam_name} has no cation site {label!r}")
            if lo > hi:
                raise ConfigError(f"config key {key!r}: window [{lo}, {hi}] is empty (min > max)")
    for name in ("tolerance_factor", "octahedral_factor"):
        f = getattr(settings.filters, name)
        if f.min > f.max:
            raise ConfigError(f"config key 'enumerate.filters.{name}': min {f.min} > max {f.max}")


def check_config(config: Mapping[str, Any]) -> None:
    """In :data:`matscreen.config.SEMANTIC_CHECKS`: bad enumerate settings fail before any job runs."""
    resolve_settings(config["enumerate"])


# --- ion tables -----------------------------------------------------------------------------


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


# --- per-family combination tables ------------------------------------------------------------


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


def _build_combos(family: Family, settings: EnumerateSettings) -> Combos:
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
        union_ions = sorted(set(site_ions(settings, family.name, "B")) | set(site_ions(settings, family.name, "B2")),
                            key=lambda ion: format_occupancy([Ion(*ion)]))
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


# --- mixed sites (enumerate.mixing) ---------------------------------------------------------


def mixing_sites(family: Family, settings: EnumerateSettings) -> list[str]:
    """Cation sites of ``family`` that enumerate.mixing mixes (none when mixing is off)."""
    mix = settings.mixing
    if not mix.enabled or family.name == "spinel":
        return []
    return list(mix.sites.get(family.name) or [])


def check_mixing(config: dict[str, Any]) -> None:
    mix = (config.get("enumerate") or {}).get("mixing") or {}
    for fam_name, labels in (mix.get("sites") or {}).items():
        if fam_name not in FAMILIES:
            raise ConfigError(f"config key 'enumerate.mixing.sites.{fam_name}': unknown family {fam_name!r}")
        if fam_name == "spinel":
            raise ConfigError("config key 'enumerate.mixing.sites.spinel': spinels are not mixed "
                              "(their inverse arrangement is already a mixed site)")
        cations = [x.label for x in FAMILIES[fam_name].cation_sites]
        for i, label in enumerate(labels or []):
            if label not in cations:
                raise ConfigError(f"config key 'enumerate.mixing.sites.{fam_name}[{i}]': {label!r} is not a cation "
                                  f"site of {fam_name} ({', '.join(cations)})")


def _pair_options(t: IonTable, denominator: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every mixed occupancy of a site: ions i < j with fractions k/d and (d-k)/d, k = 1..d-1."""
    i, j = (a.astype(np.int32) for a in np.triu_indices(len(t), k=1))
    k = np.arange(1, denominator, dtype=np.int64)
    ii, kk = np.repeat(i, len(k)), np.tile(k, len(i))
    jj = np.repeat(j, len(k))
    return ii, jj, kk


def _mixed_combos(family: Family, settings: Mapping[str, Any]) -> tuple[Combos, int]:
    """The pure combinations plus, for every site in enumerate.mixing.sites, every combination with
    that one site mixed, kept only if charge-neutral. Returns (combos, combinations before the
    charge-neutrality check), so the funnel still counts the whole space.

    Neutral combinations are found by a join on charge (in units of 1/denominator): the other
    sites' charge of each pure combination must cancel the mixed site's, so the non-neutral
    product is never built. Every mixing site has two terms (the second inert, fraction 0, in
    rows where it is not mixed), like the spinel's sites.
    """
    d = int(settings.mixing.denominator)
    base = _build_combos(family, settings)
    labels = mixing_sites(family, settings)
    n_raw = len(base)
    n_base = len(base)
    parts = []  # (mixed label, other-site rows of base, option index into pairs)
    charge = {s.label: _site_value(base, s.label, "oxidation") * s.multiplicity for s in family.sites}
    for label in labels:
        site = family.site(label)
        (t, idx, _), = base.sites[label]
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


def _site_value(combos: Combos, label: str, what: str, cn: int | None = None) -> np.ndarray:
    """Fraction-weighted oxidation, radius (at cn) or electronegativity of a site."""
    total = np.zeros(len(combos))
    for t, idx, frac in combos.sites[label]:
        vals = t.oxidation[idx] if what == "oxidation" else t.radius[cn][idx] if what == "radius" else t.electronegativity[idx]
        total = total + np.where(frac > 0, frac * vals, 0.0)  # 0 * NaN must not poison an inert term
    return total


def _max_cation_en(combos: Combos) -> np.ndarray:
    """Largest electronegativity of any cation present (unknown counts as +inf: fails the filter)."""
    out = np.full(len(combos), -np.inf)
    for s in combos.family.cation_sites:
        for t, idx, frac in combos.sites[s.label]:
            en = np.where(np.isnan(t.electronegativity[idx]), np.inf, t.electronegativity[idx])
            out = np.where(frac > 0, np.maximum(out, en), out)
    return out


@dataclass
class Descriptors:
    radius: dict[str, np.ndarray]
    oxidation: dict[str, np.ndarray]
    t: np.ndarray
    mu: np.ndarray
    tau: np.ndarray


def _descriptors(combos: Combos, settings: EnumerateSettings) -> Descriptors:
    fam = combos.family
    cn_x = settings.anion_radius_cn
    radius = {s.label: _site_value(combos, s.label, "radius", cn_x if s.is_anion else s.cn) for s in fam.sites}
    oxidation = {s.label: _site_value(combos, s.label, "oxidation") for s in fam.sites}
    n = len(combos)
    t = mu = tau = np.full(n, np.nan)
    if fam.name in ("perovskite", "double_perovskite"):
        r_b = radius["B"] if fam.name == "perovskite" else 0.5 * (radius["B"] + radius["B2"])
        r_a, r_x = radius["A"], radius["X"]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.asarray(chemistry.goldschmidt_t(r_a, r_b, r_x), dtype=float)
            mu = np.asarray(chemistry.octahedral_factor(r_b, r_x), dtype=float)
            tau = np.asarray(chemistry.bartel_tau(r_a, r_b, r_x, oxidation["A"]), dtype=float)
    return Descriptors(radius, oxidation, t, mu, tau)


def _filter_mask(name: str, combos: Combos, d: Descriptors, settings: EnumerateSettings) -> np.ndarray:
    fam = combos.family
    f = settings.filters
    if name == "charge_neutrality":
        charge = sum(s.multiplicity * d.oxidation[s.label] for s in fam.sites)
        return np.abs(charge) < 1e-6
    if name == "shannon_radius":
        ok = np.ones(len(combos), dtype=bool)
        for s in fam.sites:
            ok &= ~np.isnan(d.radius[s.label])
        return ok
    if name == "electronegativity":
        x_en = _site_value(combos, "X", "electronegativity")
        return _max_cation_en(combos) < x_en
    with np.errstate(invalid="ignore"):
        if name == "tolerance_factor":
            return (d.t >= f.tolerance_factor.min) & (d.t <= f.tolerance_factor.max)
        if name == "octahedral_factor":
            return (d.mu >= f.octahedral_factor.min) & (d.mu <= f.octahedral_factor.max)
        if name == "tau":
            return d.tau < f.tau.max
        if name == "radius_ratio":
            ok = np.ones(len(combos), dtype=bool)
            for label, (lo, hi) in f.radius_ratio.windows.get(fam.name, {}).items():
                ratio = d.radius[label] / d.radius["X"]
                ok &= (ratio >= lo) & (ratio <= hi)
            return ok
    raise ValueError(f"unknown filter {name!r}")


def _enabled(name: str, settings: EnumerateSettings) -> bool:
    f = getattr(settings.filters, name)
    return bool(f if isinstance(f, bool) else f.enabled)


def enumerate_family(family: str, settings: EnumerateSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Candidates and funnel rows of one family."""
    fam = get_family(family)
    if mixing_sites(fam, settings):
        combos, n_raw = _mixed_combos(fam, settings)  # mixed rows: charge-neutral ones only
    else:
        combos = _build_combos(fam, settings)
        n_raw = len(combos)
    pre_removed = n_raw - len(combos)
    funnel = [(fam.name, 0, "all_combinations", n_raw, 0)]
    d = _descriptors(combos, settings)
    step = 0
    for name in FILTERS[fam.name]:
        if not _enabled(name, settings):
            log.info("%s: filter %s is switched off", fam.name, name)
            continue
        mask = _filter_mask(name, combos, d, settings)
        before = len(combos)
        combos = combos.take(mask)
        d = Descriptors({k: v[mask] for k, v in d.radius.items()}, {k: v[mask] for k, v in d.oxidation.items()},
                        d.t[mask], d.mu[mask], d.tau[mask])
        step += 1
        if name == "charge_neutrality":  # mixed combinations that are not neutral were never built
            before, pre_removed = before + pre_removed, 0
        funnel.append((fam.name, step, name, len(combos), before - len(combos)))
    return _to_frame(combos, d), pd.DataFrame(funnel, columns=[c.name for c in tables.FUNNEL.columns])


@lru_cache(maxsize=65536)
def formula_unit(amounts: tuple[tuple[str, float], ...]) -> str:
    """Formula of one formula unit in pymatgen's element order (electronegativity), counts of 1
    left out: ``(("Al", 5), ("O", 12), ("Y", 3))`` -> ``'Y3Al5O12'``."""
    ordered = sorted(amounts, key=lambda item: (_en_or_inf(item[0]), item[0]))
    return "".join(el + ("" if n == 1 else f"{n:g}") for el, n in ordered)


def _en_or_inf(symbol: str) -> float:
    x = chemistry.electronegativity(symbol)
    return x if not math.isnan(x) else float("inf")


def _occupancy_strings(combos: Combos, label: str) -> np.ndarray:
    terms = combos.sites[label]
    if len(terms) == 1:
        t, idx, _ = terms[0]
        return t.label[idx]
    # one string per distinct (ions, fractions): mixed-site spaces have millions of rows, few distinct sites
    key = np.stack([np.where(frac > 0, idx, -1) for t, idx, frac in terms] + [np.rint(frac * 1e6) for _, _, frac in terms],
                   axis=1).astype(np.int64)
    uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    texts = np.empty(len(uniq), dtype=object)
    for u, i in enumerate(first):
        ions = [Ion(t.element[idx[i]], float(t.oxidation[idx[i]]), float(frac[i])) for t, idx, frac in terms if frac[i] > 0]
        texts[u] = format_occupancy(ions)
    return texts[inverse.ravel()] if len(combos) else np.empty(0, dtype=object)


def _to_frame(combos: Combos, d: Descriptors) -> pd.DataFrame:
    fam = combos.family
    n = len(combos)
    cols: dict[str, Any] = {}
    occ = {s.label: _occupancy_strings(combos, s.label) for s in fam.sites}
    # element amounts per formula unit, from the ordered terms (fractions x multiplicity)
    formulas = np.empty(n, dtype=object)
    for i in range(n):
        amounts: dict[str, float] = {}
        for s in fam.sites:
            for t, idx, frac in combos.sites[s.label]:
                if frac[i] > 0:
                    el = t.element[idx[i]]
                    amounts[el] = amounts.get(el, 0.0) + frac[i] * s.multiplicity
        formulas[i] = formula_unit(tuple(sorted(amounts.items())))
    ids = [candidate_id(fam.name, {s.label: occ[s.label][i] for s in fam.sites}) for i in range(n)]
    cols["candidate_id"] = ids
    cols["family"] = fam.name
    cols["formula"] = formulas
    cols["arrangement"] = combos.arrangement
    for s in SITE_LABELS:
        if s in fam.site_labels:
            cols[f"{s}_species"] = occ[s]
            cols[f"{s}_oxi"] = d.oxidation[s]
            cols[f"{s}_radius_ang"] = d.radius[s]
        else:
            cols[f"{s}_species"] = None
            cols[f"{s}_oxi"] = np.nan
            cols[f"{s}_radius_ang"] = np.nan
    cols["tolerance_factor"] = d.t
    cols["octahedral_factor"] = d.mu
    cols["tau"] = d.tau
    df = pd.DataFrame(cols, index=pd.RangeIndex(n))
    return tables.conform(df, tables.CANDIDATES)


def enumerate_candidates(settings: EnumerateSettings | Mapping[str, Any] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates, funnel) of every family in ``settings.families``.

    ``settings`` is :class:`EnumerateSettings` (or the ``enumerate:`` config section, validated
    or partial: defaults are filled in). Candidates conform to :data:`tables.CANDIDATES`, sorted by family (order of
    :data:`families.FAMILIES`), formula, arrangement and id, so the order does not depend on the
    order of the config lists. The funnel conforms to :data:`tables.FUNNEL`.
    """
    settings = resolve_settings(settings)
    frames, funnels = [], []
    for name in FAMILIES:
        if name not in settings.families:
            continue
        t0 = time.perf_counter()
        cand, fun = enumerate_family(name, settings)
        log.info("%s: %d of %d combinations pass (%.2f s)", name, len(cand), int(fun["remaining"].iloc[0]), time.perf_counter() - t0)
        frames.append(cand)
        funnels.append(fun)
    cand = pd.concat(frames, ignore_index=True) if frames else tables.empty_frame(tables.CANDIDATES)
    order = {n: i for i, n in enumerate(FAMILIES)}
    cand = (cand.assign(_fam=cand["family"].map(order))
                .sort_values(["_fam", "formula", "arrangement", "candidate_id"], kind="mergesort")
                .drop(columns="_fam").reset_index(drop=True))
    funnel = pd.concat(funnels, ignore_index=True) if funnels else tables.empty_frame(tables.FUNNEL)
    funnel = funnel.astype({"step": "int64", "remaining": "int64", "removed": "int64"})
    return tables.conform(cand, tables.CANDIDATES), tables.conform(funnel, tables.FUNNEL)


def shard_of(candidate_id: str, n_shards: int) -> int:
    """Stable shard of a candidate: CRC32 of its id modulo ``n_shards`` (same on every machine)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return zlib.crc32(candidate_id.encode()) % n_shards


def format_funnel(funnel: pd.DataFrame) -> str:
    """The funnel as aligned text lines (for logs and the benchmark)."""
    lines = [f"{'family':<18} {'step':>4}  {'filter':<18} {'remaining':>10} {'removed':>10}"]
    for r in funnel.itertuples(index=False):
        lines.append(f"{r.family:<18} {r.step:>4}  {r.filter:<18} {r.remaining:>10} {r.removed:>10}")
    return "\n".join(lines)


def _clear_shard_folders(shard_paths: Sequence[str]) -> None:
    """Remove the manifest and every ``part-*.parquet`` not about to be rewritten from the shard folders.

    Runs before the first shard is written: a kill after this point leaves a set without a
    manifest (refused by readers), and a rerun with fewer shards leaves no stale shard that a
    ``part-*`` glob would pick up as current.
    """
    keep = {os.path.abspath(p) for p in shard_paths}
    for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in shard_paths}):
        Path(folder, tables.MANIFEST_NAME).unlink(missing_ok=True)
        for stale in sorted(Path(folder).glob("part-*.parquet")):
            if str(stale.resolve()) not in keep and os.path.abspath(stale) not in keep:
                log.info("removing stale shard %s of an earlier run", stale)
                stale.unlink()


def run(settings: EnumerateSettings | Mapping[str, Any] | None, shard_paths: list[str], funnel_path: str, config_hash: str = "") -> None:
    """Enumerate, then write one Parquet file per shard (empty shards too), the funnel and the manifest.

    A candidate goes to ``shard_paths[shard_of(id, len(shard_paths))]``, so a candidate keeps
    its shard when other candidates come and go. Every table is checked before the first is
    written; the shard manifest (:func:`matscreen.tables.write_manifest`) is written last, so a
    set that has one is complete and current.
    """
    if not shard_paths:
        raise ValueError("run() needs at least one shard path")
    t0 = time.perf_counter()
    settings = resolve_settings(settings)
    cand, funnel = enumerate_candidates(settings)
    prov = provenance("enumerate", settings_dict(settings), config_hash)
    shard = np.array([shard_of(c, len(shard_paths)) for c in cand["candidate_id"]], dtype=int)
    parts = [cand[shard == i].reset_index(drop=True) for i in range(len(shard_paths))]
    _clear_shard_folders(shard_paths)
    tables.write_tables([*((part, path, tables.CANDIDATES) for part, path in zip(parts, shard_paths)),
                         (funnel, funnel_path, tables.FUNNEL)], prov)
    for i, (part, path) in enumerate(zip(parts, shard_paths)):
        log.info("shard %d: %d candidates -> %s", i, len(part), path)
    folders: dict[str, list[str]] = {}
    for p in shard_paths:
        folders.setdefault(os.path.dirname(os.path.abspath(p)), []).append(p)
    run_id = f"{config_hash or 'noconfig'}-{uuid.uuid4().hex[:12]}"
    for folder, members in folders.items():
        tables.write_manifest(folder, members, run_id)
    log.info("funnel:\n%s", format_funnel(funnel))
    log.info("%d candidates in %.2f s", len(cand), time.perf_counter() - t0)
