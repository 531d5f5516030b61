"""Tests of the competing-phase structure library (matscreen.label.competing): which binaries a system
gets, in which structure types, and how close the radius-estimated cells come to experiment."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from pymatgen.core import Composition, Element
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from matscreen.label import competing as cp

DATA = Path(__file__).parent / "data" / "structures"
CATIO3 = DATA / "perovskite" / "CaTiO3_Pbnm_amcsd.cif"
BATIO3 = DATA / "perovskite" / "BaTiO3_P4mm_pyxtal_BTO.cif"
SRTIO3_JSON = DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json"


def _check_cell(phase: cp.CompetingPhase) -> None:
    s = phase.structure
    assert s.is_ordered
    assert all(isinstance(sp, Element) for sp in s.species), "plain elements, no oxidation states"
    assert s.composition.reduced_formula == phase.formula
    dist = s.distance_matrix + np.eye(len(s)) * 100.0
    assert dist.min() > 1.2, f"{phase.formula} {phase.prototype}: atoms {dist.min():.2f} A apart"


def _key(phases: list[cp.CompetingPhase]) -> list[tuple[str, str]]:
    return [(p.formula, p.prototype) for p in phases]


def test_library_types_build_and_match_their_documented_relations() -> None:
    lib = cp.load_library()
    assert {"rock_salt", "CsCl", "zinc_blende", "wurtzite", "rutile", "anatase", "fluorite", "CdI2",
            "alpha_quartz", "antifluorite", "corundum", "A_La2O3", "bixbyite", "ReO3"} <= set(lib)
    assert lib["bixbyite"].expensive and not lib["corundum"].expensive
    for t in lib.values():
        matrix, f_cat, f_an = cp._unit_cell(t)  # checks natoms and cation_cn
        n_cat, n_an = t.stoichiometry
        assert len(f_cat) * n_an == len(f_an) * n_cat, t.name
        lo, hi = t.radius_ratio
        assert 0 <= lo < hi, t.name
        if t.a_over_d is not None:  # cubic: conventional a / d, from the volume per formula unit
            z_conv = t.natoms // (n_cat + n_an)
            v_fu = abs(np.linalg.det(matrix)) / (len(f_cat) // n_cat)
            assert (v_fu * z_conv) ** (1 / 3) == pytest.approx(t.a_over_d, rel=1e-6), t.name


def test_binary_stoichiometries() -> None:
    assert cp.binary_stoichiometries("Ti", "O") == [("TiO", 2.0), ("Ti2O3", 3.0), ("TiO2", 4.0)]
    assert cp.binary_stoichiometries("Sr", "O") == [("SrO", 2.0)]
    assert ("V2O5", 5.0) in cp.binary_stoichiometries("V", "O")
    assert ("NbF5", 5.0) in cp.binary_stoichiometries("Nb", "F")
    assert cp.binary_stoichiometries("Si", "O") == [("SiO2", 4.0)]  # Si-4 is not a cation state
    assert cp.binary_stoichiometries("Ti", "N") == [("Ti3N2", 2.0), ("TiN", 3.0), ("Ti3N4", 4.0)]
    assert cp.binary_stoichiometries("Ti", "O", "common") == [("TiO2", 4.0)]
    with pytest.raises(ValueError, match="oxidation_states"):
        cp.binary_stoichiometries("Ti", "O", "sometimes")
    with pytest.raises(ValueError, match="unknown anion"):
        cp.binary_stoichiometries("Ti", "H")


def test_srtio3_system() -> None:
    phases = cp.competing_phases(["Sr", "Ti", "O"], "O")
    assert _key(phases) == [
        ("SrO", "rock_salt"), ("SrO", "CsCl"),
        ("TiO", "rock_salt"), ("Ti2O3", "corundum"), ("TiO2", "rutile"), ("TiO2", "anatase"),
    ]
    for p in phases:
        _check_cell(p)
        assert p.source == "library" and p.cation in ("Sr", "Ti")
        assert Composition(p.formula).oxi_state_guesses(oxi_states_override={p.cation: [p.oxidation]})
    sizes = {(p.formula, p.prototype): len(p.structure) for p in phases}
    assert sizes == {("SrO", "rock_salt"): 2, ("SrO", "CsCl"): 2, ("TiO", "rock_salt"): 2,
                     ("Ti2O3", "corundum"): 10, ("TiO2", "rutile"): 6, ("TiO2", "anatase"): 6}
    assert cp.library_gaps(["Sr", "Ti", "O"], "O") == []


#: (formula, type, cation, oxidation, anion, quantity, experiment): 'a' = conventional lattice
#: parameter (A), 'V' = volume per formula unit (A^3). Table in the module docstring.
EXPERIMENT = [
    ("SrO", "rock_salt", "Sr", 2, "O", "a", 5.16),
    ("MgO", "rock_salt", "Mg", 2, "O", "a", 4.21),
    ("TiO2", "rutile", "Ti", 4, "O", "V", 31.2),
    ("TiO2", "anatase", "Ti", 4, "O", "V", 34.1),
    ("Al2O3", "corundum", "Al", 3, "O", "V", 42.5),
    ("CaF2", "fluorite", "Ca", 2, "F", "a", 5.46),
    ("ZnO", "wurtzite", "Zn", 2, "O", "a", 3.25),
    ("SiO2", "alpha_quartz", "Si", 4, "O", "V", 37.7),
    ("WO3", "ReO3", "W", 6, "O", "a", 3.78),
    ("Li2O", "antifluorite", "Li", 1, "O", "a", 4.61),
    ("Cu2O", "cuprite", "Cu", 1, "O", "a", 4.27),
]


@pytest.mark.parametrize("formula, prototype, cation, ox, anion, quantity, expected", EXPERIMENT, ids=[f"{r[0]}-{r[1]}" for r in EXPERIMENT])
def test_lattice_against_experiment(formula: str, prototype: str, cation: str, ox: int, anion: str, quantity: str, expected: float) -> None:
    s = cp.build_binary(prototype, cation, ox, anion)
    comp, n_fu = s.composition.get_reduced_composition_and_factor()
    assert comp.reduced_formula == formula
    if quantity == "a":
        value = SpacegroupAnalyzer(s).get_conventional_standard_structure().lattice.a
    else:
        value = s.volume / n_fu
    dev = value / expected - 1
    print(f"{formula:6s} {prototype:13s} {quantity} {value:7.3f} {expected:7.2f} {100 * dev:+5.1f} %")
    assert abs(dev) < 0.06


def test_spacegroups_of_built_cells() -> None:
    cases = [("rock_salt", "Mg", 2, "O", 225), ("CsCl", "Cs", 1, "Cl", 221), ("zinc_blende", "Zn", 2, "S", 216),
             ("wurtzite", "Zn", 2, "O", 186), ("rutile", "Ti", 4, "O", 136), ("anatase", "Ti", 4, "O", 141),
             ("fluorite", "Ca", 2, "F", 225), ("CdI2", "Ti", 4, "S", 164), ("alpha_quartz", "Si", 4, "O", 154),
             ("antifluorite", "Li", 1, "O", 225), ("cuprite", "Cu", 1, "O", 224), ("corundum", "Al", 3, "O", 167),
             ("A_La2O3", "La", 3, "O", 164), ("bixbyite", "Y", 3, "O", 206), ("ReO3", "W", 6, "O", 221)]
    assert {c[0] for c in cases} == set(cp.load_library())
    for proto, cation, ox, anion, number in cases:
        s = cp.build_binary(proto, cation, ox, anion)
        assert SpacegroupAnalyzer(s, symprec=1e-3).get_space_group_number() == number, proto
        assert s.site_properties["oxidation"] == [float(ox)] * int(s.composition[cation]) + [float(cp.ANION_OXIDATION[anion])] * int(s.composition[anion])


CUBIC = [("rock_salt", "Sr", 2, "O"), ("CsCl", "Cs", 1, "Cl"), ("zinc_blende", "Zn", 2, "S"), ("fluorite", "Ca", 2, "F"),
         ("antifluorite", "Li", 1, "O"), ("cuprite", "Cu", 1, "O"), ("ReO3", "W", 6, "O")]


@pytest.mark.parametrize("prototype, cation, ox, anion", CUBIC, ids=[c[0] for c in CUBIC])
def test_cubic_types_meet_the_bond_length(prototype: str, cation: str, ox: int, anion: str) -> None:
    t = cp.load_library()[prototype]
    d = cp.cation_radius(cation, ox, t.cation_cn) + cp.anion_radius(anion, t.anion_cn)
    s = cp.build_binary(prototype, cation, ox, anion)
    for site in s:
        if site.specie.symbol == cation:
            bonds = sorted(n.nn_distance for n in s.get_neighbors(site, 1.5 * d) if n.specie.symbol == anion)
            assert len(bonds) == t.cation_cn
            assert np.allclose(bonds, d, rtol=0.02), (prototype, bonds, d)
    a = SpacegroupAnalyzer(s).get_conventional_standard_structure().lattice.a
    assert a == pytest.approx(t.a_over_d * d, rel=1e-6)


def test_anion_radius_at_the_type_cn_else_cn6() -> None:
    assert cp.anion_radius("O", 2) == pytest.approx(1.35)
    assert cp.anion_radius("O", 4) == pytest.approx(1.38)
    assert cp.anion_radius("S", 3) == pytest.approx(1.84)  # S2- only at CN VI
    assert cp.anion_radius("N", 6) == pytest.approx(1.46)  # N3- only at CN IV
    assert cp.cation_radius("Ti", 3, 7) is None  # Ti3+: CN VI only, no fallback
    nd6, nd8 = (cp.chemistry.shannon_radius("Nd", 3, k) for k in (6, 8))
    assert cp.chemistry.shannon_radius("Nd", 3, 7) is None
    assert cp.cation_radius("Nd", 3, 7) == pytest.approx((nd6 + nd8) / 2)


def test_spinel_and_garnet_systems() -> None:
    spinel = _key(cp.competing_phases(["Mg", "Al", "O"], "O"))
    assert ("MgO", "rock_salt") in spinel and ("Al2O3", "corundum") in spinel
    assert spinel[0] == ("Al2O3", "corundum")  # cations alphabetically
    yag = _key(cp.competing_phases(["Y", "Al", "O"], "O"))
    assert ("Al2O3", "corundum") in yag and {f for f, _ in yag} == {"Al2O3", "Y2O3"}
    assert ("Y2O3", "bixbyite") not in yag
    pyrope = cp.competing_phases(["Mg", "Al", "Si", "O"], "O")
    assert ("SiO2", "alpha_quartz") == _key(pyrope)[[f for f, _ in _key(pyrope)].index("SiO2")]  # quartz first
    assert {f for f, _ in _key(pyrope)} == {"MgO", "Al2O3", "SiO2"}
    for p in pyrope:
        _check_cell(p)


def test_expensive_types_only_on_request() -> None:
    phases = cp.competing_phases(["Y"], "O", include_expensive=True, max_polymorphs=3)
    bix = [p for p in phases if p.prototype == "bixbyite"]
    assert len(bix) == 1 and len(bix[0].structure) == 40
    assert _key(phases)[0] == ("Y2O3", "bixbyite")  # the observed type ranks first
    _check_cell(bix[0])


def test_ranking_prefers_observed_types_and_anion_chemistry() -> None:
    assert [t.name for t in cp.ranked_types("Zn", 2, "O")][0] == "wurtzite"
    assert [t.name for t in cp.ranked_types("Ti", 4, "S")][0] == "CdI2"
    assert [t.name for t in cp.ranked_types("Cu", 1, "O")][0] == "cuprite"
    assert [t.name for t in cp.ranked_types("Cs", 1, "Cl")][0] == "CsCl"
    assert [t.name for t in cp.ranked_types("Na", 1, "Cl")][0] == "rock_salt"
    ge = [t.name for t in cp.ranked_types("Ge", 4, "O")]
    assert ge[:2] == ["alpha_quartz", "rutile"]
    with pytest.raises(ValueError, match="at least 1"):
        cp.competing_phases(["Ti"], "O", max_polymorphs=0)
    assert _key(cp.competing_phases(["Ti"], "O", max_polymorphs=1)) == [("TiO", "rock_salt"), ("Ti2O3", "corundum"), ("TiO2", "rutile")]


def test_user_competing_phases(tmp_path: Path) -> None:
    poscar = tmp_path / "POSCAR_CaO"
    cp.build_binary("rock_salt", "Ca", 2, "O").to(filename=str(poscar), fmt="poscar")
    phases = cp.competing_phases(["Ca", "Ti", "O"], "O", user_files=[str(CATIO3), str(BATIO3), str(poscar)])
    users = [p for p in phases if p.source != "library"]
    assert [p.prototype for p in users] == [f"user:{CATIO3.name}", f"user:{poscar.name}"]  # BaTiO3: Ba is foreign
    catio3 = users[0]
    assert catio3.formula == "CaTiO3" and catio3.source == str(CATIO3) and catio3.cation is None and catio3.oxidation is None
    assert len(catio3.structure) == 20
    assert users[1].cation == "Ca" and users[1].formula == "CaO"
    for p in users:
        _check_cell(p)
    assert _key(phases[:-2]) == _key(cp.competing_phases(["Ca", "Ti", "O"], "O"))
    sto = cp.competing_phases(["Sr", "Ti"], "O", user_files=[str(SRTIO3_JSON)])
    assert sto[-1].formula == "SrTiO3" and sto[-1].prototype == f"user:{SRTIO3_JSON.name}"


def test_library_gaps(caplog: pytest.LogCaptureFixture) -> None:
    assert cp.library_gaps(["V", "O"], "O") == ["V2O5"]
    with caplog.at_level(logging.WARNING, logger="matscreen.label.competing"):
        phases = cp.competing_phases(["V", "O"], "O")
    assert "V2O5" in caplog.text
    assert "V2O5" not in {p.formula for p in phases}
    assert {p.formula for p in phases} == {"VO", "V2O3", "VO2"}
    assert "NbF5" in cp.library_gaps(["Nb"], "F")
    assert cp.library_gaps(["Ti"], "Cl") == ["TiCl4"]


def test_custom_library_file(tmp_path: Path) -> None:
    data = yaml.safe_load(cp.DEFAULT_LIBRARY.read_text())
    data["types"] = {"rock_salt": data["types"]["rock_salt"]}
    path = tmp_path / "lib.yaml"
    path.write_text(yaml.safe_dump(data))
    assert _key(cp.competing_phases(["Ti"], "O", library=path)) == [("TiO", "rock_salt")]
    assert cp.library_gaps(["Ti"], "O", library=path) == ["Ti2O3", "TiO2"]
    data["types"]["rock_salt"]["natoms"] = 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="natoms"):
        cp.build_binary("rock_salt", "Mg", 2, "O", library=bad)
    with pytest.raises(ValueError, match="unknown structure type"):
        cp.build_binary("perovskite", "Mg", 2, "O")
    with pytest.raises(ValueError, match="is not"):
        cp.build_binary("rutile", "Mg", 2, "O")


def test_deterministic() -> None:
    def snapshot(elements: object) -> list[tuple]:
        return [(p.formula, p.prototype, p.structure.lattice.matrix.round(10).tolist(), [sp.symbol for sp in p.structure.species],
                 p.structure.frac_coords.round(10).tolist()) for p in cp.competing_phases(elements, "O", user_files=[str(CATIO3)])]

    first = snapshot(["Ca", "Ti", "O"])
    assert first == snapshot(["O", "Ti", "Ca"]) == snapshot({"Ti", "Ca"})
    assert all(math.isfinite(x) for row in first for x in np.ravel(row[2]))
