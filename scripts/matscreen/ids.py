"""Stable identifiers: the same object gets the same id on every run and machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from matscreen.provenance import stable_hash

if TYPE_CHECKING:
    from pymatgen.core import Structure

#: Decimals kept of lattice parameters (Å, degrees) and fractional coordinates in structure ids.
ID_DECIMALS = 4


def candidate_id(family: str, occupancy: Mapping[str, str]) -> str:
    """``c-`` + hash of the family and the canonical site occupancy strings (incl. oxidation states)."""
    return "c-" + stable_hash({"family": family, "sites": dict(sorted(occupancy.items()))})


def structure_id(structure: Structure) -> str:
    """``s-`` + hash of the lattice and the sorted (species, fractional coordinates) of the cell.

    Coordinates are wrapped into [0, 1) and rounded to :data:`ID_DECIMALS`, so the id does not
    depend on site order or on floating-point noise in the input file. Two different cells of the
    same crystal get different ids; recognising those as duplicates is ingest's job
    (``StructureMatcher``).
    """
    lat = structure.lattice
    params = [round(v, ID_DECIMALS - 1) for v in (*lat.abc, *lat.angles)]
    sites = []
    for site in structure:
        frac = [round(float(c) % 1.0, ID_DECIMALS) % 1.0 for c in site.frac_coords]
        sites.append((site.species.formula if not site.is_ordered else site.species_string, *frac))
    sites.sort()
    return "s-" + stable_hash({"lattice": params, "sites": sites})
