"""The ``enumerate:`` settings, resolved once into frozen dataclasses, and their config checks.

Light: pymatgen is imported only to expand and check site-list entries (its element and
oxidation-state tables), which is what the Snakemake controller's config check runs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matscreen.config import ConfigError, build_settings
from matscreen.families import FAMILIES, Family, get_family

log = logging.getLogger(__name__)


_ION_RE = re.compile(r"^([A-Z][a-z]?)(?:(\d*)([+-]))?$")


@dataclass(frozen=True)
class RangeFilter:
    """``enumerate.filters.tolerance_factor`` / ``octahedral_factor``: keep min <= value <= max."""

    enabled: bool
    min: float
    max: float


@dataclass(frozen=True)
class TauFilter:
    """``enumerate.filters.tau``: keep tau < max (Bartel et al. 2019)."""

    enabled: bool
    max: float


@dataclass(frozen=True)
class RadiusRatioFilter:
    """``enumerate.filters.radius_ratio``: r_site / r_X inside ``windows[family][site]`` = [min, max]."""

    enabled: bool
    windows: Mapping[str, Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class EnumerateFilters:
    """``enumerate.filters``, in the order they are applied (:data:`FILTERS`)."""

    charge_neutrality: bool
    shannon_radius: bool
    electronegativity: bool
    tolerance_factor: RangeFilter
    octahedral_factor: RangeFilter
    tau: TauFilter
    radius_ratio: RadiusRatioFilter


@dataclass(frozen=True)
class MixingSettings:
    """``enumerate.mixing``: two ions sharing one cation site in fractions k/denominator."""

    enabled: bool
    denominator: int
    #: family -> cation sites that may be mixed
    sites: Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class EnumerateSettings:
    """``enumerate:`` (keys and meanings: ``config/README.md``; defaults: the schema)."""

    families: tuple[str, ...]
    shards: int
    cations: tuple[str, ...]
    oxidation_states: str
    anion_radius_cn: int
    #: family -> site -> element/ion entries, or None for the shared ``cations`` pool
    sites: Mapping[str, Mapping[str, Sequence[str] | None]]
    filters: EnumerateFilters
    mixing: MixingSettings


def resolve_settings(settings: EnumerateSettings | Mapping[str, Any] | None) -> EnumerateSettings:
    """:class:`EnumerateSettings` from a (partial) ``enumerate:`` section, checked; an instance passes through.

    Accepts ``{}`` or a partial section, so the library behaves the same whether or not the
    whole config was validated first. Raises :class:`ConfigError` naming the key.
    """
    if isinstance(settings, EnumerateSettings):
        return settings
    out = build_settings(EnumerateSettings, "enumerate", settings)
    check_settings(out)
    return out


def parse_ion_entry(entry: str, *, anion: bool, policy: str, key: str) -> list[tuple[str, float]]:
    """Expand one site-list entry into (element, oxidation state) pairs.

    ``"Fe3+"`` gives exactly Fe3+; ``"Fe"`` gives Fe in every state of the pymatgen list named by
    ``policy`` (``common``, ``icsd`` or ``all``) with the site's sign. ``key`` names the config
    key in errors: an unknown element, a state pymatgen does not know for the element, a sign that
    does not fit the site, or an element with no state of the right sign.
    """
    from pymatgen.core.periodic_table import Element

    m = _ION_RE.match(str(entry).strip())
    if not m:
        raise ConfigError(
            f"config key {key!r}: cannot read {entry!r} (expected an element like 'Fe' or an ion like 'Fe3+')"
        )
    symbol, mag, sign = m.groups()
    if not Element.is_valid_symbol(symbol):
        raise ConfigError(f"config key {key!r}: unknown element {symbol!r}")
    el = Element(symbol)
    if sign:
        oxi = (int(mag) if mag else 1) * (1 if sign == "+" else -1)
        if oxi not in el.oxidation_states:
            raise ConfigError(
                f"config key {key!r}: pymatgen knows no oxidation state {oxi:+d} for {symbol} "
                f"(known: {', '.join(f'{o:+d}' for o in el.oxidation_states) or 'none'})"
            )
        if (oxi < 0) != anion:
            raise ConfigError(
                f"config key {key!r}: {entry!r} is {'a cation' if oxi > 0 else 'an anion'} on {'an anion' if anion else 'a cation'} site"
            )
        return [(symbol, float(oxi))]
    states = {"common": el.common_oxidation_states, "icsd": el.icsd_oxidation_states, "all": el.oxidation_states}[
        policy
    ]
    picked = sorted({int(o) for o in states if (o < 0) == anion and o != 0})
    if not states:  # pymatgen has no data for this element in that list: it contributes no ion
        log.warning("config key %r: %s has no oxidation states in pymatgen's %s list; skipped", key, symbol, policy)
        return []
    if not picked:
        raise ConfigError(
            f"config key {key!r}: {symbol} has no {'negative' if anion else 'positive'} oxidation state in "
            f"pymatgen's {policy} list ({tuple(states)}); name the ion explicitly, e.g. '{symbol}2{'-' if anion else '+'}'"
        )
    return [(symbol, float(o)) for o in picked]


def site_ions(settings: EnumerateSettings, family: str, site: str) -> list[tuple[str, float]]:
    """The ions (element, oxidation) allowed on ``site`` of ``family``, in config order, without repeats."""
    fam = get_family(family)
    s = fam.site(site)
    entries = settings.sites[family][site]
    key = f"enumerate.sites.{family}.{site}"
    if entries is None:
        entries, key = settings.cations, "enumerate.cations"
    if len(entries) == 0:
        raise ConfigError(f"config key {key!r}: the site list is empty")
    seen: dict[tuple[str, float], None] = {}
    for i, entry in enumerate(entries):
        for ion in parse_ion_entry(entry, anion=s.is_anion, policy=settings.oxidation_states, key=f"{key}[{i}]"):
            seen.setdefault(ion, None)
    if not seen:
        raise ConfigError(
            f"config key {key!r}: no ion left for {family} site {site!r} with oxidation_states {settings.oxidation_states!r}"
        )
    return list(seen)


def check_settings(settings: EnumerateSettings) -> None:
    """Raise :class:`ConfigError` for what the JSON schema cannot see."""
    for i, name in enumerate(settings.families):
        if name not in FAMILIES:
            raise ConfigError(
                f"config key 'enumerate.families[{i}]': unknown family {name!r} (known: {', '.join(FAMILIES)})"
            )
    for fam_name, sites in settings.sites.items():
        fam = FAMILIES.get(fam_name)
        if fam is None:
            raise ConfigError(
                f"config key 'enumerate.sites.{fam_name}': unknown family {fam_name!r} (known: {', '.join(FAMILIES)})"
            )
        for label in sites:
            if label not in fam.site_labels:
                raise ConfigError(
                    f"config key 'enumerate.sites.{fam_name}.{label}': family {fam_name} has no site {label!r} (sites: {', '.join(fam.site_labels)})"
                )
        for label in fam.site_labels:
            site_ions(settings, fam_name, label)  # raises on bad entries
    for fam_name, windows in settings.filters.radius_ratio.windows.items():
        fam = FAMILIES.get(fam_name)
        if fam is None:
            raise ConfigError(
                f"config key 'enumerate.filters.radius_ratio.windows.{fam_name}': unknown family {fam_name!r}"
            )
        for label, (lo, hi) in windows.items():
            key = f"enumerate.filters.radius_ratio.windows.{fam_name}.{label}"
            if label not in fam.site_labels or fam.site(label).is_anion:
                raise ConfigError(f"config key {key!r}: family {fam_name} has no cation site {label!r}")
            if lo > hi:
                raise ConfigError(f"config key {key!r}: window [{lo}, {hi}] is empty (min > max)")
    for name in ("tolerance_factor", "octahedral_factor"):
        f = getattr(settings.filters, name)
        if f.min > f.max:
            raise ConfigError(f"config key 'enumerate.filters.{name}': min {f.min} > max {f.max}")


def check_config(config: Mapping[str, Any]) -> None:
    """In :data:`matscreen.config.SEMANTIC_CHECKS`: bad enumerate settings fail before any job runs."""
    resolve_settings(config["enumerate"])


def mixing_sites(family: Family, settings: EnumerateSettings) -> list[str]:
    """Cation sites of ``family`` that enumerate.mixing mixes (none when mixing is off)."""
    mix = settings.mixing
    if not mix.enabled or family.name == "spinel":
        return []
    return list(mix.sites.get(family.name) or [])


def check_mixing(config: dict[str, Any]) -> None:
    mix = (config.get("enumerate") or {}).get("mixing") or {}
    for fam_name, labels in (mix.get("sites") or {}).items():
        if fam_name not in FAMILIES:
            raise ConfigError(f"config key 'enumerate.mixing.sites.{fam_name}': unknown family {fam_name!r}")
        if fam_name == "spinel":
            raise ConfigError(
                "config key 'enumerate.mixing.sites.spinel': spinels are not mixed "
                "(their inverse arrangement is already a mixed site)"
            )
        cations = [x.label for x in FAMILIES[fam_name].cation_sites]
        for i, label in enumerate(labels or []):
            if label not in cations:
                raise ConfigError(
                    f"config key 'enumerate.mixing.sites.{fam_name}[{i}]': {label!r} is not a cation "
                    f"site of {fam_name} ({', '.join(cations)})"
                )
