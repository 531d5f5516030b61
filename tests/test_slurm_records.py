"""The SLURM test's bookkeeping (tests/slurm_records.py) on a recorded-format Snakemake log.

The real check runs in tests/test_slurm.py (needs root and apt); this one pins the parsing and
the comparison on a log written the way Snakemake 9 and snakemake-executor-plugin-slurm write it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_records import parse_snakemake_log, slurm_problems

TS = "[Tue Mar  3 10:00:00 2026]"


def _block(rule: str, jobid: str, output: str | None, indent: str = "", local: bool = False) -> str:
    lines = [TS, f"{'local' if local else ''}rule {rule}:", "    input: a.txt"]
    if output:
        lines.append(f"    output: {output}")
    lines += [f"    jobid: {jobid}", "    reason: Missing output files", "    resources: tmpdir=/tmp"]
    # printshellcmds writes this top-level line even inside a group's listing (seen in a real run)
    return "\n".join(indent + ln for ln in lines) + "\nShell command: None\n"


def _submit(job: str, sid: str, log: Path) -> str:
    return f"{TS}\nJob {job} has been submitted with SLURM jobid {sid} (log: {log}).\n"


def _run(tmp: Path, skip: set[str] = frozenset(), extra_log: bool = False, local_work: bool = False) -> tuple[str, Path]:
    """A Snakemake log of ingest, 2 label_structure jobs, one group of 2 label_reference jobs, train, all."""
    logs = tmp / ".snakemake" / "slurm_logs"
    text = "Building DAG of jobs...\nUsing shell: /usr/bin/bash\nJob stats:\njob    count\n-----  -----\nall  1\n\n"
    plain = [("ingest", "3", "results/ingest/structures.parquet", "101", "rule_ingest"),
             ("label_structure", "7", "results/label/s-1.parquet", "102", "rule_label_structure/structure_id_s-1"),
             ("label_structure", "8", "results/label/s-2.parquet", "103", "rule_label_structure/structure_id_s-2"),
             ("train", "11", "results/model.json", "105", "rule_train")]
    for rule, jobid, out, sid, d in plain:
        text += _block(rule, jobid, out) + f"{TS}\nFinished jobid: {jobid} (Rule: {rule})\n"
        if rule in skip:
            continue
        (logs / d).mkdir(parents=True, exist_ok=True)
        (logs / d / f"{sid}.log").write_text("slurmstepd output\n")
        text += _submit(jobid, sid, logs / d / f"{sid}.log")
    text += f"{TS} Group job references (jobs in lexicogr. order):\n"
    text += _block("label_reference", "9", "results/label/references/O.parquet", indent="    ")
    text += _block("label_reference", "10", "results/label/references/Sr.parquet", indent="    ")
    if "label_reference" not in skip:
        d = logs / "group_references_label_reference"
        d.mkdir(parents=True, exist_ok=True)
        (d / "104.log").write_text("slurmstepd output\n")
        text += _submit("5b1c0e4a-1d2e-5f00-9a9a-0123456789ab", "104", d / "104.log")
    if local_work:
        text += _block("report", "12", "results/report.html", local=True)
    text += _block("all", "0", None, local=True)
    text += "Finished jobid: 0 (Rule: all)\n12 of 12 steps (100%) done\n"
    if extra_log:
        (logs / "rule_rank").mkdir(parents=True, exist_ok=True)
        (logs / "rule_rank" / "199.log").write_text("?\n")
    return text, tmp


def test_a_complete_slurm_run_passes(tmp_path: Path) -> None:
    text, work = _run(tmp_path)
    rec = parse_snakemake_log(text)
    assert rec.rules_ran() == {"ingest", "label_structure", "label_reference", "train"}
    assert rec.rules_under_slurm() == rec.rules_ran()
    assert {j.group for j in rec.jobs if j.rule == "label_reference"} == {"references"}
    assert slurm_problems(rec, work) == []
    assert slurm_problems(rec, work, squeue_ids={"101", "102", "103", "104", "105"}) == []


@pytest.mark.parametrize("skip", ["ingest", "label_structure", "label_reference", "train"])
def test_a_rule_that_ran_without_slurm_is_named(tmp_path: Path, skip: str) -> None:
    text, work = _run(tmp_path, skip={skip})
    problems = slurm_problems(parse_snakemake_log(text), work)
    assert problems and any(skip in p for p in problems), problems


def test_one_job_of_a_rule_missing_is_enough_to_fail(tmp_path: Path) -> None:
    text, work = _run(tmp_path)
    text = text.replace("Job 8 has been submitted with SLURM jobid 103", "Job 88 has been submitted with SLURM jobid 103")
    problems = slurm_problems(parse_snakemake_log(text), work)
    assert any("label_structure job 8 has no SLURM submission" in p for p in problems), problems


def test_every_slurm_id_needs_slurms_record(tmp_path: Path) -> None:
    text, work = _run(tmp_path)
    (work / ".snakemake" / "slurm_logs" / "rule_train" / "105.log").unlink()
    problems = slurm_problems(parse_snakemake_log(text), work)
    assert any("SLURM job 105" in p and "no log file" in p for p in problems), problems
    text, work = _run(tmp_path)
    assert any("'103'" in p for p in slurm_problems(parse_snakemake_log(text), work, squeue_ids={"101", "102", "104", "105"}))


def test_a_quiet_log_cannot_pass(tmp_path: Path) -> None:
    text, work = _run(tmp_path)
    quiet = "\n".join(ln for ln in text.splitlines() if "rule train:" not in ln)
    assert any("rule train job 11 finished but the log does not describe it" in p
               for p in slurm_problems(parse_snakemake_log(quiet), work))


def test_local_work_and_stray_slurm_logs_are_named(tmp_path: Path) -> None:
    text, work = _run(tmp_path, local_work=True)
    assert any("rule report (job 12) ran on the controller" in p for p in slurm_problems(parse_snakemake_log(text), work))
    text, work = _run(tmp_path / "b", extra_log=True)
    assert any("never submitted" in p and "199" in p for p in slurm_problems(parse_snakemake_log(text), work))
