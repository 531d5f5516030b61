"""Record real PySCF results for the ``replay_scf`` fixture (tests/conftest.py).

    OMP_NUM_THREADS=1 PYTHONPATH=scripts .venv/bin/python tests/data/replay/record.py

Runs :func:`matscreen.label.pyscf.run_scf` for real on each case below and writes every field
of its :class:`~matscreen.label.pyscf.SCFResult` (except the density matrix) to ``scf.json``,
keyed ``<structure_id>|<kmesh>|<volume>`` (:func:`replay_key`). The cases are the cells the plumbing tests label: PySCF's own
regression cell (diamond primitive, ``tests/test_label.py``'s ``PYSCF_DIAMOND`` settings at the
Gamma point) and carbon's reference phase under the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "scripts"))

from pymatgen.core import Lattice, Structure  # noqa: E402

from matscreen.ids import structure_id  # noqa: E402
from matscreen.label import cell  # noqa: E402
from matscreen.label import pyscf as engine  # noqa: E402
from matscreen.label.refs import build_reference  # noqa: E402
from matscreen.label.settings import as_settings  # noqa: E402

#: tests/test_label.py PYSCF_DIAMOND at the Gamma point, references at kdensity 0.3
SETTINGS = {
    "xc": "lda,vwn",
    "basis": "gth-szv",
    "pseudo": "gth-pade",
    "mesh": [17, 17, 17],
    "precision": 1e-8,
    "density_fit": "fftdf",
    "smearing": {"width": 0},
    "spin": {"mode": "restricted"},
    "conv_tol": 1e-9,
    "failure_ladder": [],
    "relax": "none",
    "kpoints": {"kmesh": [1, 1, 1], "reference_kdensity": 0.3},
}


def replay_key(structure: Structure, kmesh: list[int]) -> str:
    """``<structure_id>|<kmesh>|<volume>``: structure ids round the lattice (PySCF's diamond and
    carbon's reference phase share one), the volume tells such cells apart."""
    return f"{structure_id(structure)}|{cell.kmesh_str(kmesh)}|{structure.volume:.3f}"


def cases() -> list[tuple[Structure, list[int]]]:
    s = as_settings(SETTINGS)
    lat = Lattice([[0, 1.7834, 1.7834], [1.7834, 0, 1.7834], [1.7834, 1.7834, 0]])
    diamond = Structure(lat, ["C", "C"], [[0, 0, 0], [0.8917, 0.8917, 0.8917]], coords_are_cartesian=True)
    ref = build_reference("C", s.references.file, s.references.box_ang).structure
    return [
        (diamond, cell.kmesh_for(diamond, s)),
        (ref, cell.kmesh_for(ref, s, kdensity=s.kpoints.reference_kdensity)),
    ]


def main() -> None:
    s = as_settings(SETTINGS)
    out = {}
    for st, kmesh in cases():
        res = engine.run_scf(st, s, kmesh=kmesh)
        rec = {k: v for k, v in dataclasses.asdict(res).items() if k != "dm"}
        key = replay_key(st, kmesh)
        out[key] = {"formula": st.composition.formula, "settings": SETTINGS, **rec}
        print(key, st.composition.reduced_formula, res.status, res.energy_ha)
    (HERE / "scf.json").write_text(json.dumps(out, indent=1, sort_keys=True, default=lambda o: o.item()) + "\n")


if __name__ == "__main__":
    main()
