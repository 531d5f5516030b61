"""The typed ``ingest:`` settings: one frozen dataclass per (nested) config section.

The schema (``workflow/schemas/config.schema.yaml``) holds every default; these classes only
declare the fields. Build them once at the edge with :func:`resolve_settings` (or
:func:`matscreen.config.build_settings`) and pass them down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from matscreen.config import build_settings


@dataclass(frozen=True)
class RecognitionSettings:
    """``ingest.recognition``: coordination search and the StructureMatcher confirmation."""

    search_radius_ang: float
    confirm_with_matcher: bool
    ltol: float
    stol: float
    angle_tol: float


@dataclass(frozen=True)
class DedupeSettings:
    """``ingest.dedupe``: which structures count as the same crystal."""

    enabled: bool
    ltol: float
    stol: float
    angle_tol: float
    scale: bool
    same_spacegroup: bool


@dataclass(frozen=True)
class IngestSettings:
    """``ingest:`` (keys and meanings: ``config/README.md``)."""

    inputs: tuple[str, ...]
    existing: str | None
    cache: str | None
    ignore: tuple[str, ...]
    disordered: Literal["reject", "ordered_approximant"]
    occupancy_tolerance: float
    symprec: float
    angle_tolerance: float
    min_distance_ang: float
    max_sites: int
    max_file_mb: float
    timeout_s: float
    require_charge_balance: bool
    recognition: RecognitionSettings
    dedupe: DedupeSettings


def resolve_settings(section: IngestSettings | Mapping[str, Any] | None) -> IngestSettings:
    """:class:`IngestSettings` from a (partial) ``ingest:`` section; an instance passes through."""
    return build_settings(IngestSettings, "ingest", section)
