"""Faults and reproducibility of the whole workflow (tiny config, real PySCF).

- A second run of the baseline's config from no results, with three PySCF labels missing from
  its label store (a compound, a competing phase and an element's reference: the cheapest of
  each), killed with SIGKILL at several points (during the first PySCF calculation, during
  training, during the report) and resumed with ``snakemake --unlock`` + ``--rerun-incomplete``,
  ends with the same tables as the uninterrupted baseline run; the three recomputed energies are
  the baseline's bit for bit (two independent calculations agree). One label job is also killed
  on its own while in its SCF (what the kernel's OOM killer does to a job over a cgroup/SLURM
  memory limit), and Snakemake retries it with more memory.
- A PySCF calculation that fails is recorded as ``failed`` with the reason; the rest of the
  workflow goes on.
- A corrupt Parquet shard stops only the jobs that read it, with a message naming the file;
  every other result is kept.
- Config values never reach a shell: every rule uses ``script:``.

Columns ignored when comparing tables: ``wall_s`` and ``max_rss_mb`` of labels (timings of a
calculation; equal here anyway for labels copied from the store). Parquet metadata
(provenance) is not compared: it holds package versions and the config hash, equal on one
machine, but it is not the result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_utils import (
    NEW_POSCAR,
    RESULT_TABLES,
    ROOT,
    assert_same_results,
    baseline_run,
    computed_in_logs,
    copy_workdir,
    kill_group,
    read_config,
    session_processes,
    snakemake,
    start_snakemake,
    store_entries,
    table_content,
    wait_until,
    write_config,
)

from matscreen import history, label, tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return baseline_run(tmp_path_factory)


def _cheapest(base: Path, prefix: str) -> str:
    """The label job of the baseline that took the least time (``s-...`` or ``ref-<El>``)."""
    times = {}
    for p in (base / "results/benchmarks/label").glob(f"{prefix}*.tsv"):
        times[p.stem] = float(pd.read_csv(p, sep="\t")["s"].iloc[0])
    return min(times, key=times.__getitem__)


def _text(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


def _store(work: Path) -> Path:
    return work / read_config(work)["label"]["store"]


# --- killed and resumed --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed(tmp_path_factory, base):
    """A second run of the baseline's config (inputs, config and label store copied, no results),
    with the cheapest compound, competing phase and reference removed from the store so that
    their PySCF calculations run again, killed at three points and resumed after each. It is
    both the fault test and the reproducibility test (the recomputed energies against the
    baseline's). Recomputing every label instead would cost a whole baseline's PySCF time
    (about 20 CPU minutes) and test nothing more."""
    root = tmp_path_factory.mktemp("killed")
    work = copy_workdir(base, root, results=False)
    sid = _cheapest(base, "s-")
    competing = _cheapest(base, "competing-").removeprefix("competing-")
    element = _cheapest(base, "ref-").removeprefix("ref-")
    removed = {"structures": [sid], "competing": [competing], "references": [element]}
    for rel in store_entries(work):
        if rel.endswith(
            (f"structures/{sid}.parquet", f"structures/{competing}.parquet", f"references/{element}.parquet")
        ):
            (_store(work) / rel).unlink()
    label_log = work / f"logs/label/structures/{sid}.log"
    events: dict[str, bool] = {}
    outs = [root / f"snakemake-{i}.out" for i in range(4)]
    proc = None

    def in_scf(log: Path) -> bool:
        return "SCF attempt" in _text(log)

    def label_logs() -> list[Path]:
        return sorted((work / "logs/label").glob("*/*.log"))

    try:
        # 1. SIGKILL on the whole process group as soon as the first PySCF calculation is in its SCF
        #    (so it has not finished: it is missing from the store afterwards).
        proc = start_snakemake(work, out=outs[0])
        events["PySCF"] = wait_until(proc, lambda: any(map(in_scf, label_logs()))) and proc.poll() is None
        kill_group(proc)
        in_flight = [p for p in label_logs() if in_scf(p) and "converged after" not in _text(p)]
        stored = "\n".join(store_entries(work))
        events["nothing stored"] = bool(in_flight) and not any(f"/{p.stem}.parquet" in stored for p in in_flight)

        # A killed Snakemake leaves its lock: resuming needs --unlock first (documented procedure).
        locked = snakemake(work, "--rerun-incomplete", "-n")
        events["lock left behind"] = "cannot be locked" in locked.stdout + locked.stderr
        assert snakemake(work, "--unlock").returncode == 0
        for log in in_flight:  # logs of the killed jobs: the waits below must see new ones
            log.unlink(missing_ok=True)

        # 2. The structure's label job alone is killed in its SCF (what the kernel's OOM killer does
        #    to a job over its cgroup memory limit); Snakemake retries it with more memory. Then the
        #    whole group is killed during training.
        proc = start_snakemake(work, "--rerun-incomplete", out=outs[1])
        events["label SCF"] = wait_until(proc, lambda: in_scf(label_log), timeout=1500) and proc.poll() is None
        pids = session_processes(proc, "label_structure.py", open_file=label_log)
        events["label job found"] = len(pids) == 1
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        events["train"] = (
            wait_until(proc, lambda: (work / "logs/train/train.log").exists(), timeout=1500) and proc.poll() is None
        )
        kill_group(proc)
        assert snakemake(work, "--unlock").returncode == 0

        # 3. Killed during the report.
        proc = start_snakemake(work, "--rerun-incomplete", out=outs[2])
        events["report"] = wait_until(proc, lambda: (work / "logs/report/report.log").exists()) and proc.poll() is None
        kill_group(proc)
        assert snakemake(work, "--unlock").returncode == 0
    finally:
        if proc is not None and proc.poll() is None:
            kill_group(proc)

    # 4. Resume to the end.
    final = snakemake(work, "--rerun-incomplete")
    outs[3].write_text(final.stdout + final.stderr)
    assert final.returncode == 0, final.stdout[-5000:] + final.stderr[-8000:]
    return {"work": work, "events": events, "outs": outs, "sid": sid, "element": element, "removed": removed}


def test_every_kill_point_was_reached_while_running(killed):
    assert killed["events"] == {
        "PySCF": True,
        "nothing stored": True,
        "lock left behind": True,
        "label SCF": True,
        "label job found": True,
        "train": True,
        "report": True,
    }


def test_killed_label_job_was_retried_with_more_memory(killed):
    out = killed["outs"][1].read_text()
    sid = killed["sid"]
    assert "Error in rule label_structure" in out
    # Each scheduled job is a "rule <name>:" line (or "localrule") and its indented details; the
    # "Error in rule ..." report of the killed attempt is not a scheduled job.
    jobs = re.findall(r"^(?:local)?rule label_structure:\n((?:    .*\n)+)", out, flags=re.M)
    mems = [
        int(m.group(1)) for job in jobs if f"structures/{sid}.parquet" in job if (m := re.search(r"mem_mb=(\d+)", job))
    ]
    assert len(mems) == 2 and mems[1] > mems[0], mems


def test_killed_job_is_named_with_its_likely_cause(killed):
    out = killed["outs"][1].read_text()
    assert "died with <Signals.SIGKILL: 9>" in out and "Trying to restart job" in out
    jobs = history.failed_jobs(out)
    assert [(j["rule"], j["restarted"]) for j in jobs] == [("label_structure", True)]
    assert jobs[0]["log"] == f"logs/label/structures/{killed['sid']}.log"
    assert "OOM killer" in jobs[0]["cause"] and "mem_mb" in jobs[0]["cause"]


def test_resumed_run_equals_uninterrupted_run(killed, base):
    work = killed["work"]
    assert_same_results(base, work)
    pd.testing.assert_frame_equal(
        pd.read_csv(base / "results/screen/top.csv"), pd.read_csv(work / "results/screen/top.csv")
    )
    assert (base / "results/train/model.json").read_bytes() == (work / "results/train/model.json").read_bytes()


def test_recomputed_pyscf_results_are_identical(killed, base):
    """The labels removed from the store were computed again, each exactly once to the end (the
    others were store hits), and are bit-for-bit the baseline's, so every downstream table can
    be too."""
    work, removed = killed["work"], killed["removed"]
    assert computed_in_logs(work) == removed
    new = tables.read_table(work / "results/label/labels.parquet", tables.LABELS).set_index("structure_id")
    old = tables.read_table(base / "results/label/labels.parquet", tables.LABELS).set_index("structure_id")
    again = removed["structures"] + removed["competing"]
    assert (new.loc[again, "status"] == "ok").all()
    pd.testing.assert_series_equal(new.loc[again, "energy_ha"], old.loc[again, "energy_ha"])
    pd.testing.assert_series_equal(new.loc[again, "scf_cycles"], old.loc[again, "scf_cycles"])
    refs_new = tables.read_table(work / "results/label/references.parquet", tables.REFERENCES).set_index("element")
    refs_old = tables.read_table(base / "results/label/references.parquet", tables.REFERENCES).set_index("element")
    again = removed["references"]
    pd.testing.assert_series_equal(refs_new.loc[again, "energy_per_atom_ha"], refs_old.loc[again, "energy_per_atom_ha"])


# --- a job over its memory limit, every attempt ------------------------------------------------------


@pytest.fixture(scope="module")
def out_of_memory(tmp_path_factory, base):
    """One label job killed by SIGKILL in every attempt, as the OOM killer does to a job whose
    memory need exceeds what even the last retry asks for (measured here: PySCF's max_memory is a
    soft limit, Snakemake does not enforce mem_mb locally, and under ulimit -v PySCF segfaults)."""
    root = tmp_path_factory.mktemp("oom")
    work = copy_workdir(base, root)
    sid = _cheapest(base, "s-")
    target = f"results/label/structures/{sid}.parquet"
    (work / target).unlink()
    for rel in store_entries(work):
        if rel.endswith(f"structures/{sid}.parquet"):
            (_store(work) / rel).unlink()
    retries = int(read_config(work)["label"].get("resources", {}).get("retries", 2))
    log = work / f"logs/label/structures/{sid}.log"
    killed: set[int] = set()
    proc = start_snakemake(work, target, out=root / "snakemake.out")

    def new_attempt() -> bool:
        return bool(set(session_processes(proc, "label_structure.py", open_file=log)) - killed)

    try:
        while wait_until(proc, new_attempt, timeout=120):
            for pid in set(session_processes(proc, "label_structure.py", open_file=log)) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    return work, proc.returncode, (root / "snakemake.out").read_text(), len(killed), retries, sid


def test_job_over_its_memory_ends_in_a_clear_recorded_failure(out_of_memory, base):
    work, rc, out, kills, retries, sid = out_of_memory
    assert rc != 0 and kills == retries + 1
    assert out.count("died with <Signals.SIGKILL: 9>") == retries + 1
    mems = [
        int(m)
        for m in re.findall(
            r"output: results/label/structures/" + sid + r"\.parquet\n(?:.*\n){1,6}?\s+resources:.*?mem_mb=(\d+)", out
        )
    ]
    assert len(mems) == retries + 1 and mems == sorted(mems) and mems[-1] > mems[0], mems
    recorded = sorted((work / "results/history").glob("failed-*.json"))
    assert len(recorded) == 1, "the workflow's onerror handler recorded the failed run"
    rec = json.loads(recorded[0].read_text())
    assert [(j["rule"], j["log"]) for j in rec["failed_jobs"]] == [
        ("label_structure", f"logs/label/structures/{sid}.log")
    ]
    assert "OOM killer" in rec["failed_jobs"][0]["cause"] and len(rec["retried_jobs"]) == retries
    # Nothing else was touched: the other labels, the gathered table and the store are as before.
    assert (work / "results/label/labels.parquet").read_bytes() == (base / "results/label/labels.parquet").read_bytes()
    assert store_entries(work) == {e for e in store_entries(base) if not e.endswith(f"{sid}.parquet")}
    assert not (work / f"results/label/structures/{sid}.parquet").exists()


def _latest_log(work: Path) -> Path:
    return max((work / ".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)


# --- a failing PySCF calculation -----------------------------------------------------------------


@pytest.fixture(scope="module")
def failing(tmp_path_factory, base):
    """The baseline plus a new structure, with SCF settings that cannot converge (one cycle, no
    failure ladder). The label store of the new settings is seeded with the baseline's entries,
    so that only the new structure's SCF runs under them (and fails) while everything else goes on."""
    work = copy_workdir(base, tmp_path_factory.mktemp("failing"))
    cfg = read_config(work)
    old_hash = label.settings_hash(cfg["label"])
    write_config(work, cfg, {"label": {"max_cycle": 1, "failure_ladder": []}})
    new_hash = label.settings_hash(read_config(work)["label"])
    assert new_hash != old_hash
    shutil.copytree(_store(work) / old_hash, _store(work) / new_hash)
    # A converged energy does not depend on max_cycle, so the baseline's entries stand for the new
    # settings; each entry says which settings it belongs to, so say the new ones (train keeps
    # only the labels of the configured settings hash).
    for entry in (_store(work) / new_hash).rglob("*.parquet"):
        table = tables.LABELS if entry.parent.name in ("structures", "competing") else tables.REFERENCES
        tables.write_table(tables.read_table(entry, table).assign(settings_hash=new_hash), entry, table)
    (work / "in put ü" / "BaTiO3 cubic.vasp").write_text(NEW_POSCAR)
    started = time.time()  # the stored labels are no jobs: their logs are the baseline's
    res = snakemake(work)
    return work, res, new_hash, started


def test_failed_scf_is_recorded_and_the_run_goes_on(failing, base):
    work, res, new_hash, started = failing
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-8000:]
    s = tables.read_table(work / "results/ingest/structures.parquet", tables.STRUCTURES)
    new_id = s.loc[s["source"].str.endswith("BaTiO3 cubic.vasp"), "structure_id"].iloc[0]
    assert computed_in_logs(work, since=started) == {"structures": [new_id], "competing": [], "references": []}
    labels = tables.read_table(work / "results/label/labels.parquet", tables.LABELS).set_index("structure_id")
    row = labels.loc[new_id]
    assert row["status"] == "failed" and not row["converged"] and pd.isna(row["energy_ha"])
    assert "SCF failed in all 1 attempts" in row["error"] and "not converged" in row["error"]
    # The good labels are kept and used: same rows as the baseline, the model trained on the same ones.
    old = tables.read_table(base / "results/label/labels.parquet", tables.LABELS).set_index("structure_id")
    pd.testing.assert_frame_equal(
        labels.loc[old.index, ["status", "energy_ha", "formation_energy_ev_per_atom"]],
        old[["status", "energy_ha", "formation_energy_ev_per_atom"]],
    )

    def n_used(work: Path) -> float:
        m = tables.read_table(work / "results/train/cv_metrics.parquet", tables.CV_METRICS)
        return m[(m["fold"] == "all") & (m["metric"] == "n_test")]["value"].iloc[0]

    assert n_used(work) == n_used(base) > 0
    summary = (work / "results/report/summary.md").read_text()
    assert f"{int((old['status'] == 'failed').sum()) + 1} failed" in summary and new_id in summary
    # The failure is in the store too: a rerun with the same settings does not try again.
    entry = _store(work) / new_hash / "structures" / f"{new_id}.parquet"
    assert tables.read_table(entry, tables.LABELS)["status"].iloc[0] == "failed"


# --- a corrupt Parquet shard ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory, base):
    work = copy_workdir(base, tmp_path_factory.mktemp("corrupt"))
    shard = work / "results/enumerate/candidates/part-0.parquet"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    before = {p: p.read_bytes() for p in (work / "results").rglob("*.parquet") if p != shard}
    res = snakemake(work, "--keep-going")
    return work, res, before


CORRUPT_MESSAGE = "results/enumerate/candidates/part-0.parquet: not a readable Parquet file"


def test_corrupt_shard_stops_only_the_jobs_that_read_it(corrupt):
    work, res, _ = corrupt
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert set(re.findall(r"Error in rule (\w+):", out)) == {"featurize_candidates", "select_label_targets"}
    for log in ("logs/featurize/candidates-0.log", "logs/label/select_label_targets.log"):
        assert log in out, "Snakemake's error points at the job's log"


def test_corrupt_shard_message_names_the_file(corrupt):
    work = corrupt[0]
    assert CORRUPT_MESSAGE in _text(work / "logs/label/select_label_targets.log")


def test_corrupt_shard_message_names_the_file_in_featurize(corrupt):
    work = corrupt[0]
    assert "results/enumerate/candidates/part-0.parquet" in _text(work / "logs/featurize/candidates-0.log")


def test_failed_run_is_recorded_in_the_history(corrupt):
    """The workflow's onerror handler (workflow/rules/common.smk) records the failed run."""
    work = corrupt[0]
    folder = work / "results/history"
    recorded = sorted(folder.glob("failed-*.json"))
    assert len(recorded) == 1, "the failed run recorded itself, once"
    rec = json.loads(recorded[0].read_text())
    assert rec["status"] == "failed"
    jobs = {j["rule"]: j for j in rec["failed_jobs"]}
    assert set(jobs) == {"featurize_candidates", "select_label_targets"}
    assert jobs["select_label_targets"]["cause"] == "exit status 1"
    assert any(CORRUPT_MESSAGE in line for line in jobs["select_label_targets"]["log_tail"])
    # The next report lists it.
    previous = history.load_history(folder)[-1]
    text = history.changes_markdown(
        history.diff(previous, previous), previous, folder, history.failures_since(folder, previous["recorded_at"])
    )
    assert "1 failed run(s)" in text and "logs/featurize/candidates-0.log" in text


def test_corrupt_shard_keeps_every_other_result(corrupt, base):
    work, _, before = corrupt
    kept = [p for p, data in before.items() if p.exists() and p.read_bytes() == data]
    for rel in (
        "results/featurize/candidates/part-1.parquet",
        "results/label/labels.parquet",
        "results/enumerate/candidates/part-1.parquet",
    ):
        assert work / rel in kept, rel
    assert store_entries(work) == store_entries(base)


# --- config never reaches a shell -------------------------------------------------------------------


def test_rules_use_scripts_not_shell_commands():
    rules = sorted((ROOT / "workflow/rules").glob("*.smk")) + [ROOT / "Snakefile"]
    n_rules = n_scripts = 0
    for f in rules:
        text = f.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            assert not re.match(r"(shell|run)\s*:", stripped), f"{f.name}:{i}: {stripped} (use script: with params)"
            assert "{config" not in stripped, f"{f.name}:{i}: config interpolated into a string"
        n_rules += len(re.findall(r"^(?:rule|checkpoint)\s+\w+\s*:", text, flags=re.M))
        n_scripts += len(re.findall(r"^\s+script:", text, flags=re.M))
    assert n_rules >= 10
    assert n_scripts == n_rules - 1  # every rule but `all` runs a script


def test_result_tables_listed_for_comparison_exist(base):
    for rel in RESULT_TABLES:
        assert len(table_content(base / "results" / rel, base)) or "next_to_label" in rel, rel
    assert yaml.safe_load((base / "config.yaml").read_text())["ingest"]["inputs"] == ["in put ü"]
