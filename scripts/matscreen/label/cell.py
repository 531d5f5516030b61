"""The PySCF cell of a structure: k-point mesh, cell, pseudopotential-screening check, preflight.

What the label stage hands PySCF before any SCF runs: :func:`kmesh_for` (the one rule that
chooses a mesh; the resource model and the tests call it too), :func:`build_cell` and
:func:`checked_cell` (the cell, rebuilt tighter where PySCF's screened k-point integrals lose
pseudopotential terms), and :func:`unsupported_elements` (elements the basis or pseudopotential
lacks; the target checkpoint asks it). The SCF itself is :mod:`matscreen.label.pyscf`.
Plain functions of a pymatgen ``Structure`` and :class:`~matscreen.label.settings.LabelSettings`;
PySCF is imported inside them, so importing this module stays light.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
from pymatgen.core import Structure

from matscreen.label.settings import LabelSettings

log = logging.getLogger(__name__)


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


# --- preflight: can PySCF describe these elements with the settings? ------------------------------


@cache
def _has_basis(basis: str, element: str) -> bool:
    from pyscf.gto import basis as gto_basis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Basis may be available in basis-set-exchange"
        try:
            return bool(gto_basis.load(basis, element))
        except Exception:  # BasisNotFoundError, KeyError, RuntimeError for unknown symbols
            return False


@cache
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
