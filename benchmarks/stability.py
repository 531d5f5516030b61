"""Benchmark of stability labels: the cost of competing phases and of the volume fit, per family,
and the reaction energy they give (SrTiO3 from SrO + TiO2, MgAl2O4 from MgO + Al2O3).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stability.py --system sto --relax none [--basis B] [--kmesh 1,1,1] [--store DIR]

One compound per family is labeled through ``matscreen label`` (``label.label_files``): the compound,
the competing binaries the library chooses for its chemical system (``label.competing``), the
elemental references, then the hull. Printed: wall time per structure, the compound's own cost,
the added cost of its competing phases and references (ratio to the compound), and the hull
result (formation energy, decomposition energy, products). Run it with ``--relax none`` and
``--relax volume`` to get the cost factor of the volume fit; both use their own store under
``--store`` (default: a folder under /tmp), so a rerun prints the stored results again at no
cost (wall times are those of the original calculations).
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
    if system == "garnet":
        return Structure.from_file(REPO / "tests/data/structures/garnet/Mg3Al2Si3O12_pyrope_amcsd.cif").get_primitive_structure()
    raise SystemExit(f"unknown --system {system!r} (sto, spinel, garnet)")


def _cpu_s() -> float:
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
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import pandas as pd

    from matscreen import label, tables

    settings = {"relax": args.relax, "store": args.store, "formation_energy_window_ev_per_atom": [-50, 50]}
    if args.basis:
        settings["basis"] = args.basis
    if args.kmesh:
        settings["kpoints"] = {"kmesh": [int(k) for k in args.kmesh.split(",")]}
    kmesh = f"-k{args.kmesh.replace(',', '')}" if args.kmesh else ""
    out = Path(args.store) / f"{args.system}-{args.relax}-{args.basis or 'default'}{kmesh}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    st = compound(args.system)
    tmp_in = out.with_suffix(".json")
    tmp_in.write_text(st.to_json())
    t0, cpu0 = time.perf_counter(), _cpu_s()
    label.label_files([str(tmp_in)], str(out), settings)
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
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
