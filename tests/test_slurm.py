"""The workflow on a real SLURM cluster (single node, started by this test).

Needs root and apt (Debian packages munge, slurm-client, slurmctld, slurmd); skips with the
reason where either is missing. Daemons are stopped afterwards, by pid, but only those this
test started. The SLURM run computes some PySCF labels for real (the rest come from the baseline's
label store) and must produce the same tables as the (shared) local baseline run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from slurm_records import latest_snakemake_log, parse_snakemake_log, slurm_problems
from workflow_utils import ROOT, assert_same_results, baseline_run, copy_workdir, read_config, snakemake

from matscreen import tables

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

START = ROOT / "tests" / "slurm" / "start-local-slurm.sh"
STATE = Path("/run/matscreen-slurm/pids")


def _recorded() -> list[tuple[str, int]]:
    """The "name pid" lines of start-local-slurm.sh; a line without a pid names no daemon this test
    could stop, so it is skipped (as stop-local-slurm.sh skips it)."""
    if not STATE.exists():
        return []
    fields = (line.split() for line in STATE.read_text().splitlines())
    return [(f[0], int(f[1])) for f in fields if len(f) == 2 and f[1].isdigit()]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("starting SLURM needs root")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    before = set(_recorded())
    res = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"could not start SLURM:\n{res.stderr[-3000:]}"
    started = [e for e in _recorded() if e not in before]
    yield
    for name, pid in reversed(started):  # only what this test started, newest first
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith(name[:15]):
                os.kill(pid, 15)
        except (FileNotFoundError, ProcessLookupError):
            pass
    if started:
        STATE.write_text("".join(f"{n} {p}\n" for n, p in _recorded() if (n, p) not in started))


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> Path:
    """The tiny workflow under SLURM, from the inputs, config and label store of the local baseline,
    less the store entries of its cheapest compound, competing phase and element: those three are
    computed again with PySCF in SLURM jobs, the rest come from the store. (Every label from nothing
    a second time, and equal, is test_faults' killed run.)"""
    base = baseline_run(tmp_path_factory)
    work = copy_workdir(base, tmp_path_factory.mktemp("slurm"), results=False)
    store = next((work / read_config(work)["label"]["store"]).iterdir())  # <store>/<settings hash>
    # round 0's (label_structure, label_competing, label_reference); the active-learning round's
    # jobs are other rules (label_structure_round, ...), run under SLURM all the same
    round0 = set(tables.read_table(base / "results/label/targets.parquet", tables.LABEL_TARGETS)["structure_id"])
    elements0 = set(
        tables.read_table(base / "results/label/reference_targets.parquet", tables.REFERENCE_TARGETS)["element"]
    )
    labels = tables.read_table(base / "results/label/labels.parquet", tables.LABELS)
    labels = labels[labels["structure_id"].isin(round0)]
    refs = tables.read_table(base / "results/label/references.parquet", tables.REFERENCES)
    refs = refs[refs["element"].isin(elements0)]
    for origin in ("candidate", "competing"):
        rows = labels[labels["origin"] == origin]
        (store / "structures" / f"{rows.loc[rows['wall_s'].idxmin(), 'structure_id']}.parquet").unlink()
    (store / "references" / f"{refs.loc[refs['wall_s'].idxmin(), 'element']}.parquet").unlink()
    res = snakemake(
        work,
        "--executor",
        "slurm",
        "--jobs",
        "4",
        "--workflow-profile",
        str(ROOT / "workflow" / "profiles" / "slurm"),
        "--default-resources",
        "slurm_partition=debug",
        "mem_mb=1000",
        "runtime=30",
        "--slurm-init-seconds-before-status-checks",
        "2",
        timeout=1500,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-6000:]
    return work


def test_jobs_ran_under_slurm(slurm_run):
    """Every rule that ran (read from the run's own Snakemake log, not a list here) ran as SLURM
    job(s), every job was submitted, and every SLURM job id has the log file SLURM wrote for it."""
    rec = parse_snakemake_log(latest_snakemake_log(slurm_run).read_text())
    ran = rec.rules_ran()
    # a floor on what the parser must find in a run of the whole tiny workflow (not the list checked)
    assert {"ingest", "enumerate", "label_structure", "label_competing", "label_reference", "train", "rank"} <= ran, (
        sorted(ran)
    )
    problems = slurm_problems(rec, slurm_run)
    assert not problems, "\n".join(problems)
    assert rec.rules_under_slurm() == ran


def test_outputs_equal_a_local_run(slurm_run, tmp_path_factory):
    local = baseline_run(tmp_path_factory)
    assert_same_results(slurm_run, local)
