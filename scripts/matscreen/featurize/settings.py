"""The ``featurize:`` settings, resolved once into frozen dataclasses, and their config check (light import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from matscreen.config import ConfigError, build_settings

#: Settings that change how features are computed but not their values (not in the hash).
RUNTIME_KEYS = ("fast_path", "block_rows", "progress_every_s")


@dataclass(frozen=True)
class StructureFeatureSettings:
    """``featurize.structure``: matminer structure featurizers (they read the ``structure`` column)."""

    density: bool
    global_symmetry: bool
    site_stats_fingerprint: bool
    site_stats_preset: str


@dataclass(frozen=True)
class FeaturizeSettings:
    """``featurize:`` (keys and meanings: ``config/README.md``; defaults: the schema).

    The feature values depend on every field except :data:`RUNTIME_KEYS` (how they are computed).
    """

    element_property: tuple[str, ...]
    stoichiometry: bool
    valence_orbital: bool
    ion_property: bool
    oxidation_states: bool
    site_features: bool
    anion_cn: int
    radius_fallback: str
    structure: StructureFeatureSettings
    fast_path: bool
    block_rows: int
    progress_every_s: float


def resolve_settings(settings: FeaturizeSettings | Mapping[str, Any] | None) -> FeaturizeSettings:
    """:class:`FeaturizeSettings` from a (partial) ``featurize:`` section; an instance passes through."""
    return build_settings(FeaturizeSettings, "featurize", settings)


def check_config(config: Mapping[str, Any]) -> None:
    """In :func:`matscreen.config.check_semantics`: at least one feature set is switched on.

    From the settings alone, so the Snakemake controller that runs it imports no matminer (building
    the featurizers costs about 1.3 s). Preset names are the schema's enums; the featurizers
    themselves are built by the featurize jobs."""
    s = resolve_settings(config["featurize"])
    switches = (s.stoichiometry, s.valence_orbital, s.ion_property, s.oxidation_states, s.site_features)
    if not (s.element_property or any(switches) or any(getattr(s.structure, k) for k in STRUCTURE_SWITCHES)):
        raise ConfigError("config key 'featurize': every feature set is switched off; enable at least one")


STRUCTURE_SWITCHES = ("density", "global_symmetry", "site_stats_fingerprint")


def structure_features_on(settings: FeaturizeSettings | Mapping[str, Any] | None) -> bool:
    """Whether any structure feature set is switched on (then the ``structure`` column is read)."""
    st = resolve_settings(settings).structure
    return any(getattr(st, k) for k in STRUCTURE_SWITCHES)
