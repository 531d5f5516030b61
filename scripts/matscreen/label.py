"""Stage 3, ``label``: one PySCF periodic DFT calculation per structure, cached and retried.

Every number a label depends on comes from the validated ``label:`` config section
(``settings``): functional, basis, pseudopotential, k-point sampling, FFT mesh, integral
scheme, smearing, spin treatment, SCF thresholds and the failure ladder. The settings that
change a result are hashed (:func:`settings_hash`); the label store keeps one Parquet file per
(settings hash, structure) so nothing is ever computed twice, and every write is atomic.

The calculation itself lives in :mod:`matscreen.label_pyscf` (cell, k-points, SCF, ladder);
this module holds the settings, the preflight, the store and the per-job entry points the
Snakemake rules call.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pymatgen.core import Structure

from matscreen import tables
from matscreen.config import ConfigError, resolve_section, semantic_check
from matscreen.provenance import provenance, stable_hash
from matscreen.structjson import UnsafeStructureJSON, structure_from_json

log = logging.getLogger(__name__)

#: Keys of the ``label:`` section that never change a computed number (selection, cache
#: location, memory cap, cluster resources). Everything else goes into :func:`settings_hash`.
#: Keys that do not change a computed energy (the plausibility window acts after the SCF, in gather).
#: ``competing`` chooses which structures are labeled, not how one is computed.
NON_PHYSICAL_KEYS = ("select", "store", "max_memory_mb", "resources", "formation_energy_window_ev_per_atom", "competing")


# --- settings -----------------------------------------------------------------------------


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of the ``label:`` section with every default filled in and validated.

    Accepts ``{}`` (all defaults) or a partial section (e.g. a ``--settings`` YAML), so the
    library functions behave the same whether or not Snakemake validated the config first.
    """
    return resolve_section("label", settings)


def physical_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the settings that decides the computed numbers (input of the hash)."""
    full = resolve_settings(settings)
    return {k: v for k, v in full.items() if k not in NON_PHYSICAL_KEYS}


def settings_hash(settings: dict) -> str:
    """Hash of everything that changes a label: level of theory, sampling, SCF and ladder.

    ``select``, ``store``, ``max_memory_mb`` and ``resources`` are left out; defaults are filled
    first, so ``{}`` and the explicit default section hash the same. The reference-phase file's
    content is included, since changing a lattice parameter there changes formation energies.
    """
    phys = physical_settings(settings)
    phys["references"] = {**phys["references"], "file": _reference_file_digest(phys["references"]["file"])}
    return stable_hash(phys)


def _reference_file_digest(path: str) -> str:
    from matscreen.label_refs import reference_table_digest

    return reference_table_digest(path)


# --- preflight ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _has_basis(basis: str, element: str) -> bool:
    from pyscf.gto import basis as gto_basis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Basis may be available in basis-set-exchange"
        try:
            return bool(gto_basis.load(basis, element))
        except Exception:  # BasisNotFoundError, KeyError, RuntimeError for unknown symbols
            return False


@lru_cache(maxsize=None)
def _has_pseudo(pseudo: str, element: str) -> bool:
    from pyscf.pbc.gto import pseudo as gto_pseudo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bool(gto_pseudo.load(pseudo, element))
        except Exception:
            return False


def unsupported_elements(elements: Iterable[str], label_settings: dict) -> list[str]:
    """Elements the configured basis or pseudopotential cannot describe, sorted, unique.

    ``label_settings`` is the ``label:`` section (``{}`` means defaults). An element is
    unsupported when PySCF has no ``basis`` for it, or (unless ``pseudo`` is null, i.e.
    all-electron) no ``pseudo`` for it. Unknown symbols are unsupported too. Example: the
    lanthanides with the default ``gth-szv-molopt-sr``.
    """
    s = resolve_settings(label_settings)
    bad = set()
    for el in elements:
        el = str(el)
        if not _has_basis(s["basis"], el) or (s["pseudo"] is not None and not _has_pseudo(s["pseudo"], el)):
            bad.add(el)
    return sorted(bad)


@semantic_check
def _check_label_config(config: dict[str, Any]) -> None:
    """Config checks a JSON schema cannot express for the ``label:`` section."""
    sec = config.get("label") or {}
    for key in ("magnetic_moments",):
        for el in (sec.get("spin") or {}).get(key) or {}:
            if not _is_element(el):
                raise ConfigError(f"config key 'label.spin.{key}': unknown element {el!r}")
    for el in sec.get("init_guess_by_element") or {}:
        if not _is_element(el):
            raise ConfigError(f"config key 'label.init_guess_by_element': unknown element {el!r}")
    ref_file = (sec.get("references") or {}).get("file")
    if ref_file:
        from matscreen.label_refs import load_reference_table

        load_reference_table(ref_file)  # raises ConfigError naming 'label.references.file'


@semantic_check
def _check_label_names(config: dict[str, Any]) -> None:
    """``label.xc``, ``label.basis``, ``label.pseudo`` and ``label.select.elements`` must name
    things PySCF and the periodic table know: otherwise every label fails (or no candidate is
    chosen) hours later without naming the key. Only name lookups, nothing is computed."""
    import warnings

    sec = config.get("label") or {}
    for i, el in enumerate((sec.get("select") or {}).get("elements") or []):
        if not _is_element(el):
            raise ConfigError(f"config key 'label.select.elements[{i}]': unknown element {el!r}")
    if sec.get("xc") is not None:
        from pyscf.dft import libxc

        try:
            libxc.parse_xc(sec["xc"])
        except Exception as exc:  # KeyError for unknown names, ValueError for bad syntax
            raise ConfigError(f"config key 'label.xc': PySCF/libxc does not know the functional {sec['xc']!r} "
                              f"({type(exc).__name__}: {exc})") from None
    probe = ("O", "H", "Si", "Ti", "Fe", "Ba", "La")  # a basis or pseudopotential family covers one of these
    for key in ("basis", "pseudo"):
        name = sec.get(key)
        if name is None:
            continue
        if key == "basis":
            from pyscf.gto.basis import load as load_one
        else:
            from pyscf.pbc.gto.pseudo import load as load_one
        found = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PySCF suggests installing basis-set-exchange on a miss
            for el in probe:
                try:
                    found = bool(load_one(name, el))
                except Exception:  # BasisNotFoundError and friends: try the next element
                    continue
                if found:
                    break
        if not found:
            raise ConfigError(f"config key 'label.{key}': PySCF knows no {key} {name!r} "
                              f"(tried {', '.join(probe)}; see pyscf/gto/basis for the names)")


def _is_element(symbol: str) -> bool:
    from pymatgen.core import Element

    try:
        Element(symbol)
    except ValueError:
        return False
    return True


# --- rows, store, atomic copies ---------------------------------------------------------------


def _pyscf_version() -> str:
    import pyscf

    return str(pyscf.__version__)


def _label_row(structure: Structure, structure_id: str, shash: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in tables.LABELS.column_names}
    row.update(structure_id=structure_id, settings_hash=shash, formula=structure.composition.formula,
               nsites=len(structure), pyscf_version=_pyscf_version())
    row.update(values)
    return row


def _write_rows(rows: list[dict[str, Any]], path: str | os.PathLike[str], table: tables.Table,
                settings: Mapping[str, Any], config_hash: str) -> None:
    df = tables.conform(pd.DataFrame(rows, columns=table.column_names), table)
    tables.write_table(df, path, table, provenance("label", physical_settings(settings), config_hash))


def store_path(settings: Mapping[str, Any], kind: str, key: str) -> Path:
    """Where the store keeps one entry: ``<store>/<settings_hash>/<kind>/<key>.parquet``.

    ``kind`` is ``structures`` or ``references``. The store directory is a Parquet dataset
    (readable with ``pyarrow.dataset`` per settings hash); relative paths are taken from the
    current directory, i.e. the Snakemake working directory, like every other output path.
    """
    s = resolve_settings(settings)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
    return Path(s["store"]) / settings_hash(s) / kind / f"{safe}.parquet"


def _atomic_copy(src: Path, dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` through the one atomic writer (:mod:`matscreen.atomic`: umask mode, rename)."""
    from matscreen.atomic import copy_file

    copy_file(src, dst)


def _store_hit(entry: Path, table: tables.Table) -> bool:
    """True when the store holds a readable, contract-conforming entry (never a half file:
    entries are only ever created by rename)."""
    if not entry.is_file():
        return False
    try:
        tables.read_table(entry, table)
    except tables.ContractError as exc:
        log.warning("label store entry %s is unreadable (%s): recomputing it", entry, exc)
        return False
    return True


# --- one structure ------------------------------------------------------------------------------


def _calculate(structure: Structure, s: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    """Run the configured calculation of ``structure`` (one SCF, or a volume scan with
    ``label.relax: volume``) and return the label columns it decides."""
    from matscreen.label_eos import volume_scan
    from matscreen.label_pyscf import run_scf

    if s["relax"] == "volume":
        vr = volume_scan(structure, s, **kw)
        res = vr.result
        extra = {"volume_ang3": vr.volume_ang3, "bulk_modulus_gpa": vr.bulk_modulus_gpa, "volume_scan": vr.scan_json(),
                 "relax_note": vr.note}
    else:
        res = run_scf(structure, s, **kw)
        extra = {"volume_ang3": float(structure.volume), "bulk_modulus_gpa": None, "volume_scan": None, "relax_note": None}
    return {"result": res, "relax": s["relax"], **extra}


def compute_label(structure: Structure, structure_id: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """One LABELS row for ``structure``, computed now (no store): preflight, SCF ladder (or the
    volume scan of ``label.relax: volume``), gap.

    Returns status ``unsupported`` (element or disorder named in ``error``) without any SCF,
    ``failed`` when every ladder attempt failed, else ``ok``. Never raises for SCF trouble.
    """
    from matscreen.label_pyscf import HARTREE_EV, kmesh_for, kmesh_str

    s = resolve_settings(settings)
    shash = settings_hash(s)
    if not structure.is_ordered:
        return _label_row(structure, structure_id, shash, status="unsupported", converged=False,
                          error="disordered structure (partial occupancies): label an ordered approximant")
    bad = unsupported_elements([el.symbol for el in structure.composition.elements], s)
    if bad:
        return _label_row(structure, structure_id, shash, status="unsupported", converged=False,
                          kmesh=kmesh_str(kmesh_for(structure, s)),
                          error=f"no basis/pseudopotential for {', '.join(bad)} in basis {s['basis']!r} / pseudo {s['pseudo']!r}")
    calc = _calculate(structure, s)
    res = calc.pop("result")
    return _label_row(
        structure, structure_id, shash,
        energy_ha=res.energy_ha,
        energy_per_atom_ev=None if res.energy_ha is None else res.energy_ha * HARTREE_EV / len(structure),
        gap_ev=res.gap_ev, converged=res.converged, status=res.status, error=res.error,
        scf_cycles=res.scf_cycles, attempts=res.attempts, wall_s=res.wall_s, max_rss_mb=res.max_rss_mb,
        kmesh=res.kmesh, **calc,
    )


def label_structure(structure: Structure, structure_id: str, out_path: str | os.PathLike[str],
                    settings: Mapping[str, Any], config_hash: str = "") -> bool:
    """Write ``structure``'s one-row LABELS file to ``out_path``, through the label store.

    A store hit is copied (atomically), never recomputed; a miss is computed, written to the
    store by rename and then copied. ``unsupported`` rows are not stored (they cost nothing).
    Returns True when the result came from the store.
    """
    s = resolve_settings(settings)
    return _through_store(
        s, "structures", structure_id, tables.LABELS, out_path, config_hash,
        hit_msg=f"{structure_id}: label store hit",
        miss_msg=f"{structure_id} ({structure.composition.reduced_formula}, {len(structure)} atoms): computing label",
        compute=lambda: compute_label(structure, structure_id, s),
    )


def _through_store(s: Mapping[str, Any], kind: str, key: str, table: tables.Table, out_path: str | os.PathLike[str],
                   config_hash: str, *, hit_msg: str, miss_msg: str, compute: Callable[[], dict[str, Any]]) -> bool:
    """Write the one-row file of store entry ``<store>/<hash>/<kind>/<key>`` to ``out_path``.

    A store hit is copied (atomically), never recomputed; a miss is computed, written to the
    store by rename and then copied. ``unsupported`` rows are not stored (they cost nothing).
    Returns True when the result came from the store.
    """
    entry = store_path(s, kind, key)
    if _store_hit(entry, table):
        log.info("%s %s", hit_msg, entry)
        _atomic_copy(entry, out_path)
        return True
    log.info("%s, settings %s", miss_msg, settings_hash(s))
    row = compute()
    if row["status"] == "unsupported":
        _write_rows([row], out_path, table, s, config_hash)
        return False
    _write_rows([row], entry, table, s, config_hash)
    _atomic_copy(entry, out_path)
    return False
    _write_rows([row], entry, tables.LABELS, s, config_hash)
    _atomic_copy(entry, out_path)
    return False


def _read_target(targets_path: str, structure_id: str) -> Structure:
    df = pq.read_table(targets_path, columns=["structure_id", "structure"],
                       filters=[("structure_id", "==", structure_id)]).to_pandas()
    if df.empty:
        raise KeyError(f"{targets_path}: no row with structure_id {structure_id!r}")
    try:
        return structure_from_json(df["structure"].iloc[0], f"{targets_path}: structure of {structure_id!r}")
    except UnsafeStructureJSON:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{targets_path}: structure of {structure_id!r} is not a pymatgen Structure JSON ({exc})") from exc


def run_structure(targets_path: str, structure_id: str, out_path: str, settings: dict, config_hash: str = "") -> None:
    """Snakemake job: label one structure of a LABEL_TARGETS table into a one-row LABELS file."""
    structure = _read_target(targets_path, structure_id)
    label_structure(structure, structure_id, out_path, settings, config_hash)


# --- element references -------------------------------------------------------------------------


def reference_elements(targets: pd.DataFrame) -> list[str]:
    """Elements whose reference energies the targets' formation energies need (sorted)."""
    from pymatgen.core import Composition

    out: set[str] = set()
    for formula in targets["formula"].dropna().unique():
        out.update(el.symbol for el in Composition(formula).elements)
    return sorted(out)


def compute_reference(element: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """One REFERENCES row for ``element``, computed now (no store)."""
    from matscreen.label_pyscf import kmesh_for, kmesh_str, run_scf
    from matscreen.label_refs import build_reference, load_reference_table


    s = resolve_settings(settings)
    row: dict[str, Any] = {c: None for c in tables.REFERENCES.column_names}
    row.update(element=element, settings_hash=settings_hash(s), pyscf_version=_pyscf_version())
    refs = s["references"]
    if element not in load_reference_table(refs["file"]):
        row.update(status="unsupported", error=f"no reference phase for {element} in {refs['file']}")
        return row
    phase = build_reference(element, refs["file"], float(refs["box_ang"]))
    row["reference"] = phase.description
    bad = unsupported_elements([element], s)
    if bad:
        row.update(status="unsupported", error=f"no basis/pseudopotential for {element} in basis {s['basis']!r} / pseudo {s['pseudo']!r}")
        return row
    natoms = len(phase.structure)
    if phase.molecule:  # a molecule in a box has no equilibrium volume: one SCF at the Gamma point
        run_settings = copy.deepcopy(s)
        run_settings["kpoints"]["with_gamma_point"] = True
        res = run_scf(phase.structure, run_settings, kmesh=[1, 1, 1], spin=phase.spin, unrestricted=bool(phase.spin))
        calc = {"relax": "none", "volume_ang3": None, "bulk_modulus_gpa": None}
    else:
        kmesh = kmesh_for(phase.structure, s, kdensity=float(s["kpoints"]["reference_kdensity"]))
        calc = _calculate(phase.structure, s, kmesh=kmesh)
        res = calc.pop("result")
    row.update(
        energy_per_atom_ha=None if res.energy_ha is None else res.energy_ha / natoms,
        status=res.status, error=res.error, kmesh=kmesh_str([1, 1, 1]) if phase.molecule else res.kmesh,
        wall_s=res.wall_s, relax=calc["relax"],
        volume_per_atom_ang3=None if calc["volume_ang3"] is None else calc["volume_ang3"] / natoms,
        bulk_modulus_gpa=calc["bulk_modulus_gpa"],
    )
    return row


def label_reference(element: str, out_path: str | os.PathLike[str], settings: Mapping[str, Any], config_hash: str = "") -> bool:
    """Write ``element``'s one-row REFERENCES file through the store; True on a store hit."""
    s = resolve_settings(settings)
    return _through_store(
        s, "references", element, tables.REFERENCES, out_path, config_hash,
        hit_msg=f"{element}: reference store hit", miss_msg=f"{element}: computing reference",
        compute=lambda: compute_reference(element, s),
    )


def run_reference(element: str, out_path: str, settings: dict, config_hash: str = "") -> None:
    """Snakemake job: one element's reference energy into a one-row REFERENCES file."""
    label_reference(element, out_path, settings, config_hash)


# --- gather -------------------------------------------------------------------------------------


def formation_energies(labels: pd.DataFrame, references: pd.DataFrame) -> pd.Series:
    """formation_energy_ev_per_atom for each label row (null unless the row and all of its
    elements' references are ``ok`` under the same settings hash).

    E_f = (E_cell - sum_el n_el E_ref(el)) / N_atoms, converted Hartree -> eV.
    """
    from pymatgen.core import Composition

    from matscreen.label_pyscf import HARTREE_EV

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
                log.warning("%s: no ok reference for %s: formation energy left null", r.structure_id, ", ".join(missing))
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


def gather(label_paths: list[str], reference_paths: list[str], labels_out: str, references_out: str,
           settings: dict, config_hash: str = "", targets_path: str | None = None) -> None:
    """Concatenate per-job rows, fill formation energies and the hull columns, write the LABELS
    and REFERENCES tables.

    ``targets_path`` (the LABEL_TARGETS table) gives each label its ``origin`` and ``prototype``;
    the hull needs them to know which competing phases each compound must be compared with.
    """
    from matscreen.label_hull import HULL_COLUMNS, hull_table

    labels = tables.read_tables(label_paths, tables.LABELS)
    refs = tables.read_tables(reference_paths, tables.REFERENCES)
    labels = labels.drop_duplicates(list(tables.LABELS.key), keep="last").reset_index(drop=True)
    refs = refs.drop_duplicates(list(tables.REFERENCES.key), keep="last").reset_index(drop=True)
    if targets_path:
        targets = tables.read_table(targets_path, tables.LABEL_TARGETS).set_index("structure_id")
        labels["origin"] = labels["structure_id"].map(targets["origin"])
        labels["prototype"] = labels["structure_id"].map(targets["prototype"])
    labels["formation_energy_ev_per_atom"] = formation_energies(labels, refs)
    s = resolve_settings(settings)
    labels = flag_implausible(labels, s["formation_energy_window_ev_per_atom"])
    hull = hull_table(labels, refs)
    for col in HULL_COLUMNS:
        labels[col] = hull[col]
    counts = labels["status"].value_counts().to_dict()
    log.info("gathered %d labels %s, %d references, %d formation energies, %d energies above hull", len(labels), counts,
             len(refs), int(labels["formation_energy_ev_per_atom"].notna().sum()), int(labels["e_above_hull_ev_per_atom"].notna().sum()))
    tables.write_tables([(labels, labels_out, tables.LABELS), (refs, references_out, tables.REFERENCES)],
                        provenance("label", physical_settings(s), config_hash))  # both checked, then written


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
                sid = r["structure_id"] if "structure_id" in df.columns and isinstance(r["structure_id"], str) else make_id(st)
                out.append((sid, st))
        else:
            try:
                name = Path(path).name.lower()
                if ".json" in name or ".mson" in name:  # pymatgen's own JSON reader would decode @module
                    from monty.io import zopen

                    with zopen(path, "rt") as fh:
                        st = structure_from_json(fh.read(), str(path))
                elif ".yaml" in name or ".yml" in name:
                    raise ValueError("YAML structure files are not read (they can name Python objects to build); use CIF, POSCAR or JSON")
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


def label_files(inputs: list[str], out_path: str, settings: dict, config_hash: str = "") -> None:
    """``matscreen label``: label structures sequentially (through the store), then the competing
    phases of their chemical systems (``label.competing``) and the references of their elements;
    write LABELS (formation energies and hulls) to ``out_path`` and REFERENCES to
    :func:`references_path_for` (``<out stem>_references.parquet``)."""
    from matscreen.targets import competing_targets

    s = resolve_settings(settings)
    items = read_structures(inputs)
    unique = list({sid: st for sid, st in items}.items())
    targets = tables.conform(pd.DataFrame([
        {"structure_id": sid, "origin": "ingest", "family": "other", "formula": st.composition.formula,
         "nsites": len(st), "structure": st.to_json()} for sid, st in unique
    ], columns=["structure_id", "origin", "family", "formula", "nsites", "structure"]), tables.LABEL_TARGETS)
    targets = pd.concat([targets, competing_targets(targets, s)], ignore_index=True)
    with tempfile.TemporaryDirectory(prefix="matscreen-label-") as tmp:
        targets_path = Path(tmp) / "targets.parquet"
        tables.write_table(targets, targets_path, tables.LABEL_TARGETS)
        label_paths, ref_paths = [], []
        for n, rec in enumerate(targets.itertuples(), start=1):
            st = structure_from_json(rec.structure, f"{targets_path}: {rec.structure_id}")
            log.info("structure %d/%d: %s %s%s", n, len(targets), rec.structure_id, st.composition.reduced_formula,
                     f" (competing phase, {rec.prototype})" if rec.origin == "competing" else "")
            p = Path(tmp) / f"label-{len(label_paths)}.parquet"
            label_structure(st, rec.structure_id, p, s, config_hash)
            label_paths.append(str(p))
        labels = tables.read_tables(label_paths, tables.LABELS)
        for el in reference_elements(labels[labels["status"] == "ok"]):
            p = Path(tmp) / f"ref-{el}.parquet"
            label_reference(el, p, s, config_hash)
            ref_paths.append(str(p))
        gather(label_paths, ref_paths, out_path, str(references_path_for(out_path)), s, config_hash,
               targets_path=str(targets_path))


# --- cluster resources ----------------------------------------------------------------------------


def estimate_resources(structure: Structure, settings: dict) -> dict:
    """``mem_mb``, ``runtime`` (minutes) and ``threads`` for one label job of ``structure``.

    From the cell PySCF would build: atomic orbitals ``nao``, FFT mesh points ``ngrid``,
    k-points ``nk`` and spin channels ``nspin``, with ``w = nspin * nk * nao * ngrid``:
    memory = 300 MB (Python + PySCF) + 6 bytes * w + the k-point matrices (40 complex
    nao x nao per k and spin); runtime = 30 SCF cycles x (0.2 s + c * w), c per integral scheme
    (:data:`CYCLE_COST`). Fitted with ``benchmarks/label.py`` on a 2-core machine (1 thread):
    SrTiO3 2x2x2 used 343 MB and 3.3 s/cycle, MgAl2O4 (14 atoms) 2x2x2 642 MB and 27-32 s/cycle;
    the 30 cycles leave room for the failure ladder's slower attempts. Both are multiplied by
    ``resources.safety`` and floored at ``min_mem_mb`` / ``min_runtime``. The dict also carries
    ``attempt_factor`` for :func:`scale_resources`.
    """
    from matscreen.label_pyscf import build_cell, kmesh_for, use_unrestricted

    s = resolve_settings(settings)
    r = s["resources"]
    cell = build_cell(structure, s)
    nao = int(cell.nao_nr())
    ngrid = int(np.prod(cell.mesh))
    nk = int(np.prod(kmesh_for(structure, s)))
    nspin = 2 if use_unrestricted(structure, s) else 1
    work = nspin * nk * nao * ngrid
    mem = 300 + (6 * work + nspin * nk * nao**2 * 16 * 40) / 1e6
    seconds = 30 * (0.2 + CYCLE_COST[s["density_fit"]] * work)
    return {
        "mem_mb": int(max(r["min_mem_mb"], math.ceil(mem * r["safety"]))),
        "runtime": int(max(r["min_runtime"], math.ceil(seconds * r["safety"] / 60))),
        "threads": int(r["threads"]),
        "attempt_factor": float(r["attempt_factor"]),
    }


#: Seconds per SCF cycle per unit of nspin * nk * nao * ngrid. multigrid: measured (3.5e-7 SrTiO3,
#: 4.6e-7 MgAl2O4, benchmarks/label.py); gdf and fftdf: scaled by the Gamma-point ratios in
#: NOTES.md (gdf 9x, plain FFTDF > 60x slower than multigrid on SrTiO3); rsdf assumed like gdf.
CYCLE_COST = {"multigrid": 4.5e-7, "fftdf": 3.0e-5, "gdf": 4.5e-6, "rsdf": 4.5e-6}


def scale_resources(res: dict, attempt: int) -> dict:
    """Resources for Snakemake retry ``attempt`` (1 = first): memory and runtime times
    ``attempt_factor ** (attempt - 1)`` (``res['attempt_factor']``, else the config default)."""
    factor = float(res.get("attempt_factor") or resolve_settings({})["resources"]["attempt_factor"])
    f = factor ** max(0, int(attempt) - 1)
    out = dict(res)
    out["mem_mb"] = int(math.ceil(res["mem_mb"] * f))
    out["runtime"] = int(math.ceil(res["runtime"] * f))
    return out
