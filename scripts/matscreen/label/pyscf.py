"""The PySCF side of the label stage: cell, k-points, SCF object, failure ladder, gap.

Plain functions of a pymatgen ``Structure`` and the :class:`~matscreen.label.settings.LabelSettings`
(built once at the edge, never re-resolved here), so they run
without Snakemake and the Snakemake jobs, the CLI, the tests and the benchmark all go through
exactly the same code. Nothing here re-implements PySCF: it only translates settings into
PySCF objects, the way PySCF's own regression tests build them (``pyscf/pbc/dft/test``).
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from matscreen.label.settings import LabelSettings

log = logging.getLogger(__name__)

HARTREE_EV = 27.211386245988  # CODATA 2018, as pyscf.data.nist.HARTREE2EV


# --- k-points and cell --------------------------------------------------------------------


def kmesh_for(structure: Structure, settings: LabelSettings, kdensity: float | None = None) -> list[int]:
    """The Monkhorst-Pack mesh for ``structure``.

    An explicit ``kpoints.kmesh`` wins; otherwise n_i = max(1, ceil(kdensity * |b_i|)) with the
    reciprocal lattice vectors b_i in 1/Å including the 2π factor (pymatgen's
    ``reciprocal_lattice``), and the Gamma point alone for a cell of at least
    ``kpoints.gamma_only_min_sites`` atoms (a garnet's 80-atom primitive cell, whose 2x2x2 mesh
    does not fit a laptop: config/README.md). ``kdensity`` overrides ``kpoints.kdensity`` (element
    references, which the size rule does not touch).
    """
    kp = settings.kpoints
    if kdensity is None:
        if kp.kmesh is not None:
            return [int(n) for n in kp.kmesh]
        if kp.gamma_only_min_sites is not None and len(structure) >= kp.gamma_only_min_sites:
            return [1, 1, 1]
    dens = float(kdensity if kdensity is not None else kp.kdensity)
    return [max(1, math.ceil(dens * b - 1e-9)) for b in structure.lattice.reciprocal_lattice.abc]


def kmesh_str(kmesh: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in kmesh)


def multigrid_safe_rotation(lattice: np.ndarray) -> np.ndarray:
    """The rotation under which PySCF's multigrid can build the density of a cell ``lattice`` (rows).

    PySCF's multigrid (2.14) bounds an atom's compact functions by the fractional box
    ``inv(a.T) @ (r -/+ rcut)``; where a reciprocal vector has a negative component sum (some
    skewed cells, e.g. primitive anatase as the library builds it) that box is inverted and the
    SCF raises ``ValueError: can only specify one unknown dimension``. Such a cell is turned so
    that ``a1 + a2 + a3`` lies along (1, 1, 1); then every b_i . (1, 1, 1) > 0, because
    b_i . (a1 + a2 + a3) = 1. A rigid rotation leaves the energy unchanged (MgO, measured: 1e-13
    Ha in three orientations). Every other cell gets the identity: an axis-aligned orthogonal
    cell must stay axis-aligned, as multigrid's orthogonal path is several times faster
    (BaTiO3 P4mm at Gamma: 16 cycles in 15 s aligned, 246 s turned).
    """
    a = np.asarray(lattice, dtype=float)
    if (np.linalg.inv(a.T).sum(axis=1) > 1e-9).all():
        return np.eye(3)
    d = a.sum(axis=0)
    d /= np.linalg.norm(d)
    target = np.ones(3) / np.sqrt(3.0)
    c = float(d @ target)
    if c < -1.0 + 1e-9:  # antiparallel: half a turn about an axis perpendicular to d
        u = np.cross(d, [1.0, 0.0, 0.0] if abs(d[0]) < 0.9 else [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        return 2.0 * np.outer(u, u) - np.eye(3)
    v = np.cross(d, target)
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)  # Rodrigues: R d = target


def build_cell(structure: Structure, settings: LabelSettings, spin: int | None = None, verbose: int = 0) -> Any:
    """A built ``pyscf.pbc.gto.Cell`` of ``structure`` (Å, Cartesian) with the settings' basis etc.

    ``spin`` is 2S of the cell (molecules in a box, or the electron-count parity of an
    unrestricted solid); by default 0, which restricted k-point and smeared calculations need
    even for odd-electron metals (PySCF's parity warning is silenced: occupations come from
    smearing or from the k-point count, not from ``spin``).
    """
    import warnings

    from pyscf.pbc import gto

    cell = gto.Cell()
    cell.unit = "A"
    rotation = multigrid_safe_rotation(structure.lattice.matrix)
    cell.a = np.asarray(structure.lattice.matrix, dtype=float) @ rotation.T
    cell.atom = [[site.specie.symbol, tuple(float(x) for x in rotation @ site.coords)] for site in structure]
    cell.basis = settings.basis
    if settings.pseudo is not None:
        cell.pseudo = settings.pseudo
    if settings.mesh is not None:
        cell.mesh = [int(n) for n in settings.mesh]
    else:
        cell.ke_cutoff = float(settings.ke_cutoff)
    cell.precision = float(settings.precision)
    cell.max_memory = int(settings.max_memory_mb)
    cell.verbose = verbose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parity warning: fixed below, before anything uses spin
        cell.build()
    cell.spin = int(spin) if spin is not None else 0
    return cell


#: Largest allowed difference (Ha) between the k-point and Gamma-point local-pseudopotential
#: integrals at k = 0 before the cell is rebuilt with a tighter ``precision``.
PP_SCREENING_TOL_HA = 1e-4


def pp_screening_error(cell: Any, kmesh: Sequence[int]) -> float:
    """Largest |V_pp,loc2(k=0)| difference between PySCF's k-point and Gamma-point code paths (Ha).

    With k-points, multigrid/GDF/RSDF build the local pseudopotential through ``_IntPPBuilder``,
    which screens with ``cell.precision``; at ``precision=1e-6`` it silently drops the Ca 3p terms
    of most Ca compounds and of fcc Ca (about 3 Ha per Ca atom), depending on the lattice
    parameter and the neighbours (CsCaF3 at 4.66 A is spared, RbCaF3 is not). The Gamma-point
    path does not screen that way, so comparing the two at k = 0 detects the loss without an SCF
    (0.1-0.6 s per cell).
    """
    from pyscf.pbc.gto.pseudo import pp_int

    kpts = cell.make_kpts(list(kmesh), with_gamma_point=True)  # kpts[0] is Gamma
    vk = _pp_matrix(pp_int.get_pp_loc_part2(cell, kpts), cell.nao)
    vg = _pp_matrix(pp_int.get_pp_loc_part2(cell, np.zeros((1, 3))), cell.nao)
    return float(np.abs(vk - vg).max())


def _pp_matrix(v: Any, nao: int) -> np.ndarray:
    """The first k-point's matrix of ``get_pp_loc_part2``. Its Gamma-point path returns ``[0]``
    when no atom of the cell has local terms beyond C1 (gth-pade Zn: ``C = []``): zeros then."""
    a = np.asarray(v)
    if a.size == 1:
        return np.zeros((nao, nao))
    return a.reshape(-1, nao, nao)[0]


def checked_cell(structure: Structure, settings: LabelSettings, kmesh: Sequence[int], spin: int | None = None) -> Any:
    """:func:`build_cell`, rebuilt with 100x tighter precision while :func:`pp_screening_error` is too large.

    Raises ``RuntimeError`` naming the error if precision 1e-12 does not cure it.
    """
    cell = build_cell(structure, settings, spin=spin)
    if settings.density_fit == "fftdf" or int(np.prod(kmesh)) == 1:
        return cell  # plain FFTDF and Gamma-only runs do not use the screened k-point builder
    precision = float(settings.precision)
    err = pp_screening_error(cell, kmesh)
    while err > PP_SCREENING_TOL_HA:
        if precision <= 1e-12:
            raise RuntimeError(f"local pseudopotential integrals lose {err:.3g} Ha even at precision 1e-12")
        precision /= 100.0
        log.warning(
            "%s: k-point pseudopotential integrals off by %.3g Ha at precision %.0e; rebuilding at %.0e",
            structure.composition.reduced_formula,
            err,
            precision * 100,
            precision,
        )
        cell = build_cell(structure, settings.replace(precision=precision), spin=spin)
        err = pp_screening_error(cell, kmesh)
    return cell


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
    first attempt starts from its density instead of ``dm0`` or the guess, so an 80-atom SCF of
    hours loses at most a cycle. It is removed when the SCF ends, converged or failed.

    Each attempt of :func:`attempt_plan` is tried until one converges. A non-converged SCF or
    an exception inside PySCF (e.g. the ``minao`` guess crashing for Sc/Y) moves on to the next
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
    for n, att in enumerate(plan, start=1):
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
            mf = make_scf(cell, kmesh, settings, unrestricted, fix_spin=spin is not None)
            mf.max_cycle = int(att["max_cycle"])
            mf.damp = float(att["damp"])
            mf.level_shift = float(att["level_shift"])
            mf.diis_space = int(att["diis_space"])
            mf.init_guess = att["init_guess"]
            mf.callback = _CycleWatch(formula, n, mf.max_cycle, stall_cycles=settings.scf_stall_cycles)
            resumed = _resume(mf, chk, formula) if n == 1 else None
            if chk is not None:
                mf.chkfile = str(chk)  # PySCF writes it every cycle
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


# --- preflight: can PySCF describe these elements with the settings? ------------------------------


@lru_cache(maxsize=None)
def _has_basis(basis: str, element: str) -> bool:
    from pyscf.gto import basis as gto_basis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Basis may be available in basis-set-exchange"
        try:
            return bool(gto_basis.load(basis, element))
        except Exception:  # BasisNotFoundError, KeyError, RuntimeError for unknown symbols
            return False


@lru_cache(maxsize=None)
def _has_pseudo(pseudo: str, element: str) -> bool:
    from pyscf.pbc.gto import pseudo as gto_pseudo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(gto_pseudo.load(pseudo, element))
        except Exception:
            return False


def unsupported_elements(elements: Iterable[str], settings: LabelSettings | Mapping[str, Any]) -> list[str]:
    """Elements the configured basis or pseudopotential cannot describe, sorted, unique.

    ``settings`` is a LabelSettings; a (partial) ``label:`` section is accepted at the public edge.

    An element is unsupported when PySCF has no ``basis`` for it, or (unless ``pseudo`` is
    null, i.e. all-electron) no ``pseudo`` for it. Unknown symbols are unsupported too.
    Example: the lanthanides with the default ``gth-szv-molopt-sr``.
    """
    from matscreen.label.settings import as_settings

    settings = as_settings(settings)
    bad = set()
    for el in elements:
        el = str(el)
        if not _has_basis(settings.basis, el) or (settings.pseudo is not None and not _has_pseudo(settings.pseudo, el)):
            bad.add(el)
    return sorted(bad)
