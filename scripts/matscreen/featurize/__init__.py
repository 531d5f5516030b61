"""Stage 4, featurize: matminer descriptors plus site-aware descriptors, fast and identical for all rows.

Candidates (from ``enumerate``), labeled structures and external label tables are featurized by
the same code from the same columns, so the trainer and the screener see identical features:

* **composition** features are matminer's own (ElementProperty presets, Stoichiometry,
  ValenceOrbital, IonProperty, OxidationStates), computed from the composition per formula unit
  that the site occupancy columns describe (``A_species`` ... ``X_species``, see
  :func:`row_composition`); rows of family ``other`` (or with unusable site columns) use their
  ``formula``. At screening scale they come from the vectorised fast path in
  :mod:`.fast`, which the tests check against matminer's
  ``featurize_dataframe`` to 1e-9 relative; whatever has no fast path runs through matminer
  row by row with a progress log.
* **site** features (:mod:`.site`): electronegativity, Shannon radius and
  oxidation state per coordination role, their differences and ratios, tolerance factors.
* **structure** features (opt-in, prefix ``struct_``): DensityFeatures, GlobalSymmetryFeatures,
  SiteStatsFingerprint, for rows that carry a ``structure`` JSON column (labeled structures).
  Candidates have no structure, so these columns are NaN for them: the trainer should drop
  ``struct_*`` columns when the model is to screen candidates.

The output columns depend only on the settings, never on the rows, so any two frames
featurized with the same settings have identical columns in identical order. A row that cannot
be featurized gets NaN and a reason in ``featurize_error``; nothing a row contains stops a shard.

The package along its seams:

* :mod:`.settings` -- ``FeaturizeSettings`` (the typed ``featurize:`` section) and its config check (light import)
* :mod:`.sets` -- the selected feature sets, their names, citations and ``feature_set_hash``
* :mod:`.compositions` -- a row's composition (``row_composition``) and the fast path's parsed blocks
* :mod:`.fast` -- the vectorised composition features (checked equal to matminer by the tests)
* :mod:`.site` -- the site-aware descriptors
* :mod:`.featurizers` -- the same site descriptors as matminer ``BaseFeaturizer`` classes (for use outside matscreen)
* :mod:`.frames` -- ``featurize_frame``: blocks, fast paths, matminer for the rest, errors per row
* :mod:`.stage` -- ``run`` (the rule's)

The public API is re-exported here lazily (``from matscreen import featurize; featurize.run(...)``),
so the controller's config check imports only :mod:`.settings`.
"""

from __future__ import annotations

from matscreen.lazy import lazy_exports

#: name -> submodule of the re-exported public API
_EXPORTS = {
    "settings": (
        "RUNTIME_KEYS",
        "STRUCTURE_SWITCHES",
        "StructureFeatureSettings",
        "FeaturizeSettings",
        "resolve_settings",
        "structure_features_on",
        "check_config",
    ),
    "sets": (
        "FEATURE_CODE_VERSION",
        "SYMMETRY_FEATURES",
        "safe_name",
        "FeatureSet",
        "feature_sets",
        "feature_names",
        "feature_name_map",
        "citations",
        "feature_set_hash",
    ),
    "compositions": ("SITE_SPECIES_COLUMNS", "row_composition", "composition_block"),
    "frames": ("feature_values", "featurize_frame"),
    "stage": ("STAGE", "run"),
}
_SUBMODULES = ("settings", "sets", "compositions", "fast", "site", "frames", "stage")

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
