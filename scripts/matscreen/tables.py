"""The written contract of every Parquet table matscreen reads or writes.

One :class:`Table` per file kind: its columns (name, Arrow dtype, unit, meaning), its
primary key, and whether extra columns of one dtype are allowed (feature tables).
:func:`write_table` checks a DataFrame against its contract, casts it to the contract's
Arrow schema, attaches provenance metadata and writes atomically; :func:`read_table`
checks the file on the way in. Units are part of column names (``_ev``, ``_ha``,
``_ev_per_atom``, ``_ang``, ``_s``, ``_mb``).

The README section "Table contracts" is generated from this module
(``matscreen tables --markdown``), so this file is the single source of truth.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from matscreen.families import SITE_LABELS

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


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  #: one of the keys of ``_ARROW_TYPES``
    description: str
    unit: str = ""
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    #: dtype of additional, freely named columns (feature tables), or None for none allowed
    extra_dtype: str | None = None
    filename: str = ""

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
    filename="structures.parquet",
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
        Column("label_supported", "bool", "all elements have basis and pseudopotential in the label settings"),
        Column("unsupported_elements", "string", "space-separated elements the label settings cannot compute"),
        Column("note", "string", "what ingest did to the structure (e.g. ordered approximant)"),
        *SITE_COLUMNS,
        Column("structure", "string", "pymatgen Structure as JSON", nullable=False),
    ),
)

REJECTS = Table(
    name="rejects",
    filename="rejects.parquet",
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
    filename="candidates/part-*.parquet",
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
    filename="funnel.parquet",
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
    filename="targets.parquet",
    description="Structures chosen for PySCF labels: ingested structures and candidate prototypes.",
    key=("structure_id",),
    columns=(
        Column("structure_id", "string", "stable structure hash", nullable=False),
        Column("origin", "string", "'ingest' or 'candidate'", nullable=False),
        Column("candidate_id", "string", "candidate the prototype was built from; null for ingested"),
        *_IDENTITY,
        Column("nsites", "int64", "sites in the cell that is computed", nullable=False),
        *SITE_COLUMNS,
        Column("structure", "string", "pymatgen Structure as JSON (the cell that is computed)", nullable=False),
    ),
)

LABELS = Table(
    name="labels",
    filename="labels.parquet",
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
        Column("pyscf_version", "string", "PySCF version"),
    ),
)

REFERENCES = Table(
    name="references",
    filename="references.parquet",
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
        Column("pyscf_version", "string", "PySCF version"),
    ),
)

EXTERNAL_LABELS = Table(
    name="external_labels",
    filename="external_labels.parquet",
    description="Labels from outside matscreen (train.external_labels), featurized and trained on with the PySCF labels.",
    key=("structure_id",),
    columns=(
        Column("structure_id", "string", "'x-' + hash of the row (file name, row, formula, sites)", nullable=False),
        Column("source", "string", "the external table's path", nullable=False),
        Column("row", "int64", "row number in that table (1 = first data row)", nullable=False),
        *_IDENTITY,
        *(Column(f"{s}_species", "string", f"occupancy of site {s} if the table gives it") for s in SITE_LABELS),
        Column("target", "string", "name of the labeled quantity (train.target)", nullable=False),
        Column("value", "float64", "the label, in the units of the target", nullable=False),
    ),
)

CANDIDATE_FEATURES = Table(
    name="candidate_features",
    filename="features/part-*.parquet",
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
    filename="labeled_features.parquet",
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
    filename="cv_metrics.parquet",
    description="Cross-validation metrics of the trained model, per fold and overall.",
    key=("fold", "metric"),
    columns=(
        Column("fold", "string", "fold number or 'all' (pooled out-of-fold)", nullable=False),
        Column("metric", "string", "mae, rmse (units of the target), r2, spearman, coverage_1sigma (fraction of |error| <= ensemble std), n_train, n_test", nullable=False),
        Column("value", "float64", "metric value; NaN where undefined (e.g. spearman on fewer than 3 test rows)"),
    ),
)

OOF_PREDICTIONS = Table(
    name="oof_predictions",
    filename="oof_predictions.parquet",
    description="Out-of-fold predictions of every labeled structure.",
    key=("structure_id",),
    columns=(
        Column("structure_id", "string", "structure hash", nullable=False),
        Column("fold", "int64", "CV fold the structure was held out in", nullable=False),
        Column("y_true", "float64", "label (train target, units of the target)", nullable=False),
        Column("y_pred", "float64", "out-of-fold prediction", nullable=False),
        Column("y_std", "float64", "ensemble standard deviation (uncertainty)"),
    ),
)

PREDICTIONS = Table(
    name="predictions",
    filename="predictions/part-*.parquet; ranked.parquet",
    description="Model predictions for candidates, ranked by the screening score.",
    key=("candidate_id",),
    columns=(
        Column("candidate_id", "string", "candidate hash", nullable=False),
        *_IDENTITY,
        Column("prediction", "float64", "predicted target (units of the target)"),
        Column("uncertainty", "float64", "ensemble standard deviation"),
        Column("score", "float64", "screening score (lower is better): prediction - kappa * uncertainty for minimisation"),
        Column("rank", "int64", "1 = best; null before ranking"),
    ),
)

ALL_TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        STRUCTURES, REJECTS, CANDIDATES, FUNNEL, LABEL_TARGETS, LABELS, REFERENCES, EXTERNAL_LABELS,
        CANDIDATE_FEATURES, STRUCTURE_FEATURES, CV_METRICS, OOF_PREDICTIONS, PREDICTIONS,
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
    if len(df) and df.duplicated(list(table.key)).any():
        dup = df.loc[df.duplicated(list(table.key), keep=False), list(table.key)].head(5)
        raise ContractError(f"{ctx}: duplicate primary key {table.key}: {dup.to_dict('records')}")


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
    """Check ``df`` against ``table``, then write it atomically with provenance metadata."""
    arrow = to_arrow(df, table)
    meta = dict(arrow.schema.metadata or {})
    meta.pop(b"pandas", None)  # pandas' own metadata embeds versions and index info we do not need
    meta[METADATA_KEY] = json.dumps({"table": table.name, **(provenance or {})}, sort_keys=True).encode()
    arrow = arrow.replace_schema_metadata(meta)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(arrow, tmp, compression="zstd", write_page_checksum=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def read_tables(paths: Iterable[str | os.PathLike[str]], table: Table) -> pd.DataFrame:
    """Read and concatenate shards of one table."""
    frames = [read_table(p, table) for p in paths]
    if not frames:
        return empty_frame(table)
    return pd.concat(frames, ignore_index=True)


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
        lines += [f"### `{t.name}` ({t.filename})", "", t.description, "", f"Primary key: `{', '.join(t.key)}`."]
        if t.extra_dtype:
            lines.append(f"Further columns: features, `{t.extra_dtype}`.")
        lines += ["", "| column | dtype | unit | null | meaning |", "|---|---|---|---|---|"]
        for c in t.columns:
            lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {'yes' if c.nullable else 'no'} | {c.description} |")
        lines.append("")
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
    p.write_text(text[:start] + "\n" + markdown().strip() + "\n" + text[end:])
