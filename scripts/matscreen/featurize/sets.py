"""The feature sets the settings select: matminer featurizers (with their fast paths), site features,
structure featurizers; their column names, citations and the hash of everything that decides the values."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np

from matscreen.config import ConfigError, settings_dict
from matscreen.featurize import fast as ff
from matscreen.featurize import site as featurize_site
from matscreen.featurize.settings import RUNTIME_KEYS, FeaturizeSettings, resolve_settings, structure_features_on
from matscreen.provenance import stable_hash

#: Bump when the definition of a feature computed by matscreen itself changes (enters the hash).
FEATURE_CODE_VERSION = 1


#: Numeric GlobalSymmetryFeatures (the crystal system name is a string).
SYMMETRY_FEATURES = ("spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops")


def safe_name(label: str, prefix: str = "") -> str:
    """A column name LightGBM accepts: letters, digits and underscores only."""
    return prefix + re.sub(r"[^0-9A-Za-z]+", "_", label).strip("_")


@dataclass
class FeatureSet:
    """One group of feature columns: where it comes from, its names, its citations, how it is computed."""

    key: str  #: e.g. ``element_property:magpie``, ``site``, ``structure:density``
    kind: str  #: ``composition``, ``site`` or ``structure``
    labels: tuple[str, ...]  #: matminer feature labels (or descriptions for site features)
    names: tuple[str, ...]  #: safe column names
    citations: tuple[str, ...]
    featurizer: Any = None  #: matminer featurizer (reference / slow path)
    #: vectorised fast path: block -> (values (n, k), handled (n,) bool); None = matminer only
    fast: Callable[[ff.CompositionBlock], tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)


def _composition_sets(s: FeaturizeSettings) -> list[FeatureSet]:
    from matminer.featurizers.composition import (
        ElementProperty,
        IonProperty,
        OxidationStates,
        Stoichiometry,
        ValenceOrbital,
    )

    sets: list[FeatureSet] = []
    for preset in s.element_property:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = ElementProperty.from_preset(preset)
        labels = tuple(f.feature_labels())
        fast = None
        if set(f.stats) <= ff.FAST_STATS:
            source_key = f"ElementProperty:{preset}"
            ff.register_source(source_key, f.data_source)

            def fast(b: ff.CompositionBlock, _k: str = source_key, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
                vals, bad = ff.element_property(b, _k, _f.features, _f.stats)
                return vals, ~bad

        sets.append(
            FeatureSet(
                f"element_property:{preset}",
                "composition",
                labels,
                tuple(safe_name(x) for x in labels),
                tuple(f.citations()),
                f,
                fast,
            )
        )
    if s.stoichiometry:
        f = Stoichiometry()
        labels = tuple(f.feature_labels())

        def fast_st(b: ff.CompositionBlock, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
            return ff.stoichiometry(b, _f.p_list, _f.num_atoms), np.ones(len(b), bool)

        sets.append(
            FeatureSet(
                "stoichiometry",
                "composition",
                labels,
                tuple(safe_name(x, "stoich_") for x in labels),
                tuple(f.citations()),
                f,
                fast_st,
            )
        )
    if s.valence_orbital:
        f = ValenceOrbital()
        labels = tuple(f.feature_labels())
        ff.register_source("ValenceOrbital", f.data_source)

        def fast_vo(b: ff.CompositionBlock, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
            return ff.valence_orbital(b, "ValenceOrbital", _f.orbitals, _f.props), np.ones(len(b), bool)

        sets.append(
            FeatureSet(
                "valence_orbital",
                "composition",
                labels,
                tuple(safe_name(x, "valence_") for x in labels),
                tuple(f.citations()),
                f,
                fast_vo,
            )
        )
    if s.ion_property:
        f = IonProperty()
        labels = tuple(f.feature_labels())
        ff.register_source("IonProperty", f.data_source)

        def fast_ip(b: ff.CompositionBlock) -> tuple[np.ndarray, np.ndarray]:
            return ff.ion_property(b, "IonProperty")

        sets.append(
            FeatureSet(
                "ion_property",
                "composition",
                labels,
                tuple(safe_name(x, "ion_") for x in labels),
                tuple(f.citations()),
                f,
                fast_ip,
            )
        )
    if s.oxidation_states:
        f = OxidationStates()
        labels = tuple(f.feature_labels())
        fast_ox = None
        if set(f.stats) <= ff.FAST_STATS:

            def fast_ox(b: ff.CompositionBlock, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
                return ff.oxidation_states(b, _f.stats), b.valid & b.has_oxi

        sets.append(
            FeatureSet(
                "oxidation_states",
                "composition",
                labels,
                tuple(safe_name(x, "oxi_") for x in labels),
                tuple(f.citations()),
                f,
                fast_ox,
            )
        )
    return sets


def _structure_sets(s: FeaturizeSettings) -> list[FeatureSet]:
    st = s.structure
    sets: list[FeatureSet] = []
    if not structure_features_on(s):
        return sets
    from matminer.featurizers.structure import DensityFeatures, GlobalSymmetryFeatures, SiteStatsFingerprint

    if st.density:
        f = DensityFeatures()
        labels = tuple(f.feature_labels())
        sets.append(
            FeatureSet(
                "structure:density",
                "structure",
                labels,
                tuple(safe_name(x, "struct_") for x in labels),
                tuple(f.citations()),
                f,
            )
        )
    if st.global_symmetry:
        f = GlobalSymmetryFeatures(desired_features=list(SYMMETRY_FEATURES))
        labels = tuple(f.feature_labels())
        sets.append(
            FeatureSet(
                "structure:global_symmetry",
                "structure",
                labels,
                tuple(safe_name(x, "struct_") for x in labels),
                tuple(f.citations()),
                f,
            )
        )
    if st.site_stats_fingerprint:
        f = SiteStatsFingerprint.from_preset(st.site_stats_preset)
        labels = tuple(f.feature_labels())
        sets.append(
            FeatureSet(
                "structure:site_stats_fingerprint",
                "structure",
                labels,
                tuple(safe_name(x, "struct_ssf_") for x in labels),
                tuple(f.citations()),
                f,
            )
        )
    return sets


@lru_cache(maxsize=16)
def _feature_sets_cached(s: FeaturizeSettings) -> tuple[FeatureSet, ...]:
    sets = _composition_sets(s)
    if s.site_features:
        desc = featurize_site.feature_labels()
        sets.append(FeatureSet("site", "site", tuple(desc.values()), tuple(desc), featurize_site.CITATIONS))
    sets += _structure_sets(s)
    names = [n for fs in sets for n in fs.names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"config key 'featurize': feature names collide after sanitising: {dup[:5]}")
    return tuple(sets)


def feature_sets(settings: FeaturizeSettings | Mapping[str, Any] | None) -> tuple[FeatureSet, ...]:
    """The feature sets the settings select, in output column order."""
    s = resolve_settings(settings)
    return _feature_sets_cached(dataclasses.replace(s, **dict.fromkeys(RUNTIME_KEYS)))  # cached per feature choice


def feature_names(settings: FeaturizeSettings | Mapping[str, Any] | None) -> list[str]:
    """Output feature columns, in order (the same for every input frame)."""
    return [n for fs in feature_sets(settings) for n in fs.names]


def feature_name_map(settings: FeaturizeSettings | Mapping[str, Any] | None) -> dict[str, str]:
    """Safe column name -> matminer feature label (site features: their description), in column order."""
    out: dict[str, str] = {}
    for fs in feature_sets(settings):
        prefix = "site-aware: " if fs.kind == "site" else f"{type(fs.featurizer).__name__}: "
        out.update({n: prefix + lab for n, lab in zip(fs.names, fs.labels)})
    return out


def citations(settings: FeaturizeSettings | Mapping[str, Any] | None) -> dict[str, list[str]]:
    """BibTeX entries per feature set (matminer's ``citations()``; site features: their papers)."""
    return {fs.key: list(fs.citations) for fs in feature_sets(settings)}


def feature_set_hash(settings: FeaturizeSettings | Mapping[str, Any] | None) -> str:
    """Hash of everything that decides the feature values: settings, names, code and matminer version."""
    s = resolve_settings(settings)
    return stable_hash(
        {
            "settings": {k: v for k, v in settings_dict(s).items() if k not in RUNTIME_KEYS},
            "names": feature_names(s),
            "code_version": FEATURE_CODE_VERSION,
            "matminer": metadata.version("matminer"),
            "pymatgen": metadata.version("pymatgen"),
        }
    )
