"""Equilibrium volume of a cell: an E(V) scan of the isotropically scaled cell and an equation of state.

Prototype lattices are estimates from ionic radii (a few % off) and the strain energy of a few %
in the lattice parameter is comparable to the decomposition energies a hull decides on, so with
``label.relax: volume`` every label (compounds, competing phases, elemental solids) is the energy
at the minimum of its own E(V) curve at the labels' level of theory.

The scan: ``volume_scan.points`` volumes ``V0 * (1 + step * i)`` centred on the input volume V0,
all with the k-point mesh of the input cell and the FFT mesh of the largest volume the scan may
reach (meshes that changed along the scan would put steps into E(V)), each SCF starting from the previous point's density. While the lowest energy sits at
an end of the scan, one more point is added beyond it (at most ``volume_scan.max_extra``). The
points are fitted with pymatgen's :class:`~pymatgen.analysis.eos.EOS` (``volume_scan.eos``,
Birch-Murnaghan by default), and one more SCF at the fitted minimum gives the label's energy,
gap and density. If that energy lies above a scanned point (a poor fit), the lowest scanned point
is the label instead and the note says so. Atomic positions are not relaxed (internal
coordinates stay those of the input cell), nor is the cell shape.

A garnet's scan is hours of SCFs, longer than a session or a SLURM time limit may allow, so each
finished point is written to a **journal** (``journal=``; the label store keeps one beside the
entry, :func:`matscreen.label.store.journal_path`). A rerun of the same label starts where the
killed one stopped: points in the journal are not recomputed (the first new one starts from the
``init_guess``, not a neighbour's density) and the label's ``wall_s`` counts their time too. A
journal written for another cell, k-point or FFT mesh, step or spin is ignored, with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from matscreen.label.cell import build_cell, kmesh_for
from matscreen.label.pyscf import HARTREE_EV, SCFResult, max_rss_mb, run_scf
from matscreen.label.settings import LabelSettings
from matscreen.label.store import checkpoint_path

log = logging.getLogger(__name__)

#: eV/Å^3 -> GPa
EV_PER_ANG3_GPA = 160.21766208

#: How far (Ha per cell) the SCF at the fitted minimum may lie above the lowest scanned point
#: before the fit is distrusted (SCF noise is ~1e-7 Ha at the default conv_tol).
FIT_TOLERANCE_HA = 1e-5


@dataclass
class VolumeResult:
    """The label of the cell at its equilibrium volume, with the scan that found it."""

    result: SCFResult  #: the SCF whose energy is the label (at the fitted minimum, or the lowest point)
    volume_ang3: float | None  #: volume of that cell
    input_volume_ang3: float
    bulk_modulus_gpa: float | None
    scan: list[dict[str, Any]] = field(default_factory=list)  #: [{volume_ang3, energy_ha, status}]
    note: str | None = None
    wall_s: float = 0.0

    def scan_json(self) -> str:
        return json.dumps(self.scan, sort_keys=True)


def scaled(structure: Structure, volume: float) -> Structure:
    """``structure`` isotropically scaled to ``volume`` (Å^3), fractional coordinates kept."""
    out = structure.copy()
    out.scale_lattice(float(volume))
    return out


def _journal_header(
    formula: str,
    v_in: float,
    kmesh: Sequence[int],
    settings: LabelSettings,
    step: float,
    spin: int | None,
    unrestricted: bool | None,
) -> dict[str, Any]:
    """What a journal's points were computed for; a journal with another header is not reused."""
    return {
        "formula": formula,
        "input_volume_ang3": round(v_in, 6),
        "kmesh": [int(k) for k in kmesh],
        "mesh": None if settings.mesh is None else [int(n) for n in settings.mesh],
        "step": step,
        "spin": spin,
        "unrestricted": unrestricted,
    }


def read_journal(path: Path, header: dict[str, Any]) -> dict[float, SCFResult]:
    """The scan points (offset -> SCFResult, without density) a journal at ``path`` holds for
    ``header``; empty when there is none, or it was written for something else (logged)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        if doc.get("header") != header:
            log.warning(
                "%s: volume-scan journal written for %s, not %s: starting the scan afresh",
                path,
                doc.get("header"),
                header,
            )
            return {}
        return {float(p["offset"]): SCFResult(**p["result"]) for p in doc["points"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable volume-scan journal (%s): starting the scan afresh", path, exc)
        return {}


def write_journal(path: Path, header: dict[str, Any], points: dict[float, SCFResult]) -> None:
    """Every finished scan point, atomically (a killed job leaves the previous journal whole)."""
    from matscreen.atomic import write_text

    doc = {
        "header": header,
        "points": [
            {"offset": off, "result": {k: v for k, v in dataclasses.asdict(res).items() if k != "dm"}}
            for off, res in sorted(points.items())
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(doc, sort_keys=True, default=float))


def fit_eos(
    volumes: Sequence[float], energies_ev: Sequence[float], eos: str = "birch_murnaghan"
) -> tuple[float, float, float]:
    """(V0 Å^3, E0 eV, B0 GPa) of pymatgen's EOS ``eos`` fitted to the points.

    Raises ``ValueError`` when there are fewer than 4 points or the fit has no minimum inside
    (or just beyond) the scanned range.
    """
    from pymatgen.analysis.eos import EOS, EOSError

    v = np.asarray(volumes, dtype=float)
    e = np.asarray(energies_ev, dtype=float)
    if len(v) < 4:
        raise ValueError(f"an equation of state needs at least 4 converged points, got {len(v)}")
    try:
        fit = EOS(eos).fit(v, e)
    except EOSError as exc:  # e.g. the initial guess's parabola has its minimum outside the points
        lowest = v[np.argmin(e)]
        raise ValueError(
            f"{eos} fit has no minimum near the scanned volumes {v.min():.2f}-{v.max():.2f} A^3 "
            f"(lowest energy at {lowest:.2f} A^3; pymatgen: {exc})"
        ) from None
    v0, e0, b0 = float(fit.v0), float(fit.e0), float(fit.b0_GPa)
    span = v.max() - v.min()
    if not (np.isfinite(v0) and np.isfinite(e0)) or v0 < v.min() - 0.5 * span or v0 > v.max() + 0.5 * span or b0 <= 0:
        raise ValueError(
            f"{eos} fit has no minimum near the scanned volumes {v.min():.2f}-{v.max():.2f} A^3 (V0 = {v0:.2f}, B0 = {b0:.3g} GPa)"
        )
    return v0, e0, b0


def volume_scan(
    structure: Structure,
    settings: LabelSettings,
    *,
    kmesh: Sequence[int] | None = None,
    spin: int | None = None,
    unrestricted: bool | None = None,
    journal: str | os.PathLike[str] | None = None,
) -> VolumeResult:
    """Scan E(V) around ``structure``'s volume, fit the EOS, label at the minimum (module docstring).

    ``journal``: a file keeping the finished scan points, so that a rerun resumes the scan.

    Never raises for SCF trouble: when fewer than 4 points converge or the fit fails, the result
    has status ``failed`` with the reason (an unrelaxed energy would not be comparable with the
    relaxed labels of the same settings).
    """
    t0 = time.perf_counter()
    vs = settings.volume_scan
    kmesh = list(kmesh) if kmesh is not None else kmesh_for(structure, settings)
    v_in = float(structure.volume)
    step, npts, max_extra = float(vs.step), int(vs.points), int(vs.max_extra)
    offsets = [i - (npts - 1) / 2 for i in range(npts)]
    formula = structure.composition.reduced_formula
    if settings.mesh is None:
        # One FFT mesh for every point, that of the largest volume the scan may reach: with the
        # mesh following ke_cutoff, each change of its size puts a step into E(V) (up to 19 meV
        # per cell seen for LiF at 60 Ha, enough to throw the fit off).
        v_max = v_in * (1.0 + step * ((npts - 1) / 2 + max_extra))
        mesh = build_cell(scaled(structure, v_max), settings).mesh
        settings = dataclasses.replace(settings, mesh=tuple(int(n) for n in mesh))
    scan: list[dict[str, Any]] = []
    results: dict[float, SCFResult] = {}
    journal = Path(journal) if journal is not None else None
    header = _journal_header(formula, v_in, kmesh, settings, step, spin, unrestricted)
    journaled = read_journal(journal, header) if journal is not None else {}
    done: dict[float, SCFResult] = {}  # every point this scan has, ok or failed: what the journal keeps
    prior_s = 0.0  # wall time of the points taken from the journal
    dm = None

    def scf_at(volume: float, dm0: Any, point: str) -> SCFResult:
        """The SCF of the cell scaled to ``volume``, from density ``dm0``, checkpointed as ``point``."""
        return run_scf(
            scaled(structure, volume),
            settings,
            kmesh=kmesh,
            spin=spin,
            unrestricted=unrestricted,
            dm0=dm0,
            checkpoint=checkpoint_path(journal, point),
        )

    def compute(offset: float) -> None:
        nonlocal dm, prior_s
        vol = v_in * (1.0 + step * offset)
        if offset in journaled:
            res = journaled[offset]
            prior_s += float(res.wall_s)
            source = " (from the journal)"
        else:
            res = scf_at(vol, dm, f"{offset:+g}")
            source = ""
            if res.status == "ok":
                dm = res.dm
        done[offset] = res
        if journal is not None and not source:
            write_journal(journal, header, done)
        if res.status == "ok":
            results[offset] = res
        scan.append({"volume_ang3": round(vol, 6), "energy_ha": res.energy_ha, "status": res.status})
        log.info(
            "%s: V = %.3f A^3 (%+.1f%%): %s%s",
            formula,
            vol,
            100 * step * offset,
            f"E = {res.energy_ha:.8f} Ha" if res.energy_ha is not None else res.status,
            source,
        )

    if journaled:
        log.info("%s: resuming the volume scan from %s (%d points done)", formula, journal, len(journaled))

    # from the input volume outwards, so each point starts from its neighbour's density
    for off in sorted(offsets, key=lambda o: (abs(o), o)):
        compute(off)
    for _ in range(max_extra):
        if len(results) < 2:
            break
        lowest = min(results, key=lambda o: results[o].energy_ha)
        lo, hi = min(results), max(results)
        if lowest == lo:
            compute(lo - 1)
        elif lowest == hi:
            compute(hi + 1)
        else:
            break
    scan.sort(key=lambda p: p["volume_ang3"])

    def failed(reason: str) -> VolumeResult:
        last = next(iter(results.values()), None)
        res = SCFResult(
            energy_ha=None,
            converged=False,
            status="failed",
            error=reason,
            scf_cycles=None,
            attempts=last.attempts if last else 0,
            gap_ev=None,
            kmesh="x".join(map(str, kmesh)),
            wall_s=time.perf_counter() - t0 + prior_s,
            max_rss_mb=max_rss_mb(),
            unrestricted=bool(last.unrestricted) if last else False,
        )
        return VolumeResult(res, None, v_in, None, scan, reason, res.wall_s)

    ok = sorted(results)
    vols = [v_in * (1.0 + step * o) for o in ok]
    energies = [results[o].energy_ha for o in ok]
    best_o = min(ok, key=lambda o: results[o].energy_ha)  # the lowest scanned point
    try:
        v0, _e0, b0 = fit_eos(vols, [e * HARTREE_EV for e in energies], vs.eos)
    except ValueError as exc:
        edge = (
            f"; the energy still falls at the scan's edge ({100 * step * best_o:+.0f} %) after "
            f"label.volume_scan.max_extra = {max_extra} extra points"
            if best_o in (ok[0], ok[-1])
            else ""
        )
        return failed(f"volume scan: {exc}{edge}")
    # the SCF at the fitted minimum starts from the nearest scanned point's density
    nearest = min(ok, key=lambda o: abs(v_in * (1.0 + step * o) - v0))
    final = scf_at(v0, results[nearest].dm, "minimum")
    scan.append(
        {"volume_ang3": round(v0, 6), "energy_ha": final.energy_ha, "status": final.status, "fitted_minimum": True}
    )
    e_best = results[best_o].energy_ha
    note = None
    if final.status != "ok" or final.energy_ha > e_best + FIT_TOLERANCE_HA:
        note = (
            f"SCF at the fitted minimum V = {v0:.3f} A^3 "
            + (
                "failed"
                if final.status != "ok"
                else f"is {(final.energy_ha - e_best) * HARTREE_EV * 1000:.2f} meV above a scanned point"
            )
            + f"; the lowest scanned point (V = {v_in * (1 + step * best_o):.3f} A^3) is the label"
        )
        log.warning("%s: %s", formula, note)
        final, v0 = results[best_o], v_in * (1.0 + step * best_o)
    final.wall_s = time.perf_counter() - t0 + prior_s
    final.max_rss_mb = max_rss_mb()
    log.info(
        "%s: equilibrium V = %.3f A^3 (%+.1f%% vs input), B0 = %.0f GPa, E = %.8f Ha, %d SCFs in %.1f s",
        formula,
        v0,
        100 * (v0 / v_in - 1),
        b0,
        final.energy_ha,
        len(scan),
        final.wall_s,
    )
    return VolumeResult(final, v0, v_in, b0, scan, note, final.wall_s)
