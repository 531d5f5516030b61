"""Nightly refresh: a new structure file leads to one new PySCF label and a report of what changed.

The fast tests check the two pieces on their own (per-file ingest cache, run history); the slow
ones take the shared baseline run of the tiny config, drop one new structure file into its
input folder and run the workflow again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from workflow_utils import (
    DATA,
    NEW_POSCAR,
    baseline_run,
    computed_in_logs,
    copy_workdir,
    snakemake,
    snakemake_controller_imports,
    store_entries,
)

from matscreen import history, ingest, tables

#: File name of NEW_POSCAR in the input folder (a space and a non-ASCII letter on purpose).
NEW_NAME = "POSCAR_BaTiO3 cubic à 4.00"


# --- per-file ingest cache ----------------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in put ü"
    d.mkdir()
    shutil.copy(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json", d / "SrTiO3.json")
    shutil.copy(DATA / "perovskite" / "BaTiO3_P4mm_pyxtal_BTO.cif", d / "BaTiO3.cif")
    shutil.copy(DATA / "spinel" / "FeAl2O4_hercynite_amcsd.cif", d / "FeAl2O4.cif")
    (d / "broken.cif").write_text("data_broken\n_cell_length_a 3.9\n_atom_site_label\n")
    return d


def _hits(caplog) -> str:
    return [r.getMessage() for r in caplog.records if "ingest cache" in r.getMessage()][-1]


def test_cache_gives_the_same_tables_and_reads_only_new_files(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    settings: dict = {}
    with caplog.at_level(logging.INFO, logger="matscreen.ingest"):
        s0, r0 = ingest.ingest([str(folder)], settings, cache=None)
        s1, r1 = ingest.ingest([str(folder)], settings, cache=cache)
        assert _hits(caplog).endswith("0 of 4 files from the cache, 4 read")
        s2, r2 = ingest.ingest([str(folder)], settings, cache=cache)
        assert _hits(caplog).endswith("4 of 4 files from the cache, 0 read")
        pd.testing.assert_frame_equal(s0, s1)
        pd.testing.assert_frame_equal(s1, s2)
        pd.testing.assert_frame_equal(r0, r2)
        assert len(s2) == 3 and list(r2["reason"]) == ["no_structure"]

        (folder / "POSCAR_new").write_text(NEW_POSCAR)
        s3, _ = ingest.ingest([str(folder)], settings, cache=cache)
        assert _hits(caplog).endswith("4 of 5 files from the cache, 1 read")
        assert len(s3) == 4 and "BaTiO3" in set(s3.loc[s3["source"].str.endswith("POSCAR_new"), "reduced_formula"])


def test_cache_follows_renames_edits_and_settings(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    first, _ = ingest.ingest([str(folder)], {}, cache=cache)
    os.rename(folder / "SrTiO3.json", folder / "renamed SrTiO3.json")
    with caplog.at_level(logging.INFO, logger="matscreen.ingest"):
        moved, _ = ingest.ingest([str(folder)], {}, cache=cache)
        assert _hits(caplog).endswith("4 of 4 files from the cache, 0 read"), "a renamed file is the same content"
    row = moved[moved["reduced_formula"] == "SrTiO3"].iloc[0]
    assert row["source"] == str(folder / "renamed SrTiO3.json")
    assert row["structure_id"] == first.loc[first["reduced_formula"] == "SrTiO3", "structure_id"].iloc[0]

    # An edited file is new content: read again (here it becomes a parse error).
    (folder / "BaTiO3.cif").write_text((folder / "BaTiO3.cif").read_text()[:200])
    with caplog.at_level(logging.INFO, logger="matscreen.ingest"):
        _, rej = ingest.ingest([str(folder)], {}, cache=cache)
        assert _hits(caplog).endswith("3 of 4 files from the cache, 1 read")
    assert str(folder / "BaTiO3.cif") in set(rej["source"])

    # Settings that change what a file yields select another part of the cache.
    with caplog.at_level(logging.INFO, logger="matscreen.ingest"):
        ingest.ingest([str(folder)], {"symprec": 0.01}, cache=cache)
        assert _hits(caplog).endswith("0 of 4 files from the cache, 4 read")
        ingest.ingest([str(folder)], {"dedupe": {"enabled": False}}, cache=cache)
        assert _hits(caplog).endswith("4 of 4 files from the cache, 0 read"), "dedupe acts across files"
    assert ingest.cache_key(ingest.resolve_settings({})) == ingest.cache_key(ingest.resolve_settings({"cache": None}))


def test_unreadable_cache_entries_and_unreadable_files_are_read_again(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    first, _ = ingest.ingest([str(folder)], {}, cache=cache)
    for entry in cache.rglob("*.json"):
        entry.write_text("{not json")
    link = folder / "dangling.cif"
    link.symlink_to(folder / "nowhere.cif")
    with caplog.at_level(logging.INFO, logger="matscreen.ingest"):
        again, rej = ingest.ingest([str(folder)], {}, cache=cache)
        assert _hits(caplog).endswith("0 of 5 files from the cache, 5 read")
    assert any("is unreadable" in r.getMessage() for r in caplog.records)
    pd.testing.assert_frame_equal(first, again)
    assert rej.set_index("source").loc[str(link), "reason"] == "unreadable"
    assert not any(str(link) in p.read_text() for p in cache.rglob("*.json")), "an unreadable file is never cached"


# --- run history --------------------------------------------------------------------------------


def _tables(labels: dict[str, float | None], top: list[str], mae: float) -> dict:
    structures = tables.conform(
        pd.DataFrame(
            {
                "structure_id": list(labels),
                "source": [f"{k}.cif" for k in labels],
                "block": "",
                "source_sha256": "0",
                "family": "perovskite",
                "formula": "Sr1 Ti1 O3",
                "reduced_formula": "SrTiO3",
                "nsites": 5,
                "duplicate_of": None,
                "structure": "{}",
            }
        ),
        tables.STRUCTURES,
    )
    lab = tables.conform(
        pd.DataFrame(
            {
                "structure_id": list(labels),
                "settings_hash": "h",
                "formula": "Sr1 Ti1 O3",
                "status": ["ok" if v is not None else "failed" for v in labels.values()],
                "formation_energy_ev_per_atom": [v if v is not None else float("nan") for v in labels.values()],
            }
        ),
        tables.LABELS,
    )
    metrics = pd.DataFrame(
        {"fold": ["all", "all", "0"], "metric": ["mae", "spearman", "mae"], "value": [mae, float("nan"), 9.0]}
    )
    ranked = pd.DataFrame(
        {
            "candidate_id": top,
            "formula": "X",
            "family": "perovskite",
            "prediction": [float(i) for i in range(len(top))],
            "rank": range(1, len(top) + 1),
        }
    )
    return {"structures": structures, "labels": lab, "metrics": metrics, "ranked": ranked}


def test_history_reports_what_changed(tmp_path):
    folder = tmp_path / "history"
    a = history.snapshot(**_tables({"s-1": -1.0, "s-2": None}, ["c-1", "c-2", "c-3"], 0.5), top_n=2, run_key="A")
    text, p1 = history.update(folder, a)
    assert "No earlier run" in text and p1.exists()

    b = history.snapshot(
        **_tables({"s-1": -1.0, "s-2": -2.0, "s-3": -3.0}, ["c-3", "c-1", "c-2"], 0.25), top_n=2, run_key="B"
    )
    text, p2 = history.update(folder, b)
    ch = history.diff(json.loads(p1.read_text()), b)
    assert [r["structure_id"] for r in ch.new_labels] == ["s-3"]
    assert [r["structure_id"] for r in ch.new_structures] == ["s-3"]
    assert [(r["structure_id"], r["status_before"], r["status_after"]) for r in ch.changed_labels] == [
        ("s-2", "failed", "ok")
    ]
    assert [r["candidate_id"] for r in ch.entered_top] == ["c-3"] and [r["candidate_id"] for r in ch.left_top] == [
        "c-2"
    ]
    mae = next(m for m in ch.metrics if m["metric"] == "mae")
    assert (mae["before"], mae["after"], mae["change"]) == (0.5, 0.25, -0.25)
    assert next(m for m in ch.metrics if m["metric"] == "spearman")["after"] is None  # NaN stored as null
    assert "s-3" in text and "| mae | 0.5 | 0.25 | -0.25 |" in text and "1 entered, 1 left" in text
    assert json.loads(p2.read_text())["baseline"] == "A"

    # The same report job again (killed, then rerun over the same inputs): same comparison, no new file.
    again, p3 = history.update(folder, dict(b))
    assert p3 == p2 and again == text and len(history.load_history(folder)) == 2

    # A later run over unchanged results says so.
    c = {**b, "run_key": "C"}
    text, _ = history.update(folder, c)
    assert "Nothing changed" in text


def test_unreadable_history_files_are_skipped(tmp_path, caplog):
    folder = tmp_path / "history"
    folder.mkdir()
    (folder / "run-00000000T000000000000Z-x.json").write_text("{broken")
    snap = history.snapshot(**_tables({"s-1": -1.0}, ["c-1"], 0.5), top_n=1, run_key="A")
    with caplog.at_level(logging.WARNING, logger="matscreen.history"):
        text, _ = history.update(folder, snap)
    assert "No earlier run" in text
    assert any("unreadable" in r.getMessage() and "run-00000000T" in r.getMessage() for r in caplog.records)


# --- the workflow: add one file, run again ------------------------------------------------------


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory):
    base = baseline_run(tmp_path_factory)
    work = copy_workdir(base, tmp_path_factory.mktemp("refresh"))
    dry = snakemake(work, "-n")
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, "the copy must be up to date"
    before = store_entries(work)
    inputs = work / "in put ü"
    (inputs / NEW_NAME).write_text(NEW_POSCAR)
    started = time.time()
    res, imported = snakemake_controller_imports(work)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-8000:]
    (work / "refresh.out").write_text(res.stdout + res.stderr)
    return work, base, before, started, imported


def _new_id(work: Path) -> str:
    s = tables.read_table(work / "results/ingest/structures.parquet", tables.STRUCTURES)
    row = s[s["source"].str.endswith(NEW_NAME)]
    assert len(row) == 1 and row["duplicate_of"].isna().all()
    return row["structure_id"].iloc[0]


def _chosen_anew(work: Path, base: Path) -> set[str]:
    """Structures the refreshed run's active-learning round chose that the baseline's had not (its
    model changed with the new label, so its best guesses may too): labeled anew, by design."""
    plan = tables.read_table(work / "results/rounds/1/label/targets.parquet", tables.LABEL_TARGETS)
    old = tables.read_table(base / "results/rounds/1/label/targets.parquet", tables.LABEL_TARGETS)
    return set(plan["structure_id"]) - set(old["structure_id"]) - {_new_id(work)}


@pytest.mark.slow
def test_exactly_one_new_pyscf_calculation(refreshed):
    """One new file, one new round-0 label; nothing labeled before is computed again. (Candidates
    the retrained model's round 1 chooses anew are labeled too, and only those.)"""
    work, base, before, started, _ = refreshed
    new_id = _new_id(work)
    anew = _chosen_anew(work, base)
    added = store_entries(work) - before
    assert sorted(Path(p).stem for p in added) == sorted({new_id} | anew)
    computed = computed_in_logs(work, since=started)
    assert sorted(computed["structures"] + computed["competing"]) == sorted({new_id} | anew)
    labels = tables.read_table(work / "results/label/labels.parquet", tables.LABELS)
    old = tables.read_table(base / "results/label/labels.parquet", tables.LABELS)
    # the checkpoint found every earlier label (and every reference) in the store: they are no jobs,
    # gather read them from the store; the run's DAG held exactly one round-0 label job
    out = (work / "refresh.out").read_text()
    jobs = re.findall(
        r"^(?:local)?rule (label_structure|label_competing|label_reference):\n(?:.*\n)*?\s+output: (\S+)", out, re.M
    )
    assert jobs == [("label_structure", f"results/label/structures/{new_id}.parquet")], jobs
    targets = tables.read_table(work / "results/label/targets.parquet", tables.LABEL_TARGETS).set_index("structure_id")
    assert targets["stored"].to_dict() == {sid: sid != new_id for sid in targets.index}
    refs = tables.read_table(work / "results/label/reference_targets.parquet", tables.REFERENCE_TARGETS)
    assert refs["stored"].all()
    plan = tables.read_table(work / "results/rounds/1/label/targets.parquet", tables.LABEL_TARGETS)
    old_round1 = tables.read_table(base / "results/rounds/1/label/targets.parquet", tables.LABEL_TARGETS)
    assert (
        set(labels["structure_id"])
        == set(plan["structure_id"])
        >= set(old["structure_id"]) - set(old_round1.loc[old_round1["round"] == 1, "structure_id"]) | {new_id}
    )
    assert labels.set_index("structure_id").loc[new_id, "status"] == "ok"


@pytest.mark.slow
def test_the_controller_never_imported_pyscf(refreshed):
    """Resources of the label job came from the checkpoint's table, scaled in the controller without PySCF."""
    work, imported = refreshed[0], refreshed[4]
    assert imported["pyscf"] is False
    out = (work / "refresh.out").read_text()
    assert re.search(r"rule label_structure:\n(?:.*\n)*?\s+resources: .*mem_mb=\d+", out)


@pytest.mark.slow
def test_only_the_new_file_was_read(refreshed):
    work = refreshed[0]
    log = (work / "logs/ingest/ingest.log").read_text()
    assert "3 of 4 files from the cache, 1 read" in log


@pytest.mark.slow
def test_report_says_what_changed(refreshed):
    work, base = refreshed[:2]
    new_id = _new_id(work)
    text = (work / "results/report/summary.md").read_text()
    section = text.split("## Changes since the last run", 1)[1].split("\n## Ingest", 1)[0]
    # the new file's label, plus what the retrained model's round 1 chose anew instead of the baseline's picks
    anew = _chosen_anew(work, base)
    old_labels = set(tables.read_table(base / "results/label/labels.parquet", tables.LABELS)["structure_id"])
    new_labels = set(tables.read_table(work / "results/label/labels.parquet", tables.LABELS)["structure_id"])
    assert "Structures ingested: 1 new, 0 removed" in section
    assert f"PySCF labels: {1 + len(anew)} new, 0 changed, {len(old_labels - new_labels)} no longer selected" in section
    assert new_id in section and NEW_NAME in section
    old_metrics = tables.read_table(base / "results/train/cv_metrics.parquet", tables.CV_METRICS)
    new_metrics = tables.read_table(work / "results/train/cv_metrics.parquet", tables.CV_METRICS)
    for m in ("mae", "n_train"):
        before = old_metrics[(old_metrics["fold"] == "all") & (old_metrics["metric"] == m)]["value"].iloc[0]
        after = new_metrics[(new_metrics["fold"] == "all") & (new_metrics["metric"] == m)]["value"].iloc[0]
        assert f"| {m} | {before:.4g} | {after:.4g} |" in section
    top_n = int(json.loads(sorted((work / "results/history").glob("run-*.json"))[-1].read_text())["top_n"])
    old_top = set(tables.read_table(base / "results/screen/ranked.parquet", tables.PREDICTIONS)["candidate_id"][:top_n])
    new_top = set(tables.read_table(work / "results/screen/ranked.parquet", tables.PREDICTIONS)["candidate_id"][:top_n])
    assert f"{len(new_top - old_top)} entered, {len(old_top - new_top)} left" in section
    for cid in new_top ^ old_top:
        assert cid in section


@pytest.mark.slow
def test_history_keeps_one_snapshot_per_run(refreshed):
    work, base = refreshed[:2]
    runs = history.load_history(work / "results/history")
    assert len(runs) == len(history.load_history(base / "results/history")) + 1
    assert runs[-1]["baseline"] == runs[-2]["run_key"]
    res = snakemake(work, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr


#: Lines of a real Snakemake 9.27 log (a job killed by SIGKILL and retried, then one that failed).
SNAKEMAKE_LOG = """\
RuleException:
CalledProcessError in file "/work/main/workflow/rules/label.smk", line 42:
Command 'set -euo pipefail;  /x/python3 /w/.snakemake/scripts/tmp4y0wui6g.label_structure.py' died with <Signals.SIGKILL: 9>.
[Wed Nov 25 18:01:19 2026]
Error in rule label_structure:
    message: None
    jobid: 18
    input: results/label/targets.parquet
    output: results/label/structures/s-390b304776470e33.parquet
    log: logs/label/structures/s-390b304776470e33.log (check log file(s) for error details)
Trying to restart job 18.
Select jobs to execute...
RuleException:
CalledProcessError in file "/work/main/workflow/rules/featurize.smk", line 18:
Command 'set -euo pipefail;  /x/python3 /w/.snakemake/scripts/tmp_k6xha1i.featurize.py' returned non-zero exit status 1.
[Wed Nov 25 18:02:13 2026]
Error in rule featurize_candidates:
    message: None
    jobid: 9
    input: results/enumerate/candidates/part-0.parquet
    output: results/featurize/candidates/part-0.parquet
    log: logs/featurize/candidates-0.log (check log file(s) for error details)
Exiting because a job execution failed. Look above for error messages
"""


def test_failed_runs_are_recorded_and_listed(tmp_path):
    work = tmp_path / "work"
    (work / "logs/featurize").mkdir(parents=True)
    (work / "logs/featurize/candidates-0.log").write_text("Traceback ...\nValueError: part-0.parquet is broken\n")
    (work / "snakemake.log").write_text(SNAKEMAKE_LOG)
    folder = work / "history"
    first = history.snapshot(**_tables({"s-1": -1.0}, ["c-1"], 0.5), top_n=1, run_key="A")
    history.update(folder, first)
    path = history.record_failure(folder, work / "snakemake.log", workdir=work)
    rec = json.loads(path.read_text())
    assert [j["rule"] for j in rec["failed_jobs"]] == ["featurize_candidates"]
    assert rec["failed_jobs"][0]["cause"] == "exit status 1"
    assert rec["failed_jobs"][0]["log_tail"][-1] == "ValueError: part-0.parquet is broken"
    assert [j["rule"] for j in rec["retried_jobs"]] == ["label_structure"]
    assert "OOM killer" in rec["retried_jobs"][0]["cause"]
    text, _ = history.update(folder, {**first, "run_key": "B"})
    assert "1 failed run(s)" in text and "logs/featurize/candidates-0.log" in text
    assert len(history.load_history(folder)) == 2, "failed runs are never baselines"
