"""Tests of prototype structures: composition, space group, coordination, bond lengths, lattice
parameters against real structures (tests/data/structures, see tests/data/SOURCES.md)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Structure
from pymatgen.io.cif import CifParser
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from matscreen import enumerate as en
from matscreen import prototypes as pt
from matscreen.families import get_family
from matscreen.ids import structure_id

DATA = Path(__file__).parent / "data" / "structures"


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    """Candidate rows of well-known compounds, from the enumerate stage itself."""
    settings = {
        "families": ["perovskite", "double_perovskite", "spinel", "garnet"],
        "sites": {
            "perovskite": {"A": ["Sr", "Ba"], "B": ["Ti"], "X": ["O"]},
            "double_perovskite": {"A": ["Sr"], "B": ["Fe"], "B2": ["Mo"], "X": ["O"]},
            "spinel": {"A": ["Mg", "Zn", "Fe"], "B": ["Al", "Fe"], "X": ["O"]},
            "garnet": {"C": ["Y", "Ca", "Mg", "Fe"], "A": ["Al"], "D": ["Al", "Si"], "X": ["O"]},
        },
    }
    cand, _ = en.enumerate_candidates(settings)
    out = {}
    for _, r in cand.iterrows():
        key = r["formula"] + ("-" + r["arrangement"] if r["arrangement"] else "")
        assert key not in out
        out[key] = r.to_dict()
    return out


CASES = [
    # key, atoms in the primitive cell, space group number
    ("SrTiO3", 5, 221),
    ("BaTiO3", 5, 221),
    ("Sr2FeMoO6", 10, 225),
    ("MgAl2O4-normal", 14, 227),
    ("ZnFe2O4-normal", 14, 227),
    ("ZnFe2O4-inverse", 14, 74),  # ordered 2+2 decoration of the octahedral sites: Imma
    ("MgAl2O4-inverse", 14, 74),
    ("Y3Al5O12", 80, 230),
    ("Ca3Al2Si3O12", 80, 230),
]

#: Coordination number of each cation site in the ideal prototype.
CN_BY_FAMILY = {
    "perovskite": {"A": 12, "B": 6},
    "double_perovskite": {"A": 12, "B": 6, "B2": 6},
    "spinel": {"A": 4, "B": 6},
    "garnet": {"C": 8, "A": 6, "D": 4},
}


def _neighbours(s: Structure, i: int, anion: str, cutoff: float = 4.5) -> np.ndarray:
    """Sorted distances from site i to anions within ``cutoff``."""
    return np.sort([n.nn_distance for n in s.get_neighbors(s[i], cutoff) if n.specie.symbol == anion])


@pytest.mark.parametrize(("key", "nsites", "sg"), CASES, ids=[c[0] for c in CASES])
def test_prototype_composition_symmetry_coordination(rows, key, nsites, sg):
    row = rows[key]
    s = pt.build_prototype(row)
    fam = get_family(row["family"])
    assert len(s) == nsites and s.is_ordered
    assert s.composition.reduced_composition == Composition(row["formula"]).reduced_composition
    assert SpacegroupAnalyzer(s, symprec=0.01).get_space_group_number() == sg
    z = nsites // fam.atoms_per_formula_unit
    labels = s.site_properties["site_label"]
    for site in fam.sites:
        assert labels.count(site.label) == site.multiplicity * z
    assert sum(s.site_properties["oxidation"]) == pytest.approx(0.0)
    anion = fam.anion_site
    anion_el = s[labels.index(anion.label)].specie.symbol
    for label, cn in CN_BY_FAMILY[fam.name].items():
        for i in (j for j, lab in enumerate(labels) if lab == label):
            d = _neighbours(s, i, anion_el)
            # first coordination shell: anions within 15 % of the shortest bond, next shell beyond
            n_shell = int(np.sum(d <= 1.15 * d[0]))
            assert n_shell == cn, f"{key} site {label}: CN {n_shell}, expected {cn} ({d[:cn + 2].round(3)})"


@pytest.mark.parametrize("key", ["SrTiO3", "Sr2FeMoO6", "MgAl2O4-normal", "ZnFe2O4-inverse", "Y3Al5O12", "Ca3Al2Si3O12"])
def test_bond_lengths_are_radius_sums(rows, key):
    """The free parameters are set so that the bonds the family can satisfy equal r_M + r_X."""
    row = rows[key]
    s = pt.build_prototype(row)
    fam = get_family(row["family"])
    labels = s.site_properties["site_label"]
    anion_el = s[labels.index("X")].specie.symbol
    r_x = row["X_radius_ang"]
    checks = {"perovskite": ["B"], "double_perovskite": ["B", "B2"], "spinel": ["A", "B"], "garnet": ["C", "A", "D"]}[fam.name]
    for label in checks:
        i = labels.index(label)
        d = _neighbours(s, i, anion_el)
        expected = row[f"{label}_radius_ang"] + r_x
        if fam.name == "spinel" and label == "B" and row["arrangement"] == "inverse":
            expected = row["B_radius_ang"] + r_x  # mean of the two ions on the mixed site
        assert d[0] == pytest.approx(expected, abs=2e-3), (key, label)
        if fam.name == "garnet" and label == "C":
            assert d[7] == pytest.approx(expected, abs=2e-3)  # both C-X distances (4 + 4)


def _real(path: Path) -> Structure:
    if path.suffix == ".json":
        return Structure.from_dict(json.loads(path.read_text()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(str(path)).parse_structures(primitive=False)[0]


REAL = [
    ("SrTiO3", "perovskite/SrTiO3_Pm-3m_pymatgen.json"),
    ("BaTiO3", "perovskite/BaTiO3_P4mm_pyxtal_BTO.cif"),
    ("MgAl2O4-normal", "spinel/MgAl2O4_spinel_amcsd_partial_inversion.cif"),
    ("Fe3O4-inverse", "spinel/Fe3O4_magnetite_amcsd_Fd-3m.cif"),
    ("Mg3Al2Si3O12", "garnet/Mg3Al2Si3O12_pyrope_amcsd.cif"),
    ("Al2Fe3Si3O12", "garnet/Fe3Al2Si3O12_almandine_amcsd.cif"),  # formula in pymatgen's element order
]


@pytest.mark.parametrize(("key", "file"), REAL, ids=[r[0] for r in REAL])
def test_lattice_parameter_matches_real_structures(rows, key, file):
    row = rows[key]
    fam = get_family(row["family"])
    real = _real(DATA / file)
    n_fu = real.composition.num_atoms / fam.atoms_per_formula_unit
    assert real.composition.element_composition.reduced_composition == Composition(row["formula"]).reduced_composition
    # pseudo-cubic conventional lattice parameter of the real cell: volume per formula unit x Z
    a_real = (real.volume / n_fu * fam.z_conventional) ** (1 / 3)
    a_est = pt.lattice_parameter(row)
    assert a_est == pytest.approx(a_real, rel=0.03), f"{key}: estimated {a_est:.3f} Å, real {a_real:.3f} Å"
    # the built cell has the volume of that lattice parameter
    s = pt.build_prototype(row)
    assert s.volume / (len(s) / fam.atoms_per_formula_unit) == pytest.approx(a_est**3 / fam.z_conventional, rel=1e-9)


def test_prototype_is_deterministic_and_plain_elements(rows):
    row = rows["ZnFe2O4-inverse"]
    s1, s2 = pt.build_prototype(row), pt.build_prototype(dict(row))
    assert structure_id(s1) == structure_id(s2)
    assert all(site.specie.__class__.__name__ == "Element" for site in s1)
    ions = s1.copy()
    ions.add_oxidation_state_by_site(ions.site_properties["oxidation"])
    assert {str(sp) for sp in ions.composition} == {"Zn2+", "Fe3+", "O2-"}
    # the inverse spinel's tetrahedral site holds Fe3+, its octahedral sites Zn2+ and Fe3+ half-and-half
    tet = [site for site in ions if site.properties["site_label"] == "A"]
    oct_ = [site for site in ions if site.properties["site_label"] == "B"]
    assert {str(site.specie) for site in tet} == {"Fe3+"}
    assert sorted(str(site.specie) for site in oct_) == ["Fe3+", "Fe3+", "Zn2+", "Zn2+"]


def test_radii_fall_back_to_shannon_when_row_has_none(rows):
    row = dict(rows["SrTiO3"])
    bare = {k: v for k, v in row.items() if not k.endswith("_radius_ang")}
    assert pt.lattice_parameter(bare) == pytest.approx(pt.lattice_parameter(row))
    assert pt.lattice_parameter(row) == pytest.approx(2 * (row["B_radius_ang"] + row["X_radius_ang"]))


def test_fraction_that_does_not_fit_the_cell_is_rejected(rows):
    row = dict(rows["SrTiO3"])
    row["B_species"], row["B_radius_ang"] = "Fe3+:0.5 Ti4+:0.5", float("nan")
    with pytest.raises(ValueError, match="does not fit 1 sites"):
        pt.build_prototype(row)


def test_prototypes_of_a_shard_sample_build(rows):
    """A handful of default-space candidates of every family build with sane geometry."""
    cand, _ = en.enumerate_candidates({})
    sample = pd.concat([g.sample(2, random_state=0) for _, g in cand.groupby(["family", "arrangement"])])
    for _, r in sample.iterrows():
        s = pt.build_prototype(r.to_dict())
        fam = get_family(r["family"])
        assert len(s) == {"perovskite": 5, "double_perovskite": 10, "spinel": 14, "garnet": 80}[fam.name]
        assert np.min(s.distance_matrix[np.triu_indices(len(s), 1)]) > 1.2, r["formula"]
    assert isinstance(sample, pd.DataFrame)
