"""What a Snakemake run on SLURM did, read back from its own records.

The Snakemake log (``.snakemake/log/*.snakemake.log``) lists every job it ran (``rule X:`` /
``checkpoint X:`` with ``jobid: N``; ``localrule``/``localcheckpoint`` for jobs it ran itself;
jobs of a group under ``Group job G (jobs in lexicogr. order):``), and the SLURM executor plugin
logs one line per submission: ``Job N has been submitted with SLURM jobid 123 (log: .../123.log).``
(N is the group job's id for a group). SLURM itself writes each job's output to that log file
(``sbatch --output``), kept by the profile (``slurm-keep-successful-logs``).

:func:`slurm_problems` compares the two: the rules that ran must be exactly the rules with a SLURM
job, every job must have been submitted, every SLURM job id must have SLURM's log file, and
nothing but rules without outputs (the ``all`` target) may run on the controller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_TIMESTAMP = r"\[[^\]]+\]"
_JOB = re.compile(r"^(?P<indent>\s*)(?P<local>local)?(?:rule|checkpoint) (?P<rule>[A-Za-z_][\w]*):\s*$")
_ITEM = re.compile(r"^\s+(?P<key>jobid|output): ?(?P<value>.*)$")
_GROUP = re.compile(rf"^(?:{_TIMESTAMP} )?Group job (?P<group>\S+) \(jobs in lexicogr\. order\):")
_GROUP_END = re.compile(r"^(?:\[|(?:local)?(?:rule|checkpoint) |Select jobs|Execute |Job |Finished|\d+ of \d+ steps)")
_FINISHED = re.compile(r"Finished jobid: (?P<job>\S+) \(Rule: (?P<rule>[\w]+)\)")
_SUBMIT = re.compile(r"Job (?P<job>\S+) has been submitted with SLURM jobid (?P<slurm>\S+) \(log: (?P<log>.+?)\)\.?\s*$")


@dataclass
class Job:
    rule: str
    jobid: str
    local: bool
    group: str | None = None
    has_output: bool = False


@dataclass
class RunRecord:
    jobs: list[Job] = field(default_factory=list)
    #: (snakemake job id or group job id, SLURM job id, SLURM log file) per submission
    submissions: list[tuple[str, str, Path]] = field(default_factory=list)
    #: (job id, rule) of every "Finished jobid: N (Rule: X)" line (written even with --quiet rules)
    finished: list[tuple[str, str]] = field(default_factory=list)

    def rules_ran(self) -> set[str]:
        """Rules with at least one job that did work (outputs), wherever it ran."""
        return {j.rule for j in self.jobs if not j.local or j.has_output}

    def rules_under_slurm(self) -> set[str]:
        """Rules with a job submitted to SLURM: plain jobs by job id, grouped jobs by their group."""
        submitted = {job for job, _, _ in self.submissions}
        groups = {_group_of_log(log) for _, _, log in self.submissions} - {None}
        out = set()
        for j in self.jobs:
            if j.local:
                continue
            if (j.group is None and j.jobid in submitted) or (j.group is not None and any(
                    g == j.group or g.startswith(j.group + "_") for g in groups)):
                out.add(j.rule)
        return out


def _group_of_log(log: Path) -> str | None:
    """``.../slurm_logs/group_<groupid>_<rules>/...`` -> ``<groupid>_<rules>`` (None for rule_ logs)."""
    for part in log.parts:
        if part.startswith("group_"):
            return part[len("group_"):]
    return None


def parse_snakemake_log(text: str) -> RunRecord:
    rec = RunRecord()
    group: str | None = None
    current: Job | None = None
    for line in text.splitlines():
        if m := _GROUP.match(line):
            group, current = m["group"], None
            continue
        if _GROUP_END.match(line):
            group = None  # a top-level event ends a group's listing ("Shell command: ..." lines do not)
        if m := _JOB.match(line):
            in_group = group if m["indent"] else None
            current = Job(m["rule"], "", bool(m["local"]), in_group)
            rec.jobs.append(current)
            continue
        if current is not None and (m := _ITEM.match(line)):
            if m["key"] == "jobid":
                current.jobid = m["value"].strip()
            elif m["value"].strip():
                current.has_output = True
            continue
        if m := _FINISHED.search(line):
            rec.finished.append((m["job"], m["rule"]))
        if m := _SUBMIT.search(line):
            rec.submissions.append((m["job"], m["slurm"], Path(m["log"].strip())))
        if not line.strip() or line.lstrip().startswith("["):
            current = None
    return rec


def latest_snakemake_log(workdir: Path) -> Path:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    assert logs, f"no Snakemake log under {workdir / '.snakemake' / 'log'}"
    return logs[-1]


def slurm_problems(rec: RunRecord, workdir: Path, squeue_ids: set[str] | None = None) -> list[str]:
    """Everything that says some work did not run as a SLURM job SLURM knows; [] when all is well."""
    problems: list[str] = []
    ran = rec.rules_ran()
    if not ran:
        problems.append("the Snakemake log lists no job at all")
    described = {(j.jobid, j.rule) for j in rec.jobs}
    for jid, rule in rec.finished:
        if (jid, rule) not in described:
            problems.append(f"rule {rule} job {jid} finished but the log does not describe it (run without --quiet rules)")
    for j in rec.jobs:
        if j.local and j.has_output:
            problems.append(f"rule {j.rule} (job {j.jobid}) ran on the controller, not as a SLURM job")
    submitted = {job for job, _, _ in rec.submissions}
    for j in rec.jobs:
        if not j.local and j.group is None and j.jobid not in submitted:
            problems.append(f"rule {j.rule} job {j.jobid} has no SLURM submission")
    groups = {j.group for j in rec.jobs if j.group is not None and not j.local}
    for g in sorted(groups):
        if not any((_group_of_log(log) or "").startswith(g + "_") or _group_of_log(log) == g
                   for _, _, log in rec.submissions):
            problems.append(f"group {g} ({sorted({j.rule for j in rec.jobs if j.group == g})}) has no SLURM submission")
    under = rec.rules_under_slurm()
    if ran != under:
        problems.append(f"rules that ran {sorted(ran)} != rules with SLURM jobs {sorted(under)}")
    slurm_ids = [s for _, s, _ in rec.submissions]
    for job, sid, log in rec.submissions:
        if not sid.isdigit():
            problems.append(f"job {job}: SLURM job id {sid!r} is not a number")
        path = log if log.is_absolute() else workdir / log
        if path.name != f"{sid}.log":
            problems.append(f"job {job}: SLURM log {path} is not named after SLURM job {sid}")
        if not path.is_file():
            problems.append(f"SLURM job {sid} (job {job}) left no log file at {path}: SLURM has no record of it")
    on_disk = {p.stem for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    unknown = on_disk - set(slurm_ids)
    if unknown:
        problems.append(f"SLURM logs of jobs the Snakemake log never submitted: {sorted(unknown)}")
    if squeue_ids is not None:
        missing = sorted(set(slurm_ids) - squeue_ids)
        if missing:
            problems.append(f"SLURM job ids not in squeue/sacct: {missing}")
    return problems
