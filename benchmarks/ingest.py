"""Benchmark of the ingest stage: files per second over a folder of a few hundred files.

The folder is generated from the real files in ``tests/data/structures`` into a temporary
directory: verbatim copies (duplicates), POSCAR and JSON rewrites, randomly displaced copies
(new structures, same family) and a few bad files, so every path through ``ingest`` is taken.

Usage::

    .venv/bin/python benchmarks/ingest.py [N_FILES]        # default 300

Prints files/s for the default settings, without the StructureMatcher confirmation, and
without de-duplication, plus the per-file recognition time (topology alone vs topology +
StructureMatcher) on each real file.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from pymatgen.core import Structure  # noqa: E402
from pymatgen.io.cif import CifParser  # noqa: E402
from pymatgen.io.vasp import Poscar  # noqa: E402

from matscreen.ingest import ingest  # noqa: E402
from matscreen.ingest.recognize import recognize  # noqa: E402

DATA = ROOT / "tests" / "data" / "structures"


def _load(path: Path) -> Structure:
    if path.suffix == ".json":
        return Structure.from_file(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser(path).parse_structures(primitive=False)[0]


def make_folder(dest: Path, n_files: int, seed: int = 0) -> None:
    """Fill ``dest`` with ``n_files`` files derived from the real ones."""
    rng = random.Random(seed)
    real = sorted(p for p in DATA.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    structures = {p: _load(p) for p in real}
    ordered = [p for p, s in structures.items() if s.is_ordered]
    for i in range(n_files):
        kind = rng.choice(["copy", "copy", "poscar", "json", "perturbed", "perturbed", "bad"])
        src = rng.choice(real if kind == "copy" else ordered)
        s = structures[src].copy()
        stem = f"{i:04d}_{src.stem}"
        if kind == "copy":
            shutil.copy(src, dest / f"{stem}{src.suffix}")
        elif kind == "poscar":
            (dest / f"{stem}.vasp").write_text(Poscar(s).get_str())
        elif kind == "json":
            (dest / f"{stem}.json").write_text(json.dumps(s.as_dict()))
        elif kind == "perturbed":
            s.perturb(0.05 + 0.1 * rng.random())
            s.apply_strain([rng.uniform(-0.03, 0.03) for _ in range(3)])
            (dest / f"{stem}_p.json").write_text(json.dumps(s.as_dict()))
        else:
            text = src.read_text()
            (dest / f"{stem}_bad.cif").write_text(text[: rng.randrange(len(text) // 2)])


def timed_ingest(folder: Path, settings: dict) -> tuple[float, int, int, int]:
    t0 = time.perf_counter()
    structures, rejects = ingest([str(folder)], settings)
    dt = time.perf_counter() - t0
    return dt, len(structures), int(structures["duplicate_of"].notna().sum()), len(rejects)


def main() -> None:
    n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(f"cores visible: {os.cpu_count()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("\nrecognition per real file (s): topology only | topology + StructureMatcher")
    for p in sorted(DATA.rglob("*")):
        if not p.is_file() or p.name == "SOURCES.md":
            continue
        s = _load(p)
        t0 = time.perf_counter()
        fam = recognize(s, confirm_with_matcher=False).family
        t1 = time.perf_counter()
        recognize(s, confirm_with_matcher=True)
        t2 = time.perf_counter()
        print(f"  {p.name:50s} {len(s):4d} sites  {fam:11s} {t1 - t0:7.3f} | {t2 - t1:7.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_folder(folder, n_files)
        print(f"\ningest of {n_files} generated files in one folder:")
        runs = {
            "default settings": {},
            "no StructureMatcher confirmation": {"recognition": {"confirm_with_matcher": False}},
            "no de-duplication": {"dedupe": {"enabled": False}},
        }
        base = None
        for name, settings in runs.items():
            dt, kept, dups, rej = timed_ingest(folder, settings)
            base = base or dt
            print(f"  {name:34s} {dt:7.1f} s  {n_files / dt:6.1f} files/s  (x{base / dt:.2f} vs default)  rows {kept}, duplicates {dups}, rejects {rej}")


if __name__ == "__main__":
    main()
