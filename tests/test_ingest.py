"""The ingest stage on the real shared files, generated bad inputs, other formats and fuzzed CIF text."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.alchemy.materials import TransformedStructure
from pymatgen.core import Structure
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp import Poscar

from matscreen import tables
from matscreen.ingest import expand_inputs, ingest, read_file, resolve_settings, run, split_cif_blocks
from matscreen.tables import check_frame, read_provenance, read_table

DATA = Path(__file__).parent / "data" / "structures"

#: every shared file -> ("structures", family) or ("rejects", reason), with default settings
EXPECTED = {
    "awkward/SrYCoO_partial_occupancy_srycoo.cif": ("rejects", "disordered"),
    "garnet/Fe3Al2Si3O12_almandine_amcsd.cif": ("structures", "garnet"),
    "garnet/Mg3Al2Si3O12_pyrope_amcsd.cif": ("structures", "garnet"),
    "perovskite/BaTiO3_Amm2_pyxtal.cif": ("structures", "perovskite"),
    "perovskite/BaTiO3_P4mm_pyxtal_BTO.cif": ("structures", "perovskite"),
    "perovskite/CaTiO3_Pbnm_amcsd.cif": ("structures", "perovskite"),
    "perovskite/CaTiO3_Pnma_mp-4019_garnetdnn_P1.cif": ("structures", "perovskite"),
    "perovskite/SrTiO3_Pm-3m_pymatgen.json": ("structures", "perovskite"),
    "spinel/Fe3O4_magnetite_amcsd_Fd-3m.cif": ("structures", "spinel"),
    "spinel/Fe3O4_pymatgen_P1.cif": ("structures", "other"),
    "spinel/FeAl2O4_hercynite_amcsd.cif": ("structures", "spinel"),
    "spinel/Mg2SiO4_ringwoodite_amcsd.cif": ("structures", "spinel"),
    "spinel/MgAl2O4_spinel_amcsd_partial_inversion.cif": ("rejects", "disordered"),
}


def rel(source: str) -> str:
    return str(Path(source).relative_to(DATA))


def one_table_each(structures: pd.DataFrame, rejects: pd.DataFrame, sources: list[str]) -> None:
    """Every source is in exactly one of the two tables."""
    s, r = set(structures["source"]), set(rejects["source"])
    assert not s & r
    assert s | r == set(sources)


@pytest.fixture(scope="module")
def shared() -> tuple[pd.DataFrame, pd.DataFrame]:
    return ingest([str(DATA)], {})


def test_every_shared_file_ends_in_the_right_table(shared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    structures, rejects = shared
    check_frame(structures, tables.STRUCTURES)
    check_frame(rejects, tables.REJECTS)
    got = {rel(src): ("structures", fam) for src, fam in zip(structures["source"], structures["family"], strict=True)}
    got.update({rel(src): ("rejects", reason) for src, reason in zip(rejects["source"], rejects["reason"], strict=True)})
    assert got == EXPECTED  # SOURCES.md is skipped by ingest.ignore
    assert rejects.set_index("source").loc[str(DATA / "spinel/MgAl2O4_spinel_amcsd_partial_inversion.cif"), "detail"].startswith("partial occupancy")


def test_site_columns_and_identity(shared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    structures, _ = shared
    by = structures.assign(rel=structures["source"].map(rel)).set_index("rel")
    ring = by.loc["spinel/Mg2SiO4_ringwoodite_amcsd.cif"]
    assert (ring["A_species"], ring["B_species"], ring["X_species"]) == ("Si4+", "Mg2+", "O2-")
    assert ring["A_radius_ang"] == pytest.approx(0.26)  # Si4+ at CN 4 (Shannon)
    assert ring["B_radius_ang"] == pytest.approx(0.72)  # Mg2+ at CN 6
    assert ring["inversion"] == 0.0 and ring["spacegroup_number"] == 227
    assert json.loads(ring["site_roles"])["A"]["role"] == "tetrahedral"
    mag = by.loc["spinel/Fe3O4_magnetite_amcsd_Fd-3m.cif"]
    assert mag["A_species"] == "Fe3+" and mag["B_oxi"] == pytest.approx(2.5) and mag["inversion"] == 1.0
    sto = by.loc["perovskite/SrTiO3_Pm-3m_pymatgen.json"]
    assert sto["A_radius_ang"] == pytest.approx(1.44) and sto["B_radius_ang"] == pytest.approx(0.605)
    assert pd.isna(sto["B2_species"]) and pd.isna(sto["inversion"])
    garnet = by.loc["garnet/Mg3Al2Si3O12_pyrope_amcsd.cif"]
    assert (garnet["C_species"], garnet["A_species"], garnet["D_species"]) == ("Mg2+", "Al3+", "Si4+")
    other = by.loc["spinel/Fe3O4_pymatgen_P1.cif"]
    assert pd.isna(other["A_species"]) and pd.isna(other["site_roles"]) and "family:" in other["note"]
    # identity columns are computed, not copied
    for _, row in structures.iterrows():
        s = Structure.from_dict(json.loads(row["structure"]))
        assert row["nsites"] == len(s) and row["reduced_formula"] == s.composition.reduced_formula
        assert len(row["source_sha256"]) == 64 and row["structure_id"].startswith("s-")


def test_same_crystal_twice_is_a_duplicate_but_polymorphs_are_not(shared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    structures, _ = shared
    by = structures.assign(rel=structures["source"].map(rel)).set_index("rel")
    # mp-4019 (P1 2x cell) is the same CaTiO3 as the AMCSD Pbnm mineral
    assert by.loc["perovskite/CaTiO3_Pnma_mp-4019_garnetdnn_P1.cif", "duplicate_of"] == by.loc["perovskite/CaTiO3_Pbnm_amcsd.cif", "structure_id"]
    assert pd.isna(by.loc["perovskite/CaTiO3_Pbnm_amcsd.cif", "duplicate_of"])
    assert pd.isna(by.loc["perovskite/BaTiO3_P4mm_pyxtal_BTO.cif", "duplicate_of"])  # P4mm vs Amm2
    assert structures["duplicate_of"].notna().sum() == 1


def test_ordered_approximant_keeps_disordered_files_with_a_note() -> None:
    paths = [str(DATA / "spinel/MgAl2O4_spinel_amcsd_partial_inversion.cif"), str(DATA / "awkward/SrYCoO_partial_occupancy_srycoo.cif")]
    structures, rejects = ingest(paths, {"disordered": "ordered_approximant"})
    assert rejects.empty and len(structures) == 2
    by = structures.set_index(structures["source"].map(rel))
    spinel = by.loc["spinel/MgAl2O4_spinel_amcsd_partial_inversion.cif"]
    assert spinel["family"] == "spinel" and spinel["A_species"] == "Mg2+" and spinel["B_species"] == "Al3+"
    assert spinel["note"].startswith("ordered approximant") and "Mg:0.85" in spinel["note"]
    assert "A=Al3+:0.15 Mg2+:0.85" in spinel["note"] and "inversion 0.15" in spinel["note"]
    s = Structure.from_dict(json.loads(spinel["structure"]))
    assert s.is_ordered and s.composition.reduced_formula == "MgAl2O4"
    srco = by.loc["awkward/SrYCoO_partial_occupancy_srycoo.cif"]
    assert Structure.from_dict(json.loads(srco["structure"])).is_ordered and "removed" in srco["note"]


# --- generated bad inputs -----------------------------------------------------------


def _write(path: Path, data: bytes | str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return str(path)


def test_bad_inputs_become_rejects_with_reasons(tmp_path: Path) -> None:
    cif = (DATA / "perovskite/CaTiO3_Pbnm_amcsd.cif").read_text()
    amm2 = (DATA / "perovskite/BaTiO3_Amm2_pyxtal.cif").read_text()
    rng = random.Random(0)
    d = tmp_path / "in"
    expected = {
        _write(d / "empty.cif", b""): "empty",
        _write(d / "blank.cif", "  \n\n\t\n"): "empty",
        _write(d / "garbage.cif", bytes(rng.randrange(256) for _ in range(4000))): "not_text",
        _write(d / "truncated.cif", cif[: len(cif) // 3]): "no_structure",
        _write(d / "truncated_in_loop.cif", cif[: cif.index("O1   0.0586") + 12]): "parse_error",
        _write(d / "structure.txt", cif): "unknown_format",
        _write(d / "POSCAR_bad", "not a poscar\n1.0\n"): "parse_error",
        _write(d / "bad.json", "{not json"): "parse_error",
        _write(d / "dict.json", json.dumps({"@class": "Molecule", "sites": []})): "no_structure",
        # symmetry lost: no symops, no space group -> pymatgen returns the asymmetric unit
        _write(d / "nosym.cif", cif.split("_symmetry_space_group_name_H-M")[0] + "loop_" + cif.split("loop_")[-1]): "symmetry_fallback",
        _write(d / "occu.cif", amm2.replace("0.99252100  1", "0.99252100  1.6")): "bad_occupancy",
        _write(d / "overlap.vasp", "Ba Ti\n1.0\n4 0 0\n0 4 0\n0 0 4\nBa Ti\n1 1\ndirect\n0 0 0\n0.01 0 0\n"): "overlapping_sites",
    }
    # KTiO3 (Sr -> K in SrTiO3): a perovskite topology, but no charge-balanced oxidation states
    kto = Structure.from_file(DATA / "perovskite/SrTiO3_Pm-3m_pymatgen.json")
    kto.remove_oxidation_states()
    kto.replace_species({"Sr": "K"})
    expected[_write(d / "KTiO3.json", json.dumps(kto.as_dict()))] = "not_charge_balanced"
    broken = d / "broken_link.cif"
    broken.symlink_to(d / "does_not_exist.cif")
    expected[str(broken)] = "unreadable"
    fifo = d / "pipe.cif"
    os.mkfifo(fifo)  # a read would block forever: must be refused, not opened
    expected[str(fifo)] = "unreadable"
    # a path that matches nothing is a config error now (tests/test_reliability.py), not a reject
    structures, rejects = ingest([str(d)], {})
    assert structures.empty
    check_frame(rejects, tables.REJECTS)
    got = dict(zip(rejects["source"], rejects["reason"], strict=True))
    assert got == expected, rejects.to_string()
    assert (rejects["detail"].str.len() > 0).all()


def test_unreadable_file(tmp_path: Path) -> None:
    """chmod 000: rejected as unreadable, unless we run as root (then the file is simply read)."""
    p = Path(_write(tmp_path / "locked.cif", (DATA / "perovskite/BaTiO3_P4mm_pyxtal_BTO.cif").read_text()))
    p.chmod(0)
    try:
        structures, rejects = ingest([str(p)], {})
    finally:
        p.chmod(0o644)
    one_table_each(structures, rejects, [str(p)])
    if os.geteuid() == 0:
        assert list(structures["family"]) == ["perovskite"]
    else:
        assert list(rejects["reason"]) == ["unreadable"]


def test_multi_block_cif(tmp_path: Path) -> None:
    """Two AMCSD blocks (both 'data_global') and a broken third block: one row each, nothing lost."""
    mag = (DATA / "spinel/Fe3O4_magnetite_amcsd_Fd-3m.cif").read_text()
    her = (DATA / "spinel/FeAl2O4_hercynite_amcsd.cif").read_text()
    bad = "data_broken\n_cell_length_a 5.0\n"
    p = _write(tmp_path / "three.cif", mag + "\n" + her + "\n" + bad)
    assert [name for name, _ in split_cif_blocks(Path(p).read_text())] == ["global", "global#2", "broken"]
    structures, rejects = ingest([p], {})
    assert list(structures["block"]) == ["global", "global#2"]
    assert list(structures["reduced_formula"]) == ["Fe3O4", "Al2FeO4"]
    assert list(structures["family"]) == ["spinel", "spinel"]
    assert list(zip(rejects["block"], rejects["reason"], strict=True)) == [("broken", "no_structure")]
    assert structures["source_sha256"].nunique() == 1


def test_poscar_and_json_inputs_and_duplicates_across_formats(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ring = CifParser(DATA / "spinel/Mg2SiO4_ringwoodite_amcsd.cif").parse_structures(primitive=False)[0]
        cto = CifParser(DATA / "perovskite/CaTiO3_Pbnm_amcsd.cif").parse_structures(primitive=False)[0]
    d = tmp_path / "formats"
    d.mkdir()
    Poscar(ring.get_primitive_structure()).write_file(d / "POSCAR")
    Poscar(cto).write_file(d / "cto.vasp")
    (d / "CONTCAR_pyrope").write_text(Poscar(CifParser(DATA / "garnet/Mg3Al2Si3O12_pyrope_amcsd.cif").parse_structures(primitive=False)[0]).get_str())
    (d / "cto.json").write_text(json.dumps(cto.as_dict()))
    (d / "ts.json").write_text(json.dumps(TransformedStructure(ring, []).as_dict()))
    (d / "list.json").write_text(json.dumps([ring.as_dict(), cto.as_dict()]))
    shutil.copy(DATA / "spinel/Mg2SiO4_ringwoodite_amcsd.cif", d / "ringwoodite.cif")
    structures, rejects = ingest([str(d)], {})
    assert rejects.empty, rejects.to_string()
    by = {(Path(s).name, b): row for (s, b), row in structures.set_index(["source", "block"]).iterrows()}
    assert by[("POSCAR", "")]["family"] == "spinel" and by[("POSCAR", "")]["A_species"] == "Si4+"
    assert by[("CONTCAR_pyrope", "")]["family"] == "garnet"
    assert by[("ts.json", "")]["family"] == "spinel"
    assert {by[("list.json", "0")]["family"], by[("list.json", "1")]["family"]} == {"spinel", "perovskite"}
    # the same ringwoodite in five files (primitive and conventional cells): one original
    rw = structures[structures["reduced_formula"] == "Mg2SiO4"]
    assert len(rw) == 4 and rw["duplicate_of"].isna().sum() == 1
    assert set(rw["duplicate_of"].dropna()) == set(rw.loc[rw["duplicate_of"].isna(), "structure_id"])
    ct = structures[structures["reduced_formula"] == "CaTiO3"]
    assert len(ct) == 3 and ct["duplicate_of"].isna().sum() == 1


def test_existing_table_makes_a_refresh_add_only_what_is_new(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = [str(DATA / "perovskite/SrTiO3_Pm-3m_pymatgen.json"), str(DATA / "spinel/FeAl2O4_hercynite_amcsd.cif")]
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="matscreen.ingest"):
        run([*first, str(DATA / "awkward")], str(out / "structures.parquet"), str(out / "rejects.parquet"), {}, None, "cfg123")
    assert "ingest: read 3 files, kept 2 new structures, 0 duplicates, rejected 1 (by reason: disordered 1)" in caplog.text
    assert len(read_table(out / "rejects.parquet", tables.REJECTS)) == 1
    old = read_table(out / "structures.parquet", tables.STRUCTURES)
    prov = read_provenance(out / "structures.parquet")
    assert prov["stage"] == "ingest" and prov["config_hash"] == "cfg123" and prov["settings"]["disordered"] == "reject"
    # nightly refresh: the same two files again plus a new one, against the earlier table
    again = [*first, str(DATA / "spinel/Mg2SiO4_ringwoodite_amcsd.cif")]
    run(again, str(out / "s2.parquet"), str(out / "r2.parquet"), {}, str(out / "structures.parquet"))
    new = read_table(out / "s2.parquet", tables.STRUCTURES).set_index("source")
    for src, sid in zip(old["source"], old["structure_id"], strict=True):
        assert new.loc[src, "duplicate_of"] == sid
    assert pd.isna(new.loc[again[2], "duplicate_of"])
    # a missing existing file is no earlier run, not an error
    run(first, str(out / "s3.parquet"), str(out / "r3.parquet"), {}, str(out / "none.parquet"))
    assert read_table(out / "s3.parquet", tables.STRUCTURES)["duplicate_of"].isna().all()


def test_elements_pyscf_cannot_compute_are_kept_and_left_to_label_selection(tmp_path: Path) -> None:
    """Ingest does not ask the label stage what it can compute: LaAlO3 is ingested like any other
    perovskite, and label target selection (which knows the label settings) leaves it out."""
    from matscreen.label import targets

    s = Structure.from_file(DATA / "perovskite/SrTiO3_Pm-3m_pymatgen.json")
    s.remove_oxidation_states()
    s.replace_species({"Sr": "La", "Ti": "Al"})  # LaAlO3: no gth-szv-molopt-sr basis for La
    p = _write(tmp_path / "LaAlO3.json", json.dumps(s.as_dict()))
    structures, rejects = ingest([p], {})
    assert rejects.empty
    row = structures.iloc[0]
    assert row["family"] == "perovskite" and row["A_species"] == "La3+" and row["B_species"] == "Al3+"
    assert "label_supported" not in structures and "unsupported_elements" not in structures
    assert targets.from_structures(structures, {"ingested": True, "max_sites": 14}, {}).empty


def test_folders_skip_ignored_names_but_explicit_files_do_not(tmp_path: Path) -> None:
    _write(tmp_path / "README.md", "docs")
    _write(tmp_path / ".hidden.cif", "x")
    _write(tmp_path / "sub" / "a.cif", "x")
    files, missing = expand_inputs([str(tmp_path), str(tmp_path / "README.md")], resolve_settings({}).ignore)
    assert files == [str(tmp_path / "sub" / "a.cif"), str(tmp_path / "README.md")] and missing == []
    files, missing = expand_inputs([str(tmp_path / "**" / "*.cif")], [])
    assert files == [str(tmp_path / "sub" / "a.cif")]


def test_settings_errors_name_the_key() -> None:
    from matscreen.config import ConfigError

    with pytest.raises(ConfigError, match="ingest.disordered"):
        resolve_settings({"disordered": "keep"})
    with pytest.raises(ConfigError, match="ingest.dedupe"):
        resolve_settings({"dedupe": {"ltol": 0.2, "bogus": 1}})


def test_timeout_turns_a_slow_file_into_a_reject(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import matscreen.ingest.readers as mod

    p = _write(tmp_path / "slow.cif", (DATA / "perovskite/BaTiO3_P4mm_pyxtal_BTO.cif").read_text())

    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(5)

    monkeypatch.setattr(mod, "parse_cif_block", hang)
    rows, rejects = read_file(p, resolve_settings({"timeout_s": 0.3}))
    assert rows == [] and [r["reason"] for r in rejects] == ["timeout"]


# --- fuzzing ------------------------------------------------------------------------

_SEEDS = [
    (DATA / name).read_text()
    for name in ("perovskite/BaTiO3_P4mm_pyxtal_BTO.cif", "perovskite/CaTiO3_Pbnm_amcsd.cif", "perovskite/BaTiO3_Amm2_pyxtal.cif", "spinel/Fe3O4_pymatgen_P1.cif")
]
_ALPHABET = st.sampled_from(list("0123456789.-+ \n'\";_()?#xyzabcdefgloop_data_O1Ba,/\t") + ["loop_\n", "data_x\n", "\x00", "é", ";\n", "_atom_site_occupancy\n", "1.6", "?"])


@st.composite
def mutated_cif(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(_SEEDS))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "dup_line", "swap_lines"]))
        n = len(text)
        i = draw(st.integers(0, max(n - 1, 0)))
        if op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 80)) :]
        elif op == "insert":
            text = text[:i] + "".join(draw(st.lists(_ALPHABET, min_size=1, max_size=8))) + text[i:]
        elif op == "replace" and n:
            text = text[:i] + draw(_ALPHABET) + text[i + 1 :]
        elif op == "truncate":
            text = text[:i]
        else:
            lines = text.split("\n")
            j, k = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(j, lines[k])
            else:
                lines[j], lines[k] = lines[k], lines[j]
            text = "\n".join(lines)
    return text


_FUZZ_SETTINGS = resolve_settings({"timeout_s": 5})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(text=mutated_cif())
def test_fuzzed_cif_never_raises_only_rejects(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fuzz.cif")
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.write(text)
        rows, rejects = read_file(path, _FUZZ_SETTINGS)
    assert rows or rejects
    for r in rejects:
        assert r["reason"] != "internal_error", r  # every failure mode found so far has a named reason
        assert r["detail"]
    for row in rows:
        assert row["family"] in ("perovskite", "double_perovskite", "spinel", "garnet", "other")
