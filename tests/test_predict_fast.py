"""matscreen.train.predict_fast: the compiled forest predicts what LightGBM's Booster.predict does, bit for bit.

Speed is measured by benchmarks/screen.py, never here.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from matscreen import enumerate as en
from matscreen import featurize, screen, tables, train
from matscreen.train.predict_fast import KZERO, Forest


def _lightgbm(boosters: list[lgb.Booster], X: np.ndarray) -> np.ndarray:
    return np.stack([b.predict(X, num_threads=1) for b in boosters])


def _splits(boosters: list[lgb.Booster]) -> list[dict]:
    out = []

    def walk(node: dict) -> None:
        if "leaf_value" not in node:
            out.append(node)
            walk(node["left_child"])
            walk(node["right_child"])

    for b in boosters:
        for t in b.dump_model()["tree_info"]:
            walk(t["tree_structure"])
    return out


def _hard_rows(X: np.ndarray, boosters: list[lgb.Booster], seed: int) -> np.ndarray:
    """Rows of X with random cells replaced by split thresholds (as float32, and the float32 on either
    side), NaN, 0, -0, tiny values LightGBM reads as 0, the float32 next to them, and infinities."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    by_feature: dict[int, list[float]] = {}
    for node in _splits(boosters):
        by_feature.setdefault(node["split_feature"], []).append(node["threshold"])
    specials = np.array(
        [
            np.nan,
            0.0,
            -0.0,
            1e-36,
            -1e-36,
            KZERO,
            -KZERO,
            np.nextafter(KZERO, np.float32(1)),
            -np.nextafter(KZERO, np.float32(1)),
            np.inf,
            -np.inf,
        ],
        dtype=np.float32,
    )
    for f, thresholds in by_feature.items():
        with np.errstate(over="ignore"):  # LightGBM's last-bin threshold 1e300 becomes inf
            t = np.array(thresholds, dtype=np.float32)
        values = np.concatenate(
            [t, np.nextafter(t, np.float32(np.inf)), np.nextafter(t, np.float32(-np.inf)), specials]
        )
        rows = rng.random(len(X)) < 0.3
        X[rows, f] = rng.choice(values, size=int(rows.sum()))
    return X


@pytest.fixture(scope="module")
def real():
    """The default ensemble (train: defaults, size-scaled parameters) trained on 800 featurized
    candidates of the default enumeration, and the features of 6,000 others."""
    cand, _ = en.enumerate_candidates({})
    cand = cand.sample(6800, random_state=0).reset_index(drop=True)
    feats = featurize.featurize_frame(cand, "candidate_id", featurize.resolve_settings({}))
    cols = train.feature_columns(feats)
    X = feats[cols].to_numpy(np.float32)
    rng = np.random.default_rng(0)
    y = np.nan_to_num(X[:, :4].astype(np.float64)) @ rng.normal(size=4) * 1e-2 + 0.05 * rng.normal(size=len(X))
    y[np.isnan(X[:, 5])] += 0.3  # so that splits send NaN somewhere on purpose
    s = train.resolve_settings({"learning_curve": {"enabled": False}})
    boosters, params = train.fit_model(feats.loc[:799, cols], y[:800], np.arange(800), s, 1)
    ens = train.Ensemble(cols, "e_above_hull_ev_per_atom", boosters, {}, 1.3, params)
    return ens, feats.loc[800:].reset_index(drop=True), X[800:]


def test_real_ensemble_equals_lightgbm_bit_for_bit(real):
    ens, _, X = real
    forest = Forest.from_boosters(ens.boosters, len(ens.features))
    assert forest is not None, "the default ensemble must take the fast path"
    assert np.isnan(X).any(axis=1).mean() > 0.01, "the test rows must have NaN features (featurize errors)"
    np.testing.assert_array_equal(forest.predict(X), _lightgbm(ens.boosters, X))
    hard = _hard_rows(X[:3000], ens.boosters, seed=1)
    np.testing.assert_array_equal(forest.predict(hard), _lightgbm(ens.boosters, hard))


def test_real_ensemble_missing_value_rules_are_exercised(real):
    """The equality above means something: the model has splits of each kind whose rule decides."""
    ens, _, _ = real
    kinds = {(n["missing_type"], n["default_left"]) for n in _splits(ens.boosters)}
    assert ("None", True) in kinds and ("NaN", True) in kinds and ("NaN", False) in kinds, kinds
    assert any(abs(n["threshold"]) == float(KZERO) for n in _splits(ens.boosters)), "no split at the zero bin"


def test_ensemble_predict_takes_the_fast_path_with_the_same_result(real, monkeypatch):
    ens, feats, _ = real
    monkeypatch.setattr(train.model, "FAST_MIN_ROWS", 10**9)
    slow = ens.predict(feats)
    monkeypatch.setattr(train.model, "FAST_MIN_ROWS", 1)
    calls = []
    original = Forest.predict
    monkeypatch.setattr(
        Forest, "predict", lambda self, X, num_threads=1: calls.append(len(X)) or original(self, X, num_threads)
    )
    for threads in (1, 2):
        fast = ens.predict(feats, num_threads=threads)
        np.testing.assert_array_equal(fast[0], slow[0])
        np.testing.assert_array_equal(fast[1], slow[1])
    assert calls == [len(feats)] * 2


def test_screen_predict_is_unchanged(real, monkeypatch):
    """Fast path or not, features in the candidates' order or not: the frame of the join + LightGBM."""
    ens, feats, _ = real
    cand = pd.DataFrame({"candidate_id": feats["candidate_id"], "family": "perovskite", "formula": "X"})
    monkeypatch.setattr(train.model, "FAST_MIN_ROWS", 10**9)
    slow = screen.predict(ens, cand, feats, block_rows=2500)
    joined = tables.join_one_to_one(cand, feats, "candidate_id", left_name="c", right_name="f")
    mean, std = ens.predict(joined)
    np.testing.assert_array_equal(slow["prediction"].to_numpy(), mean)
    np.testing.assert_array_equal(slow["uncertainty"].to_numpy(), std)
    pd.testing.assert_frame_equal(
        slow[["candidate_id", "family", "formula"]], joined[["candidate_id", "family", "formula"]]
    )
    monkeypatch.setattr(train.model, "FAST_MIN_ROWS", 1)
    pd.testing.assert_frame_equal(screen.predict(ens, cand, feats, block_rows=2500, threads=2), slow, check_exact=True)
    shuffled = feats.sample(frac=1.0, random_state=4)
    pd.testing.assert_frame_equal(screen.predict(ens, cand, shuffled, block_rows=2500), slow, check_exact=True)


def test_blocks_and_threads_do_not_change_the_result(real):
    """Blocks of 128 rows over 1,000 rows: several blocks per thread, a last block that is not full."""
    ens, _, X = real
    forest = Forest.from_boosters(ens.boosters, len(ens.features), block_rows=128)
    X = X[:1000]
    expected = _lightgbm(ens.boosters, X)
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(forest.predict(X, num_threads=threads), expected)
    np.testing.assert_array_equal(forest.predict(X[:1]), _lightgbm(ens.boosters, X[:1]))
    assert forest.predict(X[:0]).shape == (len(ens.boosters), 0)


def _synthetic(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    X[rng.random((n, 6)) < 0.15] = 0.0
    X[:, 3][rng.random(n) < 0.2] = np.nan
    X[:, 4][rng.random(n) < 0.2] = np.nan
    y = X[:, 0] - 2 * np.nan_to_num(X[:, 3], nan=3.0) + np.where(np.isnan(X[:, 4]), -2.0, X[:, 4]) + (X[:, 1] == 0)
    return X, y + 0.1 * rng.normal(size=n)


@pytest.mark.parametrize(
    "params",
    [
        {},  # NaN in training data: missing type NaN, both default sides
        {"zero_as_missing": True},  # missing type Zero
        {"use_missing": False},  # missing type None everywhere
        {"num_leaves": 200, "min_data_in_leaf": 2},  # 8 bit planes
    ],
)
def test_missing_value_types_equal_lightgbm(params):
    X, y = _synthetic()
    booster = lgb.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1, "seed": 0, **params},
        lgb.Dataset(X, label=y),
        num_boost_round=40,
    )
    forest = Forest.from_boosters([booster], X.shape[1])
    assert forest is not None
    Xt, _ = _synthetic(2000, seed=1)
    Xt = _hard_rows(Xt, [booster], seed=2)
    np.testing.assert_array_equal(forest.predict(Xt), _lightgbm([booster], Xt))
    types = {n["missing_type"] for n in _splits([booster])}
    assert types == (
        {"Zero"} if params.get("zero_as_missing") else {"None"} if "use_missing" in params else {"None", "NaN"}
    ), types
    if "use_missing" in params:  # NaN is read as 0, which goes right of a negative threshold
        assert any(n["threshold"] < 0 for n in _splits([booster]))


def test_models_it_cannot_evaluate_are_left_to_lightgbm(real, monkeypatch):
    X, y = _synthetic()
    X[:, 2] = np.abs(np.round(X[:, 2] * 3))
    y = y + 3 * (X[:, 2] == 2) - 2 * (X[:, 2] == 0)
    cat = lgb.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1},
        lgb.Dataset(X, label=y, categorical_feature=[2]),
        num_boost_round=20,
    )
    binary = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_threads": 1},
        lgb.Dataset(X, label=(y > 0).astype(float)),
        num_boost_round=5,
    )
    linear = lgb.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1, "linear_tree": True},
        lgb.Dataset(np.nan_to_num(X), label=y),
        num_boost_round=5,
    )
    assert Forest.from_boosters([linear], X.shape[1]) is None
    assert any(n["decision_type"] == "==" for n in _splits([cat]))
    assert Forest.from_boosters([cat], X.shape[1]) is None
    assert Forest.from_boosters([binary], X.shape[1]) is None
    assert Forest.from_boosters([binary], X.shape[1] + 1) is None
    ens = train.Ensemble([f"f{i}" for i in range(6)], "t", [cat, cat], {})
    monkeypatch.setattr(train.model, "FAST_MIN_ROWS", 1)
    mean, std = ens.predict(pd.DataFrame(X, columns=ens.features))
    np.testing.assert_array_equal(mean, cat.predict(X))
    with pytest.raises(ValueError, match="float32"):
        Forest.from_boosters(real[0].boosters, len(real[0].features)).predict(real[2].astype(np.float64))


def test_trees_of_one_leaf():
    X, _ = _synthetic()
    constant = lgb.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1},
        lgb.Dataset(X, label=np.full(len(X), 0.25)),
        num_boost_round=5,
    )
    np.testing.assert_array_equal(Forest.from_boosters([constant], X.shape[1]).predict(X), _lightgbm([constant], X))
