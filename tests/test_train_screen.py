"""Train (grouped CV, ensemble uncertainty, reproducibility) and screen (ranking, next to label)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from matscreen import screen, tables, train
from matscreen.config import DEFAULT_CONFIG

SETTINGS = {**yaml.safe_load(DEFAULT_CONFIG.read_text())["train"],  # the shipped model settings
            "target": "formation_energy_ev_per_atom"}


def _data(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A learnable target: y = 2 x0 - x1 (+ noise); 3 polymorphs (rows) per composition."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    comps = [f"Sr{1 + i // 3}TiO3" for i in range(n)]  # groups of 3 rows share a reduced formula only per group
    ids = [f"s-{i:04d}" for i in range(n)]
    feats = pd.DataFrame({"structure_id": ids, "featurize_error": None, "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2],
                          "struct_density": rng.normal(size=n)})
    y = 2 * x[:, 0] - x[:, 1] + 0.05 * rng.normal(size=n)
    labels = pd.DataFrame({"structure_id": ids, "formula": comps, "status": "ok", "formation_energy_ev_per_atom": y})
    return feats, labels


def test_cv_is_grouped_by_composition_and_learns():
    feats, labels = _data()
    ens, metrics, oof = train.train(feats, labels, SETTINGS, seed=1)
    from pymatgen.core import Composition

    groups = oof.merge(labels, on="structure_id")["formula"].map(lambda f: Composition(f).reduced_formula)
    assert (oof.assign(g=groups.values).groupby("g")["fold"].nunique() == 1).all(), "a composition is split across folds"
    pooled = train.pooled_metrics(metrics).set_index("metric")["value"]
    assert pooled["mae"] < 0.5 * labels["formation_energy_ev_per_atom"].std()
    assert pooled["r2"] > 0.6
    assert 0 <= pooled["coverage_1sigma"] <= 1
    assert "struct_density" not in ens.features, "structure-only features cannot screen compositions"
    tables.check_frame(metrics, tables.CV_METRICS)
    tables.check_frame(oof, tables.OOF_PREDICTIONS)


def test_training_is_reproducible_and_model_roundtrips(tmp_path):
    feats, labels = _data()
    a, ma, oa = train.train(feats, labels, SETTINGS, seed=7)
    b, mb, ob = train.train(feats, labels, SETTINGS, seed=7)
    pd.testing.assert_frame_equal(ma, mb)
    pd.testing.assert_frame_equal(oa, ob)
    back = train.Ensemble.from_json(a.to_json())
    np.testing.assert_array_equal(a.predict(feats)[0], back.predict(feats)[0])
    mean, std = a.predict(feats)
    assert (std > 0).any(), "a bootstrap ensemble disagrees somewhere"


def test_failed_and_missing_labels_are_not_trained_on():
    feats, labels = _data()
    labels.loc[:9, "status"] = "failed"
    labels.loc[10:14, "formation_energy_ev_per_atom"] = np.nan
    data = train.training_frame(feats, labels, "formation_energy_ev_per_atom")
    assert len(data) == len(labels) - 15


def test_too_few_labels_says_what_to_do():
    feats, labels = _data(n=3)
    with pytest.raises(ValueError, match="label.select"):
        train.train(feats, labels, SETTINGS, seed=0)


def test_rank_and_next_to_label():
    feats, labels = _data()
    ens, _, _ = train.train(feats, labels, SETTINGS, seed=1)
    cands = pd.DataFrame({"candidate_id": [f"c-{i}" for i in range(20)], "family": "perovskite",
                          "formula": [f"X{i}" for i in range(20)]})
    rng = np.random.default_rng(3)
    cf = pd.DataFrame({"candidate_id": cands["candidate_id"], "featurize_error": None,
                       "f0": rng.normal(size=20), "f1": rng.normal(size=20), "f2": rng.normal(size=20)})
    preds = screen.predict(ens, cands, cf)
    ranked = screen.rank(preds, {"kappa": 0.0})
    tables.check_frame(ranked, tables.PREDICTIONS)
    assert ranked["rank"].tolist() == list(range(1, 21))
    assert ranked["prediction"].is_monotonic_increasing, "kappa 0 ranks by prediction, lowest first"
    up = screen.rank(preds, {"kappa": 0.0, "maximize": True})
    assert up["prediction"].is_monotonic_decreasing
    explore = screen.rank(preds, {"kappa": 5.0})
    np.testing.assert_allclose(explore["score"], explore["prediction"] - 5.0 * explore["uncertainty"])
    nxt = screen.next_to_label(ranked, {"c-0", ranked["candidate_id"][0]}, {"next_to_label": 3})
    assert len(nxt) == 3 and ranked["candidate_id"][0] not in set(nxt["candidate_id"])


def test_next_to_label_leaves_out_compounds_the_external_labels_give_the_target():
    """The shipped reference labels are trained on (train.external_labels); before, the list of
    candidates to label next could name them, though their answer is known."""
    ranked = pd.DataFrame(
        {
            "candidate_id": ["c-0", "c-1", "c-2", "c-3"],
            "formula": ["Sr1 Ti1 O3", "Ba2 Ti2 O6", "K1 Mg1 F3", "Na1 Mg1 F3"],
            "rank": [1.0, 2.0, 3.0, 4.0],
        }
    )
    external = pd.DataFrame({"formula": ["BaTiO3", "Na1 Mg1 F3"], "target": ["y", "other"]})
    trained = screen.trained_formulas(external, "y")
    assert trained == {"BaTiO3"}
    nxt = screen.next_to_label(ranked, {"c-0"}, {"next_to_label": 3}, trained)
    assert list(nxt["candidate_id"]) == ["c-2", "c-3"]


def test_missing_features_are_named():
    feats, labels = _data()
    ens, _, _ = train.train(feats, labels, SETTINGS, seed=1)
    with pytest.raises(ValueError, match="f2"):
        ens.predict(feats.drop(columns="f2"))


def _rank_by_sort_values(predictions: pd.DataFrame, settings_: dict) -> pd.DataFrame:
    """screen.rank as it was written first (pandas sort on the three keys), the reference."""
    s = screen.settings(settings_)
    df = predictions.copy()
    passes = screen.filter_mask(df, s)
    df["passes_filters"] = passes
    df["score"] = screen.score(df, s)
    df["_out"] = ~passes
    df = df.sort_values(["_out", "score", "candidate_id"], kind="mergesort").drop(columns="_out").reset_index(drop=True)
    n_pass = int(passes.sum())
    df["rank"] = pd.array(list(range(1, n_pass + 1)) + [pd.NA] * (len(df) - n_pass), dtype="Int64")
    return df


@pytest.mark.parametrize("settings_", [{}, {"kappa": 0.0, "maximize": True},
                                       {"filters": [{"target": "formation_energy_ev_per_atom", "max": 0.2}]}])
def test_rank_order_is_the_three_key_sort(settings_):
    """Ties on score (broken by candidate_id), NaN scores (last), filters (outside last, no rank)."""
    rng = np.random.default_rng(5)
    n = 3000
    preds = pd.DataFrame({"candidate_id": [f"c-{i:05d}" for i in rng.permutation(n)], "family": "perovskite",
                          "formula": "X", "target": "formation_energy_ev_per_atom",
                          "prediction": np.round(rng.normal(size=n), 1),
                          "uncertainty": np.where(rng.random(n) < 0.5, 0.0, 0.1)})
    preds.loc[rng.random(n) < 0.05, "prediction"] = np.nan
    preds["pred__formation_energy_ev_per_atom"] = preds["prediction"]
    ranked = screen.rank(preds, settings_)
    pd.testing.assert_frame_equal(ranked, _rank_by_sort_values(preds, settings_), check_exact=True)
    unique = preds.assign(prediction=rng.normal(size=n))  # no ties: the ids are never compared
    pd.testing.assert_frame_equal(screen.rank(unique, settings_), _rank_by_sort_values(unique, settings_))


def test_concat_frames_is_pd_concat():
    """tables.read_tables concatenates shards without pandas' per-value check of all-None columns."""
    rng = np.random.default_rng(0)

    def frame(n: int, none_only: bool) -> pd.DataFrame:
        return pd.DataFrame({"candidate_id": [f"c{i}" for i in rng.integers(0, 10**9, n)],
                             "passes_filters": pd.Series([None] * n, dtype=object),
                             "maybe": pd.Series([None] * n if none_only else [None, True] * (n // 2), dtype=object),
                             "score": rng.normal(size=n), "rank": np.full(n, np.nan)})

    for frames in ([frame(10, True), frame(6, True)], [frame(10, True), frame(6, False)], [frame(4, True)]):
        out = tables.concat_frames(frames)
        pd.testing.assert_frame_equal(out, pd.concat(frames, ignore_index=True), check_exact=True)
        assert list(out["passes_filters"]) == [None] * len(out)
