"""Ideal prototype structures of candidates, with lattice parameters estimated from ionic radii.

Only the candidates that get labeled are built (label stage); the enumerated space itself is
never turned into structures. :func:`build_prototype` returns the *ordered primitive cell*
(5 atoms for ABX3, 10 for A2BB'X6, 14 for AB2X4, 80 for C3A2D3X12), since PySCF's cost grows
steeply with the cell size.

Geometry: hard-sphere bond lengths d(M-X) = r_M + r_X from the candidate's Shannon radii (the
``{S}_radius_ang`` columns: cations at the site's coordination number, the anion at
``enumerate.anion_radius_cn``, 6 by default; the mixed octahedral site of an inverse spinel uses
the fraction-weighted mean). The free parameters of each prototype are set so that these bonds
are met exactly where the structure has the freedom, and :func:`lattice_parameter` returns the
*conventional cubic* lattice parameter:

* perovskite ABX3 (Pm-3m, B at the body centre): the BX6 octahedra fix the cube,
  ``a = 2 (r_B + r_X)``. A-X is then ``a / sqrt(2)``, which equals r_A + r_X only for t = 1.
* double perovskite A2BB'X6 (Fm-3m, rock-salt order): ``a = 2 (r_B + r_X) + 2 (r_B' + r_X)``;
  the X coordinate on 24e is ``x = (r_B + r_X) / a`` so both octahedra have their own size.
* spinel AB2X4 (Fd-3m origin choice 2): with R_T = r_tet + r_X and R_O = r_oct + r_X, the anion
  parameter u and a solve (Hill, Craig & Gibbs, Phys. Chem. Miner. 4, 317 (1979); origin
  choice 1 u1 = u + 1/8) ``R_T = a sqrt(3) (u1 - 1/4)`` and
  ``R_O = a sqrt(3 u1^2 - 11/4 u1 + 43/64)``.
* garnet C3A2D3X12 (Ia-3d): a and the anion position (x, y, z) on 96h solve, by least squares
  from the YAG geometry, D-X = r_D + r_X, A-X = r_A + r_X and both C-X distances = r_C + r_X
  (four equations, four unknowns; solved exactly for real garnets).

Against real structures (tests/test_prototypes.py) this is within about 3 % (SrTiO3 +2.7 %,
BaTiO3, MgAl2O4, Fe3O4, pyrope and almandine about +1 %): Shannon radii with O at CN VI run
slightly large.

Species: the cell carries **plain elements** (no oxidation states), which is what the label
stage and PySCF need; each site carries the site properties ``site_label`` (family site label,
e.g. ``"B"``) and ``oxidation`` (the ion's oxidation state), so
``s.add_oxidation_state_by_site(s.site_properties["oxidation"])`` restores the ions.

Mixed sites (inverse spinel ``"Fe3+:0.5 Mg2+:0.5"``) are decorated in an ordered way in the
primitive cell: the site's positions, sorted by fractional coordinates, are filled ion by ion in
the order of the occupancy string, each ion getting fraction x n sites. The spinel primitive cell
has 4 octahedral sites, so an inverse spinel gets 2 + 2; every 2 + 2 split of that tetrahedron of
sites is equivalent by symmetry, and the ordered cell has space group Imma (74). Fractions that do
not fit the primitive cell raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.groups import SpaceGroup
from scipy.optimize import brentq, least_squares

from matscreen import chemistry
from matscreen.families import Family, get_family, parse_occupancy

#: CN at which an anion radius is looked up when the row carries no X_radius_ang (enumerate's default).
DEFAULT_ANION_CN = 6

#: Starting point of the garnet fit: lattice parameter (Å) and anion position of YAG.
_GARNET_START = (12.0, -0.0306, 0.0512, 0.1500)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def site_radius(row: Mapping[str, Any], family: Family, label: str) -> float:
    """Radius (Å) of a site: the row's ``{label}_radius_ang`` if given, else the Shannon radius of
    its occupancy (fraction-weighted) at the site's CN (anions at :data:`DEFAULT_ANION_CN`)."""
    given = row.get(f"{label}_radius_ang")
    if not _is_missing(given):
        return float(given)
    site = family.site(label)
    cn = DEFAULT_ANION_CN if site.is_anion else site.cn
    total = 0.0
    for ion in parse_occupancy(str(row[f"{label}_species"])):
        r = chemistry.shannon_radius(ion.element, ion.oxidation, cn)
        if r is None:
            raise ValueError(f"{family.name} site {label}: no Shannon radius for {ion.element}{ion.oxidation:+g} at CN {cn}")
        total += ion.fraction * r
    return total


def spinel_geometry(r_tet: float, r_oct: float, r_x: float) -> tuple[float, float]:
    """(a, u) of a spinel whose tetrahedral and octahedral bonds are r_tet + r_x and r_oct + r_x.

    u is the anion parameter in origin choice 2 (ideal 0.25; X at (u, u, u)).
    """
    big_t, big_o = r_tet + r_x, r_oct + r_x

    def ratio(u1: float) -> float:
        return math.sqrt(3 * u1 * u1 - 2.75 * u1 + 43 / 64) / (math.sqrt(3) * (u1 - 0.25)) - big_o / big_t

    u1 = brentq(ratio, 0.2501, 0.4999, xtol=1e-12)
    a = big_t / (math.sqrt(3) * (u1 - 0.25))
    return a, u1 - 0.125


@lru_cache(maxsize=1)
def _garnet_cations() -> dict[str, np.ndarray]:
    """Fractional positions (unit cube) of the C, A and D sites of Ia-3d, plus periodic images."""
    fam = get_family("garnet")
    cells = _conventional(fam, 1.0, ["Y", "Al", "Si", "O"], [s.coords for s in fam.sites])
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)
    out = {}
    for label in ("C", "A", "D"):
        frac = np.array([s.frac_coords for s in cells if s.properties["site_label"] == label])
        out[label] = (frac[:, None, :] + images[None]).reshape(-1, 3)
    return out


def garnet_geometry(r_c: float, r_a: float, r_d: float, r_x: float) -> tuple[float, tuple[float, float, float]]:
    """(a, (x, y, z)) of a garnet whose C-X (both), A-X and D-X bonds are r_site + r_x."""
    cations = _garnet_cations()
    target = np.array([r_d + r_x, r_a + r_x, r_c + r_x, r_c + r_x])

    def residual(v: np.ndarray) -> np.ndarray:
        a, p = v[0], v[1:]
        d = {k: np.sort(np.linalg.norm(pos - p, axis=1))[:2] for k, pos in cations.items()}
        return a * np.array([d["D"][0], d["A"][0], d["C"][0], d["C"][1]]) - target

    sol = least_squares(residual, np.array(_GARNET_START), xtol=1e-12, ftol=1e-12)
    if not sol.success or np.max(np.abs(sol.fun)) > 0.05:
        raise ValueError(f"garnet geometry: bond lengths {target.round(3).tolist()} cannot be met (residuals {sol.fun.round(3).tolist()})")
    return float(sol.x[0]), (float(sol.x[1]), float(sol.x[2]), float(sol.x[3]))


def _geometry(row: Mapping[str, Any]) -> tuple[float, dict[str, tuple[float, float, float]]]:
    """Conventional lattice parameter and representative coordinates of every site."""
    fam = get_family(str(row["family"]))
    r = {s.label: site_radius(row, fam, s.label) for s in fam.sites}
    coords = {s.label: s.coords for s in fam.sites}
    if fam.name == "perovskite":
        a = 2 * (r["B"] + r["X"])
    elif fam.name == "double_perovskite":
        a = 2 * (r["B"] + r["X"]) + 2 * (r["B2"] + r["X"])
        coords["X"] = ((r["B"] + r["X"]) / a, 0.0, 0.0)
    elif fam.name == "spinel":
        a, u = spinel_geometry(r["A"], r["B"], r["X"])
        coords["X"] = (u, u, u)
    elif fam.name == "garnet":
        a, xyz = garnet_geometry(r["C"], r["A"], r["D"], r["X"])
        coords["X"] = xyz
    else:  # pragma: no cover - families.FAMILIES and this function must grow together
        raise ValueError(f"no prototype geometry for family {fam.name!r}")
    return a, coords


def lattice_parameter(row: Mapping[str, Any]) -> float:
    """Conventional cubic lattice parameter (Å) of a candidate row (formulas: module docstring).

    Perovskite: the 5-atom cube; double perovskite, spinel, garnet: the F- or I-centred
    conventional cell (Z = 4, 8, 8 formula units).
    """
    return _geometry(row)[0]


def build_prototype(row: Mapping[str, Any]) -> Structure:
    """The ordered primitive cell of a candidate row (``family`` and ``{S}_species`` columns).

    Sites are sorted by the family's site order, then by fractional coordinates; species are plain
    elements, with ``site_label`` and ``oxidation`` site properties (see the module docstring).
    """
    fam = get_family(str(row["family"]))
    a, coords = _geometry(row)
    occupancy = {s.label: parse_occupancy(str(row[f"{s.label}_species"])) for s in fam.sites}
    conv = _conventional(fam, a, [occupancy[s.label][0].element for s in fam.sites], [coords[s.label] for s in fam.sites])
    prim = _primitive(conv, fam)
    order = {label: i for i, label in enumerate(fam.site_labels)}
    sites = sorted(prim, key=lambda s: (order[s.properties["site_label"]], *np.round(s.frac_coords % 1.0, 6)))
    species, frac, labels, oxi = [], [], [], []
    for label in fam.site_labels:
        group = [s for s in sites if s.properties["site_label"] == label]
        start = 0
        for ion, n in _split(occupancy[label], len(group), f"{fam.name} site {label}"):
            for s in group[start:start + n]:
                species.append(ion.element)
                frac.append(s.frac_coords % 1.0)
                labels.append(label)
                oxi.append(float(ion.oxidation))
            start += n
    return Structure(prim.lattice, species, frac, site_properties={"site_label": labels, "oxidation": oxi})


@cache
def _space_group(symbol: str) -> SpaceGroup:
    """pymatgen's SpaceGroup, built once (building it takes about 1 s for Fd-3m / Fm-3m)."""
    return SpaceGroup(symbol)


def _conventional(fam: Family, a: float, species: list[str], coords: list[tuple[float, float, float]]) -> Structure:
    """The conventional cubic cell: the orbit of each representative site under the space group
    (what ``Structure.from_spacegroup`` does, with the space group cached)."""
    group = _space_group(fam.spacegroup)
    all_species, all_coords, labels = [], [], []
    for site, sp, c in zip(fam.sites, species, coords):
        orbit = group.get_orbit(np.asarray(c, dtype=float), tol=1e-5)
        all_species += [sp] * len(orbit)
        all_coords += list(orbit)
        labels += [site.label] * len(orbit)
    return Structure(Lattice.cubic(a), all_species, all_coords, site_properties={"site_label": labels})


#: Primitive vectors of the centred cubic lattices in units of the conventional a (the standard
#: rhombohedral settings: F 60 degrees, I 109.47 degrees).
_PRIMITIVE_VECTORS = {
    "P": np.eye(3),
    "F": np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]),
    "I": np.array([[-0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.5, 0.5, -0.5]]),
}
_LATTICE_POINTS = {"P": 1, "F": 4, "I": 2}  #: lattice points per conventional cell


def _primitive(conv: Structure, fam: Family) -> Structure:
    """The primitive cell of a centred cubic conventional cell, by the fixed centring transformation.

    Much faster than ``Structure.get_primitive_structure`` (no lattice-point search; 40x for the
    160-atom garnet) and always the same setting.
    """
    lattice = Lattice(_PRIMITIVE_VECTORS[fam.spacegroup[0]] * conv.lattice.a)
    frac = np.round(lattice.get_fractional_coords(conv.cart_coords) % 1.0, 6) % 1.0
    # Sites that coincide in the primitive cell (periodic distance below 1e-4 in fractional units);
    # rounding alone splits a pair that straddles a rounding boundary (12 double perovskites of the
    # default space did, e.g. La2ScCrO6).
    keep: list[int] = []
    labels = conv.site_properties["site_label"]
    for i, f in enumerate(frac):
        d = frac[keep] - f if keep else np.zeros((0, 3))
        d -= np.round(d)
        same = [j for j, dj in zip(keep, np.abs(d).max(axis=1) if keep else []) if dj < 1e-4 and labels[j] == labels[i]]
        if not same:
            keep.append(i)
    expected = fam.atoms_per_formula_unit * fam.z_conventional // _LATTICE_POINTS[fam.spacegroup[0]]
    if len(keep) != expected:
        raise ValueError(f"{fam.name}: primitive cell has {len(keep)} sites, expected {expected}")
    return Structure(
        lattice,
        [conv[i].species for i in keep],
        frac[keep],
        site_properties={"site_label": [conv.site_properties["site_label"][i] for i in keep]},
    )


def _split(ions: tuple, n_sites: int, where: str) -> list[tuple[Any, int]]:
    """How many of ``n_sites`` each ion fills; the fractions must fit the cell exactly."""
    out = []
    for ion in ions:
        count = ion.fraction * n_sites
        if abs(count - round(count)) > 1e-6:
            raise ValueError(f"{where}: fraction {ion.fraction:g} of {ion.element} does not fit {n_sites} sites of the primitive cell")
        out.append((ion, int(round(count))))
    return out
