"""External label tables: labels computed elsewhere (another code, a database) to train on.

A user table (Parquet or CSV) needs a ``formula`` column and at least one of the columns named by
``train.target`` (in the target's units, e.g. eV/atom); it may also give ``family`` and the site
columns (``A_species`` ... ``X_species``, occupancy strings as in every matscreen table), in
which case the site-aware features are computed too, exactly as for candidates. Rows of a known
family without site columns get their sites inferred from the formula (:func:`infer_sites`).
Rows are featurized by the same code as candidates and labeled structures. A bad row (unparsable
formula or site, no target value) is left out with a warning naming the file and row; the good
rows are kept. The prepared table has one row per (table row, target).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from matscreen import tables
from matscreen.families import FAMILIES, OTHER, SITE_LABELS, Ion, format_occupancy, get_family, parse_occupancy
from matscreen.provenance import provenance, stable_hash

log = logging.getLogger(__name__)

_SPECIES = [f"{s}_species" for s in SITE_LABELS]


def _read_user_table(path: str) -> pd.DataFrame:
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise tables.ContractError(f"{path}: cannot read external label table ({type(exc).__name__}: {exc})") from exc
    raise tables.ContractError(f"{path}: external label tables must be .csv or .parquet")


def _text(value: object) -> str | None:
    """A non-empty string cell, or None (CSV readers give NaN for empty cells)."""
    return value.strip() or None if isinstance(value, str) else None


def _value_problem(rec: dict, target: str) -> str | None:
    value = rec.get(target)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"no {target}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"{target} {value!r} is not a number"
    if not np.isfinite(number) or abs(number) > tables.MAX_ABS_LABEL:
        return f"{target} {value!r} is not a plausible label (|x| > {tables.MAX_ABS_LABEL:g} or not finite)"
    return None


def _row_problem(rec: dict) -> str | None:
    from pymatgen.core import Composition

    try:
        comp = Composition(str(rec["formula"]))
    except Exception as exc:  # pymatgen raises ValueError and others for bad formulas
        return f"bad formula {rec['formula']!r} ({exc})"
    if comp.num_atoms <= 0 or not comp.valid:  # 'valid' is False for dummy species such as 'Xx'
        return f"bad formula {rec['formula']!r} (not made of known elements)"
    family = _text(rec.get("family")) or OTHER
    if family != OTHER and family not in FAMILIES:
        return f"unknown family {family!r}"
    for col in _SPECIES:
        text = _text(rec.get(col))
        if text:
            try:
                parse_occupancy(text)
            except ValueError as exc:
                return str(exc)
    return None


# --- site inference ------------------------------------------------------------------------------


class SiteInferenceError(ValueError):
    """The formula's cations cannot be placed on the family's sites; the message says why."""


def _integer_composition(formula: str):  # noqa: ANN202 - pymatgen Composition
    """The composition scaled to whole numbers of atoms (pymatgen's oxidation guesses need them)."""
    from pymatgen.core import Composition

    comp = Composition(formula)
    denominators = [Fraction(float(a)).limit_denominator(1000).denominator for a in comp.values()]
    scale = math.lcm(*denominators)
    return Composition({el: round(float(a) * scale) for el, a in comp.items()}), scale


def _integer_states(element: str, average: float, amount: float) -> list[tuple[float, float]]:
    """A mixed-valence average split into the two neighbouring integer states: Co 3.75 x 4 ->
    Co3+ x 1, Co4+ x 3; an integer average stays one ion."""
    lo = math.floor(average + 1e-9)
    frac_hi = average - lo
    if frac_hi < 1e-6:
        return [(float(lo), amount)]
    if frac_hi > 1 - 1e-6:
        return [(float(lo + 1), amount)]
    return [(float(lo), amount * (1 - frac_hi)), (float(lo + 1), amount * frac_hi)]


def _size(element: str, oxidation: float) -> float:
    """Shannon radius at CN 6 (every cation's common coordination), else at the nearest tabulated CN."""
    from matscreen import chemistry

    for cn in (6, 8, 4, 7, 5, 9, 12, 10, 11, 3, 2):
        r = chemistry.shannon_radius(element, oxidation, cn)
        if r is not None:
            return float(r)
    raise SiteInferenceError(f"no Shannon radius for {element}{oxidation:+g}")


@lru_cache(maxsize=65536)
def infer_sites(formula: str, family: str) -> dict[str, str]:
    """Site occupancy strings of ``family`` for ``formula``, e.g. ``La1Sr3Co4O12`` (perovskite) ->
    ``{'A': 'La3+:0.25 Sr2+:0.75', 'B': 'Co3+:0.25 Co4+:0.75', 'X': 'O2-'}``.

    1. Oxidation states: pymatgen's ``Composition.oxi_state_guesses`` (common states, then all
       ICSD states) on the formula scaled to whole atoms; a non-integer average (mixed valence,
       Co 3.75) becomes the two neighbouring integer states in the proportions of the average.
    2. Formula units: anion atoms / the family's anion multiplicity; the cations must then fill
       the family's cation sites exactly.
    3. Sites: cations ordered by Shannon radius (at CN 6, else the nearest tabulated CN), largest
       first, fill the cation sites in order of decreasing coordination (perovskite A XII then B
       VI; garnet C VIII, A VI, D IV), an ion spilling over into the next site when one is full
       (Fe in Y3Fe5O12 fills A and D). Spinels are inferred as *normal* spinels: the lowest-valent
       cations fill the tetrahedral A site (Mg in MgAl2O4, Co2+ in Co3O4). Double perovskites:
       after A, the remaining ions fill B then B2 in the canonical (label) order.
    4. Fractions: amount per formula unit / site multiplicity.

    Raises :class:`SiteInferenceError` saying why when the formula does not fit.
    """
    fam = get_family(family)
    try:
        comp, _ = _integer_composition(formula)
    except Exception as exc:  # noqa: BLE001 - pymatgen raises several types for bad formulas
        raise SiteInferenceError(f"bad formula {formula!r} ({exc})") from None
    guesses = comp.oxi_state_guesses() or comp.oxi_state_guesses(all_oxi_states=True)
    if not guesses:
        raise SiteInferenceError(f"no charge-balanced oxidation states for {formula}")
    avg = guesses[0]
    anions = [(el.symbol, amt) for el, amt in comp.items() if avg[el.symbol] < 0]
    cations = [(el.symbol, amt) for el, amt in comp.items() if avg[el.symbol] > 0]
    n_anion = sum(a for _, a in anions)
    if not anions or not cations:
        raise SiteInferenceError(f"{formula}: needs cations and anions (oxidation states {avg})")
    fu = n_anion / fam.anion_site.multiplicity
    ions: list[tuple[str, float, float]] = []  # element, oxidation, amount per formula unit
    for el, amt in cations:
        ions += [(el, oxi, a / fu) for oxi, a in _integer_states(el, avg[el], amt)]
    capacity = sum(s.multiplicity for s in fam.cation_sites)
    total = sum(a for _, _, a in ions)
    if abs(total - capacity) > 1e-6:
        raise SiteInferenceError(
            f"{formula}: {total:g} cations per {fam.anion_site.multiplicity} anions, "
            f"a {family} has {capacity} (formula {fam.formula_template})"
        )
    if family == "spinel":
        ions.sort(key=lambda i: (i[1], -_size(i[0], i[1]), i[0]))
        sites = [fam.site("A"), fam.site("B")]
    elif family == "double_perovskite":
        ions.sort(key=lambda i: (-_size(i[0], i[1]), i[0], i[1]))
        sites = list(fam.cation_sites)
    else:
        ions.sort(key=lambda i: (-_size(i[0], i[1]), i[0], i[1]))
        sites = sorted(fam.cation_sites, key=lambda s: -s.cn)
    filled: dict[str, list[Ion]] = {s.label: [] for s in sites}
    k = 0
    left = [a for _, _, a in ions]
    for site in sites:
        room = float(site.multiplicity)
        while room > 1e-9 and k < len(ions):
            take = min(room, left[k])
            filled[site.label].append(Ion(ions[k][0], ions[k][1], take / site.multiplicity))
            room -= take
            left[k] -= take
            if left[k] <= 1e-9:
                k += 1
    out = {}
    for site in sites:
        merged: dict[tuple[str, float], float] = {}
        for ion in filled[site.label]:
            merged[(ion.element, ion.oxidation)] = merged.get((ion.element, ion.oxidation), 0.0) + ion.fraction
        ions_here = [Ion(e, o, round(f, 6)) for (e, o), f in merged.items()]
        drift = 1.0 - sum(i.fraction for i in ions_here)  # rounding: the largest ion absorbs it
        j = max(range(len(ions_here)), key=lambda n: ions_here[n].fraction)
        ions_here[j] = Ion(ions_here[j].element, ions_here[j].oxidation, ions_here[j].fraction + drift)
        out[site.label] = format_occupancy(ions_here)
    if family == "double_perovskite" and out.get("B", "") > out.get("B2", ""):
        out["B"], out["B2"] = out["B2"], out["B"]
    x = fam.anion_site
    out[x.label] = (
        format_occupancy([Ion(el, avg[el], round(a / n_anion, 6)) for el, a in anions])
        if len(anions) > 1
        else format_occupancy([Ion(anions[0][0], avg[anions[0][0]])])
    )
    return out


# --- reading -------------------------------------------------------------------------------------


def read_external(paths: Iterable[str], target: str | Sequence[str], settings_hash: str | None = None) -> pd.DataFrame:
    """All usable (row, target) pairs of the external tables, in the EXTERNAL_LABELS contract.

    A table that records its level of theory (a ``settings_hash`` column, as matscreen's own label
    tables and the shipped reference set do) must match the run's label ``settings_hash``: mixing
    levels of theory is refused. Rows with a ``status`` other than ``ok`` are left out.
    """
    targets = [target] if isinstance(target, str) else list(target)
    rows = []
    for path in paths:
        df = _read_user_table(path)
        if settings_hash is not None and "settings_hash" in df.columns:
            other = sorted(set(df["settings_hash"].dropna().astype(str)) - {settings_hash})
            if other:
                raise tables.ContractError(
                    f"{path}: labels at settings hash {', '.join(other)}, the run's label settings hash is "
                    f"{settings_hash}: mixing levels of theory is refused (label the structures with the run's "
                    "settings, or leave the table out of train.external_labels)"
                )
        if "status" in df.columns:
            bad = df["status"].astype(str) != "ok"
            if bad.any():
                log.warning(
                    "%s: %d rows not ok (status %s) left out",
                    path,
                    int(bad.sum()),
                    ", ".join(sorted(set(df.loc[bad, "status"].astype(str)))),
                )
                df = df[~bad].reset_index(drop=True)
        present = [t for t in targets if t in df.columns]
        missing = [c for c in ("formula",) if c not in df.columns] + ([] if present else targets)
        if missing:
            what = (
                f"the train.target column '{targets[0]}'"
                if len(targets) == 1
                else f"at least one train.target column ({', '.join(targets)})"
            )
            raise tables.ContractError(
                f"{path}: external label table lacks column(s) {missing} (needs 'formula' and {what})"
            )
        kept = inferred = failed = 0
        for i, rec in enumerate(df.to_dict("records")):
            values = {t: _value_problem(rec, t) for t in present}
            good = [t for t, p in values.items() if p is None]
            problem = (
                None
                if good
                else (values[present[0]] if len(present) == 1 else f"no usable value of {', '.join(present)}")
            )
            problem = problem or _row_problem(rec)
            if problem:
                log.warning("%s row %d: left out: %s", path, i + 1, problem)
                continue
            for t in present:
                if values[t] is not None and not values[t].startswith("no "):
                    log.warning("%s row %d: %s left out: %s", path, i + 1, t, values[t])
            sites = {c: _text(rec.get(c)) for c in _SPECIES}
            family = _text(rec.get("family")) or OTHER
            source = None
            if family == OTHER:
                sites = dict.fromkeys(_SPECIES)
            elif any(sites.values()):
                source = "given"
            else:
                try:
                    sites = {f"{k}_species": v for k, v in infer_sites(str(rec["formula"]), family).items()}
                    sites = {c: sites.get(c) for c in _SPECIES}
                    source = "inferred"
                    inferred += 1
                except SiteInferenceError as exc:
                    failed += 1
                    log.warning("%s row %d: sites not inferred (composition features only): %s", path, i + 1, exc)
            sid = "x-" + stable_hash(
                {
                    "formula": str(rec["formula"]),
                    "family": family,
                    **{c: _text(rec.get(c)) for c in _SPECIES},
                    "source": Path(path).name,
                    "row": i,
                }
            )
            for t in good:
                rows.append(
                    {
                        "structure_id": sid,
                        "source": str(path),
                        "row": i + 1,
                        "family": family,
                        "formula": str(rec["formula"]),
                        **sites,
                        "site_source": source,
                        "target": t,
                        "value": float(rec[t]),
                    }
                )
            kept += 1
        log.info(
            "%s: %d of %d rows usable as external labels; sites inferred for %d, not assignable for %d "
            "(composition features only)",
            path,
            kept,
            len(df),
            inferred,
            failed,
        )
    if not rows:
        return tables.empty_frame(tables.EXTERNAL_LABELS)
    return tables.conform(pd.DataFrame(rows), tables.EXTERNAL_LABELS)


def as_labels(external: pd.DataFrame, target: str | Sequence[str]) -> pd.DataFrame:
    """External rows in the shape :func:`matscreen.train.training_frame` expects of labels (one
    row per structure, one column per target, NaN where the table has no value)."""
    targets = [target] if isinstance(target, str) else list(target)
    ids = external.drop_duplicates("structure_id")[["structure_id", "formula"]].reset_index(drop=True)
    out = ids.assign(status="ok")
    for t in targets:
        vals = external[external["target"] == t].set_index("structure_id")["value"]
        out[t] = out["structure_id"].map(vals).astype("float64")
    return out


def features_input(external: pd.DataFrame) -> pd.DataFrame:
    """One row per external structure (the featurizer's input)."""
    return external.drop_duplicates("structure_id").reset_index(drop=True)


def run(
    paths: list[str],
    out_path: str,
    target: str | Sequence[str],
    config_hash: str = "",
    settings_hash: str | None = None,
) -> None:
    targets = [target] if isinstance(target, str) else list(target)
    ext = read_external(paths, targets, settings_hash)
    tables.write_table(
        ext,
        out_path,
        tables.EXTERNAL_LABELS,
        provenance("external_labels", {"files": [Path(p).name for p in paths], "target": targets}, config_hash),
    )
