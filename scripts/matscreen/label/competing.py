"""Competing binary phases for the convex hull: structures from a shipped library of structure types.

The energy above the hull of a labeled compound (e.g. SrTiO3) needs, at the labels' own DFT
level, the energies of the binaries its elements form with the anion (SrO, TiO2, Ti2O3, TiO).
This module builds them; the hull itself and the Snakemake jobs live elsewhere.

* :func:`binary_stoichiometries` lists the charge-balanced binaries M_aX_b of a cation, one per
  positive oxidation state in pymatgen's list (``icsd``, ``common`` or ``all``), with the anion at
  its usual state (:data:`ANION_OXIDATION`).
* Each binary is built in the structure types of ``resources/competing_phases.yaml`` with its
  stoichiometry (rock salt, CsCl, wurtzite, zinc blende, rutile, anatase, fluorite, CdI2,
  alpha-quartz, antifluorite, cuprite, corundum, A-La2O3, bixbyite, ReO3; the file documents the
  space groups, Wyckoff positions, reference compounds and sources). A type *fits* when the
  cation has a Shannon radius at the type's cation CN; the fitting types are ranked (i) types
  listing the formula among their observed ``examples`` first, (ii) then types whose ``anions``
  include the anion (or list none), (iii) then by how far r_cation/r_anion lies outside the
  type's radius-ratio window (log distance, 0 inside), (iv) then file order; the first
  ``max_polymorphs`` are built and the lowest energy counts.
* Geometry: d = r_cation(CN) + r_anion, Shannon ionic radii (:func:`matscreen.chemistry.shannon_radius`,
  high spin). The anion's radius is taken at the type's anion CN when Shannon tabulates it
  (O: II-VIII, F: II-VI), else at CN 6 (S, Se, Te, Cl, Br, I), else at the nearest tabulated CN
  (N3-: IV only). **Fallback**: where the cation
  has no radius at CN n but has both n-1 and n+1 (typically CN VII of A-La2O3), the mean of
  those two is used; no other fallback (no radius -> the type does not fit). The type's
  experimental reference cell is scaled isotropically so that the mean cation-anion
  nearest-neighbour distance (cation_cn bonds per cation) equals d: the cubic types then obey
  a = 2d (rock salt, ReO3), 2d/sqrt(3) (CsCl), 4d/sqrt(3) (zinc blende, fluorite, antifluorite,
  cuprite) exactly; the others keep the reference's axial ratios and internal parameters.
* Cells are the ordered primitive cells with plain elements (no oxidation states), cations
  first, then sorted by fractional coordinates, like :func:`matscreen.prototypes.build_prototype`;
  each site carries an ``oxidation`` site property.
* User structures (CIF, POSCAR, pymatgen JSON; ``user_files``) whose elements all belong to the
  system are added as prototype ``user:<file name>``.

Built vs experiment (tests/test_competing.py; conventional a in A, or volume per formula unit
in A^3; experiment at room temperature, WO3 the cubic ReO3-type high-temperature cell)::

    compound  type          built       experiment   deviation
    SrO       rock salt     a  5.160     5.16          0.0 %
    MgO       rock salt     a  4.240     4.21         +0.7 %
    TiO2      rutile        V 31.50     31.2          +1.0 %
    TiO2      anatase       V 34.90     34.1          +2.4 %
    Al2O3     corundum      V 42.61     42.5          +0.3 %
    CaF2      fluorite      a  5.612     5.46         +2.8 %
    ZnO       wurtzite      a  3.254     3.25         +0.1 %
    SiO2      alpha-quartz  V 37.77     37.7          +0.2 %
    WO3       ReO3          a  3.900     3.78         +3.2 %
    Li2O      antifluorite  a  4.642     4.61         +0.7 %
    Cu2O      cuprite       a  4.249     4.27         -0.5 %
    La2O3     A-La2O3       V 77.1      82.3          -6.3 %  (Shannon La3+ VII runs small)
    Y2O3      bixbyite      a 10.590    10.604        -0.1 %

Out of scope: peroxides and superoxides (SrO2, BaO2, KO2: anion-anion bonds), mixed-valence
compounds (Fe3O4, Mn3O4, Pb3O4), non-integer oxidation states and ternary competing phases
other than user-supplied ones.

Known gaps: stoichiometries the library has no fitting type for (A2X5 such as V2O5 and Nb2O5,
AX4 such as TiCl4, A2X7 such as Mn2O7, AX5 such as NbF5, or a cation without a radius at any
fitting CN, e.g. NbO, LaO) are logged as warnings and listed by :func:`library_gaps`; ground
states whose type is missing or off by default are built only in stand-ins (Y2O3, Sc2O3, In2O3:
bixbyite only with ``include_expensive``; ZrO2 baddeleyite, CuO tenorite, MoO3, WO3 monoclinic,
CdCl2 stacking as CdI2). A missing phase or a higher-energy stand-in can only raise the hull
(make ``e_above_hull`` too small); supply the real structure as a user file where it matters. A
compound whose own binaries (KNbO3: Nb2O5) or every binary of one of its elements are gaps gets
no hull at all (:func:`matscreen.label.hull.missing_competitors`).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import yaml
from pymatgen.core import Composition, Element, Lattice, Structure
from pymatgen.symmetry.groups import SpaceGroup

from matscreen import chemistry
from matscreen.config import REPO_ROOT
from matscreen.label.settings import resolve_path

log = logging.getLogger(__name__)

#: The shipped library of binary structure types.
DEFAULT_LIBRARY = REPO_ROOT / "resources" / "competing_phases.yaml"

#: Usual (negative) oxidation state of each anion.
ANION_OXIDATION: dict[str, int] = {"O": -2, "S": -2, "Se": -2, "Te": -2, "N": -3, "F": -1, "Cl": -1, "Br": -1, "I": -1}

#: Which pymatgen list of oxidation states each ``oxidation_states`` choice reads.
_OXIDATION_LISTS = {"icsd": "icsd_oxidation_states", "common": "common_oxidation_states", "all": "oxidation_states"}


@dataclass(frozen=True)
class StructureType:
    """One entry of the library (fields: see the YAML header)."""

    name: str
    stoichiometry: tuple[int, int]  #: (cation, anion) atoms per formula unit
    cation_cn: int
    anion_cn: int
    radius_ratio: tuple[float, float]
    spacegroup: str
    lattice: tuple[float, ...]  #: reference a, b, c, alpha, beta, gamma
    sites: tuple[tuple[str, str, tuple[float, float, float]], ...]  #: (role, wyckoff, coords)
    natoms: int
    a_over_d: float | None
    examples: tuple[str, ...]
    anions: tuple[str, ...]
    expensive: bool
    reference: str


@dataclass(frozen=True)
class CompetingPhase:
    """A competing phase to compute."""

    formula: str  #: reduced formula, e.g. "TiO2"
    prototype: str  #: structure type, e.g. "rutile", or "user:<file name>"
    structure: Structure  #: ordered primitive cell, plain elements
    cation: str | None  #: the cation of a library binary; None for user structures with several
    oxidation: float | None  #: the cation's oxidation state (None for user structures)
    source: str  #: "library" or the user file's path


def _frac(value: object) -> float:
    return float(Fraction(str(value)))


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[StructureType, ...]:
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    out = []
    for name, e in (data.get("types") or {}).items():
        try:
            sites = tuple((str(s["role"]), str(s["wyckoff"]), tuple(_frac(c) for c in s["coords"])) for s in e["sites"])
            if {r for r, _, _ in sites} != {"cation", "anion"}:
                raise ValueError("sites need roles 'cation' and 'anion'")
            out.append(StructureType(
                name=str(name),
                stoichiometry=(int(e["stoichiometry"][0]), int(e["stoichiometry"][1])),
                cation_cn=int(e["cation_cn"]),
                anion_cn=int(e["anion_cn"]),
                radius_ratio=(float(e["radius_ratio"][0]), float(e["radius_ratio"][1])),
                spacegroup=str(e["spacegroup"]),
                lattice=tuple(float(v) for v in e["lattice"]),
                sites=sites,  # type: ignore[arg-type]
                natoms=int(e["natoms"]),
                a_over_d=float(e["a_over_d"]) if e.get("a_over_d") is not None else None,
                examples=tuple(e.get("examples") or ()),
                anions=tuple(e.get("anions") or ()),
                expensive=bool(e.get("expensive", False)),
                reference=str(e.get("reference", "")),
            ))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{path}: structure type {name!r} is malformed ({type(exc).__name__}: {exc})") from None
    return tuple(out)


def load_library(library: str | os.PathLike[str] | None = None) -> dict[str, StructureType]:
    """Structure types of the library file (default :data:`DEFAULT_LIBRARY`), in file order."""
    path = resolve_path(library) if library is not None else DEFAULT_LIBRARY
    return {t.name: t for t in _load(str(path))}


@cache
def _space_group(symbol: str) -> SpaceGroup:
    return SpaceGroup(symbol)


@lru_cache(maxsize=64)
def _unit_cell(t: StructureType) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Primitive cell of a type scaled to unit mean cation-anion bond: (lattice matrix, cation
    fractional coordinates, anion fractional coordinates), each sorted."""
    group = _space_group(t.spacegroup)
    species, coords = [], []
    for role, _, xyz in t.sites:
        orbit = group.get_orbit(np.asarray(xyz), tol=1e-5)
        species += ["Na" if role == "cation" else "Cl"] * len(orbit)  # placeholders
        coords += list(orbit)
    conv = Structure(Lattice.from_parameters(*t.lattice), species, coords)
    if len(conv) != t.natoms:
        raise ValueError(f"structure type {t.name}: {t.spacegroup} gives {len(conv)} atoms, the library says natoms {t.natoms}")
    prim = conv.get_primitive_structure()
    bonds = []
    reach = 2.0 * (prim.volume / len(prim)) ** (1 / 3) + 1.0
    for site in prim:
        if site.specie.symbol == "Na":
            d = sorted(n.nn_distance for n in prim.get_neighbors(site, reach) if n.specie.symbol == "Cl")
            if len(d) < t.cation_cn:
                raise ValueError(f"structure type {t.name}: a cation has {len(d)} anions within {reach:.2f} A, fewer than cation_cn")
            bonds += d[: t.cation_cn]
    scale = 1.0 / float(np.mean(bonds))

    def block(symbol: str) -> np.ndarray:
        f = np.round(np.array([s.frac_coords for s in prim if s.specie.symbol == symbol]) % 1.0, 8) % 1.0
        return f[np.lexsort(f.T[::-1])]

    return prim.lattice.matrix * scale, block("Na"), block("Cl")


def cation_radius(element: str, oxidation: float, cn: int) -> float | None:
    """Shannon radius at ``cn``, else the mean of CN n-1 and n+1 when both exist, else None."""
    r = chemistry.shannon_radius(element, oxidation, cn)
    if r is None and cn > 1:
        lo, hi = chemistry.shannon_radius(element, oxidation, cn - 1), chemistry.shannon_radius(element, oxidation, cn + 1)
        if lo is not None and hi is not None:
            r = 0.5 * (lo + hi)
    return r


def anion_radius(anion: str, cn: int) -> float:
    """Shannon radius of the anion at ``cn`` if tabulated, else at CN 6, else at the nearest
    tabulated CN (larger one on a tie; N3- has only CN IV)."""
    ox = _anion_oxidation(anion)
    for k in (cn, 6, *sorted(range(1, 13), key=lambda k: (abs(k - cn), -k))):
        r = chemistry.shannon_radius(anion, ox, k)
        if r is not None:
            return r
    raise ValueError(f"no Shannon radius for {anion}{ox:+d}")


def _anion_oxidation(anion: str) -> int:
    try:
        return ANION_OXIDATION[anion]
    except KeyError:
        raise ValueError(f"unknown anion {anion!r} (known: {', '.join(ANION_OXIDATION)})") from None


def _formula(cation: str, n_cation: int, anion: str, n_anion: int) -> str:
    return Composition({cation: n_cation, anion: n_anion}).reduced_formula


def binary_stoichiometry(oxidation: int, anion_charge: int) -> tuple[int, int]:
    """(cations, anions) of the charge-balanced binary, smallest integers: Nb5+ with O2- -> (2, 5)."""
    g = math.gcd(oxidation, anion_charge)
    return anion_charge // g, oxidation // g


def binary_formula(cation: str, oxidation: int, anion: str, anion_charge: int | None = None) -> str:
    """Reduced formula of the charge-balanced binary of ``cation`` at ``oxidation`` with ``anion``
    (charge ``anion_charge``, by default its usual one, :data:`ANION_OXIDATION`): Nb, 5, O -> Nb2O5."""
    m = -_anion_oxidation(anion) if anion_charge is None else anion_charge
    n_cation, n_anion = binary_stoichiometry(oxidation, m)
    return _formula(cation, n_cation, anion, n_anion)


def binary_stoichiometries(cation: str, anion: str, oxidation_states: str = "icsd") -> list[tuple[str, float]]:
    """Charge-balanced binaries of ``cation`` with ``anion``: (reduced formula, cation oxidation),
    one per positive integer oxidation state in pymatgen's ``oxidation_states`` list, ascending."""
    if oxidation_states not in _OXIDATION_LISTS:
        raise ValueError(f"oxidation_states must be one of {sorted(_OXIDATION_LISTS)}, not {oxidation_states!r}")
    m = -_anion_oxidation(anion)
    states = getattr(Element(cation), _OXIDATION_LISTS[oxidation_states]) or ()
    out = []
    for n in sorted({int(s) for s in states if s > 0 and float(s).is_integer()}):
        out.append((binary_formula(cation, n, anion, m), float(n)))
    return out


def ranked_types(cation: str, oxidation: float, anion: str, *, include_expensive: bool = False,
                 library: str | os.PathLike[str] | None = None) -> list[StructureType]:
    """The library types that fit the binary of ``cation`` (at ``oxidation``) with ``anion``,
    best first (ranking: module docstring)."""
    stoich = binary_stoichiometry(int(oxidation), -_anion_oxidation(anion))
    formula = _formula(cation, stoich[0], anion, stoich[1])
    keyed = []
    for i, t in enumerate(load_library(library).values()):
        if t.stoichiometry != stoich or (t.expensive and not include_expensive):
            continue
        r_c = cation_radius(cation, oxidation, t.cation_cn)
        if r_c is None:
            continue
        ratio = r_c / anion_radius(anion, t.anion_cn)
        lo, hi = t.radius_ratio
        misfit = math.log(lo / ratio) if ratio < lo else math.log(ratio / hi) if ratio > hi else 0.0
        keyed.append(((formula not in t.examples, bool(t.anions) and anion not in t.anions, round(misfit, 9), i), t))
    return [t for _, t in sorted(keyed, key=lambda kv: kv[0])]


def build_binary(prototype: str, cation: str, oxidation: float, anion: str,
                 library: str | os.PathLike[str] | None = None) -> Structure:
    """The ordered primitive cell of the binary of ``cation`` (at ``oxidation``) and ``anion`` in
    structure type ``prototype``, scaled so the mean cation-anion bond is r_cation + r_anion."""
    lib = load_library(library)
    if prototype not in lib:
        raise ValueError(f"unknown structure type {prototype!r} (library: {', '.join(lib)})")
    t = lib[prototype]
    m = -_anion_oxidation(anion)
    if oxidation * t.stoichiometry[0] != m * t.stoichiometry[1]:
        raise ValueError(f"{prototype} is {t.stoichiometry[0]}:{t.stoichiometry[1]}; {cation}{oxidation:+g} with {anion}{-m:+d} is not")
    r_c = cation_radius(cation, oxidation, t.cation_cn)
    if r_c is None:
        raise ValueError(f"no Shannon radius for {cation}{oxidation:+g} at CN {t.cation_cn} ({prototype})")
    d = r_c + anion_radius(anion, t.anion_cn)
    matrix, f_cat, f_an = _unit_cell(t)
    species = [cation] * len(f_cat) + [anion] * len(f_an)
    oxi = [float(oxidation)] * len(f_cat) + [float(-m)] * len(f_an)
    return Structure(Lattice(matrix * d), species, np.vstack([f_cat, f_an]), site_properties={"oxidation": oxi})


def read_user_phase(path: str | os.PathLike[str]) -> CompetingPhase:
    """A user-supplied competing phase (CIF, POSCAR, pymatgen JSON): primitive cell, plain elements."""
    p = resolve_path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = Structure.from_file(str(p))
    if not s.is_ordered:
        raise ValueError(f"user competing phase {p}: the structure is disordered; give an ordered cell")
    s.remove_oxidation_states()
    s = s.get_primitive_structure()
    cations = sorted({el.symbol for el in s.composition.elements} - set(ANION_OXIDATION))
    return CompetingPhase(s.composition.reduced_formula, f"user:{p.name}", s, cations[0] if len(cations) == 1 else None, None, str(p))


def _cations(elements: Iterable[str], anion: str) -> list[str]:
    _anion_oxidation(anion)
    return sorted({Element(e).symbol for e in elements} - set(ANION_OXIDATION))


def _plan(elements: Iterable[str], anion: str, oxidation_states: str, include_expensive: bool,
          library: str | os.PathLike[str] | None) -> tuple[list[tuple[str, str, float, list[StructureType]]], list[str]]:
    """(cation, formula, oxidation, ranked types) of every binary that fits, and the formulas that do not."""
    plan, gaps = [], []
    for cation in _cations(elements, anion):
        for formula, ox in binary_stoichiometries(cation, anion, oxidation_states):
            types = ranked_types(cation, ox, anion, include_expensive=include_expensive, library=library)
            if types:
                plan.append((cation, formula, ox, types))
            else:
                gaps.append(formula)
    return plan, gaps


def competing_phases(elements: Iterable[str], anion: str, *, oxidation_states: str = "icsd",
                     max_polymorphs: int = 2, include_expensive: bool = False, user_files: Sequence[str] = (),
                     library: str | Path | None = None) -> list[CompetingPhase]:
    """Binary phases of every cation in ``elements`` with ``anion`` plus fitting user structures.

    Elements that are anions (:data:`ANION_OXIDATION`) are not taken as cations. Order: cations
    alphabetically, oxidation states ascending, types best first; then user files as given.
    User files whose elements are not all in ``elements`` + ``anion`` are skipped (logged).
    Binaries without a fitting type are logged as warnings (see :func:`library_gaps`).
    """
    if max_polymorphs < 1:
        raise ValueError(f"max_polymorphs must be at least 1, not {max_polymorphs}")
    elements = list(elements)
    plan, gaps = _plan(elements, anion, oxidation_states, include_expensive, library)
    for formula in gaps:
        log.warning("competing phase %s: no structure type in the library fits it; left out of the hull", formula)
    out = [
        CompetingPhase(formula, t.name, build_binary(t.name, cation, ox, anion, library), cation, ox, "library")
        for cation, formula, ox, types in plan
        for t in types[:max_polymorphs]
    ]
    system = {Element(e).symbol for e in elements} | {anion}
    for path in user_files:
        phase = read_user_phase(path)
        foreign = {el.symbol for el in phase.structure.composition.elements} - system
        if foreign:
            log.info("user competing phase %s (%s): elements %s are not in the system; skipped", path, phase.formula, sorted(foreign))
            continue
        out.append(phase)
    return out


def library_gaps(elements: Iterable[str], anion: str, *, oxidation_states: str = "icsd", include_expensive: bool = False,
                 library: str | Path | None = None) -> list[str]:
    """Reduced formulas of the binaries of ``elements`` with ``anion`` that no library type fits."""
    return _plan(elements, anion, oxidation_states, include_expensive, library)[1]
