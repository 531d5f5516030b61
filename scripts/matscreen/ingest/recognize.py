"""Structural family recognition: which family a structure belongs to and which ion sits on which site.

Design (measured: ``benchmarks/ingest.py`` times it and ``tests/test_recognize.py`` checks it):

* **Topology decides the family and gives the site roles.** The anion is the most
  electronegative element. Each cation's coordination number (CN) is the ``k`` in 2..12 that
  maximises the gap ``d[k+1] / d[k]`` in its sorted cation-anion distances (searched out to
  :data:`SEARCH_RADIUS_ANG`; a fixed ``1.25 d_min`` cut-off fails for the off-centred Ti of
  P4mm BaTiO3). From the bonded anions (periodic images included) we count how many anions two
  polyhedra share (1 corner, 2 edge, 3 face) and apply the family's rules, with the site
  coordination numbers and multiplicities taken from :mod:`matscreen.families`:

  - perovskite ABX3: CN-6 cations = other cations = N_X / 3, the others CN >= 7, BX6
    octahedra share only corners and every X bridges exactly two B (so hexagonal BaNiO3 with
    face-sharing octahedra and ilmenite FeTiO3 with two CN-6 cations are not perovskites);
    a B sublattice of two species 1:1 with all six B-X-B neighbours unlike (rock-salt order)
    is a double perovskite A2BB'X6; columnar (4) and layered (2) orderings are noted;
  - spinel AB2X4: tetrahedral : octahedral : X = 1 : 2 : 4, octahedra share edges,
    tetrahedra share nothing with each other and only corners with octahedra (olivine, same
    formula, shares tetrahedron-octahedron edges). Roles follow the geometry, so ringwoodite
    Mg2SiO4 gets Si tetrahedral, and the Cmcm Fe3O4 polymorph (CN 6 + 8) is not a spinel;
  - garnet C3A2D3X12: CN 8 : 6 : 4 : X = 3 : 2 : 3 : 12, tetrahedra isolated.

  This got 25/25 in the probe at < 0.07 s per file, and, unlike matching alone, it names the
  site of every atom directly.

* **StructureMatcher confirms** (``confirm_with_matcher=True``, the ingest default): the
  structure, with every cation replaced by one dummy cation and every anion by one dummy anion
  (an anion/cation-only comparison), must match the family's ideal prototype built from
  :mod:`matscreen.families` (``attempt_supercell=True``, so tilted Pnma/R-3c perovskites fit).
  Plain ``fit_anonymous`` needs equal species counts on both sides and so fails for
  magnetite, mixed sites and YAG; loosening its tolerances accepts ilmenite as a perovskite.
  Matching alone is also 20-50x slower than topology, so it only checks an answer topology
  already gave; a structure topology calls a family but the matcher rejects becomes
  ``other`` with the reason.

* **Oxidation states** are guessed per (site, element) group, not per composition: among the
  element's common and ICSD oxidation states (and half-way mixed valences such as Fe2.5+) the
  charge-balanced assignment whose values are closest to each group's bond-valence sum
  (pymatgen ``calculate_bv_sum``) wins. This puts Fe3+ on the tetrahedral site of magnetite
  (inverse spinel, BVS about 2.8 against 2.6 on the octahedra), where ``BVAnalyzer`` puts Fe2+,
  and keeps Co3O4 normal. Oxidation states already in the structure (pymatgen JSON) are used
  as given.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

import numpy as np
from pymatgen.analysis.bond_valence import calculate_bv_sum
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, Lattice, Species, Structure

from matscreen.chemistry import electronegativity
from matscreen.families import FAMILIES, OTHER, Family, Ion, format_occupancy, get_family

log = logging.getLogger(__name__)

#: Cation-anion search radius for the coordination-gap rule (Cs-I in CsPbI3 is 4.5 Å).
SEARCH_RADIUS_ANG = 8.0
#: Elements accepted as the anion of an ionic family (the most electronegative element must be one).
ANION_ELEMENTS = frozenset({"O", "S", "Se", "Te", "F", "Cl", "Br", "I", "N"})
#: Default StructureMatcher tolerances of the prototype check (normalised RMS up to 0.21 measured
#: for tilted perovskites; ilmenite is still rejected at these values).
MATCHER_DEFAULTS: dict[str, float] = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}
#: Most oxidation-state combinations tried per structure before giving up.
MAX_OXI_COMBINATIONS = 200_000

_DUMMY_CATION = "Mg"
_DUMMY_ANION = "O"


class RecognitionError(ValueError):
    """The structure cannot be analysed at all (not the same as belonging to no family)."""


@dataclass(frozen=True)
class Recognition:
    """What :func:`recognize` found out about one structure.

    ``occupancy`` maps the family's site labels to :func:`families.format_occupancy` strings
    (with oxidation states); it is empty for ``family == "other"``. ``site_indices`` maps the
    same labels to the indices of the structure's sites that fill them.
    """

    family: str
    occupancy: dict[str, str] = field(default_factory=dict)
    site_indices: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: measured mean coordination number of each site label
    coordination: dict[str, float] = field(default_factory=dict)
    #: spinel inversion: fraction of tetrahedral sites holding the ion that is 2 per formula unit
    inversion: float | None = None
    #: perovskite B-sublattice ordering when it holds two species: rock-salt, columnar, layered or mixed
    b_ordering: str | None = None
    #: False when no charge-balanced oxidation-state assignment was found (family still given)
    charge_balanced: bool = True
    #: normalised RMS of the prototype match (None when the matcher was not run)
    matcher_rms: float | None = None
    #: why this family (or why none): human-readable
    reason: str = ""

    def site_roles(self) -> dict[str, Any]:
        """JSON-ready summary stored in the ``site_roles`` column."""
        if self.family == OTHER:
            return {}
        fam = get_family(self.family)
        out: dict[str, Any] = {}
        for site in fam.sites:
            out[site.label] = {
                "role": site.role,
                "cn": site.cn,
                "measured_cn": self.coordination.get(site.label),
                "occupancy": self.occupancy.get(site.label),
                "n_sites": len(self.site_indices.get(site.label, ())),
            }
        if self.inversion is not None:
            out["inversion"] = self.inversion
        if self.b_ordering is not None:
            out["b_ordering"] = self.b_ordering
        return out


# --- geometry -----------------------------------------------------------------------


class _Topology(NamedTuple):
    anion: str
    anion_sites: list[int]
    cation_sites: list[int]
    cn: dict[int, int]  #: cation site index -> coordination number
    bonds: dict[int, list[tuple[int, tuple[int, int, int]]]]  #: cation -> [(anion index, image)]
    distances: dict[int, np.ndarray]  #: cation -> distances to its bonded anions
    #: anion index -> [(cation index, image of the cation relative to the anion at the origin)]
    anion_bonds: dict[int, list[tuple[int, tuple[int, int, int]]]]


def _site_elements(site: Any) -> set[str]:
    return {sp.symbol for sp in site.species}


def anion_element(structure: Structure) -> str:
    """The most electronegative element of the structure (ties: the heavier-listed one wins)."""
    elements = sorted({el.symbol for el in structure.composition.elements})
    return max(elements, key=lambda e: (np.nan_to_num(electronegativity(e), nan=-1.0), e))


def coordination_number(distances: np.ndarray) -> int:
    """CN = k in 2..12 maximising the gap d[k] / d[k-1] (1-based) in sorted distances.

    Needs at least 3 distances; with fewer the whole list is the coordination shell.
    """
    d = np.sort(np.asarray(distances, dtype=float))
    if len(d) < 3:
        return len(d)
    kmax = min(12, len(d) - 1)
    ratios = d[2 : kmax + 1] / d[1:kmax]  # ratio after the k-th neighbour, k = 2..kmax
    return int(np.argmax(ratios)) + 2


def _topology(structure: Structure, radius: float) -> _Topology:
    anion = anion_element(structure)
    anion_sites, cation_sites = [], []
    for i, site in enumerate(structure):
        els = _site_elements(site)
        if els == {anion}:
            anion_sites.append(i)
        elif anion in els:
            raise RecognitionError(f"site {i} mixes the anion {anion} with cations ({site.species_string})")
        else:
            cation_sites.append(i)
    if not anion_sites or not cation_sites:
        raise RecognitionError("needs both cation and anion sites")
    is_anion = np.zeros(len(structure), dtype=bool)
    is_anion[anion_sites] = True
    centers, points, images, dists = structure.get_neighbor_list(radius, sites=[structure[i] for i in cation_sites])
    keep = is_anion[points]
    centers, points, images, dists = centers[keep], points[keep], images[keep].astype(int), dists[keep]
    cn: dict[int, int] = {}
    bonds: dict[int, list[tuple[int, tuple[int, int, int]]]] = {}
    distances: dict[int, np.ndarray] = {}
    anion_bonds: dict[int, list[tuple[int, tuple[int, int, int]]]] = defaultdict(list)
    order = np.lexsort((dists, centers))
    centers, points, images, dists = centers[order], points[order], images[order], dists[order]
    starts = np.searchsorted(centers, np.arange(len(cation_sites)))
    ends = np.searchsorted(centers, np.arange(len(cation_sites)), side="right")
    for local, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        ci = cation_sites[local]
        if hi - lo < 2:
            raise RecognitionError(f"cation site {ci} ({structure[ci].species_string}) has fewer than 2 anions within {radius} Å")
        k = coordination_number(dists[lo:hi])
        cn[ci] = k
        bonded = [(int(points[j]), tuple(int(v) for v in images[j])) for j in range(lo, lo + k)]
        bonds[ci] = bonded  # type: ignore[assignment]
        distances[ci] = dists[lo : lo + k]
        for a, img in bonded:
            anion_bonds[a].append((ci, (-img[0], -img[1], -img[2])))
    return _Topology(anion, anion_sites, cation_sites, cn, bonds, distances, dict(anion_bonds))


def _shared_counts(topo: _Topology, ci: int) -> Counter[tuple[int, tuple[int, int, int]]]:
    """How many anions the polyhedron of cation ``ci`` shares with each other polyhedron (by image)."""
    shared: Counter[tuple[int, tuple[int, int, int]]] = Counter()
    for a, s in topo.bonds[ci]:
        for cj, t in topo.anion_bonds.get(a, ()):
            other = (cj, (t[0] + s[0], t[1] + s[1], t[2] + s[2]))
            if other != (ci, (0, 0, 0)):
                shared[other] += 1
    return shared


def _max_share(topo: _Topology, group1: Sequence[int], group2: Sequence[int]) -> int:
    """Largest number of anions shared between a polyhedron of group1 and one of group2."""
    g2 = set(group2)
    best = 0
    for ci in group1:
        for (cj, _), n in _shared_counts(topo, ci).items():
            if cj in g2:
                best = max(best, n)
    return best


# --- family rules -------------------------------------------------------------------


def _ratio_ok(counts: Sequence[int], mults: Sequence[int]) -> bool:
    """counts proportional to mults with the same (integer) number of formula units."""
    if mults[0] == 0 or counts[0] % mults[0]:
        return False
    z = counts[0] // mults[0]
    return z > 0 and all(c == z * m for c, m in zip(counts, mults, strict=True))


def _perovskite_roles(structure: Structure, topo: _Topology) -> tuple[dict[str, list[int]] | None, str]:
    fam = FAMILIES["perovskite"]
    b_cn = fam.site("B").cn
    octa = [c for c in topo.cation_sites if topo.cn[c] == b_cn]
    others = [c for c in topo.cation_sites if topo.cn[c] != b_cn]
    nx = len(topo.anion_sites)
    if not _ratio_ok([len(others), len(octa), nx], [fam.site("A").multiplicity, fam.site("B").multiplicity, fam.anion_site.multiplicity]):
        return None, f"perovskite needs A:B(CN {b_cn}):X = 1:1:3, found {len(others)}:{len(octa)}:{nx}"
    if min((topo.cn[c] for c in others), default=0) < 7:
        return None, "perovskite A cations need CN >= 7"
    share = _max_share(topo, octa, octa)
    if share != 1:
        return None, f"BX6 octahedra share {share} anions (perovskite: corners only)"
    octa_set = set(octa)
    for a in topo.anion_sites:
        nb = sum(1 for c, _ in topo.anion_bonds.get(a, ()) if c in octa_set)
        if nb != 2:
            return None, f"anion site {a} bridges {nb} octahedra (perovskite: 2)"
    return {"A": others, "B": octa, "X": list(topo.anion_sites)}, "perovskite: corner-sharing BX6, A CN >= 7"


def _b_ordering(structure: Structure, topo: _Topology, octa: Sequence[int]) -> tuple[str | None, dict[str, list[int]]]:
    """Ordering of a two-species B sublattice from unlike B-X-B neighbours (6, 4, 2)."""
    kinds: dict[str, list[int]] = defaultdict(list)
    for c in octa:
        kinds[structure[c].species_string].append(c)
    if len(kinds) != 2:
        return None, dict(kinds)
    kind_of = {c: k for k, cs in kinds.items() for c in cs}
    unlike = set()
    for c in octa:
        n = sum(1 for (cj, _), m in _shared_counts(topo, c).items() if m == 1 and cj in kind_of and kind_of[cj] != kind_of[c])
        unlike.add(n)
    names = {6: "rock-salt", 4: "columnar", 2: "layered"}
    if len(unlike) == 1 and (n := unlike.pop()) in names:
        return names[n], dict(kinds)
    return "mixed", dict(kinds)


def _spinel_roles(structure: Structure, topo: _Topology) -> tuple[dict[str, list[int]] | None, str]:
    fam = FAMILIES["spinel"]
    a, b, x = fam.site("A"), fam.site("B"), fam.anion_site
    tet = [c for c in topo.cation_sites if topo.cn[c] == a.cn]
    octa = [c for c in topo.cation_sites if topo.cn[c] == b.cn]
    nx = len(topo.anion_sites)
    if len(tet) + len(octa) != len(topo.cation_sites) or not _ratio_ok([len(tet), len(octa), nx], [a.multiplicity, b.multiplicity, x.multiplicity]):
        return None, f"spinel needs tet:oct:X = 1:2:4 and nothing else, found CNs {dict(Counter(topo.cn.values()))} with {nx} X"
    if _max_share(topo, octa, octa) != 2:
        return None, "spinel octahedra must share edges"
    if _max_share(topo, tet, octa) > 1:
        return None, "tetrahedra share edges with octahedra (olivine-like, not spinel)"
    if _max_share(topo, tet, tet) > 0:
        return None, "tetrahedra share anions with each other (not spinel)"
    return {"A": tet, "B": octa, "X": list(topo.anion_sites)}, "spinel: tetrahedra corner-linked to edge-sharing octahedra"


def _garnet_roles(structure: Structure, topo: _Topology) -> tuple[dict[str, list[int]] | None, str]:
    fam = FAMILIES["garnet"]
    sites = {s.label: s for s in fam.cation_sites}
    groups = {label: [c for c in topo.cation_sites if topo.cn[c] == s.cn] for label, s in sites.items()}
    nx = len(topo.anion_sites)
    if sum(len(g) for g in groups.values()) != len(topo.cation_sites):
        return None, "garnet needs only CN 8, 6 and 4 cations"
    labels = list(sites)
    if not _ratio_ok([len(groups[lab]) for lab in labels] + [nx], [sites[lab].multiplicity for lab in labels] + [fam.anion_site.multiplicity]):
        return None, f"garnet needs CN8:CN6:CN4:X = 3:2:3:12, found {[len(groups[lab]) for lab in labels]}:{nx}"
    if _max_share(topo, groups["D"], groups["D"]) > 0:
        return None, "garnet tetrahedra must be isolated"
    return {**groups, "X": list(topo.anion_sites)}, "garnet: CN 8/6/4 cations 3:2:3, isolated tetrahedra"


# --- oxidation states ---------------------------------------------------------------


@cache
def _candidate_states(element: str) -> tuple[float, ...]:
    el = Element(element)
    ints = sorted({s for s in (*el.common_oxidation_states, *el.icsd_oxidation_states) if s > 0})
    if not ints:
        ints = sorted(s for s in el.oxidation_states if s > 0)
    halves = [s + 0.5 for s in ints if s + 1 in ints]
    return tuple(float(v) for v in sorted([*ints, *halves]))


@cache
def _anion_state(element: str) -> float:
    states = [s for s in (*Element(element).common_oxidation_states, *Element(element).oxidation_states) if s < 0]
    if not states:
        raise RecognitionError(f"{element} has no negative oxidation state")
    return float(min(states))


class _BVNeighbor(NamedTuple):
    """The two attributes ``calculate_bv_sum`` reads from a neighbour."""

    specie: Element
    nn_distance: float


def _bv_sum(structure: Structure, topo: _Topology, ci: int, element: str) -> float:
    nn = [_BVNeighbor(Element(topo.anion), float(d)) for d in topo.distances[ci]]

    class _Site(NamedTuple):
        specie: Element

    try:
        return float(calculate_bv_sum(_Site(Element(element)), nn))
    except KeyError:  # element without bond-valence parameters
        return math.nan


def _assign_oxidation(
    structure: Structure, topo: _Topology, roles: Mapping[str, Sequence[int]]
) -> tuple[dict[str, list[Ion]], bool]:
    """Ions (with fractions of the site label) per cation label; the anion label gets the anion state.

    Returns ``(ions_by_label, charge_balanced)``.
    """
    anion_label = next(lab for lab, idx in roles.items() if set(idx) == set(topo.anion_sites))
    nx = len(topo.anion_sites)
    # (label, element) -> [total amount, bvs sum weighted by amount]
    groups: dict[tuple[str, str], list[float]] = {}
    given: dict[tuple[str, str, float], float] = defaultdict(float)
    all_given = all(isinstance(sp, Species) and sp.oxi_state is not None for site in structure for sp in site.species)
    for label, idx in roles.items():
        if label == anion_label:
            continue
        for ci in idx:
            for sp, occ in structure[ci].species.items():
                key = (label, sp.symbol)
                g = groups.setdefault(key, [0.0, 0.0, 0.0])
                g[0] += occ
                if all_given:
                    given[(label, sp.symbol, float(sp.oxi_state))] += occ
                bvs = _bv_sum(structure, topo, ci, sp.symbol)
                if not math.isnan(bvs):
                    g[1] += occ * bvs
                    g[2] += occ
    n_label = {lab: float(len(idx)) for lab, idx in roles.items()}
    out: dict[str, list[Ion]] = defaultdict(list)
    if all_given:
        charge = sum(float(sp.oxi_state) * occ for site in structure for sp, occ in site.species.items())
        for (label, el, oxi), amt in sorted(given.items()):
            out[label].append(Ion(el, oxi, amt / n_label[label]))
        anion_states = {float(sp.oxi_state) for i in topo.anion_sites for sp in structure[i].species}
        if len(anion_states) == 1:
            out[anion_label] = [Ion(topo.anion, anion_states.pop(), 1.0)]
            return dict(out), abs(charge) < 1e-6
    x_state = _anion_state(topo.anion)
    target = -x_state * nx
    keys = sorted(groups)
    cands = [_candidate_states(el) for _, el in keys]
    amounts = np.array([groups[k][0] for k in keys])
    bvs = np.array([groups[k][1] / groups[k][2] if groups[k][2] else math.nan for k in keys])
    best: tuple[float, tuple[float, ...]] | None = None
    n_comb = math.prod(len(c) for c in cands) if cands else 0
    if 0 < n_comb <= MAX_OXI_COMBINATIONS:
        for combo in itertools.product(*cands):
            v = np.array(combo)
            if abs(float(amounts @ v) - target) > 1e-6:
                continue
            dev = np.where(np.isnan(bvs), 0.0, (bvs - v) ** 2)
            # half-valences only where needed: a small penalty per mixed-valence ion
            score = float(amounts @ dev) + 0.05 * float(amounts @ (v % 1 != 0))
            if best is None or score < best[0] - 1e-12:
                best = (score, combo)
    balanced = best is not None
    if best is None:  # fall back to the most common state per element so the table still has radii
        combo = tuple(float(Element(el).common_oxidation_states[0]) if Element(el).common_oxidation_states else c[0] for (_, el), c in zip(keys, cands, strict=True))
    else:
        combo = best[1]
    for (label, el), v in zip(keys, combo, strict=True):
        frac = groups[(label, el)][0] / n_label[label]
        if v % 1:
            lo = math.floor(v)
            out[label] += [Ion(el, float(lo), frac * (lo + 1 - v)), Ion(el, float(lo + 1), frac * (v - lo))]
        else:
            out[label].append(Ion(el, v, frac))
    out[anion_label] = [Ion(topo.anion, x_state, 1.0)]
    return dict(out), balanced


def _merge_ions(ions: Sequence[Ion]) -> list[Ion]:
    acc: dict[tuple[str, float], float] = defaultdict(float)
    for ion in ions:
        acc[(ion.element, ion.oxidation)] += ion.fraction
    return [Ion(el, oxi, f) for (el, oxi), f in sorted(acc.items()) if f > 1e-9]


# --- prototype matching -------------------------------------------------------------


@cache
def prototype(family: str) -> Structure:
    """Ideal prototype of ``family`` built from :mod:`matscreen.families` (dummy Mg cations, O anions)."""
    fam = get_family(family)
    species = [_DUMMY_ANION if s.is_anion else _DUMMY_CATION for s in fam.sites]
    coords = [list(s.coords) for s in fam.sites]
    # cell edge only sets the scale; StructureMatcher(scale=True) ignores it
    a = 4.0 * fam.z_conventional ** (1 / 3)
    proto = Structure.from_spacegroup(fam.spacegroup, Lattice.cubic(a), species, coords)
    n_x = sum(1 for s in proto if s.specie.symbol == _DUMMY_ANION)
    if n_x != fam.anion_site.multiplicity * fam.z_conventional:
        raise RuntimeError(f"prototype of {family}: {n_x} anions, expected {fam.anion_site.multiplicity * fam.z_conventional}")
    return proto


def _cation_anion_skeleton(structure: Structure, anion_sites: Sequence[int]) -> Structure:
    anions = set(anion_sites)
    species = [_DUMMY_ANION if i in anions else _DUMMY_CATION for i in range(len(structure))]
    return Structure(structure.lattice, species, structure.frac_coords)


def match_prototype(structure: Structure, family: str, anion_sites: Sequence[int], tolerances: Mapping[str, float] | None = None) -> float | None:
    """Normalised RMS of the anion/cation-only match to the family prototype, None if no match."""
    tol = {**MATCHER_DEFAULTS, **(tolerances or {})}
    matcher = StructureMatcher(ltol=tol["ltol"], stol=tol["stol"], angle_tol=tol["angle_tol"], primitive_cell=True, scale=True, attempt_supercell=True)
    rms = matcher.get_rms_dist(_cation_anion_skeleton(structure, anion_sites), prototype(family))
    return None if rms is None else float(rms[0])


# --- public entry -------------------------------------------------------------------


def recognize(
    structure: Structure,
    *,
    search_radius: float = SEARCH_RADIUS_ANG,
    confirm_with_matcher: bool = True,
    matcher_tolerances: Mapping[str, float] | None = None,
) -> Recognition:
    """Recognise the family of ``structure`` and which ions fill which of the family's sites.

    Works on ordered structures and on structures whose partially occupied sites are full
    (mixed sites such as ``Mg0.85Al0.15``); sites with vacancies give ``other`` with the reason.
    Never raises for chemistry it cannot classify: the answer is then ``family="other"``.
    """
    if any(site.species.num_atoms < 1 - 1e-6 for site in structure):
        return Recognition(OTHER, reason="sites with vacancies (occupancy < 1): family not recognised")
    try:
        anion = anion_element(structure)
        if anion not in ANION_ELEMENTS:
            return Recognition(OTHER, reason=f"most electronegative element {anion} is not an anion of the families")
        topo = _topology(structure, search_radius)
    except RecognitionError as exc:
        return Recognition(OTHER, reason=str(exc))
    reasons = []
    roles: dict[str, list[int]] | None = None
    fam_name = OTHER
    for name, rule in (("perovskite", _perovskite_roles), ("spinel", _spinel_roles), ("garnet", _garnet_roles)):
        roles, why = rule(structure, topo)
        if roles is not None:
            fam_name = name
            reasons = [why]
            break
        reasons.append(why)
    if roles is None:
        return Recognition(OTHER, reason="; ".join(reasons) + f" (cation CNs {dict(sorted(Counter(topo.cn.values()).items()))})")

    b_ordering = None
    if fam_name == "perovskite":
        b_ordering, kinds = _b_ordering(structure, topo, roles["B"])
        if b_ordering == "rock-salt" and len({len(v) for v in kinds.values()}) == 1:
            fam_name = "double_perovskite"
            k1, k2 = sorted(kinds)
            roles = {"A": roles["A"], "B": kinds[k1], "B2": kinds[k2], "X": roles["X"]}
            reasons.append("B sublattice rock-salt ordered: double perovskite")
        elif b_ordering is not None:
            reasons.append(f"B sublattice of two species, {b_ordering} ordering")

    ions, balanced = _assign_oxidation(structure, topo, roles)
    if fam_name == "double_perovskite":  # B = the lower-valent B ion, B2 the higher (ties: by symbol)
        def mean_oxi(label: str) -> tuple[float, str]:
            return (sum(i.oxidation * i.fraction for i in ions[label]), format_occupancy(_merge_ions(ions[label])))

        if mean_oxi("B") > mean_oxi("B2"):
            roles["B"], roles["B2"] = roles["B2"], roles["B"]
            ions["B"], ions["B2"] = ions["B2"], ions["B"]
    occupancy = {label: format_occupancy(_merge_ions(ions[label])) for label in roles}
    fam = get_family(fam_name)
    coordination = {label: float(np.mean([topo.cn[c] for c in idx])) for label, idx in roles.items() if label != fam.anion_site.label}

    inversion = _inversion(fam, ions, roles) if fam_name == "spinel" else None
    rms = None
    if confirm_with_matcher:
        rms = match_prototype(structure, fam_name, topo.anion_sites, matcher_tolerances)
        if rms is None:
            return Recognition(OTHER, reason=f"topology says {fam_name} ({'; '.join(reasons)}) but StructureMatcher finds no match to the {fam_name} prototype")
        reasons.append(f"prototype match rms {rms:.3f}")
    if not balanced:
        reasons.append("no charge-balanced oxidation states found")
    return Recognition(
        family=fam_name,
        occupancy=occupancy,
        site_indices={label: tuple(sorted(idx)) for label, idx in roles.items()},
        coordination=coordination,
        inversion=inversion,
        b_ordering=b_ordering,
        charge_balanced=balanced,
        matcher_rms=rms,
        reason="; ".join(reasons),
    )


def _inversion(fam: Family, ions: Mapping[str, Sequence[Ion]], roles: Mapping[str, Sequence[int]]) -> float | None:
    """Fraction of tetrahedral (A) sites held by the ion that is 2 per formula unit.

    Defined when the cations are exactly two ions (element + oxidation state) in amounts 1 : 2
    per formula unit (MgAl2O4, Mg2SiO4, Fe2+Fe3+2O4); None otherwise (solid solutions).
    """
    a, b = fam.site("A"), fam.site("B")
    per_fu: dict[tuple[str, float], float] = defaultdict(float)
    for label, site in (("A", a), ("B", b)):
        for ion in ions[label]:
            per_fu[(ion.element, ion.oxidation)] += ion.fraction * site.multiplicity
    if len(per_fu) == 1:
        return 0.0
    if len(per_fu) != 2:
        return None
    (k1, v1), (k2, v2) = sorted(per_fu.items(), key=lambda kv: kv[1])
    if abs(v1 - a.multiplicity) > 1e-6 or abs(v2 - b.multiplicity) > 1e-6:
        return None
    on_tet = sum(i.fraction for i in ions["A"] if (i.element, i.oxidation) == k2)
    return round(float(on_tet), 6)
