"""The whole workflow on a tiny config: every stage for real (PySCF, matminer, LightGBM).

One run is shared by the tests of this module (it takes a few minutes on 2 cores). The
input folder's name has a space and a non-ASCII character on purpose.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from workflow_utils import baseline_run, computed_in_logs, copy_workdir, read_config, snakemake, write_config

from matscreen import paths, tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return baseline_run(tmp_path_factory)  # one uninterrupted run per session, shared with other modules


def test_every_table_meets_its_contract(run):
    r = run / "results"
    checks = {
        "ingest/structures.parquet": tables.STRUCTURES,
        "ingest/rejects.parquet": tables.REJECTS,
        "enumerate/funnel.parquet": tables.FUNNEL,
        "label/targets.parquet": tables.LABEL_TARGETS,
        "label/labels.parquet": tables.LABELS,
        "label/references.parquet": tables.REFERENCES,
        "featurize/labeled.parquet": tables.STRUCTURE_FEATURES,
        "train/cv_metrics.parquet": tables.CV_METRICS,
        "train/oof_predictions.parquet": tables.OOF_PREDICTIONS,
        "screen/ranked.parquet": tables.PREDICTIONS,
        "screen/next_to_label.parquet": tables.PREDICTIONS,
    }
    for rel, table in checks.items():
        df = tables.read_table(r / rel, table)
        prov = tables.read_provenance(r / rel)
        assert prov["versions"]["matscreen"], rel
        assert len(df) or rel == "screen/next_to_label.parquet", f"{rel} is empty"
    for shard in (0, 1):
        tables.read_table(r / f"enumerate/candidates/part-{shard}.parquet", tables.CANDIDATES)
        tables.read_table(r / f"featurize/candidates/part-{shard}.parquet", tables.CANDIDATE_FEATURES)


def test_ingest_kept_good_files_and_rejected_the_broken_one(run):
    s = tables.read_table(run / "results/ingest/structures.parquet", tables.STRUCTURES)
    rej = tables.read_table(run / "results/ingest/rejects.parquet", tables.REJECTS)
    assert set(s["reduced_formula"]) == {"SrTiO3", "BaTiO3"}
    assert set(s["family"]) == {"perovskite"}
    assert [Path(p).name for p in rej["source"]] == ["broken.cif"]


def test_labels_are_real_pyscf_energies(run):
    labels = tables.read_table(run / "results/label/labels.parquet", tables.LABELS)
    targets = tables.read_table(run / "results/label/targets.parquet", tables.LABEL_TARGETS)  # round 0's plan
    final = tables.read_table(run / "results/rounds/1/label/targets.parquet", tables.LABEL_TARGETS)
    assert set(labels["structure_id"]) == set(final["structure_id"]) > set(targets["structure_id"])
    assert (targets["origin"] == "ingest").sum() == 2
    chosen = targets[targets["origin"] == "candidate"]
    # 5 asked for; the element whitelist of the tiny config leaves 4 distinct compositions
    assert 4 <= len(chosen) <= 5 and chosen["candidate_id"].notna().all()
    from pymatgen.core import Composition

    assert chosen["formula"].map(lambda f: Composition(f).reduced_formula).is_unique
    ok = labels[labels["status"] == "ok"]
    assert len(ok) >= 5
    assert (ok["energy_ha"] < 0).all() and ok["converged"].all()
    assert ok["formation_energy_ev_per_atom"].notna().all()
    assert (ok["wall_s"] > 0).all() and (ok["pyscf_version"] != "").all()
    store = list((run / "label-store").rglob("*.parquet"))
    assert len(store) >= len(labels), "every label is kept in the store"


def test_every_candidate_is_ranked(run):
    n = sum(
        len(tables.read_table(run / f"results/enumerate/candidates/part-{i}.parquet", tables.CANDIDATES))
        for i in (0, 1)
    )
    ranked = tables.read_table(run / "results/screen/ranked.parquet", tables.PREDICTIONS)
    assert len(ranked) == n > 0
    assert ranked["rank"].tolist() == list(range(1, n + 1))
    assert ranked["prediction"].notna().all()
    top = pd.read_csv(run / "results/screen/top.csv")
    assert list(top["candidate_id"]) == list(ranked["candidate_id"][:10])
    nxt = tables.read_table(run / "results/screen/next_to_label.parquet", tables.PREDICTIONS)
    targets = tables.read_table(run / "results/rounds/1/label/targets.parquet", tables.LABEL_TARGETS)
    assert not set(nxt["candidate_id"]) & set(targets["candidate_id"].dropna())


def test_report_and_logs(run):
    text = (run / "results/report/summary.md").read_text()
    for heading in (
        "## Ingest",
        "## Candidate space",
        "## PySCF labels",
        "## Model",
        "## Active-learning rounds",
        "## Next to label",
    ):
        assert heading in text
    assert (run / "results/report/parity.png").stat().st_size > 1000
    assert (run / "logs/ingest/ingest.log").read_text().strip()


def test_second_run_has_nothing_to_do(run):
    res = snakemake(run, "-n")
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


# --- active-learning rounds (tiny config: rounds.count 2, 2 labels per round, budget 3) -------------


def _plan(run: Path, r: int) -> pd.DataFrame:
    return tables.read_table(run / paths.round_targets(r), tables.LABEL_TARGETS)


def test_round_1_labels_what_round_0_predicted_best_and_trains_on_both(run):
    plan0, plan1 = _plan(run, 0), _plan(run, 1)
    assert (plan0["round"] == 0).all()
    # the cumulative plan: round 0's rows unchanged, then round 1's
    pd.testing.assert_frame_equal(
        plan1.iloc[: len(plan0)][["structure_id", "origin", "candidate_id"]],
        plan0[["structure_id", "origin", "candidate_id"]],
    )
    new = plan1[plan1["round"] == 1]
    chosen = new[new["origin"] == "candidate"]
    assert len(chosen) == 2 and not set(chosen["candidate_id"]) & set(plan0["candidate_id"].dropna())
    # chosen by expected improvement from round 0's model among the unlabeled candidates
    from pymatgen.core import Composition

    from matscreen import rounds, screen, train
    from matscreen.families import get_family

    preds = tables.read_tables(
        sorted((run / "results/rounds/0/screen/predictions").glob("*.parquet")), tables.PREDICTIONS
    )
    labels0 = tables.read_table(run / "results/rounds/0/label/labels.parquet", tables.LABELS)
    target = str(preds["target"].iloc[0])
    ok0 = labels0[
        (labels0["status"] == "ok")
        & labels0["structure_id"].isin(plan0.loc[plan0["origin"] != "competing", "structure_id"])
    ]
    fresh = preds[~preds["candidate_id"].isin(plan0["candidate_id"].dropna())]
    stability = train.resolve_settings(read_config(run)["train"]).stability  # E_hull: EI improves on the threshold
    objective = rounds.Objective(
        target, False, stability.threshold_ev_per_atom if target in stability.targets else None
    )
    ei = rounds.acquisition_values(
        fresh[screen.pred_column(target)].to_numpy(),
        fresh[screen.std_column(target)].to_numpy(),
        objective.incumbent(ok0[target]),
        objective,
        "ei",
        1.0,
    )
    # the best EI that passes the round's caps (tiny.yaml: max_sites 5, the default max_per_system 1);
    # the better-scored candidates before it are each passed over for a cap this test names
    caps = rounds.settings(read_config(run).get("rounds"))
    candidates = tables.read_tables(
        sorted((run / "results/enumerate/candidates").glob("*.parquet")), tables.CANDIDATES
    ).set_index("candidate_id")
    ranked = (
        pd.DataFrame({"candidate_id": fresh["candidate_id"].to_numpy(), "ei": ei})
        .sort_values(["ei", "candidate_id"], ascending=[False, True], kind="mergesort")
        .join(candidates[["formula", "family"]], on="candidate_id")
    )
    compounds0 = plan0.loc[plan0["origin"] != "competing", "formula"]
    formulas0 = {Composition(f).reduced_formula for f in compounds0}
    systems0 = {frozenset(Composition(f).chemical_system.split("-")) for f in compounds0}
    assert caps.max_sites == 5 and caps.max_per_system == 1

    def passed_over(r) -> bool:
        comp = Composition(r.formula)
        return (
            get_family(r.family).primitive_atoms > caps.max_sites
            or comp.reduced_formula in formulas0
            or frozenset(comp.chemical_system.split("-")) in systems0
        )

    first = next(r for r in ranked.itertuples() if not passed_over(r))
    assert chosen["candidate_id"].iloc[0] == first.candidate_id
    assert ranked["ei"].iloc[0] >= first.ei > 0  # chosen by its expected improvement, not by chance
    # round 0's model trained on round 0's labels; the final (round 1) model on those plus round 1's
    oof0 = tables.read_table(run / "results/rounds/0/train/oof_predictions.parquet", tables.OOF_PREDICTIONS)
    oof1 = tables.read_table(run / "results/train/oof_predictions.parquet", tables.OOF_PREDICTIONS)
    labels1 = tables.read_table(run / "results/label/labels.parquet", tables.LABELS).set_index("structure_id")
    new_ok = [i for i in chosen["structure_id"] if labels1.loc[i, "status"] == "ok"]
    assert new_ok and set(new_ok) <= set(oof1["structure_id"]) and not set(new_ok) & set(oof0["structure_id"])
    assert set(oof0["structure_id"]) < set(oof1["structure_id"])
    assert set(oof1["structure_id"]) - set(oof0["structure_id"]) <= set(new["structure_id"])


def test_nothing_is_labeled_twice_and_the_rounds_table_adds_up(run):
    computed = computed_in_logs(run)
    every = computed["structures"] + computed["competing"]
    assert len(every) == len(set(every)) == len(_plan(run, 1))
    assert len(computed["references"]) == len(set(computed["references"]))
    table = tables.read_table(run / "results/rounds.parquet", tables.ROUNDS)
    assert list(table["round"]) == [0, 1]
    assert list(table["acquisition"]) == ["seeded", "ei"]
    assert table.loc[1, "n_chosen"] == 2 and table.loc[1, "new_mae"] >= 0
    metrics = tables.read_table(run / "results/train/cv_metrics.parquet", tables.CV_METRICS)
    mae = metrics[(metrics["fold"] == "all") & (metrics["family"] == "all") & (metrics["metric"] == "mae")]
    assert table.loc[1, "cv_mae"] == mae["value"].iloc[0]
    text = (run / "results/report/summary.md").read_text()
    assert f"{table.loc[1, 'new_mae']:.4g}" in text.split("## Active-learning rounds")[1]


def test_a_third_round_labels_only_its_own_candidates(tmp_path_factory, run):
    """Raising rounds.count from 2 to 3 keeps rounds 0 and 1 (no file of theirs is rewritten) and
    computes only round 2's labels; the budget (3 compounds after round 0) leaves round 2 one."""
    work = copy_workdir(run, tmp_path_factory.mktemp("third"))
    cfg = read_config(work)
    assert cfg["rounds"]["budget"]["labels"] == 3
    write_config(work, cfg, {"rounds": {"count": 3}})
    kept = {p: p.stat().st_mtime_ns for p in (work / "results/rounds").rglob("*.parquet")}
    kept[work / "results/label/targets.parquet"] = (work / "results/label/targets.parquet").stat().st_mtime_ns
    since = time.time()
    res = snakemake(work)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-8000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    plan2 = _plan(work, 2)
    new = plan2[plan2["round"] == 2]
    assert (new["origin"] == "candidate").sum() == 1
    computed = computed_in_logs(work, since)
    assert sorted(computed["structures"] + computed["competing"]) == sorted(new.loc[~new["stored"], "structure_id"])
    assert len(new.loc[~new["stored"]]) >= 1
    table = tables.read_table(work / "results/rounds.parquet", tables.ROUNDS)
    assert list(table["round"]) == [0, 1, 2] and list(table["n_chosen"])[1:] == [2, 1]
