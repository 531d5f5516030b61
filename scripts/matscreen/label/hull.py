"""Stability against competing phases: pymatgen ``PhaseDiagram`` hulls from the labels themselves.

For every labeled compound, the hull of its chemical system is built from entries at **one**
level of theory (one settings hash): every ``ok`` label whose elements lie inside the system
(other compounds, the competing binary phases chosen for it, every polymorph) and the elemental
references. Mixing settings hashes in one hull is refused (:class:`MixedSettingsError`): energies
of different functionals, bases or k-meshes are not comparable.

A hull is only as good as its competitors: a compound gets hull columns only when every
elemental reference of its system is ``ok`` and every competing stoichiometry chosen for the
system (``origin == 'competing'`` rows of the targets) has at least one ``ok`` polymorph, and
those phases include every element of the system and the compound's own binaries (KNbO3: K2O
and Nb2O5; :func:`missing_competitors`). Where the structure library has no type for a binary
(Nb2O5, Ta2O5, Rb2O) the hull would otherwise miss the compound's main competitors: KNbO3
against Nb metal came out stable by 2.8 eV/atom. Otherwise the hull columns stay null and
``hull_error`` names what is missing and why.

Columns (eV/atom): ``e_above_hull_ev_per_atom`` (pymatgen ``get_e_above_hull``);
``decomposition_energy_ev_per_atom`` (``get_decomp_and_phase_separation_energy``: negative for a
stable compound, the distance to the hull built without it); ``decomposes_to``, the products
with their atom fractions (for a stable compound the phases it would separate into);
``is_stable``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from matscreen.label.pyscf import HARTREE_EV

log = logging.getLogger(__name__)

#: e_above_hull below this (eV/atom) counts as on the hull
STABLE_TOL = 1e-8

HULL_COLUMNS = (
    "e_above_hull_ev_per_atom",
    "decomposition_energy_ev_per_atom",
    "decomposes_to",
    "is_stable",
    "hull_error",
)


class MixedSettingsError(ValueError):
    """Entries of different settings hashes (levels of theory) were put into one hull."""


@dataclass(frozen=True)
class Entry:
    """One phase of a hull: ``energy_ev`` is the total energy of ``composition`` (not per atom)."""

    name: str  #: structure_id, or 'ref:<El>' for an elemental reference
    composition: Composition
    energy_ev: float
    settings_hash: str
    label: str  #: what reports show, e.g. 'TiO2 (rutile)'


def phase_diagram(entries: Iterable[Entry]) -> tuple[PhaseDiagram, dict[str, PDEntry]]:
    """pymatgen's PhaseDiagram of ``entries`` (one settings hash) and the PDEntry of each name."""
    entries = list(entries)
    hashes = sorted({e.settings_hash for e in entries})
    if len(hashes) > 1:
        raise MixedSettingsError(
            f"refusing to build one hull from {len(hashes)} levels of theory (settings hashes {', '.join(hashes)})"
        )
    pd_entries = {e.name: PDEntry(e.composition, e.energy_ev, name=e.label, attribute=e.name) for e in entries}
    return PhaseDiagram(list(pd_entries.values())), pd_entries


def _fmt_decomp(decomp: Mapping[PDEntry, float] | None) -> str | None:
    if not decomp:
        return None
    # fractions rounded before sorting: equal fractions come out of the LP a few ulp apart, and ties
    # must fall back on the name, or two identical runs write the products in different orders
    parts = sorted(((e.name, round(float(f), 6)) for e, f in decomp.items() if f > 1e-9), key=lambda x: (-x[1], x[0]))
    return " ".join(f"{n}:{f:.3f}" for n, f in parts)


def stability(pd_: PhaseDiagram, entry: PDEntry) -> dict[str, object]:
    """The hull columns of one entry of ``pd_``."""
    e_hull = float(pd_.get_e_above_hull(entry))
    stable = e_hull < STABLE_TOL
    decomp = None
    if stable and len(entry.composition.elements) == 1:  # an element on the hull competes with nothing
        e_dec = 0.0
    elif stable:
        try:
            decomp, e_dec = pd_.get_decomp_and_phase_separation_energy(entry)
        except ValueError:  # pymatgen could not build the hull without it
            e_dec = None
    else:
        decomp = pd_.get_decomposition(entry.composition)
        e_dec = e_hull
    return {
        "e_above_hull_ev_per_atom": max(e_hull, 0.0),
        "decomposition_energy_ev_per_atom": None if e_dec is None else float(e_dec),
        "decomposes_to": _fmt_decomp(decomp),
        "is_stable": bool(stable),
        "hull_error": None,
    }


def formula_elements(formula: str) -> frozenset[str]:
    """The element symbols of a formula (``"Ba1 Ti1 O3"`` -> {Ba, Ti, O})."""
    return frozenset(el.symbol for el in Composition(formula).elements)


def uncovered_elements(system: frozenset[str], competing_formulas: Iterable[str]) -> list[str]:
    """Elements of a multi-element ``system`` that none of the competing phases inside it contains.

    Such an element enters the hull only as itself: KNbO3 against K2O, O2 and Nb metal comes out
    "stable" by 2.8 eV/atom when the library builds no Nb oxide (Nb2O5 has no type in it).
    """
    if len(system) < 2:
        return []
    covered: set[str] = set()
    for f in competing_formulas:
        els = formula_elements(f)
        if els <= system:
            covered |= els
    return sorted(system - covered)


def own_binaries(cations: Iterable[object], anion: object) -> list[str]:
    """The binaries of a compound's cations with its anion at the compound's own oxidation states,
    reduced formulas: ``["K+", "Nb5+"]``, ``"O2-"`` -> ``["K2O", "Nb2O5"]``. Species are written as
    in the site columns (``Nb5+``; a mixed site ``La3+:0.25 Sr2+:0.75``); empty entries and
    fractional oxidation states are skipped. These are a compound's most direct competitors
    (KNbO3 -> K2O + Nb2O5)."""
    from pymatgen.core import Species

    from matscreen.label.competing import binary_formula

    if not isinstance(anion, str) or not anion or " " in anion.strip():  # no anion, or a mixed one
        return []
    x = Species.from_str(anion)
    out: set[str] = set()
    for site in cations:
        if not isinstance(site, str):
            continue
        for token in site.split():
            sp = Species.from_str(token.split(":")[0])
            ox, xo = float(sp.oxi_state or 0), abs(float(x.oxi_state or 0))
            if ox <= 0 or xo == 0 or ox != int(ox) or xo != int(xo):
                continue
            out.add(binary_formula(sp.symbol, int(ox), x.symbol, int(xo)))
    return sorted(out)


def own_binaries_of_row(row: Mapping[str, object]) -> list[str]:
    """:func:`own_binaries` of one LABEL_TARGETS (or candidates) row, from its site columns
    (cations A, B, B2, C, D; anion X)."""
    from matscreen.families import SITE_LABELS

    return own_binaries([row.get(f"{site}_species") for site in SITE_LABELS if site != "X"], row.get("X_species"))


def own_binaries_of(targets: pd.DataFrame) -> dict[str, list[str]]:
    """structure_id -> :func:`own_binaries_of_row` of every compound of a LABEL_TARGETS table
    (indexed by structure_id, or with the column)."""
    t = targets if "structure_id" not in targets.columns else targets.set_index("structure_id")
    return {str(sid): own_binaries_of_row(r) for sid, r in t[t["origin"] != "competing"].iterrows()}


def missing_competitors(
    system: frozenset[str], competing_formulas: Iterable[str], own: Iterable[str] = ()
) -> str | None:
    """Why the competing phases planned for a compound of ``system`` cannot give it a meaningful
    hull, or None: an element that none of them contains (:func:`uncovered_elements`), or one of
    the compound's own binaries (:func:`own_binaries`) that is not among them. Both happen where
    the structure library has no type for a binary (Nb2O5, Ta2O5, Rb2O); the hull would then
    miss the compound's main competitors and call it stable by far too much."""
    formulas = {Composition(str(f)).reduced_formula for f in competing_formulas}
    problems = []
    bare = uncovered_elements(system, formulas)
    if bare:
        problems.append(f"no competing phase contains {', '.join(bare)}")
    lacking = sorted(set(own) - formulas)
    if lacking:
        what = f"binaries {', '.join(lacking)} are" if len(lacking) > 1 else f"binary {lacking[0]} is"
        problems.append(f"its own {what} not among the competing phases")
    if not problems:
        return None
    return (
        "; ".join(problems) + ": the structure library has no type for them (target selection logs "
        "'no structure type') or label.competing.oxidation_states leaves their oxidation state out, "
        "so the hull would miss the compound's main competitors; add structures with label.competing.files"
    )


def _phase_label(row: Mapping[str, object]) -> str:
    formula = Composition(str(row["formula"])).reduced_formula
    proto = row.get("prototype")
    return f"{formula} ({proto})" if isinstance(proto, str) and proto else formula


def hull_table(
    labels: pd.DataFrame,
    references: pd.DataFrame,
    chosen_competing: pd.Series | None = None,
    own: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """The hull columns (index of ``labels``) for every label row, one hull per (settings hash, system).

    ``labels`` needs structure_id, settings_hash, formula, energy_ha, status, origin and
    prototype; ``references`` element, settings_hash, energy_per_atom_ha, status, error.
    ``chosen_competing`` (formulas of the competing phases the checkpoint chose, from the targets
    table) makes a phase that has no label row at all count as missing ("not computed"); without
    it, the competing rows of ``labels`` are the ones required. ``own`` maps a compound's
    structure_id to its own binaries (:func:`own_binaries`); a compound whose own binaries or
    elements the competing phases lack gets no hull (:func:`missing_competitors`).
    """
    out = pd.DataFrame({c: pd.Series([None] * len(labels), index=labels.index, dtype=object) for c in HULL_COLUMNS})
    if labels.empty:
        return out
    elements = {i: formula_elements(f) for i, f in labels["formula"].items()}
    for shash, group in labels.groupby("settings_hash", sort=True):
        refs = references[references["settings_hash"] == shash].set_index("element")
        ok = group[(group["status"] == "ok") & group["energy_ha"].notna()]
        compounds = [
            Entry(
                str(r["structure_id"]),
                Composition(str(r["formula"])),
                float(r["energy_ha"]) * HARTREE_EV,
                str(shash),
                _phase_label(r),
            )
            for _, r in ok.iterrows()
        ]
        competing = group[group["origin"] == "competing"]
        chosen = competing["formula"] if chosen_competing is None else chosen_competing
        need_formula = {Composition(str(f)).reduced_formula for f in chosen}
        ok_formula = {Composition(str(f)).reduced_formula for f in ok.loc[ok["origin"] == "competing", "formula"]}

        @cache
        def lacking(system: frozenset[str], own_formulas: tuple[str, ...]) -> str | None:
            return missing_competitors(system, need_formula, own_formulas)

        @cache
        def system_hull(system: frozenset[str]) -> tuple[PhaseDiagram | None, dict[str, PDEntry], str | None]:
            missing = []
            ref_entries = []
            for el in sorted(system):
                if (
                    el not in refs.index
                    or refs.loc[el, "status"] != "ok"
                    or pd.isna(refs.loc[el, "energy_per_atom_ha"])
                ):
                    why = (
                        "no reference" if el not in refs.index else f"{refs.loc[el, 'status']}: {refs.loc[el, 'error']}"
                    )
                    missing.append(f"reference {el} ({why})")
                else:
                    e = float(refs.loc[el, "energy_per_atom_ha"]) * HARTREE_EV
                    ref_entries.append(Entry(f"ref:{el}", Composition(el), e, str(shash), el))
            for f in sorted(need_formula - ok_formula):
                if formula_elements(f) <= system:
                    states = sorted(
                        set(
                            competing.loc[
                                [Composition(str(x)).reduced_formula == f for x in competing["formula"]], "status"
                            ]
                        )
                    )
                    missing.append(f"{f} ({'/'.join(states) or 'not computed'})")
            if missing:
                return None, {}, "competing phases not labeled ok: " + ", ".join(missing)
            members = [e for e in compounds if frozenset(el.symbol for el in e.composition.elements) <= system]
            pd_, by_name = phase_diagram(ref_entries + members)
            return pd_, by_name, None

        for i in group.index:
            if i not in ok.index:
                continue
            sid = str(labels.at[i, "structure_id"])
            err = lacking(elements[i], tuple((own or {}).get(sid, ())))
            if err is None:
                pd_, by_name, err = system_hull(elements[i])
            if err is not None:
                out.loc[i, "hull_error"] = err
                continue
            for col, val in stability(pd_, by_name[sid]).items():
                out.at[i, col] = val
    for col in ("e_above_hull_ev_per_atom", "decomposition_energy_ev_per_atom"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    out["is_stable"] = out["is_stable"].astype("boolean")
    n = int(out["e_above_hull_ev_per_atom"].notna().sum())
    log.info(
        "hull: %d of %d labels placed on their hull (%d stable), %d without (competing phases missing)",
        n,
        len(labels),
        int(out["is_stable"].fillna(False).sum()),
        int(out["hull_error"].notna().sum()),
    )
    return out
