"""Convergence of the plane-wave cutoff per element: binaries' energies, formation energies and
E(V) slopes at several ``label.ke_cutoff`` values, everything else at the default level.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cutoff.py --binaries Mg:2,Na:1,Ca:2:F,Rb:1:O:antifluorite \
        [--cutoffs 100,200,300] [--scales 1.0,0.92] [--jobs 2] [--results cutoff.jsonl]

Each binary ``CATION:OXIDATION[:ANION[:TYPE]]`` (anion O, type the competing-phase library's
best-ranked one by default) is built by ``matscreen.label.competing.build_binary`` and labeled by
``label.compute_label``, its elements' references by ``label.compute_reference``: the pipeline's
own code, without the label store. Every (structure, cutoff) is one task; ``--jobs`` tasks run at
once in separate one-thread processes, so a many-core machine does a whole sweep in minutes.
Each finished task is appended to ``--results`` (JSON lines, one label or reference row each);
tasks already there (same settings hash) are skipped, so an interrupted sweep resumes, and
``--jobs 0`` only prints the report of what is there.

Printed per binary and cutoff: the energy per atom, the formation energy, E(0.92 V) - E(V) per
cell when 0.92 is among ``--scales`` (positive when the built, near-experimental cell is the
lower: a cutoff too low for a hard pseudopotential makes compression look favourable), and the
changes of the energy per atom and of the formation energy against the highest cutoff.
A second table gives each elemental reference's energy per atom against the highest cutoff: for
F the whole error of the fluorides at 100 Ha is the F2 molecule's. Measured (config/README.md,
"Plane-wave cutoff"): MgO's formation energy is -1.45 eV/atom at 100 Ha, -2.64 at 200, -2.60 at
300 and -2.59 at 400 (experiment: -3.12), which is why the default ``ke_cutoff`` is 300.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from stability import cpu_s  # noqa: E402  (benchmarks/ is this script's folder, first on sys.path)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def parse_binary(spec: str) -> tuple[str, int, str, str | None]:
    """``CATION:OXIDATION[:ANION[:TYPE]]`` -> (cation, oxidation, anion, type or None)."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 4:
        raise SystemExit(f"--binaries: {spec!r} is not CATION:OXIDATION[:ANION[:TYPE]]")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "O", parts[3] if len(parts) > 3 else None


def settings_for(cutoff: float) -> dict:
    """The default label section at ``cutoff`` (Ha); the formation-energy window is opened wide
    so that an unconverged cutoff's implausible value is still printed."""
    return {"ke_cutoff": float(cutoff), "formation_energy_window_ev_per_atom": [-50, 50]}


def binary_structure(spec: str, scale: float = 1.0):
    from matscreen.label.competing import build_binary, ranked_types
    from matscreen.label.eos import scaled

    cation, oxidation, anion, kind = parse_binary(spec)
    kind = kind or ranked_types(cation, oxidation, anion)[0].name
    cell = build_binary(kind, cation, oxidation, anion)
    return kind, scaled(cell, cell.volume * scale)


def task_key(task: tuple) -> str:
    from matscreen.label.settings import settings_hash

    kind, name, cutoff, scale = task
    return f"{kind}:{name}:{scale:g}:{settings_hash(settings_for(cutoff))}"


def run_task(task: tuple) -> dict:
    """One label (kind ``binary``) or reference row at one cutoff, with the CPU seconds it took."""
    from matscreen.label import compute_label, compute_reference

    kind, name, cutoff, scale = task
    cpu0 = cpu_s()
    settings = settings_for(cutoff)
    if kind == "binary":
        structure_type, structure = binary_structure(name, scale)
        row = compute_label(structure, f"{name}-{structure_type}-{scale:g}", settings)
        row["structure_type"] = structure_type
    else:
        row = compute_reference(name, settings)
    row.update(task=task_key(task), kind=kind, name=name, ke_cutoff=float(cutoff), scale=scale, cpu_s=cpu_s() - cpu0)
    return {k: v for k, v in row.items() if k not in ("structure", "volume_scan")}


def elements_of(binaries: list[str]) -> list[str]:
    return sorted({el.symbol for spec in binaries for el in binary_structure(spec)[1].composition.elements})


def tasks_for(
    binaries: list[str], cutoffs: list[float], scales: list[float], references_only: bool = False
) -> list[tuple]:
    """All tasks, the lower cutoffs first (a sweep cut short still compares the lowest two)."""
    out = []
    for cut in cutoffs:
        out += [("reference", el, cut, 1.0) for el in elements_of(binaries)]
        out += [] if references_only else [("binary", spec, cut, s) for spec in binaries for s in scales]
    return out


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(rows: list[dict], binaries: list[str], cutoffs: list[float]) -> None:
    import pandas as pd

    refs = pd.DataFrame([r for r in rows if r["kind"] == "reference"])
    labels = pd.DataFrame([r for r in rows if r["kind"] == "binary"])
    for r in rows:
        if r.get("status") != "ok":
            print(f"FAILED {r['kind']} {r['name']} at {r['ke_cutoff']:g} Ha: {r.get('error')}")
    if not labels.empty:
        binary_table(labels, refs, binaries, cutoffs)
    if not refs.empty:
        reference_table(refs, elements_of(binaries), cutoffs)


def binary_table(labels, refs, binaries: list[str], cutoffs: list[float]) -> None:
    from pymatgen.core import Composition

    from matscreen.label.gathering import formation_energies
    from matscreen.label.pyscf import HARTREE_EV

    labels["formation"] = formation_energies(labels, refs) if not refs.empty else float("nan")
    print(
        "| binary | ke_cutoff (Ha) | E per atom (Ha) | formation (eV/atom) | E(0.92V)-E(V) (mHa/cell) "
        "| dE per atom vs its highest cutoff (meV) | d formation vs its highest cutoff (meV/atom) | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec in binaries:
        mine = labels[(labels["name"] == spec) & (labels["status"] == "ok")]
        at = {(r.ke_cutoff, r.scale): r for r in mine.itertuples() if r.ke_cutoff in cutoffs}
        top = max((c for c, s in at if s == 1.0), default=None)
        ref_row = at.get((top, 1.0))
        for cut in cutoffs:
            r = at.get((cut, 1.0))
            if r is None:
                continue
            e_atom = r.energy_ha / r.nsites
            comp = at.get((cut, 0.92))
            slope = f"{1000 * (comp.energy_ha - r.energy_ha):+.1f}" if comp is not None else ""
            d_e = d_f = ""
            if ref_row is not None and cut != top:
                d_e = f"{1000 * HARTREE_EV * (e_atom - ref_row.energy_ha / ref_row.nsites):+.0f}"
                if not (math.isnan(r.formation) or math.isnan(ref_row.formation)):
                    d_f = f"{1000 * (r.formation - ref_row.formation):+.0f}"
            name = f"{Composition(r.formula).reduced_formula} ({r.structure_type})"
            print(f"| {name} | {cut:g} | {e_atom:.6f} | {r.formation:.3f} | {slope} | {d_e} | {d_f} | {r.cpu_s:.0f} |")


def reference_table(refs, elements: list[str], cutoffs: list[float]) -> None:
    from matscreen.label.pyscf import HARTREE_EV

    print("\n| reference | phase | E per atom minus that at its highest cutoff (meV) | CPU s, per cutoff |")
    print("|---|---|---|---|")
    ok = refs[(refs["status"] == "ok") & refs["element"].isin(elements)]
    for element, mine in ok.groupby("element"):
        at = {r.ke_cutoff: r for r in mine.itertuples() if r.ke_cutoff in cutoffs}
        top = max(at)
        e_top = at[top].energy_per_atom_ha
        diffs = ", ".join(
            f"{c:g}: {1000 * HARTREE_EV * (at[c].energy_per_atom_ha - e_top):+.0f}" for c in sorted(at) if c != top
        )
        cpus = ", ".join(f"{c:g}: {at[c].cpu_s:.0f}" for c in sorted(at))
        print(f"| {element} | {at[top].reference} | {diffs} | {cpus} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binaries", required=True, help="comma-separated CATION:OXIDATION[:ANION[:TYPE]]")
    ap.add_argument("--cutoffs", default="100,200,300", help="ke_cutoff values in Ha, comma-separated")
    ap.add_argument("--scales", default="1.0", help="volume scale factors of each binary (1.0,0.92 adds the slope)")
    ap.add_argument("--jobs", type=int, default=1, help="tasks at once, one thread each (0: report only)")
    ap.add_argument("--references-only", action="store_true", help="only the elemental references of the binaries")
    ap.add_argument("--results", default="cutoff.jsonl", help="JSON-lines file of finished tasks (resumable)")
    args = ap.parse_args()

    binaries = [b for b in args.binaries.split(",") if b]
    cutoffs = [float(c) for c in args.cutoffs.split(",")]
    scales = [float(s) for s in args.scales.split(",")]
    results = Path(args.results)
    done = {r["task"] for r in read_results(results)}
    todo = [t for t in tasks_for(binaries, cutoffs, scales, args.references_only) if task_key(t) not in done]
    if args.jobs > 0 and todo:
        print(f"{len(todo)} tasks on {args.jobs} processes ({len(done)} already in {results})", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool, results.open("a") as fh:
            futures = {pool.submit(run_task, t): t for t in todo}
            for fut in as_completed(futures):
                row = fut.result()
                fh.write(json.dumps(row, default=str) + "\n")
                fh.flush()
                print(
                    f"{row['kind']} {row['name']} at {row['ke_cutoff']:g} Ha: {row['status']} in {row['cpu_s']:.0f} CPU s",
                    flush=True,
                )
    report(read_results(results), binaries, cutoffs)


if __name__ == "__main__":
    main()
