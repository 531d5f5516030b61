"""The written contract of every Parquet table matscreen reads or writes.

One :class:`Table` per file kind: its columns (name, Arrow dtype, unit, meaning), its
primary key, and whether extra columns of one dtype are allowed (feature tables).
:func:`write_table` checks a DataFrame against its contract, casts it to the contract's
Arrow schema, attaches provenance metadata and writes atomically; :func:`read_table`
checks the file on the way in. Units are part of column names (``_ev``, ``_ha``,
``_ev_per_atom``, ``_ang``, ``_s``, ``_mb``).

The README section "Table contracts" is generated from this module
(``matscreen tables --update-readme README.md``), so this file is the single source of truth;
the file names come from the registry :mod:`matscreen.paths` that the rules read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from matscreen import paths
from matscreen.atomic import atomic_path, outputs_together, write_text
from matscreen.families import SITE_LABELS
from matscreen.markdown import table as md_table

METADATA_KEY = b"matscreen"

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
}


class ContractError(ValueError):
    """A table does not satisfy its written contract."""


#: Largest magnitude a float column may hold unless its contract says otherwise. No quantity
#: matscreen writes (energies in Ha or eV, seconds, MB, Å, metrics) comes near it, while the
#: overflow artefacts of a broken calculation or a typo in an external table (1e300) do.
DEFAULT_MAX_ABS = 1e12

#: Largest magnitude of a label a model is trained on (train, external label tables). Targets
#: are energies per atom or per cell (eV, hartree), gaps and timings; beyond this a value is an
#: overflow or a typo, and one such row would dominate every squared-error split of the boosters.
MAX_ABS_LABEL = 1e6


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  #: one of the keys of ``_ARROW_TYPES``
    description: str
    unit: str = ""
    nullable: bool = True
    #: float columns only: refuse +-inf (null/NaN is governed by ``nullable``). Never turned off by
    #: a contract today; an infinite label or score ranks and trains as if it were a number.
    finite: bool = True
    #: float columns only: refuse values whose magnitude exceeds this (absurd, not physical)
    max_abs: float = DEFAULT_MAX_ABS


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: dtype of additional, freely named columns (feature tables), or None for none allowed
    extra_dtype: str | None = None
    #: the workflow's files of this kind, from the registry :mod:`matscreen.paths`
    files: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """The files of this kind as one line (the README's contract headings)."""
        return "; ".join(self.files)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def arrow_schema(self, extra: Iterable[str] = ()) -> pa.Schema:
        fields = [pa.field(c.name, _ARROW_TYPES[c.dtype], nullable=c.nullable) for c in self.columns]
        if self.extra_dtype:
            fields += [pa.field(n, _ARROW_TYPES[self.extra_dtype]) for n in extra]
        return pa.schema(fields)


def _site_columns() -> tuple[Column, ...]:
    cols: list[Column] = []
    for s in SITE_LABELS:
        cols += [
            Column(f"{s}_species", "string", f"occupancy of site {s}, e.g. 'Sr2+' or 'Fe3+:0.5 Mg2+:0.5'; null if the family has no site {s}"),
            Column(f"{s}_oxi", "float64", f"fraction-weighted mean oxidation state on site {s}"),
            Column(f"{s}_radius_ang", "float64", f"fraction-weighted Shannon ionic radius on site {s} at the site's coordination", "angstrom"),
        ]
    return tuple(cols)


SITE_COLUMNS = _site_columns()

_IDENTITY = (
    Column("family", "string", "perovskite, double_perovskite, spinel, garnet or other", nullable=False),
    Column("formula", "string", "formula of the cell / formula unit (pymatgen)", nullable=False),
)

STRUCTURES = Table(
    name="structures",
    files=(paths.STRUCTURES,),
    description="Ingested structures, one row per parsed structure (CIF data block, POSCAR, JSON).",
    key=("source", "block"),
    columns=(
        Column("structure_id", "string", "stable hash of the structure (species, lattice, coordinates)", nullable=False),
        Column("source", "string", "path of the input file as given", nullable=False),
        Column("block", "string", "CIF data block name ('' for single-structure formats)", nullable=False),
        Column("source_sha256", "string", "sha256 of the input file bytes", nullable=False),
        *_IDENTITY,
        Column("reduced_formula", "string", "reduced formula", nullable=False),
        Column("nsites", "int64", "sites in the cell as read", nullable=False),
        Column("spacegroup_number", "int64", "international space group number (spglib, symprec from config)"),
        Column("site_roles", "string", "JSON: site label -> occupancy in the family's prototype (and roles)"),
        Column("inversion", "float64", "spinel inversion degree (fraction of tetrahedral sites holding B ions); null otherwise"),
        Column("duplicate_of", "string", "structure_id of the earlier entry this one matches; null if new"),
        Column("note", "string", "what ingest did to the structure (e.g. ordered approximant)"),
        *SITE_COLUMNS,
        Column("structure", "string", "pymatgen Structure as JSON", nullable=False),
    ),
)

REJECTS = Table(
    name="rejects",
    files=(paths.REJECTS,),
    description="Input files (or blocks) that did not become structures, with the reason.",
    key=("source", "block"),
    columns=(
        Column("source", "string", "path of the input file as given", nullable=False),
        Column("block", "string", "CIF data block name or ''", nullable=False),
        Column("reason", "string", "short code: not_found, unreadable, too_big, empty, not_text, unknown_format, parse_error, no_structure, symmetry_fallback, bad_occupancy, overlapping_sites, too_large, disordered, not_charge_balanced, unsafe_json, timeout, internal_error", nullable=False),
        Column("detail", "string", "the message", nullable=False),
    ),
)

CANDIDATES = Table(
    name="candidates",
    files=(paths.CANDIDATE_SHARD,),
    description="Enumerated candidate compositions, one row per candidate (sharded).",
    key=("candidate_id",),
    columns=(
        Column("candidate_id", "string", "stable hash of family + site occupancy (incl. oxidation states)", nullable=False),
        *_IDENTITY,
        Column("arrangement", "string", "spinel 'normal' or 'inverse'; '' otherwise", nullable=False),
        *SITE_COLUMNS,
        Column("tolerance_factor", "float64", "Goldschmidt t = (rA + rX) / (sqrt(2) (rB + rX)) (perovskites)"),
        Column("octahedral_factor", "float64", "mu = rB / rX (perovskites)"),
        Column("tau", "float64", "Bartel et al. 2019 tolerance factor (perovskites)"),
    ),
)

FUNNEL = Table(
    name="funnel",
    files=(paths.FUNNEL,),
    description="Candidates per family remaining after each enumeration filter.",
    key=("family", "step"),
    columns=(
        Column("family", "string", "family name", nullable=False),
        Column("step", "int64", "0 = all combinations, then one step per filter in order", nullable=False),
        Column("filter", "string", "filter name", nullable=False),
        Column("remaining", "int64", "candidates left after this filter", nullable=False),
        Column("removed", "int64", "candidates removed by this filter", nullable=False),
    ),
)

LABEL_TARGETS = Table(
    name="label_targets",
    files=(paths.LABEL_TARGETS, paths.ROUND_TARGETS),
    description="Structures chosen for PySCF labels: ingested structures and candidate prototypes.",
    key=("structure_id",),
    columns=(
        Column("structure_id", "string", "stable structure hash", nullable=False),
        Column("origin", "string", "'ingest', 'candidate' or 'competing' (a binary phase that competes with a labeled compound for its hull)", nullable=False),
        Column("candidate_id", "string", "candidate the prototype was built from; null for ingested"),
        Column("prototype", "string", "structure type of a competing phase (e.g. 'rutile'); null otherwise"),
        *_IDENTITY,
        Column("nsites", "int64", "sites in the cell that is computed", nullable=False),
        *SITE_COLUMNS,
        Column("structure", "string", "pymatgen Structure as JSON (the cell that is computed)", nullable=False),
        Column("stored", "bool", "the label store already holds this label (same settings hash) when the targets were chosen: "
               "no label job, gather reads the store entry"),
        Column("mem_mb", "int64", "estimated memory of the label job, first attempt (before label.resources.attempt_factor)", "MB"),
        Column("runtime_min", "int64", "estimated runtime of the label job, first attempt", "min"),
        Column("threads", "int64", "threads of the label job (label.resources.threads)"),
        Column("round", "int64", "active-learning round that chose the target (0 = label.select's seeded choice); "
               "a competing phase belongs to the round of the compound that first needed it"),
        Column("budget_cpu_hours", "float64", "what choosing this target charged to rounds.budget.cpu_hours: the "
               "estimated runtime x threads, 0 when a seed store held its label (no job); null for round 0", "h"),
    ),
)

REFERENCE_TARGETS = Table(
    name="reference_targets",
    files=(paths.REFERENCE_TARGETS, paths.ROUND_REFERENCE_TARGETS),
    description="Elements whose reference energies the label targets need, and whether the label store holds them.",
    key=("element",),
    columns=(
        Column("element", "string", "element symbol", nullable=False),
        Column("stored", "bool", "the label store already holds this reference (same settings hash): no label job", nullable=False),
    ),
)

LABELS = Table(
    name="labels",
    files=(paths.LABELS, paths.LABEL_STRUCTURE, paths.LABEL_COMPETING, paths.ROUND_LABELS, paths.ROUND_LABEL_STRUCTURE,
           paths.ROUND_LABEL_COMPETING),
    description="PySCF periodic DFT labels, one row per (structure, settings).",
    key=("structure_id", "settings_hash"),
    columns=(
        Column("structure_id", "string", "stable structure hash", nullable=False),
        Column("settings_hash", "string", "hash of the label settings used", nullable=False),
        Column("formula", "string", "formula of the computed cell"),
        Column("nsites", "int64", "atoms in the computed cell"),
        Column("energy_ha", "float64", "total SCF energy of the cell", "hartree"),
        Column("energy_per_atom_ev", "float64", "total energy per atom", "eV/atom"),
        Column("formation_energy_ev_per_atom", "float64", "formation energy vs elemental references (same settings)", "eV/atom"),
        Column("gap_ev", "float64", "band gap from the sampled k-points (LUMO-HOMO over k)", "eV"),
        Column("converged", "bool", "SCF converged"),
        Column("status", "string", "ok, failed or unsupported", nullable=False),
        Column("error", "string", "reason when not ok"),
        Column("scf_cycles", "int64", "SCF cycles of the final attempt"),
        Column("attempts", "int64", "SCF attempts made (failure ladder)"),
        Column("wall_s", "float64", "wall time of the calculation", "s"),
        Column("max_rss_mb", "float64", "peak resident memory of the process", "MB"),
        Column("kmesh", "string", "k-point mesh used, e.g. '2x2x2'"),
        Column("relax", "string", "label.relax of the calculation: 'none' (the cell as given) or 'volume' (energy at the minimum of an E(V) scan)"),
        Column("volume_ang3", "float64", "volume of the cell whose energy is the label (the equilibrium volume with relax 'volume')", "angstrom^3"),
        Column("bulk_modulus_gpa", "float64", "bulk modulus of the equation-of-state fit (relax 'volume')", "GPa"),
        Column("volume_scan", "string", "JSON list of the E(V) scan points {volume_ang3, energy_ha, status}; null without a scan"),
        Column("relax_note", "string", "what the volume fit had to do (e.g. took the lowest scanned point)"),
        Column("pyscf_version", "string", "PySCF version"),
        Column("origin", "string", "why it was labeled: 'ingest', 'candidate' or 'competing' (a competing phase of a labeled compound); set when labels are gathered"),
        Column("prototype", "string", "structure type of a competing phase (e.g. 'rutile', 'user:<file>'); null otherwise"),
        Column("e_above_hull_ev_per_atom", "float64", "energy above the convex hull of this chemical system built from labels, competing phases and references of the same settings hash (0 = on the hull)", "eV/atom"),
        Column("decomposition_energy_ev_per_atom", "float64", "energy to the hull without this compound: negative = stable by that much; equals e_above_hull for unstable compounds", "eV/atom"),
        Column("decomposes_to", "string", "products and fractions (of atoms), e.g. 'SrO:0.400 TiO2:0.600'; for a stable compound the phases it would separate into"),
        Column("is_stable", "bool", "on the hull (e_above_hull below 1e-8 eV/atom)"),
        Column("hull_error", "string", "why the hull columns are null (e.g. competing phases not labeled ok)"),
    ),
)

REFERENCES = Table(
    name="references",
    files=(paths.REFERENCES, paths.LABEL_REFERENCE, paths.ROUND_REFERENCES, paths.ROUND_LABEL_REFERENCE),
    description="Elemental reference energies (standard elemental solid or diatomic gas), same settings as labels.",
    key=("element", "settings_hash"),
    columns=(
        Column("element", "string", "element symbol", nullable=False),
        Column("settings_hash", "string", "hash of the label settings used", nullable=False),
        Column("reference", "string", "reference phase, e.g. 'fcc', 'hcp', 'O2 (triplet, box)'"),
        Column("energy_per_atom_ha", "float64", "reference energy per atom", "hartree/atom"),
        Column("status", "string", "ok, failed or unsupported", nullable=False),
        Column("error", "string", "reason when not ok"),
        Column("kmesh", "string", "k-point mesh used"),
        Column("wall_s", "float64", "wall time", "s"),
        Column("relax", "string", "'none' or 'volume' (molecules in a box are never scanned)"),
        Column("volume_per_atom_ang3", "float64", "volume per atom of the cell whose energy is the reference (null for molecules)", "angstrom^3/atom"),
        Column("bulk_modulus_gpa", "float64", "bulk modulus of the equation-of-state fit (relax 'volume')", "GPa"),
        Column("pyscf_version", "string", "PySCF version"),
    ),
)

REFERENCE_LABELS = Table(
    name="reference_labels",
    files=(paths.SHIPPED_LABELS, paths.SHIPPED_COMPETING),
    description=(
        "The shipped reference label set (resources/labels/): each labeled structure with its identity, sites and "
        "structure (from label_targets) and its label (the labels columns). labels.parquet holds the compounds, "
        "competing.parquet the competing phases of their hulls; both can be given to train.external_labels."
    ),
    key=("structure_id", "settings_hash"),
    columns=(
        *(c for c in LABEL_TARGETS.columns
          if c.name not in ("formula", "nsites", "stored", "mem_mb", "runtime_min", "threads", "round")),
        *(c for c in LABELS.columns if c.name not in ("structure_id", "origin", "prototype")),
    ),
)

EXTERNAL_LABELS = Table(
    name="external_labels",
    files=(paths.EXTERNAL_LABELS,),
    description="Labels from outside matscreen (train.external_labels), featurized and trained on with the PySCF labels; one row per (table row, target).",
    key=("structure_id", "target"),
    columns=(
        Column("structure_id", "string", "'x-' + hash of the row (file name, row, formula, sites)", nullable=False),
        Column("source", "string", "the external table's path", nullable=False),
        Column("row", "int64", "row number in that table (1 = first data row)", nullable=False),
        *_IDENTITY,
        *(Column(f"{s}_species", "string", f"occupancy of site {s} if the table gives it or it was inferred from the formula") for s in SITE_LABELS),
        Column("site_source", "string", "'given' (site columns of the table), 'inferred' (from the formula: oxidation-state guesses, Shannon radii, coordination) or null (composition features only)"),
        Column("target", "string", "name of the labeled quantity (one of train.target)", nullable=False),
        Column("value", "float64", "the label, in the units of the target", nullable=False),
    ),
)

CANDIDATE_FEATURES = Table(
    name="candidate_features",
    files=(paths.CANDIDATE_FEATURES,),
    description="Features of candidates; feature columns are float32 and named by the feature-name map.",
    key=("candidate_id",),
    extra_dtype="float32",
    columns=(
        Column("candidate_id", "string", "candidate hash", nullable=False),
        Column("featurize_error", "string", "why some features are NaN; null when all computed"),
    ),
)

STRUCTURE_FEATURES = Table(
    name="structure_features",
    files=(paths.LABELED_FEATURES, paths.EXTERNAL_FEATURES, paths.ROUND_LABELED_FEATURES),
    description="Features of labeled structures, computed by the same code as candidate features.",
    key=("structure_id",),
    extra_dtype="float32",
    columns=(
        Column("structure_id", "string", "structure hash", nullable=False),
        Column("featurize_error", "string", "why some features are NaN; null when all computed"),
    ),
)

CV_METRICS = Table(
    name="cv_metrics",
    files=(paths.CV_METRICS, paths.ROUND_CV_METRICS),
    description="Cross-validation metrics of the trained models, per target, per fold and overall (pooled out-of-fold, also per family).",
    key=("target", "fold", "family", "metric"),
    columns=(
        Column("target", "string", "the model's target (train.target)", nullable=False),
        Column("fold", "string", "fold number or 'all' (pooled out-of-fold)", nullable=False),
        Column("family", "string", "'all' or a family (pooled out-of-fold rows of that family; 'unknown' when not known)", nullable=False),
        Column("metric", "string", "mae, rmse (units of the target), r2, spearman, coverage_1sigma (fraction of |error| <= raw ensemble std), coverage_1sigma_calibrated (with the calibration factor, cross-fitted: each fold's factor from the other folds), calibration_factor, n_train, n_test, n_folds; for stability targets stable_fraction, stable_precision, stable_recall, stable_f1 (of 'value < train.stability.threshold_ev_per_atom'), stable_top_n_hit_rate, stable_enrichment_top_n (hit rate in the N lowest predictions / stable_fraction)", nullable=False),
        Column("value", "float64", "metric value; NaN where undefined (e.g. spearman on fewer than 3 test rows)"),
    ),
)

OOF_PREDICTIONS = Table(
    name="oof_predictions",
    files=(paths.OOF_PREDICTIONS, paths.ROUND_OOF_PREDICTIONS),
    description="Out-of-fold predictions of every labeled structure, per target.",
    key=("target", "structure_id"),
    columns=(
        Column("target", "string", "the model's target (train.target)", nullable=False),
        Column("structure_id", "string", "structure hash", nullable=False),
        Column("family", "string", "family of the structure ('unknown' when not known)"),
        Column("fold", "int64", "CV fold the structure was held out in", nullable=False),
        Column("y_true", "float64", "label (train target, units of the target)", nullable=False),
        Column("y_pred", "float64", "out-of-fold prediction", nullable=False),
        Column("y_std", "float64", "ensemble standard deviation (uncertainty), before calibration"),
        Column("y_std_calibrated", "float64", "y_std times the model's calibration factor"),
    ),
)

LEARNING_CURVE = Table(
    name="learning_curve",
    files=(paths.LEARNING_CURVE, paths.ROUND_LEARNING_CURVE),
    description="Out-of-fold error vs training-set size (single boosters on a fraction of each training fold's groups, the CV folds).",
    key=("target", "train_fraction"),
    columns=(
        Column("target", "string", "the model's target", nullable=False),
        Column("train_fraction", "float64", "fraction of each training fold's CV groups trained on", nullable=False),
        Column("n_train", "float64", "mean training rows over the folds", nullable=False),
        Column("n_test", "int64", "held-out rows predicted", nullable=False),
        Column("mae", "float64", "mean absolute out-of-fold error (units of the target)", nullable=False),
        Column("rmse", "float64", "root-mean-square out-of-fold error (units of the target)", nullable=False),
    ),
)

PREDICTIONS = Table(
    name="predictions",
    files=(paths.PREDICTION_SHARD, paths.RANKED, paths.NEXT_TO_LABEL, paths.ROUND_PREDICTION_SHARD),
    description="Model predictions for candidates, ranked by the screening score. Extra float64 columns "
                "'pred__<target>' and 'std__<target>' hold every model's prediction and calibrated uncertainty.",
    key=("candidate_id",),
    extra_dtype="float64",
    columns=(
        Column("candidate_id", "string", "candidate hash", nullable=False),
        *_IDENTITY,
        Column("target", "string", "target that 'prediction' is (screen.rank_by)"),
        Column("prediction", "float64", "predicted target (units of the target)"),
        Column("uncertainty", "float64", "ensemble standard deviation times the model's calibration factor"),
        Column("passes_filters", "bool", "inside every screen.filters window (null before ranking)"),
        Column("score", "float64", "screening score (lower is better): prediction - kappa * uncertainty for minimisation"),
        Column("rank", "int64", "1 = best among the candidates that pass the filters; null before ranking and for those that do not"),
    ),
)

ROUNDS = Table(
    name="rounds",
    files=(paths.ROUNDS_TABLE,),
    description="What each active-learning round chose, cost and learned (rounds.count rows; round 0 = label.select's seeded labels).",
    key=("round",),
    columns=(
        Column("round", "int64", "round number", nullable=False),
        Column("target", "string", "screening target (screen.rank_by) the round's acquisition and errors are about", nullable=False),
        Column("acquisition", "string", "'seeded' for round 0, else rounds.acquisition (ei or lcb)", nullable=False),
        Column("n_chosen", "int64", "compounds the round chose for labels", nullable=False),
        Column("n_competing", "int64", "competing phases the round added (new chemical systems)", nullable=False),
        Column("n_new_ok", "int64", "chosen compounds labeled ok with a finite target value", nullable=False),
        Column("n_train", "int64", "labels of the target the round's model trained on (every round so far)", nullable=False),
        Column("new_mae", "float64", "mean |previous round's prediction - PySCF label| on the round's new labels: an out-of-sample test of the screen (null for round 0)"),
        Column("new_rmse", "float64", "root-mean-square of the same errors (null for round 0)"),
        Column("n_held_up", "int64", "new labels at least as good as predicted within one calibrated sigma (label <= prediction + uncertainty; >= prediction - uncertainty with screen.maximize); null for round 0"),
        Column("best_label", "float64", "best PySCF label of the target among the compounds labeled up to this round (min, or max with screen.maximize)"),
        Column("cv_mae", "float64", "pooled out-of-fold MAE of the round's model on the target (cv_metrics, family 'all')"),
        Column("est_cpu_hours", "float64", "estimated CPU hours of the round's new label jobs (runtime_min x threads of label_targets)", "h"),
        Column("label_cpu_hours", "float64", "measured CPU hours of the round's new labels (wall_s x threads; from the store when computed earlier)", "h"),
        Column("budget_cpu_hours_spent", "float64", "CPU hours charged to rounds.budget.cpu_hours by every round after round 0 up to this one (label_targets.budget_cpu_hours: labels a seed store held are free)", "h"),
    ),
)

ALL_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        STRUCTURES, REJECTS, CANDIDATES, FUNNEL, LABEL_TARGETS, REFERENCE_TARGETS, LABELS, REFERENCES, REFERENCE_LABELS,
        EXTERNAL_LABELS, CANDIDATE_FEATURES, STRUCTURE_FEATURES, CV_METRICS, OOF_PREDICTIONS, LEARNING_CURVE, PREDICTIONS,
        ROUNDS,
    )
}


# --- checking -----------------------------------------------------------------------


def check_frame(df: pd.DataFrame, table: Table, *, where: str = "") -> None:
    """Raise :class:`ContractError` if ``df`` breaks ``table``'s contract."""
    ctx = f"{table.name}{' (' + where + ')' if where else ''}"
    missing = [c for c in table.column_names if c not in df.columns]
    if missing:
        raise ContractError(f"{ctx}: missing columns {missing}")
    extra = [c for c in df.columns if c not in table.column_names]
    if extra and table.extra_dtype is None:
        raise ContractError(f"{ctx}: columns not in the contract {extra}")
    for col in table.columns:
        if not col.nullable and df[col.name].isna().any():
            bad = df.index[df[col.name].isna()][:5].tolist()
            raise ContractError(f"{ctx}: column {col.name!r} must not be null (rows {bad})")
        if col.dtype.startswith("float") and len(df):
            _check_magnitude(df, col, ctx)
    if len(df) and df.duplicated(list(table.key)).any():
        dup = df.loc[df.duplicated(list(table.key), keep=False), list(table.key)].head(5)
        raise ContractError(f"{ctx}: duplicate primary key {table.key}: {dup.to_dict('records')}")


def _check_magnitude(df: pd.DataFrame, col: Column, ctx: str) -> None:
    """Refuse infinite and absurdly large values of a float column, naming the rows."""
    values = pd.to_numeric(df[col.name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = (np.isinf(values) if col.finite else np.zeros(len(values), bool)) | (np.abs(values) > col.max_abs)
    if bad.any():
        idx = np.flatnonzero(bad)[:5]
        rows = [_row_name(df, i) for i in idx]
        raise ContractError(
            f"{ctx}: column {col.name!r} holds non-finite or absurd values (|x| > {col.max_abs:g}): "
            + ", ".join(f"{r} = {values[i]!r}" for r, i in zip(rows, idx))
        )


def _row_name(df: pd.DataFrame, i: int) -> str:
    """How an error names row ``i``: its position (1 = first data row) and its id when it has one."""
    for key in ("structure_id", "candidate_id", "element"):
        if key in df.columns and isinstance(df[key].iloc[i], str):
            return f"row {i + 1} ({key} {df[key].iloc[i]})"
    return f"row {i + 1}"


def to_arrow(df: pd.DataFrame, table: Table) -> pa.Table:
    """Check ``df`` and convert it to an Arrow table with the contract's exact schema."""
    check_frame(df, table)
    extra = [c for c in df.columns if c not in table.column_names]
    schema = table.arrow_schema(extra)
    ordered = df[table.column_names + extra].reset_index(drop=True)
    try:
        return pa.Table.from_pandas(ordered, schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ContractError(f"{table.name}: cannot cast to contract dtypes: {exc}") from exc


def write_table(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    table: Table,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Check ``df`` against ``table``, then write it atomically (:mod:`matscreen.atomic`) with provenance."""
    arrow = _prepare(df, table, provenance)
    return _write_arrow(arrow, path)


def _prepare(df: pd.DataFrame, table: Table, provenance: Mapping[str, Any] | None) -> pa.Table:
    """``df`` checked and cast to the contract, with provenance metadata attached."""
    arrow = to_arrow(df, table)
    meta = dict(arrow.schema.metadata or {})
    meta.pop(b"pandas", None)  # pandas' own metadata embeds versions and index info we do not need
    meta[METADATA_KEY] = json.dumps({"table": table.name, **(provenance or {})}, sort_keys=True).encode()
    return arrow.replace_schema_metadata(meta)


def _write_arrow(arrow: pa.Table, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp, compression="zstd", write_page_checksum=True)
    return Path(path)


def write_tables(
    items: Sequence[tuple[pd.DataFrame, str | os.PathLike[str], Table]],
    provenance: Mapping[str, Any] | None = None,
    also: Iterable[str | os.PathLike[str]] = (),
) -> list[Path]:
    """Write the outputs of one stage together or not at all.

    Every frame is checked against its contract before the first file is written, so a bad
    table never leaves its siblings behind looking finished; if a write still fails (disk
    full), the files of ``items`` and ``also`` (outputs written by the caller just before,
    e.g. ``model.json``) are removed.
    """
    prepared = [(_prepare(df, table, provenance), path) for df, path, table in items]
    with outputs_together([*also, *(p for _, p in prepared)]):
        return [_write_arrow(arrow, path) for arrow, path in prepared]


def _check_types(schema: pa.Schema, table: Table, where: str) -> None:
    """Columns stored with another type than the contract's (a file not written by :func:`write_table`)."""
    for f in schema:
        want = _ARROW_TYPES[table.column(f.name).dtype] if f.name in table.column_names else (
            _ARROW_TYPES[table.extra_dtype] if table.extra_dtype else None)
        if want is not None and f.type != want and not (f.type == pa.null() and (f.name not in table.column_names or table.column(f.name).nullable)):
            raise ContractError(f"{table.name} ({where}): column {f.name!r} is stored as {f.type}, the contract says {want}")


def read_table(path: str | os.PathLike[str], table: Table, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file and check it against ``table`` (a clear error names the file)."""
    try:
        # page checksums (written by write_table) catch flipped bytes in the data pages
        arrow = pq.read_table(path, columns=columns, page_checksum_verification=True)
        _check_types(arrow.schema, table, str(path))
        df = arrow.to_pandas()
    except ContractError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt files (also when converting)
        raise ContractError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    if columns is None:
        try:
            check_frame(df, table, where=str(path))
        except ContractError as exc:
            raise ContractError(str(exc)) from None
    return df


def read_available(path: str | os.PathLike[str], wanted: Iterable[str], required: Iterable[str] = ()) -> pd.DataFrame:
    """The columns of ``wanted`` that the file has, in that order; ``required`` ones must be there.

    For readers that need a few columns of a large table (featurize reads only the site columns
    of a candidate shard). Errors name the file, like :func:`read_table`.
    """
    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in required if c not in names]
        if missing:
            raise ContractError(f"{path}: lacks column(s) {missing}")
        cols = [c for c in wanted if c in names]
        return pq.read_table(path, columns=cols).to_pandas()
    except ContractError:
        raise
    except Exception as exc:  # pyarrow raises several types for corrupt or missing files
        raise ContractError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc


def read_tables(
    paths: Iterable[str | os.PathLike[str]], table: Table, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read and concatenate shards of one table; a primary key in two shards is refused.

    Shards of one set partition the rows, so a key seen twice means a stale shard of an earlier
    run or the same shard given twice; the error names both files. ``columns`` (which must include
    the key) reads only those, as :func:`read_table` does.
    """
    paths = [str(p) for p in paths]
    frames = [read_table(p, table, columns) for p in paths]
    if not frames:
        return empty_frame(table) if columns is None else empty_frame(table).reindex(columns=columns)
    out = concat_frames(frames)
    key = list(table.key)
    if len(out) and out.duplicated(key).any():
        origin = np.repeat(np.arange(len(paths)), [len(f) for f in frames])
        dup = out.duplicated(key, keep=False).to_numpy()
        first = out.loc[dup, key].head(1).to_dict("records")[0]
        same = (out[key] == pd.Series(first)).all(axis=1).to_numpy()
        files = sorted({paths[i] for i in origin[same]})
        raise ContractError(f"{table.name}: primary key {first} is in more than one shard ({', '.join(files)}); "
                            "a stale shard of an earlier run? (re-run the stage that wrote them)")
    return out


def concat_frames(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat(frames, ignore_index=True)``, without pandas' check of every value of a column
    that holds only None (the ``passes_filters`` column of unranked predictions: a Python call per
    value, ~3 s for a million rows); such a column (None in every frame) is added back as is."""
    columns = list(frames[0].columns)
    if len(frames) < 2 or any(list(f.columns) != columns for f in frames):
        return pd.concat(frames, ignore_index=True)
    nones = [c for c in columns
             if all(f[c].dtype == object and all(v is None for v in f[c].to_numpy()) for f in frames)]
    if not nones:
        return pd.concat(frames, ignore_index=True)
    out = pd.concat([f.drop(columns=nones) for f in frames], ignore_index=True)
    for c in nones:
        out.insert(columns.index(c), c, np.full(len(out), None, dtype=object))
    return out


def join_one_to_one(
    left: pd.DataFrame, right: pd.DataFrame, key: str, *, left_name: str, right_name: str,
    complete: str = "both",
) -> pd.DataFrame:
    """``left`` joined with ``right`` on ``key``, refusing anything but a one-to-one match.

    The one join of rows with their features (screen: candidates with candidate features;
    train: labels with structure features). A key twice on either side, or a row of ``left``
    (``complete="left"``) or of either side (``complete="both"``) without its partner, is a
    :class:`ContractError` naming both files: a ``how="left"`` merge would instead give the row
    NaN features and a prediction like every other such row, and a swapped or empty feature
    shard would rank every candidate alike.
    """
    one_to_one_positions(left, right, key, left_name=left_name, right_name=right_name, complete=complete)
    return left.merge(right, on=key, how="inner", validate="1:1")


def one_to_one_positions(
    left: pd.DataFrame, right: pd.DataFrame, key: str, *, left_name: str, right_name: str,
    complete: str = "both",
) -> np.ndarray:
    """The checks of :func:`join_one_to_one`, without the join: for every row of ``left`` (in
    order), the position of its partner in ``right`` (the rows of the join are ``left``'s, in order)."""
    for df, name in ((left, left_name), (right, right_name)):
        dup = df[key][df[key].duplicated()]
        if len(dup):
            raise ContractError(f"{name}: {key} {dup.iloc[0]!r} appears more than once")
    lk, rk = set(left[key]), set(right[key])
    no_partner = sorted(lk - rk)
    if no_partner:
        raise ContractError(
            f"{left_name}: {len(no_partner)} of {len(lk)} rows have no row in {right_name} "
            f"(first {key} {no_partner[0]!r}); are the files of one shard/run given together?"
        )
    if complete == "both" and (extra := sorted(rk - lk)):
        raise ContractError(
            f"{right_name}: {len(extra)} of {len(rk)} rows have no row in {left_name} "
            f"(first {key} {extra[0]!r}); are the files of one shard/run given together?"
        )
    return pd.Index(right[key]).get_indexer(left[key])


# --- shard sets -----------------------------------------------------------------------------

#: Written beside the shards of one set, last, so that its presence means the set is complete.
MANIFEST_NAME = "_manifest.json"


def _file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | os.PathLike[str], shard_paths: Sequence[str | os.PathLike[str]], run_id: str) -> Path:
    """Record the shard set of one run (file name, rows, sha256) in ``folder/_manifest.json``.

    Call it after every shard is written: a set without a manifest is unfinished.
    """
    shards = []
    for p in shard_paths:
        shards.append({"file": Path(p).name, "rows": pq.read_metadata(p).num_rows, "sha256": _file_sha256(p)})
    body = json.dumps({"run_id": run_id, "shards": shards}, indent=1, sort_keys=True)
    return write_text(Path(folder) / MANIFEST_NAME, body + "\n")


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the shard set in ``folder``, or None when there is none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        {s["file"]: (s["rows"], s["sha256"]) for s in data["shards"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContractError(f"{path}: unreadable shard manifest ({type(exc).__name__}: {exc})") from None
    return data


def resolve_shards(paths: Iterable[str], *, require_manifest: bool = False) -> list[str]:
    """The shard files named by ``paths`` (files, folders or globs), checked against their manifests.

    A folder stands for the shard set its manifest lists (a folder without one is refused: it
    was never finished). Each shard file in a folder that has a manifest must be listed there
    with the same sha256 (else it is a stale shard of an earlier run, or was changed since);
    every shard the manifest lists must exist. With ``require_manifest`` a ``part-*`` file in a
    folder without a manifest is refused too (candidate shards: only ``enumerate`` writes them).
    """
    import glob as _glob

    files: list[str] = []
    for entry in paths:
        if os.path.isdir(entry):
            manifest = read_manifest(entry)
            if manifest is None:
                raise ContractError(f"{entry}: no {MANIFEST_NAME}: the shard set is unfinished "
                                    "(an interrupted run?) or not a shard folder")
            files += [os.path.join(entry, s["file"]) for s in manifest["shards"]]
        elif any(ch in entry for ch in "*?[") and not os.path.exists(entry):
            matches = sorted(_glob.glob(entry))
            if not matches:
                raise FileNotFoundError(f"{entry}: matched no files")
            files += matches
        else:
            files.append(entry)
    by_folder: dict[str, list[str]] = {}
    for f in files:
        by_folder.setdefault(os.path.dirname(f) or ".", []).append(f)
    for folder, members in by_folder.items():
        manifest = read_manifest(folder)
        if manifest is None:
            unlisted = [f for f in members if Path(f).name.startswith("part-")]
            if require_manifest and unlisted:
                raise ContractError(f"{unlisted[0]}: no {MANIFEST_NAME} beside it: the shard set is unfinished "
                                    "(an interrupted run?); run the stage again")
            continue
        listed = {s["file"]: s for s in manifest["shards"]}
        for s in listed:
            if not os.path.exists(os.path.join(folder, s)):
                raise ContractError(f"{os.path.join(folder, s)}: listed in {MANIFEST_NAME} but missing")
        for f in members:
            entry = listed.get(Path(f).name)
            if entry is None:
                raise ContractError(f"{f}: not in {os.path.join(folder, MANIFEST_NAME)}: a stale shard of an earlier run")
            if not os.path.exists(f):
                raise FileNotFoundError(f"{f}: no such file")
            if _file_sha256(f) != entry["sha256"]:
                raise ContractError(f"{f}: differs from the shard recorded in {MANIFEST_NAME} (changed since, or stale)")
    return files


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def empty_frame(table: Table) -> pd.DataFrame:
    """An empty DataFrame with the contract's columns and dtypes."""
    return table.arrow_schema().empty_table().to_pandas()


def conform(df: pd.DataFrame, table: Table) -> pd.DataFrame:
    """Add the contract's missing nullable columns as nulls and order the columns."""
    out = df.copy()
    for col in table.columns:
        if col.name not in out.columns:
            out[col.name] = None
    extra = [c for c in out.columns if c not in table.column_names]
    return out[table.column_names + extra]


def markdown() -> str:
    """The contracts as Markdown (for the README)."""
    lines: list[str] = []
    for t in ALL_TABLES.values():
        lines += [f"### `{t.name}`", "", "Files: " + ", ".join(f"`{f}`" for f in t.files) + ".", "", t.description, "", f"Primary key: `{', '.join(t.key)}`."]
        if t.extra_dtype:
            lines.append(f"Further columns: features, `{t.extra_dtype}`.")
        rows = [[f"`{c.name}`", c.dtype, c.unit, "yes" if c.nullable else "no", c.description] for c in t.columns]
        lines += ["", md_table(["column", "dtype", "unit", "null", "meaning"], rows)]
    return "\n".join(lines)


README_BEGIN = "<!-- TABLES:BEGIN -->"
README_END = "<!-- TABLES:END -->"


def readme_section(text: str) -> str:
    """The generated part of a README (between the TABLES markers)."""
    start, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    return text[start:end].strip()


def update_readme(path: str | os.PathLike[str]) -> None:
    """Replace the README's contract section with :func:`markdown`."""
    p = Path(path)
    text = p.read_text()
    start, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    write_text(p, text[:start] + "\n" + markdown().strip() + "\n" + text[end:])
