"""Elemental reference phases for formation energies, read from ``resources/element_references.yaml``.

Each element's standard state is turned into a pymatgen ``Structure`` that the label
calculation treats like any other cell: elemental solids as primitive cells (fcc, bcc, hcp,
diamond, or a space-group description for the less simple ones), gases and molecular solids
as one molecule centred in a cubic box, computed at the Gamma point only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
import yaml
from pymatgen.core import Lattice, Structure

from matscreen.config import ConfigError
from matscreen.label.settings import reference_table_digest, resolve_path  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class ReferencePhase:
    """One element's reference: the cell to compute and how to compute it."""

    element: str
    description: str  #: e.g. 'fcc', 'hcp', 'O2 (triplet, 10 A box)'
    structure: Structure
    molecule: bool  #: a molecule in a box: Gamma point only, fixed spin
    spin: int | None  #: 2S of a molecule; None for solids (label.spin decides)


@lru_cache(maxsize=8)
def _load(path: str) -> dict[str, dict[str, Any]]:
    p = resolve_path(path)
    try:
        with open(p) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config key 'label.references.file': {p} does not exist") from None
    elements = data.get("elements")
    if not isinstance(elements, dict):
        raise ConfigError(f"config key 'label.references.file': {p} has no 'elements' mapping")
    return elements


def load_reference_table(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Element symbol -> its entry in the reference YAML."""
    return dict(_load(str(path)))


def _fcc(a: float) -> Lattice:
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def _bcc(a: float) -> Lattice:
    return Lattice([[-a / 2, a / 2, a / 2], [a / 2, -a / 2, a / 2], [a / 2, a / 2, -a / 2]])


def _box_structure(symbols: list[str], coords: np.ndarray, box: float) -> Structure:
    """Molecule (Cartesian Å, any origin) centred in a cubic box of edge ``box`` Å."""
    coords = np.asarray(coords, dtype=float)
    extent = float(np.ptp(coords, axis=0).max()) if len(coords) > 1 else 0.0
    if extent + 4.0 > box:
        raise ConfigError(
            f"config key 'label.references.box_ang': box {box} A is too small for a molecule {extent:.2f} A wide"
        )
    centred = coords - coords.mean(axis=0) + box / 2
    return Structure(Lattice.cubic(box), symbols, centred, coords_are_cartesian=True)


def build_reference(element: str, path: str | os.PathLike[str], box_ang: float) -> ReferencePhase:
    """The reference phase of ``element`` described in the YAML at ``path``."""
    table = _load(str(path))
    where = f"{resolve_path(path)}: element {element!r}"
    if element not in table:
        raise ConfigError(f"{where}: no reference phase listed (add it to the file named by 'label.references.file')")
    e = table[element]
    kind = e.get("kind")
    try:
        if kind == "fcc":
            return ReferencePhase(element, "fcc", Structure(_fcc(e["a"]), [element], [[0, 0, 0]]), False, None)
        if kind == "bcc":
            return ReferencePhase(element, "bcc", Structure(_bcc(e["a"]), [element], [[0, 0, 0]]), False, None)
        if kind == "hcp":
            lat = Lattice.hexagonal(e["a"], e["c"])
            s = Structure(lat, [element] * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]])
            return ReferencePhase(element, "hcp", s, False, None)
        if kind == "diamond":
            s = Structure(_fcc(e["a"]), [element] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
            return ReferencePhase(element, "diamond", s, False, None)
        if kind == "crystal":
            lat = Lattice.from_parameters(*e["lattice"])
            species = [sp for sp, _ in e["sites"]]
            coords = [[float(Fraction(str(c))) for c in xyz] for _, xyz in e["sites"]]  # "1/3" allowed
            conv = Structure.from_spacegroup(e["spacegroup"], lat, species, coords)
            if len(conv) != int(e["natoms"]):
                raise ConfigError(
                    f"{where}: space group {e['spacegroup']} gives {len(conv)} atoms, the file says natoms {e['natoms']}"
                )
            prim = conv.get_primitive_structure()
            return ReferencePhase(element, f"{e['spacegroup']} ({len(prim)} atoms)", prim, False, None)
        if kind == "diatomic":
            d = float(e["bond_ang"])
            spin = int(e.get("spin", 0))
            s = _box_structure([element] * 2, np.array([[0, 0, 0], [0, 0, d]]), box_ang)
            state = "triplet" if spin == 2 else "singlet" if spin == 0 else f"2S={spin}"
            return ReferencePhase(element, f"{element}2 ({state}, {box_ang:g} A box)", s, True, spin)
        if kind == "molecule":
            ring = e["ring"]
            n, r, h = int(ring["n"]), float(ring["radius"]), float(ring["height"])
            xyz = np.array(
                [
                    [r * math.cos(2 * math.pi * k / n), r * math.sin(2 * math.pi * k / n), h * (-1) ** k]
                    for k in range(n)
                ]
            )
            s = _box_structure([element] * n, xyz, box_ang)
            return ReferencePhase(element, f"{element}{n} ({box_ang:g} A box)", s, True, int(e.get("spin", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{where}: malformed entry ({type(exc).__name__}: {exc})") from None
    raise ConfigError(f"{where}: unknown kind {kind!r} (fcc, bcc, hcp, diamond, crystal, diatomic, molecule)")
