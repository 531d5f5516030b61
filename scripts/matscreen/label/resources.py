"""Cluster resources of label jobs: estimated once in the checkpoint, scaled per attempt in the rules.

:func:`estimate_resources` builds the PySCF cell (it runs in ``select_label_targets``, which writes
``mem_mb``, ``runtime_min`` and ``threads`` into the targets table); :func:`scale_resources` is all
the Snakemake controller runs, and this module imports nothing heavy at import time (no PySCF,
no pymatgen, no numpy), so ``workflow/rules/common.smk`` may import it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matscreen.label.settings import LabelSettings

#: Seconds per SCF cycle per unit of nspin * nk * nao * ngrid. multigrid: measured (3.5e-7 SrTiO3,
#: 4.6e-7 MgAl2O4, benchmarks/label.py); gdf and fftdf: scaled by the Gamma-point ratios in
#: NOTES.md (gdf 9x, plain FFTDF > 60x slower than multigrid on SrTiO3); rsdf assumed like gdf.
CYCLE_COST = {"multigrid": 4.5e-7, "fftdf": 3.0e-5, "gdf": 4.5e-6, "rsdf": 4.5e-6}

#: Bytes of a label process per FFT mesh point, k-point and spin channel (multigrid; measured,
#: see :func:`estimate_resources`): about 16 complex numbers per point.
GRID_BYTES = 128


def estimate_resources(structure: Structure, settings: LabelSettings) -> dict[str, Any]:
    """``mem_mb``, ``runtime`` (minutes) and ``threads`` for one label job of ``structure``.

    From the cell PySCF would build: atomic orbitals ``nao``, FFT mesh points ``ngrid``,
    k-points ``nk`` and spin channels ``nspin``. Memory = 300 MB (Python + PySCF) +
    :data:`GRID_BYTES` per mesh point, k-point and spin (the density and potential on the mesh)
    + the k-point matrices (40 complex nao x nao per k and spin). Runtime = 30 SCF cycles x
    (0.2 s + c * w), ``w = nspin * nk * nao * ngrid``, c per integral scheme (:data:`CYCLE_COST`).
    Measured peaks (one process each, 1 thread): SrTiO3 2x2x2 343 MB at 100 Ha (model 348),
    MgAl2O4 (14 atoms) 2x2x2 642 MB at 100 Ha (model 453), BaMoO3 2x2x2 558 MB at 300 Ha (model
    560), Mg3Al2Si3O12 (80 atoms, Gamma) 709 MB at 300 Ha (model 793); the earlier
    ``6 bytes * w`` grid term asked 6.9 GB for that garnet. The runtime was fitted at 100 Ha
    (SrTiO3 3.3 s/cycle, MgAl2O4 27-32 s/cycle); at 300 Ha it is generous, about 2x for five-atom
    perovskites (BaLiF3 7.0 s/cycle measured) and 5x for the garnet (88 s/cycle). The 30 cycles
    leave room for the failure ladder's slower attempts. Both are multiplied by
    ``resources.safety`` and floored at ``min_mem_mb`` / ``min_runtime``. The dict also carries
    ``attempt_factor`` for :func:`scale_resources`.
    """
    from matscreen.label import pyscf as engine
    from matscreen.label.settings import as_settings

    s = as_settings(settings)
    r = s.resources
    cell = engine.build_cell(structure, s)
    nao = int(cell.nao_nr())
    ngrid = int(math.prod(int(n) for n in cell.mesh))
    nk = int(math.prod(engine.kmesh_for(structure, s)))
    nspin = 2 if engine.use_unrestricted(structure, s) else 1
    work = nspin * nk * nao * ngrid
    mem = 300 + (GRID_BYTES * nspin * nk * ngrid + nspin * nk * nao**2 * 16 * 40) / 1e6
    seconds = 30 * (0.2 + CYCLE_COST[s.density_fit] * work)
    return {
        "mem_mb": int(max(r.min_mem_mb, math.ceil(mem * r.safety))),
        "runtime": int(max(r.min_runtime, math.ceil(seconds * r.safety / 60))),
        "threads": int(r.threads),
        "attempt_factor": float(r.attempt_factor),
    }


def scale_resources(res: dict[str, Any], attempt: int, attempt_factor: float | None = None) -> dict[str, Any]:
    """Resources for Snakemake retry ``attempt`` (1 = first): memory and runtime times
    ``attempt_factor ** (attempt - 1)`` (the argument, else ``res['attempt_factor']``, else the
    schema default)."""
    factor = attempt_factor or res.get("attempt_factor")
    if not factor:
        from matscreen.label.settings import as_settings

        factor = as_settings({}).resources.attempt_factor
    f = float(factor) ** max(0, int(attempt) - 1)
    out = dict(res)
    out["mem_mb"] = int(math.ceil(res["mem_mb"] * f))
    out["runtime"] = int(math.ceil(res["runtime"] * f))
    return out
