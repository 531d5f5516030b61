"""Stage 5: LightGBM models with honest cross-validation and calibrated ensemble uncertainty.

Honest means: folds are grouped (``train.cv_groups``: by reduced formula, so polymorphs of one
composition never sit on both sides of a split, or by chemical system, so no element set does),
every metric is computed on held-out rows only, and the uncertainty of a prediction is the
spread of an ensemble of models trained on bootstrap resamples with different seeds, rescaled by
a factor fitted on the out-of-fold residuals so that the 1-sigma band covers about 68 % of the
errors (coverage before and after is reported; "after" is cross-fitted: each fold's factor comes
from the other folds' residuals).

One model per target (``train.target``: a column name or a list). Hyperparameters scale with
the training-set size (:func:`auto_params`) unless ``train.hyperparameters: fixed``; optional
nested-CV tuning (``train.tuning``). The fitted models are one JSON file (``model.json``):
per target the feature list, the settings, the calibration factor and the ensemble's boosters as
LightGBM text models (``lightgbm.Booster(model_str=...)``).

The package along its seams:

* :mod:`.settings` -- ``TrainSettings`` (the typed ``train:`` section), ``target_list``, ``primary_target`` (light import)
* :mod:`.checks` -- which targets exist; ``check_train``/``check_screen``, run by the Snakemake controller (light import)
* :mod:`.model` -- ``Ensemble``, ``model.json``, LightGBM parameters, ``feature_columns``
* :mod:`.predict_fast` -- the boosters compiled to arrays: ``Booster.predict``'s values, bit for bit, faster
* :mod:`.cv` -- fitting, grouped folds, tuning, calibration, metrics, ``cross_validate``, ``learning_curve``
* :mod:`.external` -- users' own label tables: sites inferred, checked, into the LABELS shape (rule ``prepare_external_labels``)
* :mod:`.stage` -- ``training_frame``, ``train``, ``run`` (the rule's), ``pooled_metrics``

The public API is re-exported here lazily (``from matscreen import train; train.train(...)``), so
importing ``matscreen.train`` or its light modules does not import LightGBM.
"""

from __future__ import annotations

from matscreen.lazy import lazy_exports

#: name -> submodule of the re-exported public API
_EXPORTS = {
    "settings": (
        "TrainSettings",
        "TuningSettings",
        "StabilitySettings",
        "LearningCurveSettings",
        "resolve_settings",
        "target_list",
        "primary_target",
    ),
    "checks": ("target_columns", "external_columns", "available_targets", "check_train", "check_screen"),
    "model": (
        "STRUCTURE_ONLY_PREFIX",
        "FAST_MIN_ROWS",
        "Ensemble",
        "models_to_json",
        "load_models",
        "auto_params",
        "model_params",
        "lgbm_params",
        "feature_columns",
    ),
    "cv": (
        "ONE_SIGMA",
        "fit_ensemble",
        "chemical_system",
        "cv_group_labels",
        "assign_folds",
        "tune",
        "fit_model",
        "calibration_factor",
        "regression_metrics",
        "cross_fitted_coverage",
        "stability_metrics",
        "CVResult",
        "cross_validate",
        "learning_curve",
    ),
    "stage": (
        "training_frame",
        "one_settings_hash",
        "TrainResult",
        "train",
        "pooled_metrics",
        "same_level_duplicates_dropped",
        "run",
    ),
}
_SUBMODULES = ("settings", "checks", "model", "cv", "stage")

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
