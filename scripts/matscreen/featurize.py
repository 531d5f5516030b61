"""Stage 4, featurize: matminer descriptors plus site-aware descriptors, fast and identical for all rows.

Candidates (from ``enumerate``), labeled structures and external label tables are featurized by
the same code from the same columns, so the trainer and the screener see identical features:

* **composition** features are matminer's own (ElementProperty presets, Stoichiometry,
  ValenceOrbital, IonProperty, OxidationStates), computed from the composition per formula unit
  that the site occupancy columns describe (``A_species`` ... ``X_species``, see
  :func:`row_composition`); rows of family ``other`` (or with unusable site columns) use their
  ``formula``. At screening scale they come from the vectorised fast path in
  :mod:`matscreen.featurize_fast`, which the tests check against matminer's
  ``featurize_dataframe`` to 1e-9 relative; whatever has no fast path runs through matminer
  row by row with a progress log.
* **site** features (:mod:`matscreen.featurize_site`): electronegativity, Shannon radius and
  oxidation state per coordination role, their differences and ratios, tolerance factors.
* **structure** features (opt-in, prefix ``struct_``): DensityFeatures, GlobalSymmetryFeatures,
  SiteStatsFingerprint, for rows that carry a ``structure`` JSON column (labeled structures).
  Candidates have no structure, so these columns are NaN for them: the trainer should drop
  ``struct_*`` columns when the model is to screen candidates.

The output columns depend only on the settings, never on the rows, so any two frames
featurized with the same settings have identical columns in identical order. A row that cannot
be featurized gets NaN and a reason in ``featurize_error``; nothing a row contains stops a shard.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from matscreen import featurize_fast as ff
from matscreen import featurize_site
from matscreen.config import ConfigError, build_settings, settings_dict
from matscreen.families import FAMILIES, SITE_LABELS, parse_occupancy
from matscreen.provenance import provenance, stable_hash
from matscreen.tables import CANDIDATE_FEATURES, STRUCTURE_FEATURES, Table, read_available, write_table

log = logging.getLogger(__name__)

STAGE = "featurize"

#: Bump when the definition of a feature computed by matscreen itself changes (enters the hash).
FEATURE_CODE_VERSION = 1

#: Settings that change how features are computed but not their values (not in the hash).
RUNTIME_KEYS = ("fast_path", "block_rows", "progress_every_s")

#: Numeric GlobalSymmetryFeatures (the crystal system name is a string).
SYMMETRY_FEATURES = ("spacegroup_num", "crystal_system_int", "is_centrosymmetric", "n_symmetry_ops")

SITE_SPECIES_COLUMNS = tuple(f"{s}_species" for s in SITE_LABELS)


# --- settings ------------------------------------------------------------------------------------


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


# --- feature sets ----------------------------------------------------------------------------------


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

        sets.append(FeatureSet(f"element_property:{preset}", "composition", labels,
                               tuple(safe_name(x) for x in labels), tuple(f.citations()), f, fast))
    if s.stoichiometry:
        f = Stoichiometry()
        labels = tuple(f.feature_labels())

        def fast_st(b: ff.CompositionBlock, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
            return ff.stoichiometry(b, _f.p_list, _f.num_atoms), np.ones(len(b), bool)

        sets.append(FeatureSet("stoichiometry", "composition", labels, tuple(safe_name(x, "stoich_") for x in labels),
                               tuple(f.citations()), f, fast_st))
    if s.valence_orbital:
        f = ValenceOrbital()
        labels = tuple(f.feature_labels())
        ff.register_source("ValenceOrbital", f.data_source)

        def fast_vo(b: ff.CompositionBlock, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
            return ff.valence_orbital(b, "ValenceOrbital", _f.orbitals, _f.props), np.ones(len(b), bool)

        sets.append(FeatureSet("valence_orbital", "composition", labels, tuple(safe_name(x, "valence_") for x in labels),
                               tuple(f.citations()), f, fast_vo))
    if s.ion_property:
        f = IonProperty()
        labels = tuple(f.feature_labels())
        ff.register_source("IonProperty", f.data_source)

        def fast_ip(b: ff.CompositionBlock) -> tuple[np.ndarray, np.ndarray]:
            return ff.ion_property(b, "IonProperty")

        sets.append(FeatureSet("ion_property", "composition", labels, tuple(safe_name(x, "ion_") for x in labels),
                               tuple(f.citations()), f, fast_ip))
    if s.oxidation_states:
        f = OxidationStates()
        labels = tuple(f.feature_labels())
        fast_ox = None
        if set(f.stats) <= ff.FAST_STATS:

            def fast_ox(b: ff.CompositionBlock, _f: Any = f) -> tuple[np.ndarray, np.ndarray]:
                return ff.oxidation_states(b, _f.stats), b.valid & b.has_oxi

        sets.append(FeatureSet("oxidation_states", "composition", labels, tuple(safe_name(x, "oxi_") for x in labels),
                               tuple(f.citations()), f, fast_ox))
    return sets


STRUCTURE_SWITCHES = ("density", "global_symmetry", "site_stats_fingerprint")


def structure_features_on(settings: FeaturizeSettings | Mapping[str, Any] | None) -> bool:
    """Whether any structure feature set is switched on (then the ``structure`` column is read)."""
    st = resolve_settings(settings).structure
    return any(getattr(st, k) for k in STRUCTURE_SWITCHES)


def _structure_sets(s: FeaturizeSettings) -> list[FeatureSet]:
    st = s.structure
    sets: list[FeatureSet] = []
    if not structure_features_on(s):
        return sets
    from matminer.featurizers.structure import DensityFeatures, GlobalSymmetryFeatures, SiteStatsFingerprint

    if st.density:
        f = DensityFeatures()
        labels = tuple(f.feature_labels())
        sets.append(FeatureSet("structure:density", "structure", labels, tuple(safe_name(x, "struct_") for x in labels),
                               tuple(f.citations()), f))
    if st.global_symmetry:
        f = GlobalSymmetryFeatures(desired_features=list(SYMMETRY_FEATURES))
        labels = tuple(f.feature_labels())
        sets.append(FeatureSet("structure:global_symmetry", "structure", labels,
                               tuple(safe_name(x, "struct_") for x in labels), tuple(f.citations()), f))
    if st.site_stats_fingerprint:
        f = SiteStatsFingerprint.from_preset(st.site_stats_preset)
        labels = tuple(f.feature_labels())
        sets.append(FeatureSet("structure:site_stats_fingerprint", "structure", labels,
                               tuple(safe_name(x, "struct_ssf_") for x in labels), tuple(f.citations()), f))
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
    return stable_hash({
        "settings": {k: v for k, v in settings_dict(s).items() if k not in RUNTIME_KEYS},
        "names": feature_names(s),
        "code_version": FEATURE_CODE_VERSION,
        "matminer": metadata.version("matminer"),
        "pymatgen": metadata.version("pymatgen"),
    })


# --- compositions --------------------------------------------------------------------------------


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def row_composition(family: str, occupancy: dict[str, Any], formula: Any = None) -> Any:
    """The pymatgen ``Composition`` matminer featurizes for a row (the reference of the fast path).

    For a known family with all its site columns: species with oxidation states, amounts per
    formula unit of the prototype (fraction x site multiplicity, added site by site and ion by
    ion in the family's site order). Otherwise the ``formula`` (no oxidation states).
    Raises ``ValueError`` naming the problem when neither is usable.
    """
    from pymatgen.core import Composition, Species

    problems = []
    fam = FAMILIES.get(family)
    if fam is not None:
        try:
            amounts: dict[tuple[str, float], float] = {}
            for site in fam.sites:
                text = occupancy.get(site.label)
                if _is_null(text):
                    raise ValueError(f"site {site.label} has no occupancy")
                for ion in parse_occupancy(str(text)):
                    k = (ion.element, ion.oxidation)
                    amounts[k] = amounts.get(k, 0.0) + ion.fraction * site.multiplicity
            return Composition({Species(el, oxi): a for (el, oxi), a in amounts.items()})
        except (ValueError, KeyError) as exc:
            problems.append(str(exc))
    if not _is_null(formula) and str(formula).strip():
        try:
            return Composition(str(formula), strict=True)
        except Exception as exc:  # noqa: BLE001 - pymatgen raises several types for bad formulas
            problems.append(f"formula {formula!r}: {exc}")
    else:
        problems.append("no formula")
    raise ValueError("; ".join(problems))


@lru_cache(maxsize=65536)
def _parsed_site(text: str) -> tuple[tuple[tuple[int, float, float], ...], str | None]:
    """Ions of an occupancy string as (Z, oxidation, fraction), or an error message."""
    from pymatgen.core import Element

    try:
        ions = parse_occupancy(text)
        return tuple((Element(i.element).Z, i.oxidation, i.fraction) for i in ions), None
    except (ValueError, KeyError) as exc:
        return (), str(exc)


@lru_cache(maxsize=262144)
def _parsed_formula(formula: str | None) -> tuple[tuple[tuple[int, float], ...], str | None]:
    """(Z, amount) of a formula-only row, parsed once per distinct formula, or an error message."""
    try:
        comp = row_composition("other", {}, formula)
        return tuple((el.Z, amt) for el, amt in comp.element_composition.items()), None
    except ValueError as exc:
        return (), str(exc)


def composition_block(df: pd.DataFrame) -> tuple[ff.CompositionBlock, np.ndarray]:
    """Compositions of all rows as padded arrays (vectorised over site columns).

    Returns the block and per-row error messages (None where the composition is fine).
    Equivalent to :func:`row_composition` per row, without building pymatgen objects for
    family rows.
    """
    n = len(df)
    fams = df["family"].astype(object).to_numpy()
    use_formula = np.ones(n, dtype=bool)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    width = 1
    site_errors = np.full(n, None, dtype=object)
    for fname, fam in FAMILIES.items():
        rows = np.flatnonzero(fams == fname)
        if len(rows) == 0:
            continue
        zs, oxs, ams = [], [], []
        ok = np.ones(len(rows), dtype=bool)
        for site in fam.sites:
            col = f"{site.label}_species"
            vals = df[col].to_numpy(dtype=object)[rows] if col in df.columns else np.full(len(rows), None, object)
            codes, uniques = pd.factorize(vals)
            parsed = [_parsed_site(str(u)) for u in uniques]
            k = max([len(p[0]) for p in parsed] + [1])
            uz = np.zeros((len(uniques) + 1, k), dtype=np.int64)
            uo = np.full((len(uniques) + 1, k), np.nan)
            uf = np.zeros((len(uniques) + 1, k))
            uerr = np.empty(len(uniques) + 1, dtype=object)
            for u, (ions, err) in enumerate(parsed):
                uerr[u] = None if err is None else f"site {site.label}: {err}"
                for j, (z, o, fr) in enumerate(ions):
                    uz[u, j], uo[u, j], uf[u, j] = z, o, fr
            uerr[-1] = f"site {site.label} has no occupancy"
            bad_u = np.array([e is not None for e in uerr])
            ok &= ~bad_u[codes]
            for i in np.flatnonzero(bad_u[codes]):
                if site_errors[rows[i]] is None:
                    site_errors[rows[i]] = uerr[codes[i]]
            zs.append(uz[codes])
            oxs.append(uo[codes])
            ams.append(uf[codes] * float(site.multiplicity))
        z = np.concatenate(zs, axis=1)
        z[~ok] = 0
        parts.append((rows[ok], z[ok], np.concatenate(oxs, axis=1)[ok], np.concatenate(ams, axis=1)[ok]))
        use_formula[rows[ok]] = False
        width = max(width, z.shape[1])
    sp_z = np.zeros((n, width), dtype=np.int64)
    sp_oxi = np.full((n, width), np.nan)
    sp_amt = np.zeros((n, width))
    has_oxi = np.zeros(n, dtype=bool)
    valid = np.zeros(n, dtype=bool)
    for rows, z, o, a in parts:
        sp_z[rows, : z.shape[1]] = z
        sp_oxi[rows, : z.shape[1]] = o
        sp_amt[rows, : z.shape[1]] = a
        has_oxi[rows] = True
        valid[rows] = True
    errors = np.full(n, None, dtype=object)
    formula_rows = np.flatnonzero(use_formula)
    if len(formula_rows):
        formulas = df["formula"].to_numpy(dtype=object) if "formula" in df.columns else np.full(n, None, object)
        extra: list[list[tuple[int, float]]] = []
        for i in formula_rows:
            items, err = _parsed_formula(formulas[i] if isinstance(formulas[i], str) else None)
            extra.append(list(items))
            if err is None:
                valid[i] = True
            else:
                prefix = f"{site_errors[i]}; " if site_errors[i] else ""
                errors[i] = f"no composition: {prefix}{err}"
        w = max([len(e) for e in extra] + [width])
        if w > width:
            pad = w - width
            sp_z = np.pad(sp_z, ((0, 0), (0, pad)))
            sp_oxi = np.pad(sp_oxi, ((0, 0), (0, pad)), constant_values=np.nan)
            sp_amt = np.pad(sp_amt, ((0, 0), (0, pad)))
        for i, items in zip(formula_rows, extra):
            for j, (z, a) in enumerate(items):
                sp_z[i, j], sp_amt[i, j] = z, a
    block = ff.block_from_species_slots(sp_z, sp_oxi, sp_amt, has_oxi, valid)
    return block, errors


# --- featurizing -----------------------------------------------------------------------------------


class _Errors:
    """Per-row error messages, joined with '; '."""

    def __init__(self, n: int) -> None:
        self.msgs: list[list[str] | None] = [None] * n

    def add(self, i: int, msg: str) -> None:
        if self.msgs[i] is None:
            self.msgs[i] = []
        self.msgs[i].append(msg)

    def add_many(self, errs: np.ndarray) -> None:
        for i in np.flatnonzero(pd.notna(errs)):
            self.add(int(i), str(errs[i]))

    def column(self) -> np.ndarray:
        return np.array([None if m is None else "; ".join(m) for m in self.msgs], dtype=object)


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _run_matminer(
    fs: FeatureSet, objects: Sequence[Any], rows: np.ndarray, out: np.ndarray, errors: _Errors, every_s: float
) -> None:
    """Featurize ``objects[rows]`` one by one with matminer (the reference and the slow path)."""
    if len(rows) == 0:
        return
    name = type(fs.featurizer).__name__
    log.info("%s: %d rows through matminer (no fast path)", fs.key, len(rows))
    t0 = last = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, i in enumerate(rows):
            try:
                out[i] = np.asarray(fs.featurizer.featurize(objects[i]), dtype=float)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the shard
                errors.add(int(i), f"{name}: {_short(exc)}")
            now = time.monotonic()
            if now - last >= every_s:
                last = now
                rate = (k + 1) / (now - t0)
                log.info("%s: %d/%d rows (%.0f rows/s, %.0f s left)", fs.key, k + 1, len(rows), rate,
                         (len(rows) - k - 1) / rate)
    log.info("%s: %d rows in %.1f s", fs.key, len(rows), time.monotonic() - t0)


class _Compositions:
    """Lazily built pymatgen Compositions of a block's rows (only the matminer path needs them)."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.cache: dict[int, Any] = {}

    def __getitem__(self, i: int) -> Any:
        if i not in self.cache:
            row = self.df.iloc[i]
            occ = {s: row.get(f"{s}_species") for s in SITE_LABELS}
            self.cache[i] = row_composition(str(row["family"]), occ, row.get("formula"))
        return self.cache[i]


def _structures(df: pd.DataFrame, errors: _Errors) -> tuple[list[Any], np.ndarray]:
    from matscreen.structjson import UnsafeStructureJSON, structure_from_json

    objs: list[Any] = [None] * len(df)
    if "structure" not in df.columns:
        return objs, np.zeros(0, dtype=np.int64)
    texts = df["structure"].to_numpy(dtype=object)
    ids = df["structure_id"].to_numpy(dtype=object) if "structure_id" in df.columns else [None] * len(df)
    rows = []
    for i, t in enumerate(texts):
        if _is_null(t):
            continue
        try:
            objs[i] = structure_from_json(t, f"structure of row {i}" + (f" ({ids[i]})" if ids[i] is not None else ""))
            rows.append(i)
        except UnsafeStructureJSON:
            raise  # a table that names code to import is not a per-row error: stop
        except Exception as exc:  # noqa: BLE001
            errors.add(i, f"structure JSON: {_short(exc)}")
    return objs, np.array(rows, dtype=np.int64)


def _featurize_block(df: pd.DataFrame, sets: Sequence[FeatureSet], s: FeaturizeSettings, out: np.ndarray,
                     fast_rows: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Fill ``out`` (len(df), n_features) for one block; returns the error column.

    ``fast_rows`` (optional, filled in): per composition feature set, which rows the fast path produced.
    """
    n = len(df)
    errors = _Errors(n)
    need_comp = any(fs.kind == "composition" for fs in sets)
    block = None
    if need_comp:
        block, comp_err = composition_block(df)
        errors.add_many(comp_err)
    comps = _Compositions(df)
    structs: list[Any] | None = None
    struct_rows = np.zeros(0, dtype=np.int64)
    col = 0
    for fs in sets:
        width = len(fs.names)
        view = out[:, col : col + width]  # written in place
        view[:] = np.nan
        if fs.kind == "composition":
            assert block is not None
            todo = np.flatnonzero(block.valid)
            fast_done = np.zeros(n, dtype=bool)
            if s.fast_path and fs.fast is not None:
                try:
                    vals, handled = fs.fast(block)
                    view[:] = vals
                    fast_done = block.valid & np.asarray(handled, dtype=bool)
                    todo = np.flatnonzero(block.valid & ~fast_done)
                except Exception as exc:  # noqa: BLE001 - fall back to the reference for this block
                    log.warning("%s: fast path failed on a block (%s); using matminer", fs.key, _short(exc))
            if fast_rows is not None:
                fast_rows[fs.key] = fast_done
            _run_matminer(fs, comps, todo, view, errors, s.progress_every_s)
        elif fs.kind == "site":
            species = {
                lab: (df[f"{lab}_species"].to_numpy(dtype=object) if f"{lab}_species" in df.columns
                      else np.full(n, None, dtype=object))
                for lab in SITE_LABELS
            }
            vals, errs = featurize_site.site_features(
                df["family"].astype(object).to_numpy(), species, s.anion_cn, s.radius_fallback)
            view[:] = vals
            errors.add_many(errs)
        elif fs.kind == "structure":
            if structs is None:
                structs, struct_rows = _structures(df, errors)
            _run_matminer(fs, structs, struct_rows, view, errors, s.progress_every_s)
        col += width
    return errors.column()


def feature_values(
    df: pd.DataFrame, settings: FeaturizeSettings | Mapping[str, Any] | None, dtype: type = np.float64,
    fast_rows: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (len(df), len(feature_names)) in ``dtype`` and the error column (object).

    :func:`featurize_frame` is this plus the id column, in float32; the float64 matrix is what
    the tests compare with matminer. Pass a dict as ``fast_rows`` to learn, per composition
    feature set (key ``FeatureSet.key``), which rows the fast path produced (a bool array): the
    others fell back to matminer (rows the fast path does not handle, or a block where it raised).
    """
    s = resolve_settings(settings)
    if "family" not in df.columns:
        raise KeyError(f"featurize: input frame lacks column 'family' (has {list(df.columns)[:12]}...)")
    sets = feature_sets(s)
    names = [nm for fs in sets for nm in fs.names]
    n = len(df)
    values = np.empty((n, len(names)), dtype=dtype)
    errors = np.full(n, None, dtype=object)
    step = s.block_rows
    if fast_rows is not None:
        fast_rows.clear()
        fast_rows.update({fs.key: np.zeros(n, dtype=bool) for fs in sets if fs.kind == "composition"})
    t0 = last = time.monotonic()
    for start in range(0, n, step):
        stop = min(start + step, n)
        block_out = np.empty((stop - start, len(names)))
        block_fast: dict[str, np.ndarray] | None = {} if fast_rows is not None else None
        errors[start:stop] = _featurize_block(df.iloc[start:stop], sets, s, block_out, block_fast)
        values[start:stop] = block_out
        if fast_rows is not None and block_fast is not None:
            for key, done in block_fast.items():
                fast_rows[key][start:stop] = done
        now = time.monotonic()
        if now - last >= s.progress_every_s or stop == n:
            last = now
            log.info("featurized %d/%d rows (%.0f rows/s)", stop, n, stop / max(now - t0, 1e-9))
    return values, errors


def featurize_frame(df: pd.DataFrame, id_column: str, settings: FeaturizeSettings | Mapping[str, Any] | None) -> pd.DataFrame:
    """Features of every row of ``df``: ``id_column``, ``featurize_error``, then float32 features.

    ``df`` carries ``id_column``, ``family``, ``formula`` and the site columns
    ``{S}_species`` (others are ignored; absent site columns count as null), optionally a
    ``structure`` JSON column. Columns depend only on ``settings`` (see :func:`feature_names`).
    """
    if id_column not in df.columns:
        raise KeyError(f"featurize: input frame lacks id column {id_column!r} (has {list(df.columns)[:12]}...)")
    values, errors = feature_values(df, settings, np.float32)
    n = len(df)
    out = pd.DataFrame(values, columns=feature_names(settings), copy=False)
    out.insert(0, "featurize_error", pd.array(errors, dtype="object"))
    out.insert(0, id_column, df[id_column].to_numpy(dtype=object))
    n_err = int(pd.notna(errors).sum())
    if n_err:
        log.warning("%d of %d rows have featurize errors (first: %s)", n_err, n,
                    next(e for e in errors if e is not None))
    return out


# --- the stage ----------------------------------------------------------------------------------------


def _table_for(id_column: str) -> Table:
    if id_column == "candidate_id":
        return CANDIDATE_FEATURES
    if id_column == "structure_id":
        return STRUCTURE_FEATURES
    raise ValueError(f"featurize: id_column must be 'candidate_id' or 'structure_id', got {id_column!r}")


def _read_inputs(paths: Sequence[str], id_column: str, want_structure: bool) -> pd.DataFrame:
    frames = []
    wanted = [id_column, "family", "formula", *SITE_SPECIES_COLUMNS, *(["structure"] if want_structure else [])]
    for p in paths:
        frames.append(read_available(p, wanted, required=(id_column, "family")))
        log.info("read %d rows from %s", len(frames[-1]), p)
    if not frames:
        return pd.DataFrame(columns=[id_column, "family", "formula"])
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    # external label tables hold one row per (structure, target): featurize each structure once
    return df.drop_duplicates(id_column).reset_index(drop=True) if id_column == "structure_id" else df


def run(input_paths: list[str], output_path: str, id_column: str, settings: FeaturizeSettings | Mapping[str, Any] | None,
        config_hash: str = "") -> None:
    """Featurize candidate shard(s) or the label-targets table and write the feature table."""
    s = resolve_settings(settings)
    table = _table_for(id_column)
    want_structure = structure_features_on(s)
    df = _read_inputs(list(input_paths), id_column, want_structure)
    from matscreen.structjson import UnsafeStructureJSON

    t0 = time.monotonic()
    try:
        feats = featurize_frame(df, id_column, s)
    except UnsafeStructureJSON as exc:
        raise UnsafeStructureJSON(f"{', '.join(map(str, input_paths))}: {exc}") from None
    log.info("featurized %d rows x %d features in %.1f s", len(feats), feats.shape[1] - 2, time.monotonic() - t0)
    prov = provenance(STAGE, settings_dict(s), config_hash)
    prov["feature_set_hash"] = feature_set_hash(s)
    prov["feature_names"] = feature_name_map(s)
    prov["citations"] = citations(s)
    write_table(feats, output_path, table, provenance=prov)
    log.info("wrote %s", output_path)
