"""Benchmark of stability labels: the cost of competing phases and of the volume fit, per family,
and the reaction energy they give (SrTiO3 from SrO + TiO2, MgAl2O4 from MgO + Al2O3).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system sto --relax none [--basis B] [--kmesh 1,1,1] [--store DIR]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system sto --relax volume --reaction

One compound per family is labeled through ``matscreen label`` (``label.label_files``): the compound,
the competing binaries the library chooses for its chemical system (``label.competing``), the
elemental references, then the hull. Printed: wall time per structure, the compound's own cost,
the added cost of its competing phases and references (ratio to the compound), and the hull
result (formation energy, decomposition energy, products). Run it with ``--relax none`` and
``--relax volume`` to get the cost factor of the volume fit; both use their own store under
``--store`` (default: a folder under /tmp), so a rerun prints the stored results again at no
cost (wall times are those of the original calculations).

``--reaction`` labels only the compound and the binaries of its reaction (SrTiO3 from rock-salt SrO
and rutile or anatase TiO2; MgAl2O4 from MgO and corundum Al2O3) and prints the reaction energy and
the CPU seconds per structure: the check of the volume fit's effect at a fraction of the cost.

``--compound-only`` labels only the compound (any ``--system``, garnet included) and prints its CPU
seconds, SCF count and fit; run it with ``--relax none`` and ``--relax volume`` and the second run
prints the volume fit's cost factor:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system garnet --compound-only --relax none
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system garnet --compound-only --relax volume

The garnet's k-point check: its primitive cell (80 atoms) at Gamma, the default, against its
conventional cell (160 atoms) at Gamma, which samples the primitive zone at Gamma and H:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system garnet --compound-only --kmesh 1,1,1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system garnet-conventional --compound-only --kmesh 1,1,1
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def compound(system: str):
    from pymatgen.core import Lattice, Structure

    if system == "sto":  # cubic SrTiO3 at its experimental lattice parameter
        return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                         [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    if system == "spinel":  # MgAl2O4, experimental a and u (origin choice 2)
        s = Structure.from_spacegroup("Fd-3m:2", Lattice.cubic(8.0806), ["Mg", "Al", "O"],
                                      [[0.125, 0.125, 0.125], [0.5, 0.5, 0.5], [0.2624, 0.2624, 0.2624]])
        return s.get_primitive_structure()
    if system in ("garnet", "garnet-conventional"):
        # pyrope; its conventional cubic cell (160 atoms) at the Gamma point samples the primitive
        # cell's Brillouin zone at Gamma and H: the next mesh after Gamma that fits this machine
        s = Structure.from_file(REPO / "tests/data/structures/garnet/Mg3Al2Si3O12_pyrope_amcsd.cif")
        return s if system == "garnet-conventional" else s.get_primitive_structure()
    raise SystemExit(f"unknown --system {system!r} (sto, spinel, garnet, garnet-conventional)")


#: The reaction each ``--reaction`` run computes: the compound from its binaries, each binary in the
#: library types named (the lowest energy per atom counts), all built by the competing-phase library.
REACTIONS = {
    "sto": {"SrO": ("Sr", 2, ["rock_salt"]), "TiO2": ("Ti", 4, ["rutile", "anatase"])},
    "spinel": {"MgO": ("Mg", 2, ["rock_salt"]), "Al2O3": ("Al", 3, ["corundum"])},
}


def reaction(args, settings: dict) -> None:
    """Label the compound and only the binaries of :data:`REACTIONS` (no other competing phase, no
    elemental reference) and print the reaction energy from the binaries, with CPU seconds per
    structure. Each result is kept as JSON under ``--store`` (a rerun prints it again for free)."""
    import json

    from pymatgen.core import Composition

    from matscreen import label
    from matscreen.label.competing import build_binary
    from matscreen.label.pyscf import HARTREE_EV

    if args.system not in REACTIONS and not args.compound_only:
        raise SystemExit(f"--reaction knows {sorted(REACTIONS)}, not {args.system!r}")
    s = label.resolve_settings(settings)
    cells = {"compound": compound(args.system)}
    for formula, (cation, ox, types) in ({} if args.compound_only else REACTIONS[args.system]).items():
        for t in types:
            cells[f"{formula} {t}"] = build_binary(t, cation, ox, "O")
    cache = cache_path(args, s.hash)
    cache.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(cache.read_text()) if cache.exists() else {}
    for name, st in cells.items():
        if name in done:
            continue
        # a volume scan killed part way resumes from its journal; the journaled points' time counts
        # as their wall time (one thread: about their CPU time)
        journal = cache.with_name(f"{cache.stem}-{name.replace(' ', '_')}.journal.json")
        prior_s = sum(p["result"]["wall_s"] for p in json.loads(journal.read_text())["points"]) if journal.exists() else 0.0
        cpu0 = cpu_s()
        row = label.compute_label(st, name, s, journal=journal)
        if row["status"] != "ok":
            raise SystemExit(f"{name}: {row['status']}: {row['error']}")
        journal.unlink(missing_ok=True)
        done[name] = {"formula": st.composition.reduced_formula, "nsites": len(st), "energy_ha": row["energy_ha"],
                      "cpu_s": cpu_s() - cpu0 + prior_s, "wall_s": row["wall_s"], "volume_ang3": row.get("volume_ang3"),
                      "scfs": len(json.loads(row["volume_scan"])) + 1 if row.get("volume_scan") else 1,
                      "bulk_modulus_gpa": row.get("bulk_modulus_gpa"), "input_volume_ang3": st.volume}
        cache.write_text(json.dumps(done, indent=1))
    per_atom = {n: d["energy_ha"] * HARTREE_EV / d["nsites"] for n, d in done.items()}
    print(f"\nsystem {args.system}, relax {s.relax}, basis {s.basis}, settings {s.hash}")
    for n, d in done.items():
        v0 = d["volume_ang3"]
        fit = f", V0 {v0:.2f} A^3 ({100 * (v0 / d['input_volume_ang3'] - 1):+.1f} %), B0 {d['bulk_modulus_gpa']:.0f} GPa" if v0 and d["bulk_modulus_gpa"] else ""
        print(f"  {n:18s} {d['nsites']:3d} atoms  {per_atom[n]:.5f} eV/atom  {d['cpu_s']:7.1f} CPU s{fit}")
    if args.compound_only:
        other = "none" if s.relax == "volume" else "volume"
        peer = cache_path(args, label.settings_hash({**settings, "relax": other}))
        if peer.exists():
            p = json.loads(peer.read_text())["compound"]
            fit, plain = (done["compound"], p) if s.relax == "volume" else (p, done["compound"])
            print(f"volume fit: {fit['cpu_s']:.0f} against {plain['cpu_s']:.0f} CPU s ({fit['cpu_s'] / plain['cpu_s']:.1f}x), "
                  f"energy lowered by {1000 * (plain['energy_ha'] - fit['energy_ha']) * HARTREE_EV / fit['nsites']:.1f} meV/atom")
        return
    comp = Composition(done["compound"]["formula"])
    total, parts = per_atom["compound"] * comp.num_atoms, []
    for formula, (cation, _ox, _types) in REACTIONS[args.system].items():
        best = min((n for n in done if n.startswith(formula + " ")), key=per_atom.__getitem__)
        binary = Composition(formula)
        units = comp[cation] / binary[cation]  # formula units of the binary per formula unit of the compound
        total -= units * per_atom[best] * binary.num_atoms
        parts.append(f"{units:g} {best}")
    cpu = sum(d["cpu_s"] for d in done.values())
    print(f"reaction energy {comp.reduced_formula} - ({' + '.join(parts)}): {total / comp.num_atoms:+.3f} eV/atom; "
          f"{cpu:.0f} CPU s in all ({done['compound']['cpu_s']:.0f} s the compound)")


def cache_path(args, settings_hash: str) -> Path:
    """The JSON file that keeps a ``--reaction`` (or ``--compound-only``) run's results per structure."""
    return Path(args.store) / f"reaction-{args.system}-{settings_hash}.json"


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (PySCF runs in it, one thread)."""
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="sto")
    ap.add_argument("--relax", default="none", choices=["none", "volume"])
    ap.add_argument("--basis", default=None, help="label.basis (default: the schema's)")
    ap.add_argument("--store", default="/tmp/matscreen-bench-stability")
    ap.add_argument("--kmesh", default=None, help="label.kpoints.kmesh for every cell, e.g. 1,1,1 (Gamma: cheap, "
                    "for the cost factor of the volume fit on large cells); default: the schema's kdensity")
    ap.add_argument("--kdensity", type=float, default=None, help="label.kpoints.kdensity (default: the schema's "
                    "2.0/A): each cell's mesh from the same density, for the k-point convergence of reaction energies")
    ap.add_argument("--no-gamma", action="store_true", help="label.kpoints.with_gamma_point false: meshes shifted "
                    "off Gamma (Monkhorst-Pack)")
    ap.add_argument("--max-extra", type=int, default=None, help="label.volume_scan.max_extra: how far a scan may "
                    "extend past its first points (default: the schema's)")
    ap.add_argument("--ke-cutoff", type=float, default=None, help="label.ke_cutoff in Ha (default: the schema's); "
                    "with multigrid a garnet's SCF costs about the same at 100 and 300 Ha")
    ap.add_argument("--reaction", action="store_true", help="only the compound and the binaries of its reaction "
                    "(REACTIONS; sto, spinel): the reaction energy with CPU seconds per structure")
    ap.add_argument("--compound-only", action="store_true", help="only the compound (any --system): its CPU seconds "
                    "and fit; with both --relax runs done, the volume fit's cost factor")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import pandas as pd

    from matscreen import label, tables

    settings = {"relax": args.relax, "store": args.store, "formation_energy_window_ev_per_atom": [-50, 50]}
    if args.basis:
        settings["basis"] = args.basis
    if args.max_extra is not None:
        settings["volume_scan"] = {"max_extra": args.max_extra}
    if args.ke_cutoff is not None:
        settings["ke_cutoff"] = args.ke_cutoff
    if args.kmesh:
        settings["kpoints"] = {"kmesh": [int(k) for k in args.kmesh.split(",")]}
    if args.kdensity is not None:
        settings.setdefault("kpoints", {})["kdensity"] = args.kdensity
    if args.no_gamma:
        settings.setdefault("kpoints", {})["with_gamma_point"] = False
    if args.reaction or args.compound_only:
        return reaction(args, settings)
    kmesh = f"-k{args.kmesh.replace(',', '')}" if args.kmesh else ""
    out = Path(args.store) / f"{args.system}-{args.relax}-{args.basis or 'default'}{kmesh}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    st = compound(args.system)
    tmp_in = out.with_suffix(".json")
    tmp_in.write_text(st.to_json())
    t0, cpu0 = time.perf_counter(), cpu_s()
    label.label_files([str(tmp_in)], str(out), settings)
    wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    labels = tables.read_table(out, tables.LABELS)
    refs = tables.read_table(label.references_path_for(out), tables.REFERENCES)
    pd.set_option("display.width", 200)
    cols = ["formula", "origin", "prototype", "nsites", "status", "kmesh", "wall_s", "volume_ang3", "formation_energy_ev_per_atom",
            "e_above_hull_ev_per_atom", "decomposition_energy_ev_per_atom", "decomposes_to"]
    print(labels[cols].sort_values(["origin", "formula"]).to_string(index=False))
    print(refs[["element", "reference", "status", "kmesh", "wall_s"]].to_string(index=False))
    own = float(labels.loc[labels["origin"] != "competing", "wall_s"].sum())
    comp = float(labels.loc[labels["origin"] == "competing", "wall_s"].sum())
    ref = float(refs["wall_s"].sum())
    print(f"\nsystem {args.system}, relax {args.relax}, basis {label.resolve_settings(settings).basis}, "
          f"settings {label.settings_hash(settings)}")
    print(f"compound {own:.0f} s; competing phases {comp:.0f} s ({comp / own:.1f}x the compound, "
          f"{int((labels['origin'] == 'competing').sum())} structures); references {ref:.0f} s ({ref / own:.1f}x); "
          f"this run {wall:.0f} s wall, {cpu:.0f} CPU s (store hits cost nothing; CPU s is the honest figure "
          "when other processes share the cores, wall_s above is not)")


if __name__ == "__main__":
    main()
