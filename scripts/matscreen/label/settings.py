"""The ``label:`` config section as a frozen dataclass, built once, and its physics hash.

:class:`LabelSettings` mirrors ``workflow/schemas/config.schema.yaml`` (the one place defaults
live): :func:`as_settings` fills the defaults and validates (:func:`matscreen.config.build_settings`)
and passes an existing instance through unchanged, so a section is resolved exactly once, at the
edge (Snakemake adapter, CLI, test), and every function below the edge takes the instance.

:attr:`LabelSettings.hash` is the settings hash of the label store: computed on first use and
kept on the instance. Importing this module is light (no PySCF, no pymatgen).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matscreen.config import REPO_ROOT, build_settings, settings_dict
from matscreen.provenance import stable_hash

#: Keys of the ``label:`` section that never change a computed energy: selection, cache location,
#: memory cap, cluster resources; the plausibility window acts after the SCF, in gather;
#: ``competing`` chooses which structures are labeled, not how one is computed;
#: ``scf_stall_cycles`` only decides when an attempt that makes no progress gives way to the next
#: (a converged energy is the same within ``conv_tol``). Everything else goes into the settings hash.
NON_PHYSICAL_KEYS = (
    "select",
    "store",
    "seed_stores",
    "max_memory_mb",
    "resources",
    "formation_energy_window_ev_per_atom",
    "competing",
    "scf_stall_cycles",
)


@dataclass(frozen=True)
class Select:
    ingested: bool
    max_sites: int
    candidates: int
    families: tuple[str, ...]
    elements: tuple[str, ...] | None
    per_family: dict[str, int] | None
    max_per_system: int | None


@dataclass(frozen=True)
class KPoints:
    kmesh: tuple[int, ...] | None
    kdensity: float
    with_gamma_point: bool
    reference_kdensity: float
    gamma_only_min_sites: int | None


@dataclass(frozen=True)
class Smearing:
    method: str
    width: float


@dataclass(frozen=True)
class Spin:
    mode: str
    magnetic_moments: dict[str, float]


@dataclass(frozen=True)
class VolumeScan:
    points: int
    step: float
    max_extra: int
    eos: str


@dataclass(frozen=True)
class Competing:
    enabled: bool
    oxidation_states: str
    max_polymorphs: int
    include_expensive: bool
    files: tuple[str, ...]


@dataclass(frozen=True)
class References:
    file: str
    box_ang: float


@dataclass(frozen=True)
class Resources:
    threads: int
    safety: float
    attempt_factor: float
    min_mem_mb: int
    min_runtime: int
    retries: int


@dataclass(frozen=True)
class LabelSettings:
    """The resolved ``label:`` section (field meanings: ``config/README.md``, the schema)."""

    select: Select
    xc: str
    basis: str
    pseudo: str | None
    kpoints: KPoints
    ke_cutoff: float
    mesh: tuple[int, ...] | None
    precision: float
    density_fit: str
    smearing: Smearing
    spin: Spin
    conv_tol: float
    max_cycle: int
    init_guess: str
    init_guess_by_element: dict[str, str]
    failure_ladder: tuple[dict[str, Any], ...]
    scf_stall_cycles: int
    relax: str
    volume_scan: VolumeScan
    competing: Competing
    references: References
    max_memory_mb: int
    formation_energy_window_ev_per_atom: tuple[float, ...]
    store: str
    seed_stores: tuple[str, ...]
    resources: Resources

    @property
    def hash(self) -> str:
        """The settings hash (:func:`settings_hash`), computed once per instance."""
        cached = self.__dict__.get("_settings_hash")
        if cached is None:
            cached = _compute_hash(self)
            object.__setattr__(self, "_settings_hash", cached)  # not a field: asdict/eq ignore it
        return cached

    def replace(self, **changes: Any) -> LabelSettings:
        """A copy with top-level fields changed (the copy computes its own hash)."""
        return dataclasses.replace(self, **changes)


def as_settings(settings: LabelSettings | Mapping[str, Any] | None) -> LabelSettings:
    """The :class:`LabelSettings` of a (partial) ``label:`` section; an instance as it is.

    The public edges (Snakemake adapters, CLI, the package's convenience functions) call this;
    functions below them take the instance and never resolve again.
    """
    return build_settings(LabelSettings, "label", settings)


def resolve_settings(settings: LabelSettings | Mapping[str, Any] | None) -> LabelSettings:
    """Alias of :func:`as_settings` (tests, the Python API): ``{}`` means all defaults."""
    return as_settings(settings)


def physical_settings(settings: LabelSettings | Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of the settings that decides the computed numbers, as a plain dict (provenance)."""
    full = settings_dict(as_settings(settings))
    return {k: v for k, v in full.items() if k not in NON_PHYSICAL_KEYS}


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A config path: absolute as given, else relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def reference_table_digest(path: str | os.PathLike[str]) -> str:
    """sha256 (16 hex) of the reference YAML's bytes: part of the settings hash."""
    return hashlib.sha256(resolve_path(path).read_bytes()).hexdigest()[:16]


def _compute_hash(s: LabelSettings) -> str:
    phys = physical_settings(s)
    phys["references"] = {**phys["references"], "file": reference_table_digest(phys["references"]["file"])}
    return stable_hash(phys)


def settings_hash(settings: LabelSettings | Mapping[str, Any] | None) -> str:
    """Hash of everything that changes a label: level of theory, sampling, SCF and ladder.

    :data:`NON_PHYSICAL_KEYS` are left out; defaults are filled first, so ``{}`` and the
    explicit default section hash the same. The reference-phase file's content is included,
    since changing a lattice parameter there changes formation energies. Pinned in
    ``tests/test_label.py``: the label store is keyed by it.
    """
    return as_settings(settings).hash
