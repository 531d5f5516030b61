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

#: k-points up to which a label's runtime and memory grow in proportion to their number; beyond,
#: each further k-point adds 1/:data:`KPOINT_SLOPE` of one to the runtime and
#: 1/:data:`KPOINT_MEMORY_SLOPE` of one to the grid memory (:func:`kpoint_factor`).
KPOINT_LINEAR_UP_TO = 8
KPOINT_SLOPE = 16
KPOINT_MEMORY_SLOPE = 4


def kpoint_factor(nk: int, slope: float = KPOINT_SLOPE) -> float:
    """How a label's runtime (or, with ``slope`` :data:`KPOINT_MEMORY_SLOPE`, its grid memory)
    grows with its ``nk`` k-points, in units of one k-point's share.

    ``nk`` up to 8 (where :data:`CYCLE_COST` and :data:`GRID_BYTES` were fitted), then
    ``8 + (nk - 8) / slope``: with multigrid, much of a cycle (the density and potential on the
    real-space mesh) does not grow with the k-points. Measured at 300 Ha, one thread:

    - runtime (benchmarks/stability.py --kdensity): SrTiO3 54, 81 and 98 s at 2x2x2, 4x4x4 and
      5x5x5 (1.5x and 1.8x; slope 16 gives 1.44x and 1.9x), SrO 50, 79 and 130 s at 3x3x3, 5x5x5
      and 7x7x7 (1.6x and 2.6x; 1.66x and 3.1x);
    - peak memory (the demo's labels at kdensity 2.0): BaO 4x4x4 526 MB (model with slope 4: 882),
      KCaF3 3x3x3 570 (893), CaF2 4x4x4 640 (947), CaO 5x5x5 764 (1017), NaF 5x5x5 781 (939);
      with the runtime's slope 16 the model fell short of CaO and NaF.
    """
    nk = int(nk)
    if nk <= KPOINT_LINEAR_UP_TO:
        return float(nk)
    return KPOINT_LINEAR_UP_TO + (nk - KPOINT_LINEAR_UP_TO) / slope


#: Bytes of a label process per FFT mesh point, spin channel and k-point up to 8 (multigrid; measured,
#: see :func:`estimate_resources`; beyond 8 k-points :func:`kpoint_factor`): about 16 complex numbers per point.
GRID_BYTES = 128


def estimate_resources(structure: Structure, settings: LabelSettings) -> dict[str, Any]:
    """``mem_mb``, ``runtime`` (minutes) and ``threads`` for one label job of ``structure``.

    From the cell PySCF would build: atomic orbitals ``nao``, FFT mesh points ``ngrid``,
    k-points ``nk`` and spin channels ``nspin``. Memory = 300 MB (Python + PySCF) +
    :data:`GRID_BYTES` per mesh point, spin and k-point (``kpoint_factor(nk, KPOINT_MEMORY_SLOPE)``
    of them: the density and potential on the mesh)
    + the k-point matrices (40 complex nao x nao per k and spin). Runtime = 30 SCF cycles x
    (0.2 s + c * w), ``w = nspin * kpoint_factor(nk) * nao * ngrid``, c per integral scheme
    (:data:`CYCLE_COST`; :func:`kpoint_factor` is ``nk`` up to 8 k-points, less beyond).
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
    work = nspin * kpoint_factor(nk) * nao * ngrid
    grid_bytes = GRID_BYTES * nspin * kpoint_factor(nk, KPOINT_MEMORY_SLOPE) * ngrid
    mem = 300 + (grid_bytes + nspin * nk * nao**2 * 16 * 40) / 1e6
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
