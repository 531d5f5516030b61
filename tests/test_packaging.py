"""Pins agree everywhere; the layout promised in the README exists; the workflow lints clean."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


PYPROJECT = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
LOCK = _pins((ROOT / "requirements.lock").read_text().splitlines())


def test_pyproject_pins_are_in_the_lock():
    for name, version in PYPROJECT.items():
        assert LOCK.get(name) == version, f"{name}: pyproject {version}, requirements.lock {LOCK.get(name)}"


@pytest.mark.parametrize("env", sorted(p.name for p in (ROOT / "envs").glob("*.yaml")))
def test_conda_envs_match_project_pins(env):
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = _pins(pip)
    assert pins, env
    for name, version in pins.items():
        assert LOCK.get(name) == version, f"envs/{env}: {name}=={version}, lock has {LOCK.get(name)}"
    assert "python=3.11" in spec["dependencies"]


def test_every_rule_env_exists():
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for env in re.findall(r'"\.\./\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).exists(), f"{smk.name} names {env}"


def test_installed_versions_are_the_pins():
    for name, version in PYPROJECT.items():
        assert metadata.version(name) == version, name


def test_layout():
    for path in ("Snakefile", "workflow/rules/common.smk", "workflow/schemas/config.schema.yaml", "config/config.yaml",
                 "config/README.md", "README.md", "Makefile", ".ci/run", "pyproject.toml", "requirements.lock"):
        assert (ROOT / path).exists(), path
    for stage in ("ingest", "enumerate", "label", "featurize", "train", "screen", "report"):
        assert (ROOT / "workflow" / "rules" / f"{stage}.smk").exists(), stage
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_wheel_carries_every_subpackage(tmp_path):
    """A wheel (``pip wheel .``, as a cluster install would build) holds every package folder under
    scripts/matscreen; the fixed package list it had before held only matscreen and matscreen.ingest
    (editable installs hid it: label, report, train, ... were missing from the wheel)."""
    import shutil
    import zipfile

    src = tmp_path / "src"  # a clean copy: a build/ folder left by an earlier build would fill the gaps
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "scripts", src / "scripts", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("matscreen-*.whl")
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/__init__.py")}
    want = {str(p.relative_to(ROOT / "scripts")) for p in (ROOT / "scripts" / "matscreen").rglob("__init__.py")}
    assert want <= inside, sorted(want - inside)
    assert len(want) >= 7


def _snakemake(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("snakemake")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_snakemake_lint_is_clean():
    res = _snakemake("--lint")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_default_config_plans():
    res = _snakemake("-n", "-q", "--directory", str(ROOT))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_cli_has_a_subcommand_per_stage():
    exe = Path(sys.executable).with_name("matscreen")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for stage in ("ingest", "enumerate", "label", "featurize", "train", "screen", "report"):
        assert re.search(rf"^\s+{stage}\s", res.stdout, re.M), stage
        sub = subprocess.run([str(exe), stage, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: matscreen " + stage in sub.stdout


def _tool(name: str) -> str:
    """A lint tool of the pinned environment (the venv's, else PATH's); skip, saying so, without it."""
    import shutil

    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (`make install` installs it from requirements.lock)")
    return found


def test_lint_tools_are_pinned_in_the_test_extra_and_the_lock():
    extra = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"])
    for name in ("ruff", "snakefmt", "pytest"):
        assert name in extra and LOCK.get(name) == extra[name], f"{name}: test extra {extra.get(name)}, lock {LOCK.get(name)}"


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["ruff", "format", "--check", "."],
                                     ["snakefmt", "--check", "Snakefile", "workflow"]], ids=" ".join)
def test_tree_is_lint_clean(command):
    """What `make lint` runs besides `snakemake --lint` (tested above), at the pinned versions."""
    exe = _tool(command[0])
    extra = _pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"])
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    if extra[command[0]] not in version:
        pytest.skip(f"{command[0]} {version.strip()} is not the pinned {extra[command[0]]}")
    res = subprocess.run([exe, *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_ci_installs_chromium_like_slurm_then_runs_make_test():
    """apt-get only when the package is missing, only as root, non-interactive; `make test` last."""
    text = (ROOT / ".ci" / "run").read_text()
    install = text.index("apt-get install")
    assert text.index("dpkg-query -W") < text.index('"$(id -u)" -eq 0') < install
    assert text.index("DEBIAN_FRONTEND=noninteractive") < install and "chromium" in text[install:].splitlines()[0]
    assert text.rstrip().splitlines()[-1] == "exec make test"
