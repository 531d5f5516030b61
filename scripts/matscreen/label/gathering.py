"""Gather: per-job rows and stored entries into the LABELS and REFERENCES tables, with formation
energies, the plausibility window and the hull columns; and ``matscreen label`` (:func:`label_files`),
which runs the same jobs sequentially.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from pymatgen.core import Structure

from matscreen import tables
from matscreen.label import store
from matscreen.label.settings import LabelSettings, as_settings, physical_settings
from matscreen.provenance import provenance
from matscreen.structjson import UnsafeStructureJSON, structure_from_json

log = logging.getLogger(__name__)


def reference_elements(targets: pd.DataFrame) -> list[str]:
    """Elements whose reference energies the targets' formation energies need (sorted)."""
    from pymatgen.core import Composition

    out: set[str] = set()
    for formula in targets["formula"].dropna().unique():
        out.update(el.symbol for el in Composition(formula).elements)
    return sorted(out)


def formation_energies(labels: pd.DataFrame, references: pd.DataFrame) -> pd.Series:
    """formation_energy_ev_per_atom for each label row (null unless the row and all of its
    elements' references are ``ok`` under the same settings hash).

    E_f = (E_cell - sum_el n_el E_ref(el)) / N_atoms, converted Hartree -> eV.
    """
    from pymatgen.core import Composition

    from matscreen.label.pyscf import HARTREE_EV

    ok_refs = references[references["status"] == "ok"]
    ref = {(r.element, r.settings_hash): float(r.energy_per_atom_ha) for r in ok_refs.itertuples()}
    out = []
    for r in labels.itertuples():
        value = None
        if r.status == "ok" and r.energy_ha is not None and not pd.isna(r.energy_ha):
            comp = Composition(r.formula).element_composition
            keys = [(el.symbol, r.settings_hash) for el in comp.elements]
            missing = [k[0] for k in keys if k not in ref]
            if missing:
                log.warning(
                    "%s: no ok reference for %s: formation energy left null", r.structure_id, ", ".join(missing)
                )
            else:
                e_ref = sum(comp[el] * ref[(el.symbol, r.settings_hash)] for el in comp.elements)
                value = (float(r.energy_ha) - e_ref) * HARTREE_EV / comp.num_atoms
        out.append(value)
    return pd.Series(out, index=labels.index, dtype="float64")


def flag_implausible(labels: pd.DataFrame, window: Sequence[float]) -> pd.DataFrame:
    """Mark ``ok`` rows whose formation energy lies outside ``window`` (eV/atom) as ``failed``.

    A converged SCF can still be unphysical: with a minimal basis and semicore pseudopotentials
    an SCF may collapse into a state far below the true ground state (seen for CsCaF3: about
    -19 eV/atom, when known solids lie above about -4.5 eV/atom). Such a row keeps its energies
    for inspection but is not trained on; ``error`` says why.
    """
    lo, hi = float(window[0]), float(window[1])
    e_f = labels["formation_energy_ev_per_atom"]
    bad = (labels["status"] == "ok") & e_f.notna() & ((e_f < lo) | (e_f > hi))
    if bad.any():
        out = labels.copy()
        out.loc[bad, "status"] = "failed"
        out.loc[bad, "error"] = [
            f"implausible formation energy {v:.2f} eV/atom, outside label.formation_energy_window_ev_per_atom "
            f"[{lo:g}, {hi:g}]: converged to an unphysical state (basis/pseudopotential artefact?)"
            for v in e_f[bad]
        ]
        for r in out[bad].itertuples():
            log.warning("%s (%s): %s", r.structure_id, r.formula, r.error)
        return out
    return labels


def gather(
    label_paths: list[str],
    reference_paths: list[str],
    labels_out: str,
    references_out: str,
    settings: LabelSettings | Mapping[str, Any],
    config_hash: str = "",
    targets_path: str | None = None,
    reference_targets_path: str | None = None,
) -> None:
    """Concatenate per-job rows and stored entries, fill formation energies and the hull columns,
    write the LABELS and REFERENCES tables.

    ``targets_path`` (the LABEL_TARGETS table) gives each label its ``origin`` and ``prototype``
    (the hull needs them to know which competing phases each compound must be compared with),
    and its rows marked ``stored`` are read from the label store, not from job files.
    ``reference_targets_path`` (REFERENCE_TARGETS) does the same for the references. Rows come
    out in the rule's order whatever was stored: compounds, then competing phases, each by
    structure_id; references by element.
    """
    from matscreen.label.hull import HULL_COLUMNS, hull_table, own_binaries_of

    s = as_settings(settings)
    label_paths, reference_paths = list(label_paths), list(reference_paths)
    targets, n_stored, n_stored_refs = None, 0, 0
    if targets_path:
        targets = tables.read_table(targets_path, tables.LABEL_TARGETS).set_index("structure_id")
        stored = sorted(targets.index[targets["stored"].astype("boolean").fillna(False).astype(bool)])
        label_paths += store.read_entries(s, "structures", stored)
        n_stored = len(stored)
    if reference_targets_path:
        rt = tables.read_table(reference_targets_path, tables.REFERENCE_TARGETS)
        stored_refs = sorted(rt.loc[rt["stored"].astype(bool), "element"])
        reference_paths += store.read_entries(s, "references", stored_refs)
        n_stored_refs = len(stored_refs)
    labels = tables.read_tables(label_paths, tables.LABELS)
    refs = tables.read_tables(reference_paths, tables.REFERENCES)
    labels = labels.drop_duplicates(list(tables.LABELS.key), keep="last").reset_index(drop=True)
    refs = refs.drop_duplicates(list(tables.REFERENCES.key), keep="last").reset_index(drop=True)
    if n_stored_refs:  # job files come sorted by element (rule gather_labels); merged with the store, sort again
        refs = refs.iloc[sorted(range(len(refs)), key=lambda i: str(refs["element"].iloc[i]))].reset_index(drop=True)
    if targets is not None:
        labels["origin"] = labels["structure_id"].map(targets["origin"])
        labels["prototype"] = labels["structure_id"].map(targets["prototype"])
    if targets is not None and n_stored:  # the rule's order of job files: compounds, then competing phases, by id
        order = sorted(
            range(len(labels)),
            key=lambda i: (labels["origin"].iloc[i] == "competing", str(labels["structure_id"].iloc[i])),
        )
        labels = labels.iloc[order].reset_index(drop=True)
    labels["formation_energy_ev_per_atom"] = formation_energies(labels, refs)
    labels = flag_implausible(labels, s.formation_energy_window_ev_per_atom)
    if s.competing.enabled:
        chosen = None if targets is None else targets.loc[targets["origin"] == "competing", "formula"]
        hull = hull_table(labels, refs, chosen, None if targets is None else own_binaries_of(targets))
        for col in HULL_COLUMNS:
            labels[col] = hull[col]
    else:  # a hull of the labeled compounds and the elements alone would look complete and be wrong
        for col in HULL_COLUMNS:
            labels[col] = None
        labels["hull_error"] = "no competing phases (label.competing.enabled is false): no hull"
    counts = labels["status"].value_counts().to_dict()
    log.info(
        "gathered %d labels %s (%d from the store), %d references, %d formation energies, %d energies above hull",
        len(labels),
        counts,
        n_stored,
        len(refs),
        int(labels["formation_energy_ev_per_atom"].notna().sum()),
        int(labels["e_above_hull_ev_per_atom"].notna().sum()),
    )
    tables.write_tables(
        [(labels, labels_out, tables.LABELS), (refs, references_out, tables.REFERENCES)],
        provenance("label", physical_settings(s), config_hash),
    )  # both checked, then written


# --- command line: label files sequentially -------------------------------------------------------


def read_structures(inputs: Iterable[str]) -> list[tuple[str, Structure]]:
    """(structure_id, Structure) from structures/targets Parquet files (column ``structure``,
    ids from ``structure_id`` when present) or structure files pymatgen reads (CIF, POSCAR, JSON)."""
    from matscreen.ids import structure_id as make_id

    out: list[tuple[str, Structure]] = []
    for path in inputs:
        if str(path).endswith(".parquet"):
            df = pd.read_parquet(path)
            if "structure" not in df.columns:
                raise ValueError(f"{path}: no 'structure' column (expected a structures or label-targets table)")
            for i, r in df.iterrows():
                st = structure_from_json(r["structure"], f"{path}: row {i} structure")
                sid = (
                    r["structure_id"]
                    if "structure_id" in df.columns and isinstance(r["structure_id"], str)
                    else make_id(st)
                )
                out.append((sid, st))
        else:
            try:
                name = Path(path).name.lower()
                if ".json" in name or ".mson" in name:  # pymatgen's own JSON reader would decode @module
                    from monty.io import zopen

                    with zopen(path, "rt") as fh:
                        st = structure_from_json(fh.read(), str(path))
                elif ".yaml" in name or ".yml" in name:
                    raise ValueError(
                        "YAML structure files are not read (they can name Python objects to build); use CIF, POSCAR or JSON"
                    )
                else:
                    st = Structure.from_file(path)
            except UnsafeStructureJSON:
                raise
            except Exception as exc:
                raise ValueError(f"{path}: pymatgen cannot read a structure ({type(exc).__name__}: {exc})") from exc
            out.append((make_id(st), st))
    return out


def references_path_for(out_path: str | os.PathLike[str]) -> Path:
    """Where :func:`label_files` writes the references: ``<out stem>_references.parquet``."""
    p = Path(out_path)
    return p.with_name(p.stem + "_references.parquet")


def label_files(
    inputs: list[str], out_path: str, settings: LabelSettings | Mapping[str, Any], config_hash: str = ""
) -> None:
    """``matscreen label``: label structures sequentially (through the store), then the competing
    phases of their chemical systems (``label.competing``) and the references of their elements;
    write LABELS (formation energies and hulls) to ``out_path`` and REFERENCES to
    :func:`references_path_for` (``<out stem>_references.parquet``)."""
    from matscreen.label.jobs import label_reference, label_structure
    from matscreen.label.targets import competing_targets

    s = as_settings(settings)
    items = read_structures(inputs)
    unique = list({sid: st for sid, st in items}.items())
    targets = tables.conform(
        pd.DataFrame(
            [
                {
                    "structure_id": sid,
                    "origin": "ingest",
                    "family": "other",
                    "formula": st.composition.formula,
                    "nsites": len(st),
                    "structure": st.to_json(),
                }
                for sid, st in unique
            ],
            columns=["structure_id", "origin", "family", "formula", "nsites", "structure"],
        ),
        tables.LABEL_TARGETS,
    )
    targets = pd.concat([targets, competing_targets(targets, s)], ignore_index=True)
    with tempfile.TemporaryDirectory(prefix="matscreen-label-") as tmp:
        targets_path = Path(tmp) / "targets.parquet"
        tables.write_table(targets, targets_path, tables.LABEL_TARGETS)
        label_paths, ref_paths = [], []
        for n, rec in enumerate(targets.itertuples(), start=1):
            st = structure_from_json(rec.structure, f"{targets_path}: {rec.structure_id}")
            log.info(
                "structure %d/%d: %s %s%s",
                n,
                len(targets),
                rec.structure_id,
                st.composition.reduced_formula,
                f" (competing phase, {rec.prototype})" if rec.origin == "competing" else "",
            )
            p = Path(tmp) / f"label-{len(label_paths)}.parquet"
            label_structure(st, rec.structure_id, p, s, config_hash)
            label_paths.append(str(p))
        labels = tables.read_tables(label_paths, tables.LABELS)
        for el in reference_elements(labels[labels["status"] == "ok"]):
            p = Path(tmp) / f"ref-{el}.parquet"
            label_reference(el, p, s, config_hash)
            ref_paths.append(str(p))
        gather(
            label_paths,
            ref_paths,
            out_path,
            str(references_path_for(out_path)),
            s,
            config_hash,
            targets_path=str(targets_path),
        )
