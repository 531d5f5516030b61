"""Helpers for tests that run the whole workflow in a temporary working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "structures"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

#: Columns that legitimately differ between two runs of the same calculation.
VOLATILE_COLUMNS = {"wall_s", "max_rss_mb"}


def snakemake(workdir: Path, *args: str, timeout: int = 1200, cores: int = 2) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with ``workdir/config.yaml``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--configfile", str(workdir / "config.yaml"),
         "--cores", str(cores), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def make_workdir(root: Path, overrides: dict | None = None) -> Path:
    """A workdir with the tiny config and an input folder whose name has a space and a non-ASCII letter."""
    work = root / "run"
    inputs = work / "in put ü"
    inputs.mkdir(parents=True)
    shutil.copy(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json", inputs / "SrTiO3 cubic.json")
    shutil.copy(DATA / "perovskite" / "BaTiO3_P4mm_pyxtal_BTO.cif", inputs / "BaTiO3_tétragonal.cif")
    (inputs / "broken.cif").write_text("data_broken\n_cell_length_a 3.9\n_atom_site_label\n")
    cfg = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
    cfg["ingest"]["inputs"] = [str(inputs)]
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values) if isinstance(values, dict) else cfg.__setitem__(section, values)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


#: Result tables compared between runs (path under results/).
RESULT_TABLES = (
    "ingest/structures.parquet", "ingest/rejects.parquet", "enumerate/candidates/part-0.parquet",
    "enumerate/candidates/part-1.parquet", "enumerate/funnel.parquet", "label/targets.parquet",
    "label/labels.parquet", "label/references.parquet", "featurize/labeled.parquet",
    "featurize/candidates/part-0.parquet", "featurize/candidates/part-1.parquet", "train/cv_metrics.parquet",
    "train/oof_predictions.parquet", "screen/ranked.parquet", "screen/next_to_label.parquet",
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
        pd.testing.assert_frame_equal(table_content(a / "results" / rel, a), table_content(b / "results" / rel, b),
                                      obj=rel)
