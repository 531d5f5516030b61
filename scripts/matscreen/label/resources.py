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

#: Seconds per SCF cycle per unit of nspin * kpoint_factor(nk) * nao * ngrid. multigrid: fitted
#: in session 18 to 272 labels at 300 Ha (the reference set at kdensity 1.2 and the demo's and
#: reference set's first labels at 2.0; 2-80 atoms, 1-125 k-points; one thread, `nice`d beside one
#: or two other jobs): wall = 40 s + cycles x 1.12e-7 x w, with the label's own cycle count (median
#: 6, at most 28), the median measured/modelled 1.00. gdf, rsdf and fftdf: scaled as before by the
#: Gamma-point ratios in NOTES.md (gdf 9-10x, plain FFTDF > 60x slower than multigrid on SrTiO3).
#: The earlier 4.5e-7 was fitted at 100 Ha and was 4x too high at 300 Ha: a cycle does not grow in
#: proportion to the FFT mesh (SrTiO3 3.3 s per cycle at 100 Ha, about 5 at 300 Ha).
CYCLE_COST = {"multigrid": 1.12e-7, "fftdf": 7.5e-6, "gdf": 1.12e-6, "rsdf": 1.12e-6}

#: Seconds of a label job before and around its SCF cycles (cell, pseudopotential check, guess).
SETUP_S = 40.0

#: SCF cycles a job is estimated for: 4-5x the median (6), room for the failure ladder's attempts.
ESTIMATE_CYCLES = 30

#: The runtime's FFT mesh is the cell's at ``max(ke_cutoff, RUNTIME_MIN_CUTOFF_HA)``: below the
#: cutoff :data:`CYCLE_COST` was fitted at, a cycle shrinks less than the mesh does (SrTiO3 and
#: MgAl2O4 take 1.6x and about 3x longer per cycle at 300 Ha than at 100, for a 5.2x mesh), so a
#: lower cutoff is estimated generously rather than short.
RUNTIME_MIN_CUTOFF_HA = 300.0

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
    + the k-point matrices (40 complex nao x nao per k and spin). Runtime = :data:`SETUP_S` +
    :data:`ESTIMATE_CYCLES` x c x w, ``w = nspin * kpoint_factor(nk) * nao * ngrid``, c per
    integral scheme (:data:`CYCLE_COST`; :func:`kpoint_factor` is ``nk`` up to 8 k-points, less
    beyond; ``ngrid`` at no less than :data:`RUNTIME_MIN_CUTOFF_HA`). Over the 272 labels it was
    fitted to, the measured wall time is a median 0.41 of this estimate, 1.5 at the 90th percentile
    and 2.35 at the 95th (the slowest ones shared their core with other jobs). The model before
    session 18, fitted at 100 Ha, asked about 10x the measured time at 300 Ha (the demo's round 0:
    18 estimated CPU hours with ``safety: 2``, 0.95 measured). Measured peaks (one process each, 1 thread): SrTiO3 2x2x2 343 MB at 100 Ha (model 348),
    MgAl2O4 (14 atoms) 2x2x2 642 MB at 100 Ha (model 453), BaMoO3 2x2x2 558 MB at 300 Ha (model
    560), Mg3Al2Si3O12 (80 atoms, Gamma) 709 MB at 300 Ha (model 793); the earlier
    ``6 bytes * w`` grid term asked 6.9 GB for that garnet. Both are multiplied by
    ``resources.safety`` and floored at ``min_mem_mb`` / ``min_runtime``. The dict also carries
    ``attempt_factor`` for :func:`scale_resources`.
    """
    from matscreen.label import cell as label_cell
    from matscreen.label import pyscf as engine
    from matscreen.label.settings import as_settings

    s = as_settings(settings)
    r = s.resources
    cell = label_cell.build_cell(structure, s)
    nao = int(cell.nao_nr())
    ngrid = int(math.prod(int(n) for n in cell.mesh))
    nk = int(math.prod(label_cell.kmesh_for(structure, s)))
    nspin = 2 if engine.use_unrestricted(structure, s) else 1
    work = nspin * kpoint_factor(nk) * nao * _runtime_ngrid(cell, s, ngrid)
    grid_bytes = GRID_BYTES * nspin * kpoint_factor(nk, KPOINT_MEMORY_SLOPE) * ngrid
    mem = 300 + (grid_bytes + nspin * nk * nao**2 * 16 * 40) / 1e6
    seconds = SETUP_S + ESTIMATE_CYCLES * CYCLE_COST[s.density_fit] * work
    return {
        "mem_mb": int(max(r.min_mem_mb, math.ceil(mem * r.safety))),
        "runtime": int(max(r.min_runtime, math.ceil(seconds * r.safety / 60))),
        "threads": int(r.threads),
        "attempt_factor": float(r.attempt_factor),
    }


def _runtime_ngrid(cell: Any, settings: LabelSettings, ngrid: int) -> int:
    """FFT mesh points for the runtime: the cell's, or its mesh at :data:`RUNTIME_MIN_CUTOFF_HA`
    where ``ke_cutoff`` is lower (an explicit ``mesh`` is taken as it is)."""
    if settings.mesh is not None or float(settings.ke_cutoff) >= RUNTIME_MIN_CUTOFF_HA:
        return ngrid
    from pyscf.pbc.tools.pbc import cutoff_to_mesh

    return max(ngrid, int(math.prod(int(n) for n in cutoff_to_mesh(cell.lattice_vectors(), RUNTIME_MIN_CUTOFF_HA))))


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
