"""Active-learning rounds (matscreen.rounds): the acquisition function, the choice of a round's
candidates (diversity, budget, nothing twice) and the per-round table. The workflow runs of two
and three rounds are in tests/test_workflow.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition
from scipy import integrate, stats

from matscreen import enumerate as en
from matscreen import rounds, tables
from matscreen.label.settings import as_settings
from matscreen.label.store import entry_path
from matscreen.label.targets import competing_targets, plan_jobs, prototype_target

LABEL = as_settings({"store": "unused-store", "competing": {"max_polymorphs": 1, "oxidation_states": "common"}})
MIN = rounds.Objective("formation_energy_ev_per_atom", maximize=False)


def _settings(**kw):
    return rounds.settings({"count": 3, "labels_per_round": 3, **kw})


def _ei_by_quadrature(mu: float, sigma: float, best: float, maximize: bool) -> float:
    """E[max(improvement, 0)] for a Gaussian prediction, integrated numerically."""
    pdf = stats.norm(mu, sigma).pdf
    if maximize:
        return integrate.quad(lambda y: (y - best) * pdf(y), best, mu + 12 * sigma)[0]
    return integrate.quad(lambda y: (best - y) * pdf(y), mu - 12 * sigma, best)[0]


@pytest.mark.parametrize("maximize", [False, True])
def test_expected_improvement_is_the_gaussian_expectation(maximize):
    mu = np.array([-1.0, -0.5, 0.0, 0.3, -2.0])
    sigma = np.array([0.2, 0.5, 0.1, 1.0, 0.05])
    best = -0.6
    got = rounds.acquisition_values(mu, sigma, best, rounds.Objective("y", maximize), "ei", 1.0)
    want = [_ei_by_quadrature(m, s, best, maximize) for m, s in zip(mu, sigma, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-10)
    # without uncertainty EI is the plain improvement
    flat = rounds.acquisition_values(mu, np.zeros(5), best, rounds.Objective("y", maximize), "ei", 1.0)
    np.testing.assert_allclose(flat, np.maximum((mu - best) if maximize else (best - mu), 0.0))


def test_lower_confidence_bound_orders_like_the_screen_score():
    mu, sigma = np.array([0.0, 0.1, -0.2]), np.array([0.5, 0.0, 0.1])
    lcb = rounds.acquisition_values(mu, sigma, np.nan, MIN, "lcb", 2.0)
    np.testing.assert_allclose(lcb, -(mu - 2.0 * sigma))
    # EI without any label of the target has no incumbent: it falls back to the bound
    np.testing.assert_allclose(rounds.acquisition_values(mu, sigma, np.nan, MIN, "ei", 2.0), lcb)


@pytest.fixture(scope="module")
def pool():
    """Real perovskite oxides and fluorides of a few light cations, with made-up predictions."""
    cand, _ = en.enumerate_candidates(
        {
            "families": ["perovskite"],
            "cations": ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Ti", "Zn"],
            "sites": {"perovskite": {"A": None, "B": None, "X": ["O", "F"]}},
        }
    )
    rng = np.random.default_rng(0)
    preds = pd.DataFrame(
        {
            "candidate_id": cand["candidate_id"],
            "family": cand["family"],
            "formula": cand["formula"],
            "pred__formation_energy_ev_per_atom": rng.normal(-2.0, 0.5, len(cand)),
            "std__formation_energy_ev_per_atom": rng.uniform(0.05, 0.3, len(cand)),
        }
    )
    return cand, preds


def _round0(cand: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A round-0 plan of the first ``n`` candidates (with their competing phases) and its labels."""
    rows = pd.DataFrame([prototype_target(r) for r in cand.head(n).to_dict("records")])
    rows = tables.conform(rows, tables.LABEL_TARGETS)
    plan = rounds.extend(rows, competing_targets(rows, LABEL))
    plan["round"] = pd.Series([0] * len(plan), dtype="Int64")
    plan, _ = plan_jobs(plan, LABEL)
    labels = pd.DataFrame(
        {
            "structure_id": rows["structure_id"],
            "status": "ok",
            "formation_energy_ev_per_atom": np.linspace(-2.5, -1.5, len(rows)),
        }
    )
    return plan, labels


def test_a_round_chooses_the_best_acquisition_values_diverse_and_new(pool):
    cand, preds = pool
    plan, labels = _round0(cand, 3)
    new = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=4), LABEL, 1)
    chosen = new[new["origin"] == "candidate"]
    assert len(chosen) == 4
    assert (new["round"] == 1).all()
    # nothing planned before is planned again: no candidate, structure or reduced formula
    assert not set(chosen["candidate_id"]) & set(plan["candidate_id"].dropna())
    assert not set(new["structure_id"]) & set(plan["structure_id"])
    # one per chemical system (rounds.max_per_system = 1 by default), labeled systems included
    systems = [frozenset(el.symbol for el in Composition(f).elements) for f in chosen["formula"]]
    labeled = {
        frozenset(el.symbol for el in Composition(f).elements)
        for f in plan.loc[plan["origin"] == "candidate", "formula"]
    }
    assert len(set(systems)) == len(systems) and not set(systems) & labeled
    # the chosen ones are the best by EI among those the caps allow: the first chosen is the best overall
    best = labels["formation_energy_ev_per_atom"].min()
    col, std = "pred__formation_energy_ev_per_atom", "std__formation_energy_ev_per_atom"
    fresh = preds[~preds["candidate_id"].isin(plan["candidate_id"].dropna())]
    ei = rounds.acquisition_values(fresh[col].to_numpy(), fresh[std].to_numpy(), best, MIN, "ei", 1.0)
    assert chosen["candidate_id"].iloc[0] == fresh["candidate_id"].iloc[int(np.argmax(ei))]
    # their competing phases come with them, each once
    assert new["structure_id"].is_unique


def test_caps_per_family_and_the_label_budget_hold(pool):
    cand, preds = pool
    plan, labels = _round0(cand, 2)
    capped = rounds.choose(preds, cand, plan, labels, MIN, _settings(max_per_family=2), LABEL, 1)
    assert (capped["origin"] == "candidate").sum() == 2
    # budget of 4 compounds after round 0: round 1 takes 3, round 2 only 1, round 3 none
    s = _settings(budget={"labels": 4})
    r1 = rounds.choose(preds, cand, plan, labels, MIN, s, LABEL, 1)
    plan1, _ = plan_jobs(rounds.extend(plan, r1), LABEL)
    r2 = rounds.choose(preds, cand, plan1, labels, MIN, s, LABEL, 2)
    plan2, _ = plan_jobs(rounds.extend(plan1, r2), LABEL)
    r3 = rounds.choose(preds, cand, plan2, labels, MIN, s, LABEL, 3)
    assert [(r["origin"] == "candidate").sum() for r in (r1, r2, r3)] == [3, 1, 0]


def test_the_cpu_hour_budget_passes_over_what_does_not_fit(pool):
    cand, preds = pool
    plan, labels = _round0(cand, 2)
    free = rounds.choose(preds, cand, plan, labels, MIN, _settings(), LABEL, 1)
    planned, _ = plan_jobs(free, LABEL)  # the resource model's estimates, as the checkpoint records them
    total = float((planned["runtime_min"] * planned["threads"]).sum() / 60.0)
    assert total > 0
    # a budget below the cheapest candidate's cost chooses nothing; one that fits all chooses the same
    tiny = rounds.choose(preds, cand, plan, labels, MIN, _settings(budget={"cpu_hours": 1e-6}), LABEL, 1)
    assert tiny.empty
    roomy = rounds.choose(preds, cand, plan, labels, MIN, _settings(budget={"cpu_hours": total * 1.01}), LABEL, 1)
    assert list(roomy["structure_id"]) == list(free["structure_id"])
    # and a spent budget (the plan's later rounds already cost it) chooses nothing
    spent = planned.assign(round=pd.Series([1] * len(planned), dtype="Int64"))
    later = rounds.extend(plan, spent)
    again = rounds.choose(preds, cand, later, labels, MIN, _settings(budget={"cpu_hours": total * 0.99}), LABEL, 2)
    assert again.empty


def test_labels_a_store_already_holds_cost_no_budget(pool, tmp_path):
    """A candidate whose prototype and competing phases a seed store holds (the shipped reference
    set's, in the demo) runs no label job, so it fits any budget; before, every target was charged
    its estimate, and at 300 Ha the demo's 2 CPU hours fitted no candidate at all."""
    from matscreen.label.store import write_rows

    cand, preds = pool
    plan, labels = _round0(cand, 2)
    free = rounds.choose(preds, cand, plan, labels, MIN, _settings(), LABEL, 1)
    assert (free["budget_cpu_hours"] > 0).all()  # nothing stored: every target charged its estimate
    seeded = LABEL.replace(store=str(tmp_path / "store"), seed_stores=(str(tmp_path / "seed"),))
    seed_as_store = seeded.replace(store=str(tmp_path / "seed"))
    for sid in free["structure_id"]:
        row = {"structure_id": sid, "settings_hash": seeded.hash, "status": "ok", "energy_ha": -1.0}
        write_rows([row], entry_path(seed_as_store, "structures", sid), tables.LABELS, seed_as_store, "")
    tiny = _settings(budget={"cpu_hours": 1e-6})
    # the run's own store holding them changes nothing: a rerun chooses what a fresh run chose
    assert rounds.choose(preds, cand, plan, labels, MIN, tiny, seed_as_store.replace(seed_stores=()), 1).empty
    held = rounds.choose(preds, cand, plan, labels, MIN, tiny, seeded, 1)
    assert list(held["structure_id"]) == list(free["structure_id"])
    assert (held["budget_cpu_hours"] == 0).all()
    # the charge is kept with the plan (a contract column): the rounds after it find the budget unspent
    later, _ = plan_jobs(rounds.extend(plan, held), seeded)
    assert later.loc[later["round"] == 1, "budget_cpu_hours"].tolist() == [0.0] * len(held)
    assert rounds._charged_hours(later[later["round"] >= 1]) == 0.0


def test_rounds_table_scores_the_previous_model_on_the_new_labels():
    plan0 = tables.conform(
        pd.DataFrame(
            {
                "structure_id": ["s-a", "s-b"],
                "origin": "candidate",
                "candidate_id": ["c-a", "c-b"],
                "formula": ["KMgF3", "NaMgF3"],
                "nsites": 5,
                "structure": "{}",
                "runtime_min": [10, 20],
                "threads": 1,
                "round": pd.array([0, 0], dtype="Int64"),
            }
        ),
        tables.LABEL_TARGETS,
    )
    new = tables.conform(
        pd.DataFrame(
            {
                "structure_id": ["s-c", "s-d", "s-e"],
                "origin": ["candidate", "candidate", "competing"],
                "candidate_id": ["c-c", "c-d", None],
                "formula": ["KCaF3", "KZnF3", "CaF2"],
                "nsites": [5, 5, 3],
                "structure": "{}",
                "runtime_min": [30, 30, 6],
                "threads": 2,
                "round": pd.array([1, 1, 1], dtype="Int64"),
            }
        ),
        tables.LABEL_TARGETS,
    )
    plan1 = rounds.extend(plan0, new)
    labels = pd.DataFrame(
        {
            "structure_id": ["s-a", "s-b", "s-c", "s-d", "s-e"],
            "status": "ok",
            "wall_s": [60.0, 60, 1800, 900, 36],
            "formation_energy_ev_per_atom": [-3.0, -2.8, -3.2, -2.0, -2.5],
        }
    )
    preds0 = pd.DataFrame(
        {"candidate_id": ["c-c", "c-d", "c-x"], "prediction": [-3.0, -2.6, -9.0], "uncertainty": [0.1, 0.2, 0.1]}
    )
    metrics = [
        pd.DataFrame({"target": MIN.target, "fold": "all", "family": "all", "metric": ["mae"], "value": [v]})
        for v in (0.3, 0.2)
    ]
    t = rounds.rounds_table([plan0, plan1], labels, [preds0], metrics, MIN, "ei").set_index("round")
    tables.check_frame(t.reset_index(), tables.ROUNDS)
    assert t.loc[0, "acquisition"] == "seeded" and t.loc[1, "acquisition"] == "ei"
    assert list(t["n_chosen"]) == [2, 2] and list(t["n_competing"]) == [0, 1]
    assert list(t["n_train"]) == [2, 4]
    assert np.isnan(t.loc[0, "new_mae"])
    assert t.loc[1, "new_mae"] == pytest.approx((0.2 + 0.6) / 2)
    assert t.loc[1, "new_rmse"] == pytest.approx(np.sqrt((0.04 + 0.36) / 2))
    assert t.loc[1, "n_held_up"] == 1  # -3.2 <= -3.0 + 0.1 held; -2.0 > -2.6 + 0.2 did not
    assert list(t["best_label"]) == [-3.0, -3.2]
    assert list(t["cv_mae"]) == [0.3, 0.2]
    assert t.loc[1, "est_cpu_hours"] == pytest.approx((30 * 2 + 30 * 2 + 6 * 2) / 60)
    assert t.loc[1, "label_cpu_hours"] == pytest.approx((1800 + 900 + 36) * 2 / 3600)
    assert t.loc[0, "budget_cpu_hours_spent"] == 0 and t.loc[1, "budget_cpu_hours_spent"] == pytest.approx(2.2)


def test_stability_targets_improve_on_the_threshold_not_on_the_best_label():
    """E_hull is 0 for every stable compound: EI over the best label (0) would ask for negative
    energies above the hull; over the stability threshold it is the expected margin below it."""
    hull = rounds.Objective("e_above_hull_ev_per_atom", maximize=False, threshold=0.05)
    assert hull.incumbent(pd.Series([0.0, 0.2])) == 0.05
    assert MIN.incumbent(pd.Series([-1.0, -2.0, np.nan])) == -2.0
    mu, sigma = np.array([0.03, 0.3]), np.array([0.01, 0.01])
    ei = rounds.acquisition_values(mu, sigma, hull.incumbent(pd.Series([0.0])), hull, "ei", 1.0)
    assert ei[0] == pytest.approx(0.02 * stats.norm.cdf(2.0) + 0.01 * stats.norm.pdf(2.0), rel=1e-12)
    assert ei[1] < 1e-12


def test_cells_larger_than_max_sites_are_passed_over(monkeypatch):
    cand, _ = en.enumerate_candidates(
        {
            "families": ["perovskite", "spinel"],
            "cations": ["Li", "Na", "K", "Mg", "Ca", "Al", "Ti", "Zn"],
            "sites": {"perovskite": {"A": None, "B": None, "X": ["F"]}, "spinel": {"A": None, "B": None, "X": ["O"]}},
        }
    )
    # the spinels are predicted best by far: without a cap they are chosen first
    target = MIN.target
    preds = pd.DataFrame(
        {
            "candidate_id": cand["candidate_id"],
            "family": cand["family"],
            "formula": cand["formula"],
            f"pred__{target}": np.where(cand["family"] == "spinel", -5.0, -1.0),
            f"std__{target}": 0.1,
        }
    )
    plan = rounds.extend(tables.empty_frame(tables.LABEL_TARGETS), tables.empty_frame(tables.LABEL_TARGETS))
    labels = pd.DataFrame(
        {"structure_id": pd.Series(dtype=str), "status": pd.Series(dtype=str), target: pd.Series(dtype=float)}
    )
    free = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2), LABEL, 1)
    capped = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2, max_sites=5), LABEL, 1)
    assert set(free.loc[free["origin"] == "candidate", "family"]) == {"spinel"}
    chosen = capped[capped["origin"] == "candidate"]
    assert set(chosen["family"]) == {"perovskite"} and (chosen["nsites"] <= 5).all() and len(chosen) == 2
    # more better-scored spinels than a round examines (rounds.EXAMINE_PER_LABEL per label): they are
    # passed over by their family's cell size before any prototype is built, so the round still
    # reaches the perovskites (before, it built the spinels, counted them as examined and chose nothing)
    monkeypatch.setattr(rounds, "EXAMINE_PER_LABEL", 2)  # 9 spinels here: more than the round may examine
    assert (cand["family"] == "spinel").sum() > rounds.EXAMINE_PER_LABEL
    one = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=1, max_sites=5), LABEL, 1)
    assert one.loc[one["origin"] == "candidate", "family"].tolist() == ["perovskite"]


def test_candidates_with_an_element_outside_rounds_elements_are_passed_over():
    """The demo's round 1 chose NaNiF3 (open-shell Ni: a new reference and two spin-polarised NiF2
    SCFs, tens of minutes on 2 cores); ``rounds.elements`` keeps a round to the elements whose
    references and competing phases a seed store already holds."""
    cand, _ = en.enumerate_candidates(
        {
            "families": ["perovskite"],
            "cations": ["Na", "K", "Mg", "Ni", "Zn"],
            "sites": {"perovskite": {"A": None, "B": None, "X": ["F"]}},
        }
    )
    target = MIN.target
    has_ni = cand["formula"].str.contains("Ni")
    preds = pd.DataFrame(
        {
            "candidate_id": cand["candidate_id"],
            "family": cand["family"],
            "formula": cand["formula"],
            f"pred__{target}": np.where(has_ni, -5.0, -1.0),  # the Ni compounds are predicted best by far
            f"std__{target}": 0.1,
        }
    )
    plan = rounds.extend(tables.empty_frame(tables.LABEL_TARGETS), tables.empty_frame(tables.LABEL_TARGETS))
    labels = pd.DataFrame(
        {"structure_id": pd.Series(dtype=str), "status": pd.Series(dtype=str), target: pd.Series(dtype=float)}
    )
    free = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=1), LABEL, 1)
    assert "Ni" in free.loc[free["origin"] == "candidate", "formula"].iloc[0]
    kept = rounds.choose(
        preds, cand, plan, labels, MIN, _settings(labels_per_round=2, elements=["Na", "K", "Mg", "Zn", "F"]), LABEL, 1
    )
    chosen = kept[kept["origin"] == "candidate"]
    assert len(chosen) == 2
    assert not kept["formula"].str.contains("Ni").any()  # neither a compound nor a competing phase


def test_an_unknown_element_in_rounds_elements_is_a_config_error():
    from matscreen.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"rounds\.elements\[1\]': unknown element 'Xx'"):
        load_config(overrides={"rounds": {"elements": ["Na", "Xx"]}})


@pytest.mark.parametrize("oxidation_states", ["common", "icsd"])
def test_candidates_that_could_never_get_a_hull_are_passed_over_when_the_objective_is_a_hull(oxidation_states):
    """The structure library has no type for Nb2O5: under common oxidation states it builds no Nb
    oxide at all, under icsd NbO2 and Nb2O3 but still not the niobates' own Nb5+ binary. Either way
    a niobate's label gets no hull (label.hull.missing_competitors). A round that ranks by E_hull
    passes such candidates over instead of spending its budget on them; one that ranks by
    formation energy still takes them."""
    label_settings = as_settings(
        {"store": "unused-store", "competing": {"max_polymorphs": 1, "oxidation_states": oxidation_states}}
    )
    cand, _ = en.enumerate_candidates(
        {
            "families": ["perovskite"],
            "cations": ["K", "Na", "Ca", "Sr", "Nb", "Ti"],
            "sites": {"perovskite": {"A": None, "B": None, "X": ["O"]}},
        }
    )
    niobate = cand["formula"].str.contains("Nb")
    assert niobate.any() and (~niobate).any()
    hull = rounds.Objective("e_above_hull_ev_per_atom", maximize=False, threshold=0.05)
    plan = rounds.extend(tables.empty_frame(tables.LABEL_TARGETS), tables.empty_frame(tables.LABEL_TARGETS))
    for objective in (hull, MIN):
        t = objective.target
        preds = pd.DataFrame(
            {
                "candidate_id": cand["candidate_id"],
                "family": cand["family"],
                "formula": cand["formula"],
                f"pred__{t}": np.where(niobate, -0.5, 0.5),
                f"std__{t}": 0.1,
            }
        )  # the niobates best
        labels = pd.DataFrame(
            {"structure_id": pd.Series(dtype=str), "status": pd.Series(dtype=str), t: pd.Series(dtype=float)}
        )
        new = rounds.choose(preds, cand, plan, labels, objective, _settings(labels_per_round=1), label_settings, 1)
        chosen = new.loc[new["origin"] == "candidate", "formula"].tolist()
        assert len(chosen) == 1
        assert ("Nb" in chosen[0]) == (objective is MIN), chosen


def test_compounds_the_external_labels_hold_are_not_chosen_and_count_for_their_system(pool):
    """The default run trains on the shipped reference labels (train.external_labels). Before, a
    round ignored them: with the 58 shipped perovskites it chose NaGeF3, BaLiF3, NaZnF3 and BaWO3,
    all four already trained on, and 'checked' the model on its own training data (MAE 2e-5 eV)."""
    cand, preds = pool
    plan, labels = _round0(cand, 2)
    free = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2), LABEL, 1)
    first = free[free["origin"] == "candidate"].iloc[0]
    # an external table holding the first choice, for the screening target and for another one
    external = pd.DataFrame(
        {
            "formula": [first["formula"], first["formula"]],
            "target": [MIN.target, "gap_ev"],
            "value": [-2.0, 1.0],
        }
    )
    held = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2), LABEL, 1, None, external)
    chosen = held[held["origin"] == "candidate"]
    reduced = {Composition(f).reduced_formula for f in chosen["formula"]}
    assert Composition(first["formula"]).reduced_formula not in reduced
    # its chemical system is taken (max_per_system 1), as a labeled compound's would be
    system = frozenset(el.symbol for el in Composition(first["formula"]).elements)
    assert all(frozenset(el.symbol for el in Composition(f).elements) != system for f in chosen["formula"])
    assert len(chosen) == 2
    # a label of another target does not make the compound known for this one
    other = external[external["target"] == "gap_ev"]
    same = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2), LABEL, 1, None, other)
    assert list(same["structure_id"]) == list(free["structure_id"])


def test_a_candidate_the_seed_store_holds_as_failed_is_passed_over(pool, tmp_path):
    """A failed label is cached like any other, so a seed-store failure costs nothing and was
    chosen first: the demo's round took Ca2MgWO6, whose three SCF attempts failed in the reference
    set, and learned nothing from it."""
    from matscreen.label.store import write_rows

    cand, preds = pool
    plan, labels = _round0(cand, 2)
    seeded = LABEL.replace(store=str(tmp_path / "store"), seed_stores=(str(tmp_path / "seed"),))
    seed_as_store = seeded.replace(store=str(tmp_path / "seed"))
    free = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2), seeded, 1)
    first = free[free["origin"] == "candidate"].iloc[0]
    row = {"structure_id": first["structure_id"], "settings_hash": seeded.hash, "status": "failed", "error": "SCF"}
    write_rows([row], entry_path(seed_as_store, "structures", first["structure_id"]), tables.LABELS, seed_as_store, "")
    held = rounds.choose(preds, cand, plan, labels, MIN, _settings(labels_per_round=2), seeded, 1)
    chosen = held[held["origin"] == "candidate"]
    assert first["structure_id"] not in set(chosen["structure_id"]) and len(chosen) == 2


def test_expected_improvement_improves_on_the_best_label_the_model_trains_on(pool):
    """EI's incumbent is the best label of the target the model trains on: before, external
    labels were trained on but left out of it, so a round sought improvement over a worse value
    than one already known (and a target only external tables had got no incumbent at all)."""
    cand, preds = pool
    plan, labels = _round0(cand, 2)
    s = _settings(labels_per_round=1)
    external = pd.DataFrame({"formula": ["Ba1 Ti1 O3"], "target": [MIN.target], "value": [-4.0]})
    col, std = "pred__formation_energy_ev_per_atom", "std__formation_energy_ev_per_atom"
    fresh = preds[~preds["candidate_id"].isin(plan["candidate_id"].dropna())]
    fresh = fresh[fresh["formula"].map(lambda f: Composition(f).reduced_formula) != "BaTiO3"]

    def first_by_ei(best: float) -> str:
        ei = rounds.acquisition_values(fresh[col].to_numpy(), fresh[std].to_numpy(), best, MIN, "ei", 1.0)
        return fresh["candidate_id"].iloc[int(np.argmax(ei))]

    own_best = labels["formation_energy_ev_per_atom"].min()
    assert first_by_ei(own_best) != first_by_ei(-4.0)  # the incumbent decides the choice here
    chosen = rounds.choose(preds, cand, plan, labels, MIN, s, LABEL, 1, None, external)
    assert chosen.loc[chosen["origin"] == "candidate", "candidate_id"].iloc[0] == first_by_ei(-4.0)
    without = rounds.choose(preds, cand, plan, labels, MIN, s, LABEL, 1)
    assert without.loc[without["origin"] == "candidate", "candidate_id"].iloc[0] == first_by_ei(own_best)
