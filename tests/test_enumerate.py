"""Tests of the enumerate stage: chemical spaces, filters, funnel, ids, shards, config errors."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from matscreen import chemistry, tables
from matscreen import enumerate as en
from matscreen.config import ConfigError, load_config
from matscreen.families import get_family
from matscreen.ids import candidate_id


@pytest.fixture(scope="module")
def default_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shipped default spaces (config/config.yaml), all four families."""
    return en.enumerate_candidates(load_config()["enumerate"])


def _find(cand: pd.DataFrame, family: str, **sites: str) -> pd.DataFrame:
    sel = cand["family"] == family
    for label, species in sites.items():
        sel &= cand[f"{label}_species"] == species
    return cand[sel]


KNOWN = [
    ("perovskite", "SrTiO3", {"A": "Sr2+", "B": "Ti4+", "X": "O2-"}),
    ("perovskite", "BaTiO3", {"A": "Ba2+", "B": "Ti4+", "X": "O2-"}),
    ("perovskite", "KMgF3", {"A": "K+", "B": "Mg2+", "X": "F-"}),
    ("double_perovskite", "Sr2FeMoO6", {"A": "Sr2+", "B": "Fe2+", "B2": "Mo6+", "X": "O2-"}),
    ("spinel", "MgAl2O4", {"A": "Mg2+", "B": "Al3+", "X": "O2-"}),
    ("spinel", "ZnFe2O4", {"A": "Zn2+", "B": "Fe3+", "X": "O2-"}),
    ("spinel", "Fe3O4", {"A": "Fe3+", "B": "Fe2+:0.5 Fe3+:0.5", "X": "O2-"}),  # magnetite, inverse
    ("garnet", "Y3Al5O12", {"C": "Y3+", "A": "Al3+", "D": "Al3+", "X": "O2-"}),
    ("garnet", "Ca3Al2Si3O12", {"C": "Ca2+", "A": "Al3+", "D": "Si4+", "X": "O2-"}),
    ("garnet", "Mg3Al2Si3O12", {"C": "Mg2+", "A": "Al3+", "D": "Si4+", "X": "O2-"}),  # pyrope
    ("garnet", "Al2Fe3Si3O12", {"C": "Fe2+", "A": "Al3+", "D": "Si4+", "X": "O2-"}),  # almandine
    ("garnet", "Gd3Ga5O12", {"C": "Gd3+", "A": "Ga3+", "D": "Ga3+", "X": "O2-"}),  # GGG
    ("garnet", "Y3Fe5O12", {"C": "Y3+", "A": "Fe3+", "D": "Fe3+", "X": "O2-"}),  # YIG
    ("spinel", "Cr2CdO4", {"A": "Cd2+", "B": "Cr3+", "X": "O2-"}),  # CdCr2O4 in pymatgen element order
    ("spinel", "Mg2SiO4", {"A": "Si4+", "B": "Mg2+", "X": "O2-"}),  # ringwoodite: Si tetrahedral
    ("spinel", "CdIn2S4", {"A": "Cd2+", "B": "In3+", "X": "S2-"}),  # thiospinel
    ("perovskite", "BaZrS3", {"A": "Ba2+", "B": "Zr4+", "X": "S2-"}),  # chalcogenide perovskite
    ("double_perovskite", "Cs2AgBiBr6", {"A": "Cs+", "B": "Ag+", "B2": "Bi3+", "X": "Br-"}),
    ("double_perovskite", "Ba2CaWO6", {"A": "Ba2+", "B": "Ca2+", "B2": "W6+", "X": "O2-"}),
]


@pytest.mark.parametrize(("family", "formula", "sites"), KNOWN, ids=[k[1] for k in KNOWN])
def test_known_compounds_pass_default_filters(default_run, family, formula, sites):
    cand, _ = default_run
    hit = _find(cand, family, **sites)
    assert len(hit) == 1, f"{formula} not enumerated (or twice)"
    row = hit.iloc[0]
    assert row["formula"] == formula
    assert row["candidate_id"] == candidate_id(family, {s: row[f"{s}_species"] for s in get_family(family).site_labels})


def test_default_space_is_demo_sized_and_conforms(default_run):
    cand, funnel = default_run
    tables.check_frame(cand, tables.CANDIDATES)
    tables.check_frame(funnel, tables.FUNNEL)
    assert set(cand["family"]) == {"perovskite", "double_perovskite", "spinel", "garnet"}
    assert 1000 < len(cand) <= 50_000  # tens of thousands at most: the demo featurizes all of them
    # columns of sites a family lacks are null; present sites are filled
    for fam_name, rows in cand.groupby("family"):
        fam = get_family(fam_name)
        for s in ("A", "B", "B2", "C", "D", "X"):
            if s in fam.site_labels:
                assert rows[f"{s}_species"].notna().all() and rows[f"{s}_radius_ang"].notna().all()
            else:
                assert rows[f"{s}_species"].isna().all() and rows[f"{s}_oxi"].isna().all()
        is_perov = fam_name in ("perovskite", "double_perovskite")
        assert rows["tolerance_factor"].notna().all() == is_perov
        assert rows["tau"].isna().all() == (not is_perov)


def test_every_candidate_is_neutral_and_passes_thresholds(default_run):
    cand, _ = default_run
    settings = en.resolve_settings({})
    f = settings.filters
    for fam_name, rows in cand.groupby("family"):
        fam = get_family(fam_name)
        charge = sum(s.multiplicity * rows[f"{s.label}_oxi"] for s in fam.sites)
        assert np.allclose(charge, 0.0)
        if fam_name in ("perovskite", "double_perovskite"):
            assert rows["tolerance_factor"].between(f.tolerance_factor.min, f.tolerance_factor.max).all()
            assert rows["octahedral_factor"].between(f.octahedral_factor.min, f.octahedral_factor.max).all()
            assert (rows["tau"] < 4.18).all()
        else:
            for label, (lo, hi) in f.radius_ratio.windows[fam_name].items():
                ratio = rows[f"{label}_radius_ang"] / rows["X_radius_ang"]
                assert ratio.between(lo, hi).all(), (fam_name, label)


def test_descriptors_recomputed_from_shannon_radii(default_run):
    cand, _ = default_run
    row = _find(cand, "perovskite", A="Sr2+", B="Ti4+", X="O2-").iloc[0]
    r_a, r_b, r_x = (chemistry.shannon_radius(*ion) for ion in (("Sr", 2, 12), ("Ti", 4, 6), ("O", -2, 6)))
    assert (row["A_radius_ang"], row["B_radius_ang"], row["X_radius_ang"]) == (r_a, r_b, r_x)
    assert row["tolerance_factor"] == pytest.approx((r_a + r_x) / (math.sqrt(2) * (r_b + r_x)))
    assert row["octahedral_factor"] == pytest.approx(r_b / r_x)
    assert row["tau"] == pytest.approx(r_x / r_b - 2 * (2 - (r_a / r_b) / math.log(r_a / r_b)))
    # double perovskite: mean B radius
    dp = _find(cand, "double_perovskite", A="Sr2+", B="Fe2+", B2="Mo6+", X="O2-").iloc[0]
    r_b = 0.5 * (chemistry.shannon_radius("Fe", 2, 6) + chemistry.shannon_radius("Mo", 6, 6))
    assert dp["tolerance_factor"] == pytest.approx((r_a + r_x) / (math.sqrt(2) * (r_b + r_x)))


def test_spinel_normal_and_inverse_are_distinct_candidates(default_run):
    cand, _ = default_run
    zf = cand[(cand["family"] == "spinel") & (cand["formula"] == "ZnFe2O4") & (cand["X_species"] == "O2-")]
    by_arr = {r["arrangement"]: r for _, r in zf.iterrows()}
    assert set(by_arr) == {"normal", "inverse"}
    normal, inverse = by_arr["normal"], by_arr["inverse"]
    assert normal["candidate_id"] != inverse["candidate_id"]
    assert (normal["A_species"], normal["B_species"]) == ("Zn2+", "Fe3+")
    assert (inverse["A_species"], inverse["B_species"]) == ("Fe3+", "Fe3+:0.5 Zn2+:0.5")
    assert inverse["B_oxi"] == pytest.approx(2.5)
    # radii at the coordination of the site each ion sits on
    assert inverse["A_radius_ang"] == chemistry.shannon_radius("Fe", 3, 4)
    assert inverse["B_radius_ang"] == pytest.approx(0.5 * (chemistry.shannon_radius("Fe", 3, 6) + chemistry.shannon_radius("Zn", 2, 6)))
    assert set(cand.loc[cand["family"] != "spinel", "arrangement"]) == {""}


def test_double_perovskite_pairs_are_unordered_and_distinct(default_run):
    cand, _ = default_run
    dp = cand[cand["family"] == "double_perovskite"]
    assert (dp["B_species"] != dp["B2_species"]).all()
    assert (dp["B_species"] < dp["B2_species"]).all()
    assert not dp.duplicated(["A_species", "B_species", "B2_species", "X_species"]).any()


def test_double_perovskite_pairs_are_canonical_across_lists():
    """A pair listed in either order, on either list, is one candidate with one id."""
    def run(b, b2):
        cand, funnel = en.enumerate_candidates({
            "families": ["double_perovskite"],
            "sites": {"double_perovskite": {"A": ["Sr2+"], "B": b, "B2": b2, "X": ["O"]}},
            "filters": {k: False for k in ("charge_neutrality", "shannon_radius", "electronegativity")}
            | {k: {"enabled": False} for k in ("tolerance_factor", "octahedral_factor", "tau")},
        })
        return cand, int(funnel["remaining"].iloc[0])

    c1, n1 = run(["Fe3+", "Mo5+"], ["Mo5+", "Fe3+", "W6+"])
    c2, n2 = run(["W6+", "Fe3+", "Mo5+"], ["Fe3+"])
    pairs = {frozenset(p) for p in zip(c1["B_species"], c1["B2_species"])}
    assert pairs == {frozenset(p) for p in [("Fe3+", "Mo5+"), ("Fe3+", "W6+"), ("Mo5+", "W6+")]}
    assert n1 == len(c1) == 3
    assert n2 == len(c2) == 2  # {Fe, W} and {Fe, Mo}: Mo and W are never on different lists
    common = c1.merge(c2, on="candidate_id")
    assert len(common) == 2 and (c1["B_species"] < c1["B2_species"]).all() and (c2["B_species"] < c2["B2_species"]).all()


def test_funnel_is_consistent_with_the_space(default_run):
    cand, funnel = default_run
    settings = en.resolve_settings(load_config()["enumerate"])
    for fam_name, rows in funnel.groupby("family", sort=False):
        rows = rows.sort_values("step")
        assert rows["step"].tolist() == list(range(len(rows)))
        assert rows["filter"].tolist() == ["all_combinations", *en.FILTERS[fam_name]]
        rem = rows["remaining"].to_numpy()
        assert (np.diff(rem) == -rows["removed"].to_numpy()[1:]).all()
        assert rem[-1] == (cand["family"] == fam_name).sum()
        fam = get_family(fam_name)
        sizes = [len(en.site_ions(settings, fam_name, s)) for s in fam.site_labels]
        if fam_name == "perovskite" or fam_name == "garnet":
            assert rem[0] == math.prod(sizes)
        elif fam_name == "spinel":
            assert rem[0] == 2 * math.prod(sizes)
        else:  # same B and B2 lists: unordered pairs of distinct ions
            n_b = sizes[1]
            assert rem[0] == sizes[0] * (n_b * (n_b - 1) // 2) * sizes[3]


def _perovskite_settings(a, b, x, **filters):
    return {"families": ["perovskite"], "sites": {"perovskite": {"A": a, "B": b, "X": x}}, "filters": filters}


NON_PEROVSKITES = [
    # (A, B, X, why): hexagonal / non-perovskite ABX3 compositions with CN-12 radii
    ("Ba2+", "Ni4+", "O2-", "2H-BaNiO3: face-sharing octahedra, t > 1.1"),
    ("Ba2+", "Si4+", "O2-", "BaSiO3: chain silicate, B too small (t, mu)"),
    ("Ca2+", "Si4+", "O2-", "CaSiO3 wollastonite at ambient pressure"),
    ("Cs+", "Pb2+", "I-", "CsPbI3: non-perovskite delta phase at room temperature (tau)"),
    ("K+", "Ni2+", "I-", "KNiI3 does not exist as a perovskite (mu)"),
]


@pytest.mark.parametrize(("a", "b", "x", "why"), NON_PEROVSKITES, ids=[n[3].split(":")[0] for n in NON_PEROVSKITES])
def test_known_non_perovskites_fail_tolerance_filters(a, b, x, why):
    cand, funnel = en.enumerate_candidates(_perovskite_settings([a, "Sr2+"], [b, "Ti4+"], [x, "O"]))
    assert _find(cand, "perovskite", A=a, B=b, X=x).empty, why
    assert not _find(cand, "perovskite", A="Sr2+", B="Ti4+", X="O2-").empty
    # it survived the chemistry filters and was removed by a geometric one
    off = {k: {"enabled": False} for k in ("tolerance_factor", "octahedral_factor", "tau")}
    loose, _ = en.enumerate_candidates(_perovskite_settings([a, "Sr2+"], [b, "Ti4+"], [x, "O"], **off))
    row = _find(loose, "perovskite", A=a, B=b, X=x)
    assert len(row) == 1
    t, mu, tau = row.iloc[0][["tolerance_factor", "octahedral_factor", "tau"]]
    f = en.resolve_settings({}).filters
    t_ok = f.tolerance_factor.min <= t <= f.tolerance_factor.max
    mu_ok = f.octahedral_factor.min <= mu <= f.octahedral_factor.max
    assert not (t_ok and mu_ok and tau < f.tau.max)


def test_filters_can_be_switched_off_and_thresholds_move():
    base = _perovskite_settings(["Ba", "Sr", "Ca", "K", "Cs"], ["Ti", "Zr", "Nb", "Mg", "Pb", "Si"], ["O", "F", "I"])
    cand, funnel = en.enumerate_candidates(base)
    no_tau = copy.deepcopy(base)
    no_tau["filters"]["tau"] = {"enabled": False}
    cand2, funnel2 = en.enumerate_candidates(no_tau)
    assert "tau" in set(funnel["filter"]) and "tau" not in set(funnel2["filter"])
    assert len(cand2) > len(cand)
    assert set(cand["candidate_id"]) < set(cand2["candidate_id"])
    tight = copy.deepcopy(base)
    tight["filters"]["tolerance_factor"] = {"min": 0.95, "max": 1.0}
    cand3, _ = en.enumerate_candidates(tight)
    assert len(cand3) < len(cand) and cand3["tolerance_factor"].between(0.95, 1.0).all()
    neutral_off = copy.deepcopy(base)
    neutral_off["filters"]["charge_neutrality"] = False
    cand4, _ = en.enumerate_candidates(neutral_off)
    assert len(cand4) > len(cand)


def test_electronegativity_filter_removes_cation_as_electronegative_as_anion():
    cand, funnel = en.enumerate_candidates(_perovskite_settings(["Ba2+"], ["Ti4+", "Se4+"], ["Se"]))
    step = funnel.set_index("filter").loc["electronegativity"]
    assert step["removed"] == 1  # BaSe(4+)Se3: Se4+ is exactly as electronegative as Se2-
    assert _find(cand, "perovskite", B="Se4+").empty


def test_element_entries_expand_to_pymatgen_states():
    s = en.resolve_settings({"sites": {"perovskite": {"B": ["Fe", "Mo", "Ti3+"]}}})
    assert en.site_ions(s, "perovskite", "B") == [("Fe", 2.0), ("Fe", 3.0), ("Mo", 4.0), ("Mo", 6.0), ("Ti", 3.0)]
    s_icsd = en.resolve_settings({"oxidation_states": "icsd", "sites": {"perovskite": {"B": ["Mo"]}}})
    assert ("Mo", 5.0) in en.site_ions(s_icsd, "perovskite", "B")
    assert en.site_ions(s, "spinel", "X") == [("O", -2.0), ("S", -2.0), ("Se", -2.0)]
    # a null site takes the cation pool
    pool = en.resolve_settings({"cations": ["Sr", "Ba"]})
    assert en.site_ions(pool, "perovskite", "A") == [("Sr", 2.0), ("Ba", 2.0)]


def test_ids_and_order_are_stable_and_independent_of_list_order():
    a, b, x = ["Sr", "Ba", "Ca", "La"], ["Ti", "Fe", "Al", "Zr"], ["O", "F"]
    c1, f1 = en.enumerate_candidates({"families": ["perovskite", "spinel"], "sites": {"perovskite": {"A": a, "B": b, "X": x}, "spinel": {"A": ["Mg", "Zn"], "B": ["Al", "Fe"]}}})
    c2, f2 = en.enumerate_candidates({"families": ["spinel", "perovskite"], "sites": {"perovskite": {"A": a[::-1], "B": b[::-1], "X": x[::-1]}, "spinel": {"A": ["Zn", "Mg"], "B": ["Fe", "Al"]}}})
    pd.testing.assert_frame_equal(c1, c2)
    assert c1["candidate_id"].is_unique
    # the id is a pure function of family + occupancy: pinned so that a change is noticed
    srtio3 = _find(c1, "perovskite", A="Sr2+", B="Ti4+", X="O2-").iloc[0]
    assert srtio3["candidate_id"] == "c-b409d4c08bd40b35"


def test_shard_of_is_stable_and_spreads():
    ids = [f"c-{i:016x}" for i in range(2000)]
    shards = [en.shard_of(i, 4) for i in ids]
    assert shards == [en.shard_of(i, 4) for i in ids]
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 350  # crc32 spreads ids evenly
    assert en.shard_of("c-b409d4c08bd40b35", 1) == 0
    assert en.shard_of("c-b409d4c08bd40b35", 7) == 1  # crc32, not Python's salted hash(): same everywhere
    with pytest.raises(ValueError):
        en.shard_of("c-x", 0)


def test_run_writes_all_shards_and_funnel(tmp_path):
    settings = _perovskite_settings(["Sr", "Ba"], ["Ti", "Zr"], ["O"])
    settings["shards"] = 6
    paths = [str(tmp_path / f"candidates/part-{i}.parquet") for i in range(6)]
    en.run(settings, paths, str(tmp_path / "funnel.parquet"), config_hash="abc")
    parts = [tables.read_table(p, tables.CANDIDATES) for p in paths]
    assert any(len(p) == 0 for p in parts)  # 4 candidates over 6 shards: empty shards are still written
    allc = pd.concat(parts, ignore_index=True)
    expect, funnel = en.enumerate_candidates(settings)
    assert sorted(allc["candidate_id"]) == sorted(expect["candidate_id"])
    for i, p in enumerate(parts):
        assert all(en.shard_of(c, 6) == i for c in p["candidate_id"])
    got_funnel = tables.read_table(tmp_path / "funnel.parquet", tables.FUNNEL)
    pd.testing.assert_frame_equal(got_funnel, funnel, check_dtype=False)
    prov = tables.read_provenance(paths[0])
    assert prov["stage"] == "enumerate" and prov["config_hash"] == "abc"
    assert prov["settings"]["sites"]["perovskite"]["A"] == ["Sr", "Ba"]


# --- bad configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"sites": {"perovskite": {"A": ["Sr", "Xx"]}}}, "enumerate.sites.perovskite.A[1]", "unknown element 'Xx'"),
        ({"sites": {"perovskite": {"B": ["Ti9+"]}}}, "enumerate.sites.perovskite.B[0]", "no oxidation state +9 for Ti"),
        ({"sites": {"perovskite": {"X": ["O3-"]}}}, "enumerate.sites.perovskite.X[0]", "pymatgen knows no oxidation state -3 for O"),
        ({"sites": {"perovskite": {"X": ["O2+"]}}}, "enumerate.sites.perovskite.X[0]", "a cation on an anion site"),
        ({"sites": {"garnet": {"A": ["O2-"]}}}, "enumerate.sites.garnet.A[0]", "an anion on a cation site"),
        ({"sites": {"spinel": {"A": ["F"]}}}, "enumerate.sites.spinel.A[0]", "no positive oxidation state"),
        ({"families": ["perovskite", "pyrochlore"]}, "enumerate.families[1]", "unknown family 'pyrochlore'"),
        ({"sites": {"perovskite": {"A": []}}}, "enumerate.sites.perovskite.A", "should be non-empty"),
        ({"cations": ["Sr", "Qq"]}, "enumerate.cations[1]", "unknown element 'Qq'"),
        ({"sites": {"spinel": {"C": ["Mg"]}}}, "enumerate.sites.spinel", "'C' was unexpected"),
        ({"filters": {"tolerance_factor": {"min": 1.2, "max": 0.9}}}, "enumerate.filters.tolerance_factor", "min 1.2 > max 0.9"),
        ({"filters": {"radius_ratio": {"windows": {"garnet": {"B": [0.1, 0.2]}}}}}, "enumerate.filters.radius_ratio.windows.garnet.B", "no cation site 'B'"),
    ],
)
def test_bad_config_names_the_key(section, key, message):
    with pytest.raises(ConfigError) as err:
        en.resolve_settings(section)
    assert f"'{key}" in str(err.value) and message in str(err.value)
    # the same mistake in the full config fails at load time, before any job runs
    with pytest.raises(ConfigError) as err2:
        load_config(overrides={"enumerate": section})
    assert key.split("[")[0] in str(err2.value)


# --- properties ---------------------------------------------------------------------------------


POOL = ["Li", "Na", "K", "Cs", "Mg", "Ca", "Sr", "Ba", "Y", "La", "Ti", "Zr", "Nb", "Ta", "Cr", "Mn", "Fe",
        "Co", "Ni", "Cu", "Zn", "Al", "Ga", "In", "Si", "Ge", "Sn", "Pb", "Sb", "Bi", "Mo", "W", "Cd", "Gd"]


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pool=st.lists(st.sampled_from(POOL), min_size=1, max_size=12, unique=True), data=st.data())
def test_subset_of_the_pool_gives_a_subset_of_candidates(pool, data):
    """Filters judge each candidate on its own: a smaller pool can only lose candidates, never gain
    or change them (ids, descriptors, row content)."""
    sub = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
    big, big_funnel = en.enumerate_candidates({"cations": pool})
    small, small_funnel = en.enumerate_candidates({"cations": sub})
    assert set(small["candidate_id"]) <= set(big["candidate_id"])
    assert big["candidate_id"].is_unique
    merged = small.merge(big, on="candidate_id", suffixes=("", "_big"))
    for col in ("formula", "A_species", "B_species", "tolerance_factor", "tau", "X_radius_ang"):
        pd.testing.assert_series_equal(merged[col], merged[f"{col}_big"], check_names=False)
    for (fam, step), rem in small_funnel.set_index(["family", "step"])["remaining"].items():
        assert rem <= big_funnel.set_index(["family", "step"]).loc[(fam, step), "remaining"]
