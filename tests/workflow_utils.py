"""Helpers for tests that run the whole workflow in a temporary working directory.

One complete run of the tiny config (:func:`baseline_run`, about 2.5 minutes, mostly PySCF) is
made once per pytest session and shared by every workflow-level test: tests copy it
(:func:`copy_workdir`, modification times kept, so Snakemake sees it up to date) or copy its
filled label store, and never change it in place.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "structures"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

#: A structure to drop into a tiny workdir's input folder: cubic BaTiO3 at a = 4.00 Å as a POSCAR.
#: Its elements already have references, and it is not a duplicate of the tetragonal (P4mm)
#: BaTiO3 already there (another space group), so it gets exactly one new label.
NEW_POSCAR = """BaTiO3 cubic a = 4.00 A
1.0
4.00 0.00 0.00
0.00 4.00 0.00
0.00 0.00 4.00
Ba Ti O
1 1 3
direct
0.0 0.0 0.0
0.5 0.5 0.5
0.5 0.5 0.0
0.5 0.0 0.5
0.0 0.5 0.5
"""


#: Columns that legitimately differ between two runs of the same calculation (``stored``: whether
#: the label store already held a target's label when the targets were chosen; ``label_cpu_hours``
#: of the rounds table: measured wall times).
VOLATILE_COLUMNS = {"wall_s", "max_rss_mb", "stored", "label_cpu_hours"}


def _argv(workdir: Path, args: tuple[str, ...], cores: int) -> list[str]:
    """The repository's Snakefile run in ``workdir`` with ``workdir/config.yaml``."""
    return [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        str(cores),
        *args,
    ]


def snakemake(workdir: Path, *args: str, timeout: int = 1200, cores: int = 2) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with ``workdir/config.yaml``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        _argv(workdir, args, cores),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def make_workdir(root: Path, overrides: dict | None = None) -> Path:
    """A workdir with the tiny config and an input folder whose name has a space and a non-ASCII letter.

    ``ingest.inputs`` is relative to the workdir (Snakemake runs with ``-d workdir``), so a copy
    of the workdir reads its own inputs and ``source`` columns compare equal between workdirs.
    """
    work = root / "run"
    inputs = work / "in put ü"
    inputs.mkdir(parents=True)
    shutil.copy(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json", inputs / "SrTiO3 cubic.json")
    shutil.copy(DATA / "perovskite" / "BaTiO3_P4mm_pyxtal_BTO.cif", inputs / "BaTiO3_tétragonal.cif")
    (inputs / "broken.cif").write_text("data_broken\n_cell_length_a 3.9\n_atom_site_label\n")
    cfg = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
    cfg["ingest"]["inputs"] = [inputs.name]
    write_config(work, cfg, overrides)
    return work


def write_config(work: Path, cfg: dict, overrides: dict | None = None) -> None:
    """Write ``cfg`` with ``overrides`` (section -> dict merged one level deep, or a value) to work/config.yaml."""
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values) if isinstance(values, dict) else cfg.__setitem__(section, values)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))


def read_config(work: Path) -> dict:
    return yaml.safe_load((work / "config.yaml").read_text())


_BASELINE: dict[str, Path | str] = {}


def baseline_run(tmp_path_factory) -> Path:
    """The workdir of one complete, uninterrupted run of the tiny config, made once per session.

    Never modify it: copy it with :func:`copy_workdir` or copy its label store. A failed baseline
    is not retried: every later test that needs it fails at once with the first failure's output
    (a retry would cost another whole run per test module and fail the same way). Under
    pytest-xdist (``make test``) the workers of one session share it: the first that needs it runs
    it under a file lock in their common temporary folder, the others wait and read it.
    """
    if "work" not in _BASELINE and "failed" not in _BASELINE:
        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent  # .../pytest-N/ holds popen-gw0/, popen-gw1/: one per session
        shared = root / "shared-baseline"
        with open(root / "shared-baseline.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            done, failed = root / "shared-baseline.done", root / "shared-baseline.failed"
            if not done.exists() and not failed.exists():
                shutil.rmtree(shared, ignore_errors=True)  # a worker killed mid-run leaves a partial one
                res = snakemake(make_workdir(shared))
                if res.returncode != 0:
                    failed.write_text(res.stdout[-5000:] + res.stderr[-8000:])
                else:
                    done.touch()
            if failed.exists():
                _BASELINE["failed"] = failed.read_text()
            else:
                _BASELINE["work"] = shared / "run"
    if "failed" in _BASELINE:
        raise AssertionError(f"the shared baseline run failed:\n{_BASELINE['failed']}")
    return Path(_BASELINE["work"])


def copy_workdir(src: Path, root: Path, *, results: bool = True) -> Path:
    """A copy of workdir ``src`` at ``root/run`` with modification times kept.

    With ``results=False`` only the inputs, the config and the label store are copied (a fresh
    run that computes no label twice); otherwise everything, including Snakemake's metadata,
    so Snakemake sees the copy as up to date.
    """
    dst = root / "run"
    if results:
        shutil.copytree(src, dst, symlinks=True)
    else:
        dst.mkdir(parents=True)
        for name in ("config.yaml",):
            shutil.copy2(src / name, dst / name)
        cfg = read_config(src)
        for entry in cfg["ingest"]["inputs"]:
            shutil.copytree(src / entry, dst / entry, symlinks=True)
        store = cfg["label"]["store"]
        if (src / store).exists():
            shutil.copytree(src / store, dst / store)
    return dst


def store_entries(work: Path) -> set[str]:
    """Label store entries (``<settings_hash>/<kind>/<key>.parquet``) of a workdir."""
    store = work / read_config(work)["label"]["store"]
    return {str(p.relative_to(store)) for p in store.rglob("*.parquet")}


def computed_in_logs(work: Path, since: float = 0.0) -> dict[str, list[str]]:
    """Which label jobs computed with PySCF rather than copying a store hit (logs written after ``since``).

    matscreen.label.jobs logs ``computing label`` / ``computing reference`` on a miss and ``store hit`` on
    a hit; Snakemake removes a job's log before running it, so a log describes the job's latest
    run, and ``since`` (a ``time.time()``) leaves out jobs that did not run again.
    """
    out: dict[str, list[str]] = {"structures": [], "competing": [], "references": []}
    for kind, marker in (
        ("structures", "computing label"),
        ("competing", "computing label"),
        ("references", "computing reference"),
    ):
        # round 0's jobs log under logs/label/, later active-learning rounds' under logs/rounds/<r>/label/
        logs = [*(work / "logs" / "label" / kind).glob("*.log"), *(work / "logs" / "rounds").glob(f"*/label/{kind}/*.log")]
        for log in sorted(logs):
            if log.stat().st_mtime >= since and marker in log.read_text(errors="replace"):
                out[kind].append(log.stem)
    return out


def start_snakemake(workdir: Path, *args: str, out: Path, cores: int = 2) -> subprocess.Popen:
    """Start Snakemake in its own session (process group = its pid), output to ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fh = open(out, "a")  # noqa: SIM115 - closed by the child's exit; the test reads the file
    return subprocess.Popen(
        _argv(workdir, args, cores),
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 600, poll: float = 0.02) -> bool:
    """Poll ``condition`` until it holds (True) or ``proc`` ends or the time is up (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL Snakemake's whole process group (the controller and every job it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def session_processes(proc: subprocess.Popen, needle: str, open_file: Path | None = None) -> list[int]:
    """Pids of processes in ``proc``'s session (so: started by it) whose command line contains
    ``needle`` and, if given, that hold ``open_file`` open (a job's log tells jobs of one rule apart)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getsid(int(d.name)) != proc.pid:
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if needle not in cmd:
                continue
            if open_file is not None:
                target = str(open_file.resolve())
                if not any(os.readlink(fd) == target for fd in (d / "fd").iterdir()):
                    continue
        except (OSError, ProcessLookupError):
            continue
        out.append(int(d.name))
    return out


#: Result tables compared between runs (path under results/).
RESULT_TABLES = (
    "ingest/structures.parquet",
    "ingest/rejects.parquet",
    "enumerate/candidates/part-0.parquet",
    "enumerate/candidates/part-1.parquet",
    "enumerate/funnel.parquet",
    "label/targets.parquet",
    "label/labels.parquet",
    "label/references.parquet",
    "featurize/labeled.parquet",
    "featurize/candidates/part-0.parquet",
    "featurize/candidates/part-1.parquet",
    "train/cv_metrics.parquet",
    "train/oof_predictions.parquet",
    "screen/ranked.parquet",
    "screen/next_to_label.parquet",
    "rounds/0/train/cv_metrics.parquet",
    "rounds/1/label/targets.parquet",
    "rounds.parquet",
)


def table_content(path: Path, workdir: Path | None = None) -> pd.DataFrame:
    """A table's content without volatile columns; paths made relative to ``workdir``."""
    df = pd.read_parquet(path).drop(columns=[c for c in VOLATILE_COLUMNS], errors="ignore")
    if workdir is not None and "source" in df.columns:
        df["source"] = [os.path.relpath(p, workdir) if os.path.isabs(p) else p for p in df["source"]]
    return df


def assert_same_results(a: Path, b: Path) -> None:
    """The result tables of two workdirs have equal content."""
    for rel in RESULT_TABLES:
        pd.testing.assert_frame_equal(
            table_content(a / "results" / rel, a), table_content(b / "results" / rel, b), obj=rel
        )


#: Runs Snakemake's command line in this process and reports at exit which heavy packages the
#: controller imported (a job runs in its own process, so this is the controller alone).
_CONTROLLER_IMPORTS = """\
import atexit, sys
atexit.register(lambda: sys.stderr.write("\\nCONTROLLER_IMPORTS pyscf=%s pymatgen=%s\\n"
                                         % ("pyscf" in sys.modules, "pymatgen.core" in sys.modules)))
from snakemake.cli import main
sys.argv = ["snakemake"] + sys.argv[1:]
sys.exit(main())
"""


def snakemake_controller_imports(
    workdir: Path, *args: str, timeout: int = 1200
) -> tuple[subprocess.CompletedProcess, dict[str, bool]]:
    """Like :func:`snakemake`, and which of PySCF and pymatgen the Snakemake controller imported."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _CONTROLLER_IMPORTS, *_argv(workdir, args, cores=2)[1:]],  # [1:]: not the snakemake executable
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("CONTROLLER_IMPORTS ")][-1]
    flags = dict(kv.split("=") for kv in line.split()[1:])
    return res, {k: v == "True" for k, v in flags.items()}
