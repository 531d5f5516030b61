"""Tests of the featurize stage: the fast path against matminer, site features, contracts."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure

from matscreen import chemistry, featurize
from matscreen.config import ConfigError, load_config, settings_dict
from matscreen.families import FAMILIES, SITE_LABELS, Ion, format_occupancy, site_composition
from matscreen.tables import (
    CANDIDATE_FEATURES,
    CANDIDATES,
    LABEL_TARGETS,
    STRUCTURE_FEATURES,
    conform,
    read_provenance,
    read_table,
    write_table,
)

DATA = Path(__file__).parent / "data" / "structures"

CATIONS = [
    ("Li", 1), ("Na", 1), ("K", 1), ("Rb", 1), ("Cs", 1), ("Ag", 1), ("Mg", 2), ("Ca", 2), ("Sr", 2), ("Ba", 2),
    ("Pb", 2), ("Mn", 2), ("Fe", 2), ("Co", 2), ("Ni", 2), ("Cu", 2), ("Zn", 2), ("Cd", 2), ("Sn", 2), ("Al", 3),
    ("Ga", 3), ("In", 3), ("Sc", 3), ("Y", 3), ("La", 3), ("Ce", 3), ("Nd", 3), ("Sm", 3), ("Gd", 3), ("Dy", 3),
    ("Er", 3), ("Yb", 3), ("Lu", 3), ("Bi", 3), ("Cr", 3), ("Fe", 3), ("Mn", 3), ("Co", 3), ("V", 3), ("Ti", 3),
    ("Ti", 4), ("Zr", 4), ("Hf", 4), ("Sn", 4), ("Ge", 4), ("Si", 4), ("Mn", 4), ("Ce", 4), ("Nb", 5), ("Ta", 5),
    ("Sb", 5), ("V", 5), ("Mo", 6), ("W", 6), ("Te", 6), ("Tc", 4), ("Pm", 3), ("U", 6), ("Np", 4), ("Xe", 6),
]
ANIONS = [("O", -2), ("F", -1), ("S", -2), ("Cl", -1), ("Se", -2), ("N", -3), ("Br", -1), ("I", -1)]
OTHER_FORMULAS = ["Fe2O3", "LiFePO4", "Ca(OH)2", "NaCl", "Si", "Al2(SO4)3", "Cu2ZnSnS4", "YBa2Cu3O7", "BaTiO3",
                  "Mg0.5Zn0.5Fe2O4", "H2O", "KAlSi3O8"]


def _site(rng: np.random.Generator, pool: list[tuple[str, int]], max_ions: int) -> str:
    k = int(rng.integers(1, max_ions + 1))
    idx = rng.choice(len(pool), size=k, replace=False)
    ions = {(pool[i][0], pool[i][1]) for i in idx}
    if len(ions) == 1:
        (el, oxi), = ions
        return format_occupancy([Ion(el, oxi)])
    fr = np.round(rng.dirichlet(np.ones(len(ions))) * 1000).astype(int)
    fr = np.maximum(fr, 1)
    fr[-1] = 1000 - fr[:-1].sum()
    if fr[-1] <= 0:
        return format_occupancy([Ion(*sorted(ions)[0])])
    return format_occupancy([Ion(el, oxi, f / 1000) for (el, oxi), f in zip(sorted(ions), fr)])


def random_rows(n: int, seed: int = 0, n_other: int = 0) -> pd.DataFrame:
    """Random candidate-like rows of every family: mixed sites, repeated elements, up to 12 elements."""
    rng = np.random.default_rng(seed)
    fams = list(FAMILIES.values())
    rows = []
    for i in range(n):
        fam = fams[i % len(fams)]
        occ = {s.label: _site(rng, ANIONS if s.is_anion else CATIONS, 2 if s.is_anion else 3) for s in fam.sites}
        row = {"candidate_id": f"c-{i:06d}", "family": fam.name, "formula": "unused"}
        row.update({f"{lab}_species": occ.get(lab) for lab in ("A", "B", "B2", "C", "D", "X")})
        rows.append(row)
    for j in range(n_other):
        rows.append({"candidate_id": f"o-{j:04d}", "family": "other", "formula": OTHER_FORMULAS[j % len(OTHER_FORMULAS)]})
    return pd.DataFrame(rows)


ALL_COMPOSITION = {"element_property": ["magpie"], "stoichiometry": True, "valence_orbital": True,
                   "ion_property": True, "oxidation_states": True, "site_features": False}


def _matminer_reference(df: pd.DataFrame) -> tuple[list[str], np.ndarray, list]:
    """matminer's own featurize_dataframe (one process, no progress bar) on the rows' compositions."""
    from matminer.featurizers.composition import (
        ElementProperty,
        IonProperty,
        OxidationStates,
        Stoichiometry,
        ValenceOrbital,
    )

    comps = [featurize.row_composition(r.family, {s: getattr(r, f"{s}_species", None) for s in ("A", "B", "B2", "C", "D", "X")},
                                       r.formula) for r in df.itertuples()]
    frame = pd.DataFrame({"composition": comps})
    labels: list[str] = []
    blocks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in (ElementProperty.from_preset("magpie"), Stoichiometry(), ValenceOrbital(), IonProperty(), OxidationStates()):
            f.set_n_jobs(1)
            res = f.featurize_dataframe(frame, "composition", ignore_errors=True, pbar=False)
            labels += f.feature_labels()
            blocks.append(res[f.feature_labels()].astype(float).to_numpy())
    return labels, np.hstack(blocks), comps


def test_fast_path_equals_matminer_featurize_dataframe() -> None:
    df = random_rows(2400, seed=1, n_other=24)
    assert (df.filter(like="_species").notna().sum(axis=1) >= 3).sum() == 2400
    fast_rows: dict[str, np.ndarray] = {}
    values, errors = featurize.feature_values(df, ALL_COMPOSITION, fast_rows=fast_rows)
    labels, ref, comps = _matminer_reference(df)
    # same columns in the same order, names mapped one to one onto matminer's labels
    name_map = featurize.feature_name_map(ALL_COMPOSITION)
    assert [lab.split(": ", 1)[1] for lab in name_map.values()] == labels
    assert list(name_map) == featurize.feature_names(ALL_COMPOSITION)
    # the sample reaches the numpy summation regime of 8+ elements and same-element mixed valence
    n_el = np.array([len(c.element_composition) for c in comps])
    assert n_el.max() >= 10 and (n_el >= 8).sum() > 50
    # ... and what is compared is the fast path, not matminer falling back for it: every family row
    # (all carry oxidation states), 8+ elements included, came from the fast path in every feature set;
    # formula rows (no oxidation states) stay on matminer only where the fast path declines them by design
    assert set(fast_rows) == {"element_property:magpie", "stoichiometry", "valence_orbital", "ion_property", "oxidation_states"}
    for key, done in fast_rows.items():
        slow = np.flatnonzero(~done[:2400])
        assert len(slow) == 0, f"{key}: {len(slow)} family rows fell back to matminer, e.g. {comps[slow[0]]}"
        assert done[:2400][n_el[:2400] >= 8].all()
        if key not in ("ion_property", "oxidation_states"):
            assert done[2400:].all(), f"{key}: formula rows fell back to matminer"
    np.testing.assert_array_equal(np.isnan(values), np.isnan(ref))
    np.testing.assert_allclose(values, ref, rtol=1e-9, atol=0, equal_nan=True)
    # only OxidationStates fails, and only for formula rows (no oxidation states)
    assert all(e is None for e in errors[:2400])
    assert all("OxidationStates" in e for e in errors[2400:])


def test_matminer_path_gives_the_same_frame(caplog: pytest.LogCaptureFixture) -> None:
    df = random_rows(60, seed=2, n_other=6)
    fast = featurize.featurize_frame(df, "candidate_id", {**ALL_COMPOSITION, "site_features": True})
    with caplog.at_level("INFO", logger="matscreen.featurize"):
        slow = featurize.featurize_frame(df, "candidate_id", {**ALL_COMPOSITION, "site_features": True, "fast_path": False})
    pd.testing.assert_frame_equal(fast, slow, rtol=1e-6)
    # the matminer path says what it runs row by row and how long it took
    assert "element_property:magpie: 66 rows through matminer" in caplog.text
    assert re.search(r"element_property:magpie: 66 rows in [0-9.]+ s", caplog.text)


def test_row_composition_matches_site_composition() -> None:
    df = random_rows(200, seed=3)
    for r in df.itertuples():
        fam = FAMILIES[r.family]
        occ = {s.label: getattr(r, f"{s.label}_species") for s in fam.sites}
        comp = featurize.row_composition(r.family, occ)
        expect = site_composition(fam, occ)
        got = comp.get_el_amt_dict()
        assert got.keys() == expect.keys()
        for el, amt in expect.items():
            assert got[el] == pytest.approx(amt, rel=1e-12)


def _site_reference(occ: str, cn: int) -> tuple[float, float, float]:
    """Fraction-weighted chi, r, oxi of an occupancy string, straight from chemistry.py."""
    from matscreen.families import parse_occupancy

    ions = parse_occupancy(occ)
    chi = sum(i.fraction * chemistry.electronegativity(i.element) for i in ions)
    radii = [chemistry.shannon_radius(i.element, i.oxidation, cn) for i in ions]
    r = sum(i.fraction * (float("nan") if x is None else x) for i, x in zip(ions, radii))
    oxi = sum(i.fraction * i.oxidation for i in ions)
    return chi, r, oxi


def test_site_features_perovskite_tolerance_factors() -> None:
    df = pd.DataFrame([
        {"candidate_id": "a", "family": "perovskite", "formula": "SrTiO3", "A_species": "Sr2+", "B_species": "Ti4+", "X_species": "O2-"},
        {"candidate_id": "b", "family": "perovskite", "formula": "x", "A_species": "La3+:0.5 Sr2+:0.5", "B_species": "Co3+:0.5 Fe3+:0.5", "X_species": "O2-"},
    ])
    out = featurize.featurize_frame(df, "candidate_id", {"element_property": [], "stoichiometry": False, "valence_orbital": False})
    assert list(out.columns[:2]) == ["candidate_id", "featurize_error"]
    rx = chemistry.shannon_radius("O", -2, 6)
    for i, r in df.iterrows():
        chi_a, ra, oa = _site_reference(r.A_species, 12)
        chi_b, rb, _ = _site_reference(r.B_species, 6)
        assert out.site_large_r[i] == pytest.approx(ra, rel=1e-6)
        assert out.site_oct_chi[i] == pytest.approx(chi_b, rel=1e-6)
        assert out.site_goldschmidt_t[i] == pytest.approx(float(chemistry.goldschmidt_t(ra, rb, rx)), rel=1e-6)
        assert out.site_octahedral_factor[i] == pytest.approx(rb / rx, rel=1e-6)
        assert out.site_bartel_tau[i] == pytest.approx(float(chemistry.bartel_tau(ra, rb, rx, oa)), rel=1e-6)
        assert out.site_large_dchi_anion[i] == pytest.approx(3.44 - chi_a, rel=1e-6)
    # SrTiO3: the textbook t close to 1; the mixed A site has a size variance, the pure one none
    assert out.site_goldschmidt_t[0] == pytest.approx(1.0016, abs=1e-3)
    assert out.site_large_r_var[0] == 0.0
    assert out.site_large_r_var[1] == pytest.approx(0.25 * (1.36 - 1.44) ** 2, rel=1e-5)
    assert out.featurize_error.isna().all()
    assert out.filter(like="site_tet").isna().all().all()


def test_site_features_roles_across_families() -> None:
    df = random_rows(40, seed=4)
    out = featurize.featurize_frame(df, "candidate_id", {"element_property": [], "stoichiometry": False,
                                                          "valence_orbital": False, "radius_fallback": "none"})
    for i, r in df.iterrows():
        fam = FAMILIES[r.family]
        roles = {"large": [s for s in fam.sites if s.role in ("cuboctahedral", "dodecahedral")],
                 "oct": [s for s in fam.sites if s.role == "octahedral"],
                 "tet": [s for s in fam.sites if s.role == "tetrahedral"]}
        for role, sites in roles.items():
            if not sites:
                assert math.isnan(out[f"site_{role}_r"][i])
                continue
            m = sum(s.multiplicity for s in sites)
            ref = [_site_reference(getattr(r, f"{s.label}_species"), s.cn) for s in sites]
            chi = sum(c * s.multiplicity / m for (c, _, _), s in zip(ref, sites))
            oxi = sum(o * s.multiplicity / m for (_, _, o), s in zip(ref, sites))
            assert out[f"site_{role}_chi"][i] == pytest.approx(chi, rel=1e-9)
            assert out[f"site_{role}_oxi"][i] == pytest.approx(oxi, rel=1e-6)
            r_ref = sum(r_ * s.multiplicity / m for (_, r_, _), s in zip(ref, sites))
            if math.isnan(r_ref):  # no Shannon radius at the CN and no fallback: NaN and a reason
                assert math.isnan(out[f"site_{role}_r"][i]) and "no Shannon radius" in out.featurize_error[i]
            else:
                assert out[f"site_{role}_r"][i] == pytest.approx(r_ref, rel=1e-6)
        assert math.isnan(out.site_oct_split_dr[i]) == (r.family != "double_perovskite")
        assert math.isnan(out.site_goldschmidt_t[i]) or r.family in ("perovskite", "double_perovskite")


def test_radius_fallback() -> None:
    # Fe2+ has no Shannon radius at CN 12: nearest_cn takes CN 8, none leaves NaN with a reason
    df = pd.DataFrame([{"candidate_id": "a", "family": "perovskite", "formula": "x", "A_species": "Fe2+",
                        "B_species": "Ti4+", "X_species": "O2-"}])
    base = {"element_property": [], "stoichiometry": False, "valence_orbital": False}
    near = featurize.featurize_frame(df, "candidate_id", base)
    assert chemistry.shannon_radius("Fe", 2, 12) is None
    assert near.site_large_r[0] == pytest.approx(chemistry.shannon_radius("Fe", 2, 8))
    none = featurize.featurize_frame(df, "candidate_id", {**base, "radius_fallback": "none"})
    assert math.isnan(none.site_large_r[0]) and "no Shannon radius for Fe+2 at CN 12" in none.featurize_error[0]


def test_bad_rows_get_nan_and_a_reason_and_leave_others_alone() -> None:
    good = random_rows(8, seed=5)
    bad = pd.DataFrame([
        {"candidate_id": "bad-ion", "family": "perovskite", "formula": "Qq", "A_species": "Xx2+", "B_species": "Ti4+", "X_species": "O2-"},
        {"candidate_id": "bad-text", "family": "spinel", "formula": None, "A_species": "Mg2+ junk", "B_species": "Al3+", "X_species": "O2-"},
        {"candidate_id": "no-site", "family": "garnet", "formula": None},
        {"candidate_id": "other", "family": "other", "formula": "Fe2O3"},
        {"candidate_id": "nothing", "family": "other", "formula": None},
    ])
    df = pd.concat([good.iloc[:4], bad, good.iloc[4:]], ignore_index=True)
    out = featurize.featurize_frame(df, "candidate_id", {})
    alone = featurize.featurize_frame(good, "candidate_id", {})
    pd.testing.assert_frame_equal(out[out.candidate_id.str.startswith("c-")].reset_index(drop=True), alone)
    err = dict(zip(out.candidate_id, out.featurize_error))
    assert "'Xx' is not a valid Element" in err["bad-ion"]
    assert "bad ion 'junk'" in err["bad-text"]
    assert "no occupancy" in err["no-site"]
    assert err["other"] is None  # composition from the formula; no site features for 'other', by design
    assert "no formula" in err["nothing"]
    feats = out.set_index("candidate_id").drop(columns="featurize_error")
    assert feats.loc[["bad-ion", "bad-text", "no-site", "nothing"]].isna().all().all()
    assert feats.loc["other"].filter(like="MagpieData").notna().all()
    assert feats.loc["other"].filter(like="site_").isna().all()


def test_blocks_do_not_change_results() -> None:
    df = random_rows(500, seed=6, n_other=5)
    one = featurize.featurize_frame(df, "candidate_id", {"block_rows": 100000})
    many = featurize.featurize_frame(df, "candidate_id", {"block_rows": 137})
    pd.testing.assert_frame_equal(one, many, check_exact=True)


def test_names_are_lightgbm_safe_and_hash_tracks_features() -> None:
    s = {"element_property": ["magpie", "deml"], "ion_property": True, "oxidation_states": True,
         "structure": {"density": True, "global_symmetry": True, "site_stats_fingerprint": True}}
    names = featurize.feature_names(s)
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names)
    name_map = featurize.feature_name_map(s)
    structural = [n for n in names if name_map[n].split(":")[0] in ("DensityFeatures", "GlobalSymmetryFeatures", "SiteStatsFingerprint")]
    assert len(structural) == 3 + 4 + 122 and all(n.startswith("struct_") for n in structural)
    cites = featurize.citations(s)
    assert "ward_agrawal_choudary_wolverton_2016" in cites["element_property:magpie"][0]
    assert "deml" in cites["element_property:deml"][0] and any("ye_2018" in c for c in cites["site"])
    h = featurize.feature_set_hash({})
    assert h == featurize.feature_set_hash({"fast_path": False, "block_rows": 500})
    assert h != featurize.feature_set_hash({"anion_cn": 2})
    assert h != featurize.feature_set_hash({"stoichiometry": False})


def test_config_section_validates_and_names_bad_keys() -> None:
    cfg = load_config()
    assert cfg["featurize"]["element_property"] == ["magpie"] and cfg["featurize"]["fast_path"] is True
    assert settings_dict(featurize.resolve_settings({})) == cfg["featurize"]
    with pytest.raises(ConfigError, match=r"featurize\.element_property\.0"):
        featurize.resolve_settings({"element_property": ["magpi"]})
    with pytest.raises(ConfigError, match="featurize"):
        load_config(overrides={"featurize": {"element_property": [], "stoichiometry": False, "valence_orbital": False,
                                             "site_features": False}})


def _targets_frame() -> pd.DataFrame:
    """Label targets from real structure files (tests/data), with their site columns."""
    sto = Structure.from_file(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json")
    herc = Structure.from_file(DATA / "spinel" / "FeAl2O4_hercynite_amcsd.cif")
    inv = Structure.from_file(DATA / "spinel" / "MgAl2O4_spinel_amcsd_partial_inversion.cif")
    rows = [
        {"structure_id": "s-sto", "origin": "ingest", "family": "perovskite", "formula": sto.formula, "nsites": len(sto),
         "A_species": "Sr2+", "B_species": "Ti4+", "X_species": "O2-", "structure": json.dumps(sto.as_dict())},
        {"structure_id": "s-herc", "origin": "ingest", "family": "spinel", "formula": herc.formula, "nsites": len(herc),
         "A_species": "Fe2+", "B_species": "Al3+", "X_species": "O2-", "structure": json.dumps(herc.as_dict())},
        {"structure_id": "s-inv", "origin": "ingest", "family": "spinel", "formula": inv.formula, "nsites": len(inv),
         "A_species": "Al3+:0.15 Mg2+:0.85", "B_species": "Al3+:0.925 Mg2+:0.075", "X_species": "O2-",
         "structure": json.dumps(inv.as_dict())},
    ]
    return conform(pd.DataFrame(rows), LABEL_TARGETS)


def test_run_candidates_and_structures_share_columns(tmp_path: Path) -> None:
    settings = featurize.resolve_settings({"structure": {"density": True, "global_symmetry": True}})
    cands = random_rows(30, seed=7)
    cands["arrangement"] = ""
    cand_path = tmp_path / "candidates" / "part-0.parquet"
    write_table(conform(cands, CANDIDATES), cand_path, CANDIDATES)
    targets = _targets_frame()
    tgt_path = tmp_path / "targets.parquet"
    write_table(targets, tgt_path, LABEL_TARGETS)

    out_c = tmp_path / "features" / "part-0.parquet"
    out_s = tmp_path / "labeled_features.parquet"
    featurize.run([str(cand_path)], str(out_c), "candidate_id", settings, config_hash="abc")
    featurize.run([str(tgt_path)], str(out_s), "structure_id", settings)
    fc = read_table(out_c, CANDIDATE_FEATURES)
    fs = read_table(out_s, STRUCTURE_FEATURES)
    assert list(fc.columns[2:]) == list(fs.columns[2:]) == featurize.feature_names(settings)
    assert all(fc[c].dtype == np.float32 for c in fc.columns[2:])
    prov = read_provenance(out_c)
    assert prov["feature_set_hash"] == featurize.feature_set_hash(settings) and prov["config_hash"] == "abc"
    assert prov["feature_names"]["MagpieData_mean_Number"] == "ElementProperty: MagpieData mean Number"
    # candidates have no structure: struct_* NaN without an error; structures get real values
    assert fc.filter(like="struct_").isna().all().all()
    assert fc.featurize_error.dropna().str.contains("no Shannon radius").all()  # random ions; no structure errors
    fs = fs.set_index("structure_id")
    sto = Structure.from_file(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json")
    assert fs.loc["s-sto", "struct_density"] == pytest.approx(float(sto.density), rel=1e-6)
    assert fs.loc["s-sto", "struct_spacegroup_num"] == 221
    assert fs.loc["s-herc", "struct_spacegroup_num"] == 227
    assert fs.loc["s-sto", "site_goldschmidt_t"] == pytest.approx(1.0016, abs=1e-3)
    # mixed-site spinel: composition per formula unit from the sites (Mg1 Al2 O4 in total)
    assert fs.loc["s-inv", "stoich_0_norm"] == 3
    assert fs.featurize_error[["s-sto", "s-herc"]].isna().all()
    # matminer's DensityFeatures refuses the disordered spinel: NaN and matminer's reason, symmetry still there
    assert "DensityFeatures" in fs.featurize_error["s-inv"] and math.isnan(fs.loc["s-inv", "struct_density"])
    assert fs.loc["s-inv", "struct_spacegroup_num"] == 227


def test_site_stats_fingerprint_opt_in_reports_disorder() -> None:
    targets = _targets_frame().iloc[[0, 2]]
    out = featurize.featurize_frame(targets, "structure_id", {"structure": {"site_stats_fingerprint": True}})
    ssf = out.filter(like="struct_ssf_")
    assert ssf.shape[1] == 122
    assert ssf.iloc[0].notna().all()  # ordered SrTiO3
    assert ssf.iloc[1].isna().all() and "SiteStatsFingerprint" in out.featurize_error.iloc[1]


def test_real_enumerated_candidates_agree_with_enumerate_descriptors() -> None:
    """enumerate's own candidates featurize without errors; t, mu and tau agree with its columns."""
    from matscreen import enumerate as enum_stage

    cand, _ = enum_stage.enumerate_candidates({"families": ["perovskite", "double_perovskite"],
                                                "cations": ["Na", "K", "Ca", "Sr", "Ba", "La", "Ti", "Zr", "Nb", "Fe", "Mg", "Al"]})
    assert len(cand) > 20
    out = featurize.featurize_frame(cand, "candidate_id", {})
    assert out.featurize_error.isna().all()
    assert list(out.candidate_id) == list(cand.candidate_id)
    for theirs, ours in (("tolerance_factor", "site_goldschmidt_t"), ("octahedral_factor", "site_octahedral_factor"),
                         ("tau", "site_bartel_tau")):
        np.testing.assert_allclose(out[ours].to_numpy(float), cand[theirs].to_numpy(float), rtol=1e-6)


def test_empty_shard(tmp_path: Path) -> None:
    from matscreen.tables import empty_frame

    write_table(empty_frame(CANDIDATES), tmp_path / "part-0.parquet", CANDIDATES)
    featurize.run([str(tmp_path / "part-0.parquet")], str(tmp_path / "f.parquet"), "candidate_id", {})
    f = read_table(tmp_path / "f.parquet", CANDIDATE_FEATURES)
    assert len(f) == 0 and list(f.columns[2:]) == featurize.feature_names({})


@pytest.mark.parametrize("fallback", ["nearest_cn", "none"])
def test_matminer_site_featurizers_equal_the_fast_path(fallback: str) -> None:
    """The site-aware features as matminer featurizers (one row at a time, ``featurize_dataframe``)
    give exactly the pipeline's vectorised values, NaNs included."""
    from matminer.featurizers.base import MultipleFeaturizer

    from matscreen.featurize import site as featurize_site
    from matscreen.featurize.featurizers import COLUMNS, PerovskiteToleranceFactors, SiteAwareFeatures, SiteRoleFeatures

    df = random_rows(60, seed=7)
    df.loc[3, "A_species"] = "Fe2+"  # no radius at CN 12: the fallback matters
    fast, _ = featurize_site.site_features(df["family"].to_numpy(dtype=object),
                                           {s: df[f"{s}_species"].to_numpy(dtype=object) for s in SITE_LABELS}, 6, fallback)
    labels = list(featurize_site.feature_labels())
    every = SiteAwareFeatures(anion_cn=6, radius_fallback=fallback)
    assert every.get_params() == {"anion_cn": 6, "radius_fallback": fallback}  # matminer style: arguments by name
    assert every.feature_labels() == labels and every.implementors() and every.citations()
    out = every.featurize_dataframe(df, list(COLUMNS), pbar=False)
    np.testing.assert_array_equal(out[labels].to_numpy(dtype=float), fast)
    parts = MultipleFeaturizer([SiteRoleFeatures(radius_fallback=fallback), PerovskiteToleranceFactors(radius_fallback=fallback)])
    split = parts.featurize_dataframe(df, list(COLUMNS), pbar=False)
    assert sorted(parts.feature_labels()) == sorted(labels)
    np.testing.assert_array_equal(split[labels].to_numpy(dtype=float), fast)
    pipeline = featurize.featurize_frame(df, "candidate_id", {"element_property": [], "stoichiometry": False,
                                                               "valence_orbital": False, "radius_fallback": fallback})
    np.testing.assert_array_equal(pipeline[labels].to_numpy(), fast.astype(np.float32))
    with pytest.raises(ValueError, match="unknown family"):
        every.featurize("other", *([None] * len(SITE_LABELS)))
