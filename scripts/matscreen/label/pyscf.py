"""The SCF of one structure: PySCF mean-field object, failure ladder, progress and stall watch,
checkpoint resume, gap. The cell and its k-point mesh come from :mod:`matscreen.label.cell`.

Plain functions of a pymatgen ``Structure`` and the :class:`~matscreen.label.settings.LabelSettings`
(built once at the edge, never re-resolved here), so they run
without Snakemake and the Snakemake jobs, the CLI, the tests and the benchmark all go through
exactly the same code. Nothing here re-implements PySCF: it only translates settings into
PySCF objects, the way PySCF's own regression tests build them (``pyscf/pbc/dft/test``).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from matscreen.label.cell import checked_cell, kmesh_for, kmesh_str
from matscreen.label.settings import LabelSettings

log = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988  # CODATA 2018, as pyscf.data.nist.HARTREE2EV
#: Key of the checkpoint (PySCF's chkfile, HDF5) that holds the ladder attempt it belongs to.
CHECKPOINT_ATTEMPT = "matscreen_attempt"


# --- the SCF object ------------------------------------------------------------------------


def use_unrestricted(structure: Structure, settings: LabelSettings) -> bool:
    """Whether the spin settings ask for an unrestricted (KUKS) calculation of ``structure``."""
    mode = settings.spin.mode
    if mode == "auto":
        moments = settings.spin.magnetic_moments
        return any(el.symbol in moments for el in structure.composition.elements)
    return mode == "unrestricted"


def make_scf(
    cell: Any, kmesh: Sequence[int], settings: LabelSettings, unrestricted: bool, fix_spin: bool = False
) -> Any:
    """The PySCF mean-field object the settings describe (not run).

    A Gamma-only mesh with the Gamma point uses the Gamma-point classes (``RKS``/``UKS``, as
    PySCF's regression tests and molecules in a box do); otherwise ``KRKS``/``KUKS`` on
    ``cell.make_kpts(kmesh, with_gamma_point=...)``.
    """
    from pyscf.pbc import dft, scf

    gamma_only = list(kmesh) == [1, 1, 1] and settings.kpoints.with_gamma_point
    if gamma_only:
        mf = dft.UKS(cell) if unrestricted else dft.RKS(cell)
    else:
        kpts = cell.make_kpts(list(kmesh), with_gamma_point=bool(settings.kpoints.with_gamma_point))
        mf = dft.KUKS(cell, kpts) if unrestricted else dft.KRKS(cell, kpts)
    mf.xc = settings.xc
    fit = settings.density_fit
    if fit == "multigrid":
        mf = mf.multigrid_numint()
    elif fit == "gdf":
        mf = mf.density_fit()
    elif fit == "rsdf":
        mf = mf.rs_density_fit()
    # "fftdf" is PySCF's default: nothing to do
    width = float(settings.smearing.width)
    if width > 0:
        # fix_spin keeps a molecule's 2S (O2 triplet) under smearing; solids may relax their moment
        mf = scf.addons.smearing_(mf, sigma=width, method=settings.smearing.method, fix_spin=fix_spin and unrestricted)
    mf.conv_tol = float(settings.conv_tol)
    mf.max_memory = int(settings.max_memory_mb)
    return mf


def polarised_guess(mf: Any, structure: Structure, moments: Mapping[str, float], dm: np.ndarray) -> np.ndarray:
    """Shift ``moments`` (μB) of spin density onto the d orbitals of each magnetic atom.

    ``dm`` is an unrestricted guess (first axis alpha/beta, optionally k-points next). The
    on-site d block of alpha gains m/(2 n_d) per orbital and beta loses as much (at every k:
    an on-site term has no Bloch phase), capped so that no beta diagonal element turns negative.
    """
    cell = mf.cell
    dm = np.array(dm, copy=True)
    labels = cell.ao_labels(fmt=False)
    for iatm, site in enumerate(structure):
        m = float(moments.get(site.specie.symbol, 0.0))
        if m <= 0:
            continue
        idx = [i for i, lab in enumerate(labels) if lab[0] == iatm and lab[2].endswith("d")]
        if not idx:
            continue
        ii = np.array(idx)
        beta_diag = np.real(dm[1][..., ii, ii]).min()
        delta = min(m / (2 * len(idx)), 0.9 * max(float(beta_diag), 0.0))
        dm[0][..., ii, ii] += delta
        dm[1][..., ii, ii] -= delta
    return dm


# --- the SCF with its failure ladder -------------------------------------------------------


@dataclass
class SCFResult:
    """What one structure's calculation gives, before it becomes a table row."""

    energy_ha: float | None
    converged: bool
    status: str  #: ok or failed
    error: str | None
    scf_cycles: int | None
    attempts: int
    gap_ev: float | None
    kmesh: str
    wall_s: float
    max_rss_mb: float
    unrestricted: bool
    magnetic_moment: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: converged density matrix (AO basis), the initial guess of the next point of a volume scan
    dm: Any = field(default=None, repr=False)


def attempt_plan(structure: Structure, settings: LabelSettings) -> list[dict[str, Any]]:
    """The SCF attempts in order: the first from the settings, then each failure_ladder step."""
    first = {
        "init_guess": settings.init_guess,
        "max_cycle": int(settings.max_cycle),
        "damp": 0.0,
        "level_shift": 0.0,
        "diis_space": 8,
    }
    forced = [
        settings.init_guess_by_element[el.symbol]
        for el in structure.composition.elements
        if el.symbol in settings.init_guess_by_element
    ]
    if forced:
        first["init_guess"] = forced[0]
    plan = [first]
    for step in settings.failure_ladder:
        att = {**first, **step}
        att["restart"] = "init_guess" not in step  # continue from the previous attempt's density
        plan.append(att)
    return plan


def band_gap_ev(mf: Any) -> float | None:
    """Gap over the sampled k-points, in eV, independent of the smearing width.

    All orbital energies of all k-points (and both spins) are pooled and filled in order with
    the electrons of the cell times the number of k-points (two per orbital when restricted,
    one per spin-orbital when unrestricted); the gap is the lowest empty level minus the
    highest filled one (0 for a metal or a partly filled level). This is the Kohn-Sham gap on
    the sampled mesh only: true band edges between k-points are missed, and LDA/GGA
    underestimate gaps.
    """
    mo_e = mf.mo_energy
    if mo_e is None:
        return None
    nk = len(mf.kpts) if np.ndim(getattr(mf, "kpts", None)) == 2 else 1
    nelec = int(mf.cell.nelectron) * nk
    energies = np.sort(np.ravel(np.asarray(mo_e, dtype=float)))
    if _is_uhf(mf):
        nfilled = nelec
    else:
        if nelec % 2:
            return 0.0  # an odd count leaves one orbital half filled
        nfilled = nelec // 2
    if nfilled <= 0 or nfilled >= len(energies):
        return None
    return float(max(0.0, energies[nfilled] - energies[nfilled - 1]) * HARTREE_EV)


def _is_uhf(mf: Any) -> bool:
    from pyscf.pbc.scf import kuhf, uhf

    return isinstance(mf, (kuhf.KUHF, uhf.UHF))


def max_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


PROGRESS_EVERY_S = 60.0  # an SCF cycle of a garnet at 300 Ha takes 90 s; a perovskite's a few

#: A stalled attempt's orbital gradient is still above this (pyrope's was 1.6e-3 by its 3rd cycle;
#: Li3Ga3Mo2O12's 2 to 6 through its first 10, Sc3Al3Ga2O12's 12 at its first).
STALL_MIN_GRADIENT = 1e-2


def stalled(gradients: Sequence[float], window: int) -> bool:
    """Whether an SCF with these orbital-gradient norms, one per cycle, has stalled: in the last
    ``window`` cycles |g| never fell below half its best value before them, and is above
    :data:`STALL_MIN_GRADIENT`. ``window`` 0 never stalls. A converging SCF halves |g| every few
    cycles (DIIS, and damped or level-shifted attempts too); one that wanders for ``window``
    cycles is not converging within its ``max_cycle``, which costs hours for an 80-atom cell."""
    if window <= 0 or len(gradients) <= window:
        return False
    before, recent = min(gradients[:-window]), min(gradients[-window:])
    return recent > 0.5 * before and recent > STALL_MIN_GRADIENT


class SCFStalled(RuntimeError):
    """Raised from the cycle callback to end an attempt that has :func:`stalled`; carries the density
    of its last cycle, from which the next ``failure_ladder`` step restarts."""

    def __init__(self, message: str, dm: Any, cycles: int, e_tot: float | None):
        super().__init__(message)
        self.dm, self.cycles, self.e_tot = dm, cycles, e_tot


class _CycleWatch:
    """SCF callback: a log line once a minute has passed since the last one, and the stall check.

    A garnet or a hard spinel runs for an hour without a word otherwise; the line says which cycle
    it is at, the energy and how it moves, so a stuck SCF can be told from a slow one. With
    ``stall_cycles`` > 0, an attempt that has :func:`stalled` is ended (:class:`SCFStalled`).
    """

    def __init__(self, formula: str, attempt: int, max_cycle: int, every_s: float | None = None, stall_cycles: int = 0):
        self.formula, self.attempt, self.max_cycle = formula, attempt, max_cycle
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.stall_cycles = int(stall_cycles)
        self.gradients: list[float] = []
        self.t0 = self.last = time.perf_counter()

    def __call__(self, envs: Mapping[str, Any]) -> None:
        g = envs.get("norm_gorb")
        if g is not None:
            self.gradients.append(float(g))
        if stalled(self.gradients, self.stall_cycles):
            e_tot = envs.get("e_tot")
            raise SCFStalled(
                f"stalled: |g| stayed above {min(self.gradients[-self.stall_cycles :]):.2e} for "
                f"{self.stall_cycles} cycles (label.scf_stall_cycles; best before {min(self.gradients[: -self.stall_cycles]):.2e})",
                envs.get("dm"),
                len(self.gradients),
                None if e_tot is None else float(e_tot),
            )
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        e_tot, e_prev = envs.get("e_tot"), envs.get("last_hf_e")
        de = float(e_tot - e_prev) if e_tot is not None and e_prev is not None else float("nan")
        log.info(
            "%s: attempt %d, cycle %d/%d, E = %.8f Ha, dE = %.2e, |g| = %.2e (%.0f s)",
            self.formula,
            self.attempt,
            int(envs.get("cycle", -1)) + 1,
            self.max_cycle,
            float(e_tot) if e_tot is not None else float("nan"),
            de,
            float(g) if g is not None else float("nan"),
            now - self.t0,
        )


def final_check_rejected(mf: Any) -> bool:
    """Whether PySCF's SCF loop stopped before ``max_cycle`` on its criteria (energy change and
    orbital gradient) and its final check, one more cycle without damping, level shift and DIIS
    (``conv_check``), then found it not converged. A damped, level-shifted attempt can meet the
    criteria away from the SCF solution, as each of its cycles moves the density little: ScCl3's
    last ladder step (damping 0.7, level shift 0.3) met them after 46 cycles with |g| 2.6e-4, the
    check's cycle moved the density by 0.24 and the energy by 2.7 mHa (|g| 3.2e-2), and continued
    from there without damping and level shift it converged in 6 cycles."""
    cycles = int(getattr(mf, "cycles", 0))
    return not mf.converged and 0 < cycles < int(mf.max_cycle)


def _attempt_scf(
    cell: Any,
    kmesh: list[int],
    settings: LabelSettings,
    unrestricted: bool,
    spin: int | None,
    att: Mapping[str, Any],
    formula: str,
    n: int,
    chk: Path | None,
) -> Any:
    """The mean-field object of ladder attempt ``n`` (:func:`attempt_plan`), with its progress watch
    and its checkpoint ``chk`` (PySCF writes it every cycle)."""
    mf = make_scf(cell, kmesh, settings, unrestricted, fix_spin=spin is not None)
    if chk is not None:
        mf.chkfile = str(chk)
    mf.max_cycle = int(att["max_cycle"])
    mf.damp = float(att["damp"])
    mf.level_shift = float(att["level_shift"])
    mf.diis_space = int(att["diis_space"])
    mf.init_guess = att["init_guess"]
    mf.callback = _CycleWatch(formula, n, mf.max_cycle, stall_cycles=settings.scf_stall_cycles)
    return mf


def run_scf(
    structure: Structure,
    settings: LabelSettings,
    *,
    kmesh: Sequence[int] | None = None,
    spin: int | None = None,
    unrestricted: bool | None = None,
    dm0: np.ndarray | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> SCFResult:
    """Run the SCF of ``structure`` with the failure ladder; never raises for a failed SCF.

    ``dm0`` (a density matrix of the same cell at another volume: same atoms, basis and k-mesh)
    replaces the first attempt's initial guess, which is how a volume scan reuses the previous
    point's density. Later ladder steps with their own ``init_guess`` still start afresh.

    ``checkpoint``: PySCF's chkfile of this very calculation (the label store's, beside the
    entry). PySCF writes it every cycle; when it exists at the start (a killed job's rerun), the
    attempt the job was in (:func:`checkpoint_attempt`) goes on from its density instead of
    ``dm0`` or the guess, so an 80-atom SCF of hours loses at most a cycle. It is removed when the
    SCF ends, converged or failed.

    Each attempt of :func:`attempt_plan` is tried until one converges. An attempt whose criteria
    PySCF's final check rejects (:func:`final_check_rejected`) first continues from its last
    density without damping and level shift, within the same attempt. A non-converged SCF or an
    exception inside PySCF (e.g. the ``minao`` guess crashing for Sc/Y) moves on to the next
    attempt; after the last one the result has status ``failed`` and the reason. Out-of-memory
    and interrupts are re-raised: they are the scheduler's business (retry with more memory).
    """
    t0 = time.perf_counter()
    kmesh = list(kmesh) if kmesh is not None else kmesh_for(structure, settings)
    if unrestricted is None:
        unrestricted = use_unrestricted(structure, settings) or bool(spin)
    try:
        cell = checked_cell(structure, settings, kmesh, spin=spin)
    except RuntimeError as exc:
        return SCFResult(
            energy_ha=None,
            converged=False,
            status="failed",
            error=str(exc),
            scf_cycles=None,
            attempts=0,
            gap_ev=None,
            kmesh=kmesh_str(kmesh),
            wall_s=time.perf_counter() - t0,
            max_rss_mb=max_rss_mb(),
            unrestricted=bool(unrestricted),
            history=[],
        )
    if unrestricted and spin is None:
        cell.spin = cell.nelectron % 2  # UKS needs a consistent parity; smearing frees the moment
    plan = attempt_plan(structure, settings)
    chk = Path(checkpoint) if checkpoint is not None else None
    if chk is not None:
        chk.parent.mkdir(parents=True, exist_ok=True)
    result = _ladder(structure, settings, cell, kmesh, plan, spin, unrestricted, dm0, chk, t0)
    if chk is not None:  # not on a kill or out-of-memory (they raise): the rerun resumes from it
        chk.unlink(missing_ok=True)
    return result


def _ladder(
    structure: Structure,
    settings: LabelSettings,
    cell: Any,
    kmesh: list[int],
    plan: list[dict[str, Any]],
    spin: int | None,
    unrestricted: bool,
    dm0: np.ndarray | None,
    chk: Path | None,
    t0: float,
) -> SCFResult:
    """The attempts of :func:`run_scf`, in order, until one converges."""
    history: list[dict[str, Any]] = []
    mf = None
    prev_dm = None
    formula = structure.composition.reduced_formula
    start = checkpoint_attempt(chk, len(plan))
    for n, att in enumerate(plan, start=1):
        if n < start:  # a killed job's rerun: these attempts failed before the kill
            history.append(
                {
                    "attempt": n,
                    "converged": False,
                    "cycles": None,
                    "e_tot": None,
                    "wall_s": 0.0,
                    "error": "failed before a restart",
                }
            )
            continue
        log.info(
            "%s: SCF attempt %d/%d (%s, kmesh %s, %s)",
            formula,
            n,
            len(plan),
            {k: v for k, v in att.items() if k != "restart"},
            kmesh_str(kmesh),
            "UKS" if unrestricted else "RKS",
        )
        ta = time.perf_counter()
        try:
            mf = _attempt_scf(cell, kmesh, settings, unrestricted, spin, att, formula, n, chk)
            resumed = _resume(mf, chk, formula) if n == start else None
            if chk is not None:
                _save_attempt(chk, n)
            if resumed is not None:
                guess = resumed
            elif att.get("restart") and prev_dm is not None:
                guess = prev_dm
            elif n == 1 and dm0 is not None:
                guess = dm0
            else:
                guess = mf.get_init_guess(key=att["init_guess"])
                if unrestricted and spin is None:
                    guess = polarised_guess(mf, structure, settings.spin.magnetic_moments, guess)
            mf.kernel(dm0=guess)
            cycles = int(getattr(mf, "cycles", -1))
            if final_check_rejected(mf):
                log.info(
                    "%s: attempt %d met the SCF criteria after %d cycles, but PySCF's final check (a cycle "
                    "without damping, level shift and DIIS) did not, E = %.8f Ha: continuing from that "
                    "density without damping and level shift",
                    formula,
                    n,
                    cycles,
                    mf.e_tot,
                )
                dm = mf.make_rdm1()
                undamped = {**att, "damp": 0.0, "level_shift": 0.0}
                mf = _attempt_scf(cell, kmesh, settings, unrestricted, spin, undamped, formula, n, chk)
                mf.kernel(dm0=dm)
                cycles += int(getattr(mf, "cycles", -1))
            ok = bool(mf.converged) and np.isfinite(mf.e_tot)
            history.append(
                {
                    "attempt": n,
                    "converged": ok,
                    "cycles": cycles,
                    "e_tot": float(mf.e_tot),
                    "wall_s": time.perf_counter() - ta,
                    "error": None if ok else "not converged",
                }
            )
            log.info(
                "%s: attempt %d %s after %d cycles, E = %.8f Ha (%.1f s)",
                formula,
                n,
                "converged" if ok else "NOT converged",
                cycles,
                mf.e_tot,
                time.perf_counter() - ta,
            )
            if ok:
                return SCFResult(
                    energy_ha=float(mf.e_tot),
                    converged=True,
                    status="ok",
                    error=None,
                    scf_cycles=cycles,
                    attempts=n,
                    gap_ev=band_gap_ev(mf),
                    kmesh=kmesh_str(kmesh),
                    wall_s=time.perf_counter() - t0,
                    max_rss_mb=max_rss_mb(),
                    unrestricted=unrestricted,
                    magnetic_moment=_moment(mf),
                    history=history,
                    dm=mf.make_rdm1(),
                )
            prev_dm = mf.make_rdm1()
        except (MemoryError, KeyboardInterrupt):
            raise
        except SCFStalled as exc:  # the next step restarts from where this one wandered
            history.append(
                {
                    "attempt": n,
                    "converged": False,
                    "cycles": exc.cycles,
                    "e_tot": exc.e_tot,
                    "wall_s": time.perf_counter() - ta,
                    "error": str(exc),
                }
            )
            log.warning("%s: attempt %d %s after %d cycles", formula, n, exc, exc.cycles)
            prev_dm = exc.dm
        except Exception as exc:  # PySCF raises many kinds (IndexError in minao, LinAlgError, ...)
            msg = f"{type(exc).__name__}: {exc}"
            history.append(
                {
                    "attempt": n,
                    "converged": False,
                    "cycles": None,
                    "e_tot": None,
                    "wall_s": time.perf_counter() - ta,
                    "error": msg,
                }
            )
            log.warning("%s: attempt %d raised %s", formula, n, msg)
    reasons = "; ".join(
        f"attempt {h['attempt']}: {h['error']}"
        + (f" after {h['cycles']} cycles (E = {h['e_tot']:.8f})" if h["cycles"] and h["e_tot"] is not None else "")
        for h in history
    )
    return SCFResult(
        energy_ha=None,
        converged=False,
        status="failed",
        error=f"SCF failed in all {len(plan)} attempts: {reasons}",
        scf_cycles=history[-1]["cycles"] if history else None,
        attempts=len(plan),
        gap_ev=None,
        kmesh=kmesh_str(kmesh),
        wall_s=time.perf_counter() - t0,
        max_rss_mb=max_rss_mb(),
        unrestricted=unrestricted,
        history=history,
    )


def checkpoint_attempt(chk: Path | None, attempts: int) -> int:
    """The ladder attempt a killed job was in, from its checkpoint (1 without one). A rerun goes on
    with that attempt, with its damping and level shift, from the checkpoint's density: TiCd2O4's
    rerun took its damped second attempt's density (|g| 2.6e-3) into the undamped first one, and
    four cycles later was at |g| 0.7. The number is written when the attempt starts, so a job
    killed before the attempt's first cycle resumes it from the previous attempt's last density."""
    from pyscf.lib import chkfile

    if chk is None or not chk.is_file():
        return 1
    try:
        n = int(chkfile.load(str(chk), CHECKPOINT_ATTEMPT))
    except Exception:  # no such key (a checkpoint from before the key), not HDF5 (killed at once), ...
        return 1
    return min(max(n, 1), attempts)


def _save_attempt(chk: Path, n: int) -> None:
    from pyscf.lib import chkfile

    chkfile.save(str(chk), CHECKPOINT_ATTEMPT, n)  # beside PySCF's own keys (mol, scf), which it keeps


def _resume(mf: Any, chk: Path | None, formula: str) -> np.ndarray | None:
    """The density of the last cycle in the checkpoint ``chk``, or None (no checkpoint; or one
    killed before its first cycle was written, or unreadable: then the SCF starts afresh)."""
    if chk is None or not chk.is_file():
        return None
    try:
        dm = mf.from_chk(str(chk))
    except Exception as exc:  # h5py's KeyError for a file with the cell only, OSError, ...
        log.warning("%s: checkpoint %s unusable (%s: %s): starting afresh", formula, chk, type(exc).__name__, exc)
        chk.unlink(missing_ok=True)
        return None
    log.info("%s: resuming the SCF from the density of its checkpoint %s", formula, chk)
    return dm


def _moment(mf: Any) -> float | None:
    """Total spin moment (μB per cell) of an unrestricted result, from the k-averaged occupations."""
    if not _is_uhf(mf):
        return None
    occ = mf.mo_occ
    na = float(np.sum(np.asarray(occ[0], dtype=float)))
    nb = float(np.sum(np.asarray(occ[1], dtype=float)))
    nk = len(mf.kpts) if np.ndim(getattr(mf, "kpts", None)) == 2 else 1
    return (na - nb) / nk
