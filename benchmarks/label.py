"""Benchmark of the label stage: wall time and peak memory per structure at the default settings,
and matscreen's overhead against the same PySCF calculation written as a bare script.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label.py [--only sto|spinel] [--repeat N]

Each measurement runs in its own Python process, so peak RSS (``ru_maxrss``) is per
calculation. "matscreen" is ``label.label_structure`` (settings validation and hash, preflight,
ladder bookkeeping, gap, Parquet write to a fresh store and atomic copy); "bare" builds the
identical PySCF objects by hand and calls ``kernel()``. Both report the wall time of the call
(imports excluded) and of the whole process (imports included); the energies must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def structures() -> dict:
    from pymatgen.core import Lattice, Structure

    sto = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                    [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    spinel = Structure.from_spacegroup("Fd-3m:2", Lattice.cubic(8.0806), ["Mg", "Al", "O"],
                                       [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5], [0.2624, 0.2624, 0.2624]])
    return {"sto": sto, "spinel": spinel.get_primitive_structure()}


def run_matscreen(name: str) -> dict:
    from matscreen import label, tables

    st = structures()[name]
    with tempfile.TemporaryDirectory() as tmp:
        settings = {"store": str(Path(tmp) / "store")}
        t = time.perf_counter()
        label.label_structure(st, f"bench-{name}", Path(tmp) / "out.parquet", settings)
        wall = time.perf_counter() - t
        row = tables.read_table(Path(tmp) / "out.parquet", tables.LABELS).iloc[0]
    return {"wall_call_s": wall, "energy_ha": float(row["energy_ha"]), "cycles": int(row["scf_cycles"]),
            "kmesh": row["kmesh"], "status": row["status"]}


def run_bare(name: str) -> dict:
    """The shipped default recipe written out by hand, as a PySCF user would."""
    import math

    from pyscf.pbc import dft, gto, scf

    st = structures()[name]
    t = time.perf_counter()
    cell = gto.Cell()
    cell.unit = "A"
    cell.a = st.lattice.matrix
    cell.atom = [[s.specie.symbol, tuple(s.coords)] for s in st]
    cell.basis = "gth-szv-molopt-sr"
    cell.pseudo = "gth-pade"
    cell.ke_cutoff = 100
    cell.precision = 1e-6
    cell.max_memory = 4000
    cell.verbose = 0
    cell.build()
    kmesh = [max(1, math.ceil(1.2 * b - 1e-9)) for b in st.lattice.reciprocal_lattice.abc]
    mf = dft.KRKS(cell, cell.make_kpts(kmesh)).multigrid_numint()
    mf.xc = "lda,vwn"
    mf = scf.addons.smearing_(mf, sigma=0.01, method="fermi")
    mf.conv_tol = 1e-7
    mf.max_cycle = 50
    e = mf.kernel()
    wall = time.perf_counter() - t
    return {"wall_call_s": wall, "energy_ha": float(e), "cycles": int(mf.cycles), "kmesh": "x".join(map(str, kmesh)),
            "status": "ok" if mf.converged else "failed"}


def child(mode: str, name: str) -> None:
    import resource

    out = run_matscreen(name) if mode == "matscreen" else run_bare(name)
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def measure(mode: str, name: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", mode, name], capture_output=True, text=True, env=env, check=True)
    total = time.perf_counter() - t
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[7:])
    res["wall_process_s"] = total
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["sto", "spinel"], action="append")
    ap.add_argument("--repeat", type=int, default=1, help="measurements per (structure, mode); the minimum is reported")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    names = args.only or ["sto", "spinel"]
    print(f"label benchmark, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, default settings (MG recipe)")
    for name in names:
        best: dict[str, dict] = {}
        for _ in range(args.repeat):
            for mode in ("bare", "matscreen"):  # alternate so machine load hits both alike
                r = measure(mode, name)
                if mode not in best or r["wall_call_s"] < best[mode]["wall_call_s"]:
                    best[mode] = r
        b, m = best["bare"], best["matscreen"]
        n_atoms = len(structures()[name])
        for mode, r in (("bare", b), ("matscreen", m)):
            print(f"{name:7s} {n_atoms:2d} atoms {mode:9s} kmesh {r['kmesh']}  call {r['wall_call_s']:7.1f} s  "
                  f"process {r['wall_process_s']:7.1f} s  peak RSS {r['max_rss_mb']:6.0f} MB  "
                  f"cycles {r['cycles']}  E = {r['energy_ha']:.8f} Ha  {r['status']}")
        print(f"{name:7s} overhead matscreen/bare: call {m['wall_call_s'] / b['wall_call_s']:.3f}x, "
              f"process {m['wall_process_s'] / b['wall_process_s']:.3f}x, RSS {m['max_rss_mb'] / b['max_rss_mb']:.2f}x, "
              f"|dE| = {abs(m['energy_ha'] - b['energy_ha']):.1e} Ha")


if __name__ == "__main__":
    main()
