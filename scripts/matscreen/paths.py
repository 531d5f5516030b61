"""Every result path of the workflow, in one place.

The rules (``workflow/rules/*.smk`` and the ``Snakefile``), the command line's defaults and the
table contracts (:attr:`matscreen.tables.Table.files`, hence the README's contract section) all
read these names, so a file is renamed here or nowhere. Paths are relative to the working
directory of a run; ``{shard}``, ``{structure_id}``, ``{element}`` and ``{round}`` are Snakemake
wildcards.

Active-learning rounds (``rounds.count`` > 1): the stage folders above always hold the *final*
state (every label so far, the last model, its ranking). Round ``r``'s label plan (the
``acquire`` checkpoint, r >= 1) and its label jobs live under ``results/rounds/<r>/label/``, and
the state after round ``r`` that a later round is chosen from (labels, features, model, candidate
predictions) under ``results/rounds/<r>/`` in the same layout (:func:`in_round`). Round 0's plan
is the stage's own ``results/label/targets.parquet``.

The command line writes the same layout under folders of its own (``matscreen enumerate -o
DIR`` writes ``DIR/candidates/part-0.parquet``, ``DIR/funnel.parquet``): :func:`relative` gives
a path's name inside its stage folder.

Logs (``logs/``) and benchmarks (``results/benchmarks/``) are named in the rules themselves:
they are no tables, and ``snakemake --lint`` refuses paths composed in a rule.
"""

from __future__ import annotations

import posixpath

RESULTS = "results"

# --- stage folders -------------------------------------------------------------------------
INGEST = f"{RESULTS}/ingest"
ENUMERATE = f"{RESULTS}/enumerate"
LABEL = f"{RESULTS}/label"
FEATURIZE = f"{RESULTS}/featurize"
TRAIN = f"{RESULTS}/train"
SCREEN = f"{RESULTS}/screen"
REPORT = f"{RESULTS}/report"

# --- 1 ingest --------------------------------------------------------------------------------
STRUCTURES = f"{INGEST}/structures.parquet"
REJECTS = f"{INGEST}/rejects.parquet"

# --- 2 enumerate -----------------------------------------------------------------------------
CANDIDATE_SHARD = f"{ENUMERATE}/candidates/part-{{shard}}.parquet"
FUNNEL = f"{ENUMERATE}/funnel.parquet"

# --- 3 label ---------------------------------------------------------------------------------
LABEL_TARGETS = f"{LABEL}/targets.parquet"
REFERENCE_TARGETS = f"{LABEL}/reference_targets.parquet"
LABEL_STRUCTURE = f"{LABEL}/structures/{{structure_id}}.parquet"
LABEL_COMPETING = f"{LABEL}/competing/{{structure_id}}.parquet"
LABEL_REFERENCE = f"{LABEL}/references/{{element}}.parquet"
LABELS = f"{LABEL}/labels.parquet"
REFERENCES = f"{LABEL}/references.parquet"

#: The shipped reference label set (``matscreen export-labels``; in the repository, not under results/).
SHIPPED_LABELS = "resources/labels/labels.parquet"
SHIPPED_COMPETING = "resources/labels/competing.parquet"

# --- 4 featurize -----------------------------------------------------------------------------
CANDIDATE_FEATURES = f"{FEATURIZE}/candidates/part-{{shard}}.parquet"
LABELED_FEATURES = f"{FEATURIZE}/labeled.parquet"
EXTERNAL_FEATURES = f"{FEATURIZE}/external.parquet"

# --- 5 train ---------------------------------------------------------------------------------
EXTERNAL_LABELS = f"{TRAIN}/external_labels.parquet"
MODEL = f"{TRAIN}/model.json"
CV_METRICS = f"{TRAIN}/cv_metrics.parquet"
OOF_PREDICTIONS = f"{TRAIN}/oof_predictions.parquet"
LEARNING_CURVE = f"{TRAIN}/learning_curve.parquet"

# --- 6 screen and report ---------------------------------------------------------------------
PREDICTION_SHARD = f"{SCREEN}/predictions/part-{{shard}}.parquet"
RANKED = f"{SCREEN}/ranked.parquet"
TOP = f"{SCREEN}/top.csv"
NEXT_TO_LABEL = f"{SCREEN}/next_to_label.parquet"
SUMMARY = f"{REPORT}/summary.md"
PARITY_PLOT = f"{REPORT}/parity.png"
PREDICTIONS_PLOT = f"{REPORT}/predictions.png"
LEARNING_CURVE_PLOT = f"{REPORT}/learning_curve.png"
CALIBRATION_PLOT = f"{REPORT}/calibration.png"
IMPORTANCE_PLOT = f"{REPORT}/feature_importance.png"
FUNNEL_PLOT = f"{REPORT}/funnel.png"
TOP_TABLE = f"{REPORT}/top_candidates.html"

# --- active-learning rounds --------------------------------------------------------------------
ROUNDS = f"{RESULTS}/rounds"
ROUNDS_TABLE = f"{RESULTS}/rounds.parquet"
ROUNDS_PLOT = f"{REPORT}/rounds.png"


def in_round(path: str) -> str:
    """``path`` (a stage path under :data:`RESULTS`) in round ``{round}``'s folder.

    >>> in_round(MODEL)
    'results/rounds/{round}/train/model.json'
    """
    return f"{ROUNDS}/{{round}}/{posixpath.relpath(path, RESULTS)}"


#: Round r's label plan (r >= 1: the ``acquire`` checkpoint), its jobs, and the state after it.
ROUND_TARGETS = in_round(LABEL_TARGETS)
ROUND_REFERENCE_TARGETS = in_round(REFERENCE_TARGETS)
ROUND_LABEL_STRUCTURE = in_round(LABEL_STRUCTURE)
ROUND_LABEL_COMPETING = in_round(LABEL_COMPETING)
ROUND_LABEL_REFERENCE = in_round(LABEL_REFERENCE)
ROUND_LABELS = in_round(LABELS)
ROUND_REFERENCES = in_round(REFERENCES)
ROUND_LABELED_FEATURES = in_round(LABELED_FEATURES)
ROUND_MODEL = in_round(MODEL)
ROUND_CV_METRICS = in_round(CV_METRICS)
ROUND_OOF_PREDICTIONS = in_round(OOF_PREDICTIONS)
ROUND_LEARNING_CURVE = in_round(LEARNING_CURVE)
ROUND_PREDICTION_SHARD = in_round(PREDICTION_SHARD)


def round_targets(r: int) -> str:
    """Round ``r``'s label plan: the seeded selection for round 0, the acquisition's after it."""
    return LABEL_TARGETS if int(r) == 0 else ROUND_TARGETS.format(round=int(r))


def round_reference_targets(r: int) -> str:
    return REFERENCE_TARGETS if int(r) == 0 else ROUND_REFERENCE_TARGETS.format(round=int(r))


def _at_round(path: str, r: int, home: int) -> str:
    """``path`` itself for round ``home``, else its copy under ``results/rounds/<r>/``."""
    return path if int(r) == int(home) else in_round(path).replace("{round}", str(int(r)))


def round_state(path: str, r: int, final: int) -> str:
    """Where the state ``path`` (labels, model, ...) after round ``r`` is: the stage folder for the
    final round, ``results/rounds/<r>/`` for earlier ones."""
    return _at_round(path, r, final)


def round_jobs(path: str, r: int) -> str:
    """Where round ``r``'s label job files ``path`` (a pattern with ``{structure_id}`` or
    ``{element}``) are: the label folder for round 0, ``results/rounds/<r>/label/`` later.

    >>> round_jobs(LABEL_REFERENCE, 2)
    'results/rounds/2/label/references/{element}.parquet'
    """
    return _at_round(path, r, 0)


def relative(path: str, folder: str) -> str:
    """``path``'s name inside ``folder`` (a stage folder above, or :data:`RESULTS`).

    >>> relative(FUNNEL, ENUMERATE)
    'funnel.parquet'
    >>> relative(CANDIDATE_SHARD, ENUMERATE).format(shard=0)
    'candidates/part-0.parquet'
    """
    rel = posixpath.relpath(path, folder)
    if rel.startswith(".."):
        raise ValueError(f"{path} is not under {folder}")
    return rel
