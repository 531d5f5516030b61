"""Issue 13: any target from any label table, grouped folds, calibration, baseline, site inference."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml

from matscreen import featurize, screen, tables, train
from matscreen.config import ConfigError, validate
from matscreen.train import external

FAST = {"ensemble_size": 3, "num_boost_round": 60, "cv_folds": 3, "learning_curve": {"fractions": [0.5, 1.0]}}


# --- config: a target must exist somewhere --------------------------------------------------------


def test_target_that_exists_nowhere_is_refused_naming_key_and_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config key 'train.target': 'bandgap_exp' .*available: .*e_above_hull"):
        validate({"train": {"target": "bandgap_exp"}})
    pd.DataFrame({"formula": ["SrTiO3"], "bandgap_exp": [3.2]}).to_csv("ext.csv", index=False)
    cfg = validate({"train": {"target": ["e_above_hull_ev_per_atom", "bandgap_exp"], "external_labels": ["ext.csv"]}})
    assert cfg["train"]["target"] == ["e_above_hull_ev_per_atom", "bandgap_exp"]
    with pytest.raises(ConfigError, match=r"config key 'train.target\[1\]': 'nowhere'.*bandgap_exp"):
        validate({"train": {"target": ["gap_ev", "nowhere"], "external_labels": ["ext.csv"]}})
    with pytest.raises(ConfigError, match=r"config key 'train.external_labels\[0\]': 'missing.csv' does not exist"):
        validate({"train": {"external_labels": ["missing.csv"]}})
    with pytest.raises(
        ConfigError, match=r"config key 'screen.filters\[0\].target': 'gap_ev' is not one of train.target"
    ):
        validate({"screen": {"filters": [{"target": "gap_ev", "max": 3}]}})


def test_workflow_refuses_unknown_target_before_any_job(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from workflow_utils import ROOT

    cfg = yaml.safe_load((ROOT / "tests/config/tiny.yaml").read_text())
    cfg["train"]["target"] = "bandgap_exp"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    snk = str(Path(sys.executable).with_name("snakemake"))
    res = subprocess.run(
        [
            snk,
            "-s",
            str(ROOT / "Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "-n",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert "config key 'train.target': 'bandgap_exp'" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


# --- site inference --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, family, expected",
    [
        ("La0.5Sr0.5CoO3", "perovskite", {"A": "La3+:0.5 Sr2+:0.5", "B": "Co3+:0.5 Co4+:0.5", "X": "O2-"}),
        ("La1Sr3Co4O12", "perovskite", {"A": "La3+:0.25 Sr2+:0.75", "B": "Co3+:0.25 Co4+:0.75", "X": "O2-"}),
        ("Y3Fe5O12", "garnet", {"C": "Y3+", "A": "Fe3+", "D": "Fe3+", "X": "O2-"}),
        ("Mg3Al2Si3O12", "garnet", {"C": "Mg2+", "A": "Al3+", "D": "Si4+", "X": "O2-"}),
        ("Mg0.5Zn0.5Al2O4", "spinel", {"A": "Mg2+:0.5 Zn2+:0.5", "B": "Al3+", "X": "O2-"}),
        ("Fe3O4", "spinel", {"A": "Fe2+", "B": "Fe3+", "X": "O2-"}),
    ],
)
def test_sites_inferred_from_the_formula(formula, family, expected):
    assert external.infer_sites(formula, family) == expected


def test_unassignable_rows_keep_composition_features_and_are_counted(tmp_path, caplog):
    path = tmp_path / "ext.csv"
    pd.DataFrame(
        {
            "formula": ["La0.5Sr0.5CoO3", "SrTiO2", "Y3Fe5O12"],
            "family": ["perovskite", "perovskite", "garnet"],
            "gap_ev": [0.1, 1.0, 2.5],
        }
    ).to_csv(path, index=False)
    with caplog.at_level("INFO"):
        ext = external.read_external([str(path)], "gap_ev")
    assert ext["site_source"].tolist() == ["inferred", None, "inferred"]
    assert "sites inferred for 2, not assignable for 1" in caplog.text
    assert "row 2: sites not inferred" in caplog.text
    feats = featurize.featurize_frame(external.features_input(ext), "structure_id", featurize.resolve_settings({}))
    site = [c for c in feats.columns if c.startswith("site_")]
    magpie = [c for c in feats.columns if c.startswith("MagpieData")]
    assert feats.loc[[0, 2], site].notna().any(axis=1).all() and feats.loc[1, site].isna().all()
    assert feats[magpie].notna().all().all()


# --- folds -------------------------------------------------------------------------------------------


def test_grouped_folds_never_split_a_chemical_system():
    formulas = pd.Series(
        [
            "SrTiO3",
            "Sr2TiO4",
            "SrTi2O5",
            "BaTiO3",
            "Ba2TiO4",
            "CaTiO3",
            "CaZrO3",
            "Ca2ZrO4",
            "SrZrO3",
            "BaZrO3",
            "Ba3Zr2O7",
            "LaAlO3",
            "La2AlO4.5",
            "KNbO3",
            "NaNbO3",
        ]
        * 2
    )
    groups = train.cv_group_labels(formulas, "chemical_system")
    folds = train.assign_folds(groups, 5, seed=3)
    by = pd.DataFrame({"g": groups, "f": folds}).groupby("g")["f"].nunique()
    assert (by == 1).all() and set(by.index) >= {"O-Sr-Ti", "Ba-O-Ti", "Al-La-O"}
    assert len(set(folds)) == 5


# --- synthetic data ----------------------------------------------------------------------------------


def _synthetic(n: int, seed: int = 0, hetero: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 8))
    noise = (0.05 + 0.4 * (x[:, 1] > 0.3)) if hetero else 0.05
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 - 0.3 * x[:, 2] * x[:, 3] + noise * rng.normal(size=n)
    ids = [f"s-{i:05d}" for i in range(n)]
    feats = pd.DataFrame({"structure_id": ids, "featurize_error": None, **{f"f{j}": x[:, j] for j in range(8)}})
    labels = pd.DataFrame(
        {
            "structure_id": ids,
            "formula": [f"Sr{1 + i // 2}TiO3" for i in range(n)],
            "status": "ok",
            "e_above_hull_ev_per_atom": y,
        }
    )
    return feats, labels


def test_calibrated_one_sigma_coverage_on_heteroscedastic_data():
    feats, labels = _synthetic(600, hetero=True)
    res = train.train(feats, labels, {**FAST, "ensemble_size": 5}, seed=2)
    m = train.pooled_metrics(res.metrics).set_index("metric")["value"]
    assert 0.55 <= m["coverage_1sigma_calibrated"] <= 0.80, m.to_dict()
    assert m["calibration_factor"] > 1, "a bootstrap ensemble is over-confident before calibration"
    assert res.models["e_above_hull_ev_per_atom"].std_scale == pytest.approx(m["calibration_factor"])
    for k in ("stable_precision", "stable_recall", "stable_f1", "stable_enrichment_top_n"):
        assert k in m.index
    tables.check_frame(res.metrics, tables.CV_METRICS)
    tables.check_frame(res.learning_curve, tables.LEARNING_CURVE)
    assert res.learning_curve["n_train"].is_monotonic_increasing


def test_not_worse_than_plain_lightgbm_on_the_same_folds():
    feats, labels = _synthetic(2000, seed=5)
    s = train.resolve_settings({"ensemble_size": 3, "cv_folds": 5, "learning_curve": {"enabled": False}})
    data = train.training_frame(feats, labels, "e_above_hull_ev_per_atom")
    cols = train.feature_columns(feats)
    cv = train.cross_validate(data, cols, "e_above_hull_ev_per_atom", s, seed=1)
    y = data["e_above_hull_ev_per_atom"].to_numpy()
    base = np.empty(len(y))
    for k in np.unique(cv.folds):
        te = cv.folds == k
        base[te] = lgb.LGBMRegressor(verbose=-1, n_jobs=1).fit(data.loc[~te, cols], y[~te]).predict(data.loc[te, cols])
    ours = train.pooled_metrics(cv.metrics).set_index("metric")["value"]["mae"]
    assert ours <= 1.03 * np.mean(np.abs(base - y)), (ours, np.mean(np.abs(base - y)))


def test_hyperparameters_scale_with_n():
    small, big = train.auto_params(12), train.auto_params(5000)
    assert (small["num_leaves"], small["min_data_in_leaf"]) == (15, 2)
    assert (big["num_leaves"], big["min_data_in_leaf"]) == (31, 20)
    s = train.resolve_settings({"lightgbm": {"num_leaves": 7}})
    assert train.model_params(s, 5000)["num_leaves"] == 7
    assert train.model_params(train.resolve_settings({"hyperparameters": "fixed"}), 5000) == {}


def test_nested_tuning_runs_and_keeps_metrics_honest():
    feats, labels = _synthetic(150, seed=4)
    res = train.train(
        feats, labels, {**FAST, "tuning": {"enabled": True, "inner_folds": 2, "grid": {"num_leaves": [4, 15]}}}, seed=0
    )
    assert res.models["e_above_hull_ev_per_atom"].params["num_leaves"] in (4, 15)
    assert np.isfinite(train.pooled_metrics(res.metrics).set_index("metric")["value"]["mae"])


# --- end to end: external table with e_above_hull and gap, train and screen ---------------------------


def test_external_table_trains_and_screens_end_to_end(tmp_path):
    from matscreen import enumerate as en

    rng = np.random.default_rng(0)
    cand, _ = en.enumerate_candidates(
        {
            "families": ["perovskite"],
            "cations": ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "La", "Y", "Al", "Ti", "Zr", "Nb", "Ta", "Ga", "Sc"],
            "sites": {"perovskite": {"A": None, "B": None, "X": ["O", "F"]}},
        }
    )
    rows = cand.sample(min(80, len(cand)), random_state=1).reset_index(drop=True)
    t = rows["tolerance_factor"].to_numpy()
    ext = pd.DataFrame(
        {
            "formula": rows["formula"],
            "family": "perovskite",
            "e_above_hull_ev_per_atom": np.abs(t - 0.97) + 0.02 * rng.normal(size=len(rows)),
            "gap_ev": 3 * (rows["X_species"] == "F-") + 2 * (t - 0.9) + 0.1 * rng.normal(size=len(rows)),
        }
    )
    ext.to_csv(tmp_path / "ext.csv", index=False)
    cfg = validate(
        {
            "train": {
                **FAST,
                "target": ["e_above_hull_ev_per_atom", "gap_ev"],
                "external_labels": [str(tmp_path / "ext.csv")],
            },
            "screen": {
                "rank_by": "e_above_hull_ev_per_atom",
                "filters": [{"target": "gap_ev", "min": 1.0, "max": 4.0}],
                "top_n": 5,
                "next_to_label": 3,
            },
        }
    )
    fs = featurize.resolve_settings({})
    external.run([str(tmp_path / "ext.csv")], str(tmp_path / "ext.parquet"), cfg["train"]["target"])
    e = tables.read_table(tmp_path / "ext.parquet", tables.EXTERNAL_LABELS)
    assert (e["site_source"] == "inferred").all()
    ef = featurize.featurize_frame(external.features_input(e), "structure_id", fs)
    tables.write_table(ef, tmp_path / "ext_feats.parquet", tables.STRUCTURE_FEATURES)
    # no PySCF labels at all: empty labels and features tables
    tables.write_table(tables.empty_frame(tables.LABELS), tmp_path / "labels.parquet", tables.LABELS)
    tables.write_table(ef.iloc[:0], tmp_path / "feats.parquet", tables.STRUCTURE_FEATURES)
    out = tmp_path / "train"
    out.mkdir()
    train.run(
        str(tmp_path / "feats.parquet"),
        str(tmp_path / "labels.parquet"),
        str(out / "model.json"),
        str(out / "cv_metrics.parquet"),
        str(out / "oof.parquet"),
        train.resolve_settings(cfg["train"]),
        7,
        external_features_path=str(tmp_path / "ext_feats.parquet"),
        external_labels_path=str(tmp_path / "ext.parquet"),
        learning_curve_out=str(out / "learning_curve.parquet"),
    )
    assert json.loads((out / "model.json").read_text())["targets"] == ["e_above_hull_ev_per_atom", "gap_ev"]
    metrics = tables.read_table(out / "cv_metrics.parquet", tables.CV_METRICS)
    assert set(metrics["target"]) == {"e_above_hull_ev_per_atom", "gap_ev"}
    assert {"all", "perovskite"} <= set(metrics["family"])
    # screen the enumerated candidates
    shard = cand.head(300)
    tables.write_table(shard, tmp_path / "cand.parquet", tables.CANDIDATES)
    tables.write_table(
        featurize.featurize_frame(shard, "candidate_id", fs), tmp_path / "cfeat.parquet", tables.CANDIDATE_FEATURES
    )
    screen.run_predict(
        str(out / "model.json"),
        str(tmp_path / "cand.parquet"),
        str(tmp_path / "cfeat.parquet"),
        str(tmp_path / "pred.parquet"),
        settings_=cfg["screen"],
    )
    targets = tables.empty_frame(tables.LABEL_TARGETS)
    tables.write_table(targets, tmp_path / "targets.parquet", tables.LABEL_TARGETS)
    screen.run_rank(
        [str(tmp_path / "pred.parquet")],
        str(tmp_path / "targets.parquet"),
        str(tmp_path / "ranked.parquet"),
        str(tmp_path / "top.csv"),
        str(tmp_path / "next.parquet"),
        cfg["screen"],
    )
    ranked = tables.read_table(tmp_path / "ranked.parquet", tables.PREDICTIONS)
    inside = ranked[ranked["rank"].notna()]
    assert len(inside) and inside["pred__gap_ev"].between(1.0, 4.0).all()
    assert ranked.loc[ranked["rank"].isna(), "passes_filters"].eq(False).all()
    np.testing.assert_array_equal(inside["prediction"], inside["pred__e_above_hull_ev_per_atom"])
    assert inside["score"].is_monotonic_increasing and (inside["target"] == "e_above_hull_ev_per_atom").all()
    top = pd.read_csv(tmp_path / "top.csv")
    assert len(top) == 5 and top["rank"].tolist() == [1, 2, 3, 4, 5]
    assert len(tables.read_table(tmp_path / "next.parquet", tables.PREDICTIONS)) == 3


# --- tables at the run's own level of theory (the shipped reference set) ------------------------


def test_same_level_tables_must_match_and_lose_the_compounds_the_run_labeled(tmp_path):
    """A table with a settings_hash column (matscreen's own labels, the shipped reference set) is at
    a level of theory: another hash is refused; rows of compounds the run labeled itself are dropped
    (the same compound twice would weigh double), from such tables only."""
    target = "formation_energy_ev_per_atom"
    rows = {
        "formula": ["K1 Mg1 F3", "Na1 Mg1 F3", "Sr1 Ti1 O3"],
        "family": "perovskite",
        target: [-3.0, -2.9, -3.5],
        "status": ["ok", "ok", "failed"],
        "settings_hash": "h1",
    }
    shipped = tmp_path / "shipped.parquet"
    pd.DataFrame(rows).to_parquet(shipped)
    other = tmp_path / "literature.csv"
    pd.DataFrame(rows).drop(columns=["settings_hash", "status"]).to_csv(other, index=False)
    with pytest.raises(tables.ContractError, match=r"shipped.parquet: labels at settings hash h1, .* is h2: mixing"):
        external.read_external([str(shipped)], target, "h2")
    ext = external.read_external([str(shipped), str(other)], target, "h1")
    assert ext.groupby("source").size().to_dict() == {str(shipped): 2, str(other): 3}  # the failed row left out
    own = pd.DataFrame({"structure_id": ["s-1"], "formula": ["K2 Mg2 F6"], "status": ["ok"]})
    kept = train.same_level_duplicates_dropped(ext, own, {"s-1": "perovskite"})
    assert sorted(zip(kept["source"], kept["formula"])) == sorted(
        [
            (str(shipped), "Na1 Mg1 F3"),
            (str(other), "K1 Mg1 F3"),
            (str(other), "Na1 Mg1 F3"),
            (str(other), "Sr1 Ti1 O3"),
        ]
    )
