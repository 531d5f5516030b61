"""matscreen's site-aware descriptors as matminer featurizers.

The pipeline computes the site features of :mod:`matscreen.featurize.site` with its vectorised
path (:func:`matscreen.featurize.site.site_features`: every distinct occupancy string once, then
gathered per row). The classes here give the same numbers one row at a time behind matminer's
:class:`~matminer.featurizers.base.BaseFeaturizer` interface, so they can be used wherever a
matminer featurizer can: ``featurize_dataframe``, ``MultipleFeaturizer``, scikit-learn pipelines.
As in matminer, every constructor argument is stored under its own name (``get_params`` works).

A row is described by its family and its site occupancies, the columns of the candidates and
label-targets tables::

    from matscreen.featurize.featurizers import SiteRoleFeatures, PerovskiteToleranceFactors
    df = SiteRoleFeatures().featurize_dataframe(candidates, list(SiteRoleFeatures.COLUMNS))

A value that cannot be computed (a role the family lacks, an ion without a Shannon radius) is NaN,
exactly as in the pipeline's tables; ``featurize`` raises only for an unknown family.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from matminer.featurizers.base import BaseFeaturizer

from matscreen.families import FAMILIES, SITE_LABELS
from matscreen.featurize import site as featurize_site

#: The columns ``featurize`` reads, in its argument order: ``family`` then ``{site}_species``.
COLUMNS: tuple[str, ...] = ("family", *(f"{s}_species" for s in SITE_LABELS))

_TOLERANCE = ("site_goldschmidt_t", "site_octahedral_factor", "site_bartel_tau")


class _SiteFeaturizer(BaseFeaturizer):
    """A subset of :func:`matscreen.featurize.site.feature_labels`, computed for one row."""

    COLUMNS: ClassVar[tuple[str, ...]] = COLUMNS
    _LABELS: ClassVar[tuple[str, ...]] = ()
    _CITATIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, anion_cn: int = 6, radius_fallback: str = "nearest_cn") -> None:
        # Defaults as in the schema's featurize.anion_cn / featurize.radius_fallback; the pipeline
        # passes its FeaturizeSettings values (see matscreen.featurize).
        if radius_fallback not in ("nearest_cn", "none"):
            raise ValueError(f"radius_fallback must be 'nearest_cn' or 'none', got {radius_fallback!r}")
        self.anion_cn = anion_cn
        self.radius_fallback = radius_fallback

    def featurize(self, family: str, *species: Any) -> list[float]:
        """Features of one row: ``family`` and the occupancy strings of ``SITE_LABELS`` in order
        (``None`` for sites the family lacks)."""
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r} (site features exist for {', '.join(FAMILIES)})")
        if len(species) != len(SITE_LABELS):
            raise TypeError(
                f"featurize() takes the family and {len(SITE_LABELS)} site occupancies ({', '.join(SITE_LABELS)})"
            )
        columns = {label: np.array([value], dtype=object) for label, value in zip(SITE_LABELS, species, strict=True)}
        values, _ = featurize_site.site_features(
            np.array([family], dtype=object), columns, int(self.anion_cn), self.radius_fallback
        )
        index = _index()
        return [float(values[0, index[name]]) for name in self._LABELS]

    def feature_labels(self) -> list[str]:
        return list(self._LABELS)

    def citations(self) -> list[str]:
        return list(self._CITATIONS)

    def implementors(self) -> list[str]:
        return ["matscreen"]


def _index() -> dict[str, int]:
    return {name: i for i, name in enumerate(featurize_site.feature_labels())}


_CITE = {c.split("{", 1)[1].split(",", 1)[0]: c for c in featurize_site.CITATIONS}


class SiteRoleFeatures(_SiteFeaturizer):
    """Electronegativity, Shannon radius, oxidation state and size variance per coordination role
    (large, octahedral, tetrahedral, anion), their differences and ratios, and the B/B2 split of a
    double perovskite (Ye et al., Nat. Commun. 9, 3800, 2018; Shannon 1976)."""

    _LABELS = tuple(n for n in featurize_site.feature_labels() if n not in _TOLERANCE)
    _CITATIONS = (_CITE["ye_2018"], _CITE["shannon_1976"])


class PerovskiteToleranceFactors(_SiteFeaturizer):
    """Goldschmidt t, octahedral factor mu and Bartel's tau from the role radii (perovskites and
    double perovskites; NaN for other families)."""

    _LABELS = _TOLERANCE
    _CITATIONS = (_CITE["goldschmidt_1926"], _CITE["bartel_2019"], _CITE["shannon_1976"])


class SiteAwareFeatures(_SiteFeaturizer):
    """Every site-aware feature, in the pipeline's column order (:func:`featurize_site.feature_labels`)."""

    _LABELS = tuple(featurize_site.feature_labels())
    _CITATIONS = featurize_site.CITATIONS
