"""The ``train:`` settings, resolved once into frozen dataclasses (light: no LightGBM, no pandas)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matscreen.config import build_settings


@dataclass(frozen=True)
class TuningSettings:
    enabled: bool
    inner_folds: int
    grid: dict[str, Any]


@dataclass(frozen=True)
class StabilitySettings:
    targets: tuple[str, ...]
    threshold_ev_per_atom: float
    top_n: int


@dataclass(frozen=True)
class LearningCurveSettings:
    enabled: bool
    fractions: tuple[float, ...]


@dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` config section, resolved once (:func:`resolve_settings`); the schema holds the defaults."""

    target: str | tuple[str, ...]
    cv_folds: int
    cv_groups: str
    ensemble_size: int
    num_boost_round: int
    external_labels: tuple[str, ...]
    min_labels: int
    hyperparameters: str
    lightgbm: dict[str, Any]
    tuning: TuningSettings
    calibrate: bool
    stability: StabilitySettings
    learning_curve: LearningCurveSettings

    @property
    def targets(self) -> tuple[str, ...]:
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)


def resolve_settings(section: Mapping[str, Any] | TrainSettings | None) -> TrainSettings:
    """:class:`TrainSettings` from a (partial) ``train:`` section, or the instance unchanged."""
    return build_settings(TrainSettings, "train", section)


def target_list(target: str | Sequence[str] | None) -> list[str]:
    if target is None:
        return []
    return [target] if isinstance(target, str) else list(target)


def primary_target(config: Mapping[str, Any]) -> str:
    """The target screens rank by: screen.rank_by, else the first train.target."""
    scr = config.get("screen") or {}
    return scr.get("rank_by") or target_list((config.get("train") or {}).get("target"))[0]
