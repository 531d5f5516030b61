"""Issue 11 part B, "nothing wrong passes silently": structure JSON never runs code; folds never
split a composition; ``structure_id`` depends on the lattice.

The structure-JSON tests do not import :mod:`matscreen.structjson` except where they test it
directly, so that on code without the safe decoder they fail by the marker file appearing.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

DATA = Path(__file__).parent / "data" / "structures"
STO = DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json"


# --- 10: a structure file must never run code ----------------------------------------------------


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on sys.path that leaves a marker file when imported; (module name, marker path)."""
    name = f"matscreen_records_import_{uuid.uuid4().hex[:12]}"
    marker = tmp_path / "IMPORTED"
    pkg = tmp_path / "evil_path"
    pkg.mkdir()
    (pkg / f"{name}.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "class X:\n"
        "    @classmethod\n"
        "    def from_dict(cls, d):\n"
        "        return cls()\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    yield name, marker
    sys.modules.pop(name, None)


def _payload(mod: str) -> dict:
    return {"@module": mod, "@class": "X"}


def _sto_dict() -> dict:
    return json.loads(STO.read_text())


def _evil_sto(mod: str) -> dict:
    d = _sto_dict()
    d["sites"][0]["properties"] = {"magmom": 0.0, "note": _payload(mod)}
    return d


def _assert_not_imported(evil: tuple[str, Path]) -> None:
    name, marker = evil
    assert not marker.exists(), f"{name} was imported while reading a structure"
    assert name not in sys.modules


@pytest.mark.parametrize("where", ["site_properties", "nested_site_property", "lattice", "species",
                                   "structure_properties", "site", "root", "callable", "history"])
def test_structure_from_json_refuses_any_foreign_module(where: str, evil: tuple[str, Path]) -> None:
    from matscreen.structjson import UnsafeStructureJSON, structure_from_json

    name, _ = evil
    d = _sto_dict()
    transformed = False
    if where == "site_properties":
        d["sites"][1]["properties"] = {"x": _payload(name)}
    elif where == "nested_site_property":
        d["sites"][2]["properties"] = {"x": [1, {"deeper": [_payload(name)]}]}
    elif where == "lattice":
        d["lattice"].update(_payload(name))
    elif where == "species":
        d["sites"][0]["species"][0].update(_payload(name))
    elif where == "structure_properties":
        d["properties"] = {"x": _payload(name)}
    elif where == "site":
        d["sites"][0].update({"@module": name, "@class": "PeriodicSite"})
    elif where == "root":
        d["@module"] = name
    elif where == "callable":
        d["sites"][0]["properties"] = {"x": {"@module": name, "@callable": "X"}}
    elif where == "history":
        d.update({"@module": "pymatgen.alchemy.materials", "@class": "TransformedStructure",
                  "history": [_payload(name)], "other_parameters": {}})
        transformed = True
    with pytest.raises(UnsafeStructureJSON) as err:
        structure_from_json(json.dumps(d), "some/file.json", transformed=transformed)
    assert isinstance(err.value, ValueError)
    assert "some/file.json" in str(err.value) and name in str(err.value)
    _assert_not_imported(evil)


def test_structure_from_json_reads_plain_structures_with_properties() -> None:
    from pymatgen.alchemy.materials import TransformedStructure
    from pymatgen.transformations.standard_transformations import SupercellTransformation

    from matscreen.structjson import NotAStructure, structure_from_json

    s = Structure.from_file(STO)
    s.add_site_property("magmom", [0.0, 1.0, 0.5, 0.5, 0.5])
    back = structure_from_json(s.to_json(), "x")
    assert back == s and back.site_properties["magmom"] == [0.0, 1.0, 0.5, 0.5, 0.5]
    assert structure_from_json(s.as_dict(), "x") == s
    ts = TransformedStructure(s, [SupercellTransformation([[1, 0, 0], [0, 1, 0], [0, 0, 2]])])
    assert len(structure_from_json(json.dumps(ts.as_dict()), "x", transformed=True)) == 10
    with pytest.raises(NotAStructure):  # only ingest reads TransformedStructure
        structure_from_json(json.dumps(ts.as_dict()), "x")
    with pytest.raises(NotAStructure, match="Molecule"):
        structure_from_json({"@class": "Molecule", "sites": []}, "x")


def test_ingest_rejects_structure_json_that_names_a_module(tmp_path: Path, evil: tuple[str, Path]) -> None:
    from matscreen.ingest import ingest

    name, _ = evil
    d = tmp_path / "in"
    d.mkdir()
    (d / "evil.json").write_text(json.dumps(_evil_sto(name)))
    (d / "good.json").write_text(STO.read_text())
    structures, rejects = ingest([str(d)], {})
    _assert_not_imported(evil)
    assert list(structures["source"].map(lambda p: Path(p).name)) == ["good.json"]
    assert len(rejects) == 1, rejects.to_string()
    rej = rejects.iloc[0]
    assert Path(rej["source"]).name == "evil.json" and rej["reason"] == "unsafe_json"
    assert name in rej["detail"]


def _structure_row(js: str, sid: str = "s-evil") -> dict:
    return {"structure_id": sid, "structure": js, "family": "perovskite", "formula": "SrTiO3",
            "reduced_formula": "SrTiO3", "spacegroup_number": 221, "duplicate_of": None,
            "nsites": 5}


def test_label_reads_of_a_targets_table_refuse_a_foreign_module(tmp_path: Path, evil: tuple[str, Path]) -> None:
    from matscreen import label

    name, _ = evil
    path = tmp_path / "targets.parquet"
    pd.DataFrame([_structure_row(json.dumps(_evil_sto(name)))]).to_parquet(path)
    with pytest.raises(ValueError, match=name):
        label._read_target(str(path), "s-evil")
    with pytest.raises(ValueError, match=name):
        label.read_structures([str(path)])
    js = tmp_path / "evil.json"
    js.write_text(json.dumps(_evil_sto(name)))
    with pytest.raises(ValueError, match=name):
        label.read_structures([str(js)])
    _assert_not_imported(evil)


def test_featurize_refuses_a_structure_column_naming_a_module(tmp_path: Path, evil: tuple[str, Path]) -> None:
    from matscreen import featurize

    name, _ = evil
    df = pd.DataFrame([_structure_row(json.dumps(_evil_sto(name)))])
    df["A_species"], df["B_species"], df["X_species"] = "Sr2+", "Ti4+", "O2-"
    settings = {"structure": {"density": True}}
    with pytest.raises(ValueError, match=name):
        featurize.featurize_frame(df, "structure_id", settings)
    _assert_not_imported(evil)


def test_targets_and_dedupe_refuse_a_structure_column_naming_a_module(evil: tuple[str, Path]) -> None:
    from matscreen import ingest
    from matscreen.label import targets

    name, _ = evil
    df = pd.DataFrame([_structure_row(json.dumps(_evil_sto(name)))])
    with pytest.raises(ValueError, match=name):
        targets.from_structures(df, {"ingested": True, "max_sites": 14})
    good = pd.DataFrame([_structure_row(STO.read_text(), "s-good")])
    with pytest.raises(ValueError, match=name):
        ingest.mark_duplicates(df, ingest.resolve_settings({}).dedupe)
    # a table of earlier runs with such a row: refused too (not used for de-duplication is not enough)
    with pytest.raises(ValueError, match=name):
        ingest.mark_duplicates(good, ingest.resolve_settings({}).dedupe, existing=df)
    _assert_not_imported(evil)


# --- 12: folds never split a composition, however its rows are ordered or its formula written ----

#: one composition per entry, written three ways (the reduced formula is the group)
SPELLINGS = [("SrTiO3", "Sr2Ti2O6", "Ti1Sr1O3"), ("BaTiO3", "Ba3Ti3O9", "O3TiBa"), ("CaTiO3", "Ca2Ti2O6", "TiCaO3"),
             ("MgAl2O4", "Mg2Al4O8", "Al2MgO4"), ("LaAlO3", "La2Al2O6", "AlLaO3"), ("KNbO3", "K2Nb2O6", "NbKO3"),
             ("NaCl", "Na2Cl2", "ClNa"), ("ZnFe2O4", "Zn2Fe4O8", "Fe2ZnO4")]


def _interleaved(n_per_spelling: int = 2, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Rows cycle through the compositions (row i is composition i % 8) and their spellings."""
    rng = np.random.default_rng(seed)
    formulas = []
    for rep in range(3 * n_per_spelling):
        for spellings in SPELLINGS:
            formulas.append(spellings[rep % 3])
    n = len(formulas)
    x = rng.normal(size=(n, 2))
    data = pd.DataFrame({"structure_id": [f"s-{i:04d}" for i in range(n)], "formula": formulas,
                         "f0": x[:, 0], "f1": x[:, 1], "y": x[:, 0] + 0.1 * rng.normal(size=n)})
    return data, formulas


def _split_compositions(folds: np.ndarray, formulas: list[str]) -> list[str]:
    """Reduced formulas whose rows sit in more than one fold."""
    from pymatgen.core import Composition

    red = pd.Series([Composition(f).reduced_formula for f in formulas])
    n = pd.Series(np.asarray(folds)).groupby(red).nunique()
    return sorted(n[n > 1].index)


def test_fixture_would_catch_positional_and_raw_formula_folds() -> None:
    """The check below is only worth something if the two classic mistakes fail it on these rows."""
    _, formulas = _interleaved()
    n = len(formulas)
    by_position = np.repeat(np.arange(5), int(np.ceil(n / 5)))[:n]  # KFold(5, shuffle=False)
    assert _split_compositions(by_position, formulas), "unshuffled k-fold would pass this fixture"
    raw = sorted(set(formulas))
    rng = np.random.default_rng(1)
    fold_of_raw = dict(zip(rng.permutation(raw), np.arange(len(raw)) % 5))
    assert _split_compositions(np.array([fold_of_raw[f] for f in formulas]), formulas), \
        "grouping by the raw formula string would pass this fixture"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_validation_never_splits_a_reduced_formula(seed: int) -> None:
    from matscreen import train

    data, formulas = _interleaved(seed=seed)
    settings = {"cv_folds": 5, "ensemble_size": 1, "num_boost_round": 3,
                "lightgbm": {"num_leaves": 4, "min_data_in_leaf": 2, "min_data_in_bin": 1}}
    oof = train.cross_validate(data, ["f0", "f1"], "y", {"target": "y", **settings}, seed).oof
    assert list(oof["structure_id"]) == list(data["structure_id"])
    folds = oof["fold"].to_numpy()
    assert _split_compositions(folds, formulas) == [], "a composition has rows in two folds"
    assert sorted(set(folds)) == list(range(5)), "every fold holds out something"
    assert oof["y_pred"].notna().all(), "every row is predicted out of fold"


# --- 14: structure_id is a function of the whole cell, lattice included ---------------------------


def _cell(lattice: Lattice, shuffle: int | None = None) -> Structure:
    species = ["Sr", "Ti", "O", "O", "O"]
    coords = [[0.5, 0.5, 0.5], [0, 0, 0], [0, 0, 0.5], [0, 0.5, 0], [0.5, 0, 0]]
    order = list(range(5))
    if shuffle is not None:
        order = list(np.random.default_rng(shuffle).permutation(5))
    return Structure(lattice, [species[i] for i in order], [coords[i] for i in order])


def test_structure_id_changes_with_the_lattice_only() -> None:
    from matscreen.ids import structure_id

    base = structure_id(_cell(Lattice.cubic(3.905)))
    assert structure_id(_cell(Lattice.cubic(3.905))) == base, "the same structure, built twice"
    assert structure_id(Structure.from_dict(_cell(Lattice.cubic(3.905)).as_dict())) == base
    others = {
        "larger volume": Lattice.cubic(4.10),
        "slightly larger": Lattice.cubic(3.915),
        "tetragonal": Lattice.tetragonal(3.905, 4.2),
        "orthorhombic": Lattice.orthorhombic(3.905, 3.95, 3.905),
        "monoclinic (one angle)": Lattice.monoclinic(3.905, 3.905, 3.905, 95.0),
        "rhombohedral (all angles)": Lattice.rhombohedral(3.905, 89.0),
    }
    ids = {name: structure_id(_cell(lat)) for name, lat in others.items()}
    for name, sid in ids.items():
        assert sid != base, f"same fractional coordinates in a {name} cell got the same structure_id"
    assert len(set(ids.values())) == len(ids), "different cells share an id"


def test_structure_id_ignores_site_order_periodic_images_and_noise() -> None:
    """ids.py documents the id as independent of site order and floating-point noise."""
    from matscreen.ids import structure_id

    lat = Lattice.cubic(3.905)
    base = structure_id(_cell(lat))
    for seed in range(3):
        assert structure_id(_cell(lat, shuffle=seed)) == base, "site order changed the id"
    shifted = _cell(lat)
    moved = Structure(lat, shifted.species, [c + np.array([1, -1, 0]) for c in shifted.frac_coords],
                      coords_are_cartesian=False, to_unit_cell=False)
    assert structure_id(moved) == base, "a periodic image changed the id"
    noisy = Structure(Lattice.cubic(3.905 + 1e-7), shifted.species, shifted.frac_coords + 1e-9)
    assert structure_id(noisy) == base, "floating-point noise changed the id"
    swapped = Structure(lat, ["Ba", "Ti", "O", "O", "O"], shifted.frac_coords)
    assert structure_id(swapped) != base, "another species at the same place got the same id"
