"""One label job: a structure or an elemental reference, computed through the label store.

``compute_*`` run the calculation now (no store); ``label_*`` go through the store
(:func:`matscreen.label.store.get_or_compute`); ``run_*`` are what the Snakemake adapters call.
``settings`` is a :class:`~matscreen.label.settings.LabelSettings`; the public functions also
take a plain ``label:`` section (resolved once, here at the edge).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq
from pymatgen.core import Structure

from matscreen import tables
from matscreen.label import cell, store
from matscreen.label import pyscf as engine
from matscreen.label.settings import LabelSettings, as_settings
from matscreen.structjson import UnsafeStructureJSON, structure_from_json

log = logging.getLogger(__name__)

Settings = LabelSettings | Mapping[str, Any]


def _pyscf_version() -> str:
    import pyscf

    return str(pyscf.__version__)


def _label_row(structure: Structure, structure_id: str, shash: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in tables.LABELS.column_names}
    row.update(
        structure_id=structure_id,
        settings_hash=shash,
        formula=structure.composition.formula,
        nsites=len(structure),
        pyscf_version=_pyscf_version(),
    )
    row.update(values)
    return row


def _calculate(
    structure: Structure, s: LabelSettings, journal: str | os.PathLike[str] | None = None, **kw: Any
) -> dict[str, Any]:
    """Run the configured calculation of ``structure`` (one SCF, or a volume scan with
    ``label.relax: volume``, resumable from ``journal``) and return the label columns it decides."""
    from matscreen.label.eos import volume_scan

    if s.relax == "volume":
        vr = volume_scan(structure, s, journal=journal, **kw)
        res = vr.result
        extra = {
            "volume_ang3": vr.volume_ang3,
            "bulk_modulus_gpa": vr.bulk_modulus_gpa,
            "volume_scan": vr.scan_json(),
            "relax_note": vr.note,
        }
    else:
        res = engine.run_scf(structure, s, checkpoint=store.checkpoint_path(journal), **kw)
        extra = {
            "volume_ang3": float(structure.volume),
            "bulk_modulus_gpa": None,
            "volume_scan": None,
            "relax_note": None,
        }
    return {"result": res, "relax": s.relax, **extra}


def compute_label(
    structure: Structure, structure_id: str, settings: Settings, journal: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """One LABELS row for ``structure``, computed now (no store): preflight, SCF ladder (or the
    volume scan of ``label.relax: volume``, resumable from ``journal``), gap.

    Returns status ``unsupported`` (element or disorder named in ``error``) without any SCF,
    ``failed`` when every ladder attempt failed, else ``ok``. Never raises for SCF trouble.
    """
    s = as_settings(settings)
    if not structure.is_ordered:
        return _label_row(
            structure,
            structure_id,
            s.hash,
            status="unsupported",
            converged=False,
            error="disordered structure (partial occupancies): label an ordered approximant",
        )
    bad = cell.unsupported_elements([el.symbol for el in structure.composition.elements], s)
    if bad:  # label-target selection leaves these out; a hand-made targets table or `matscreen label` may not
        return _label_row(
            structure,
            structure_id,
            s.hash,
            status="unsupported",
            converged=False,
            kmesh=cell.kmesh_str(cell.kmesh_for(structure, s)),
            error=f"no basis/pseudopotential for {', '.join(bad)} in basis {s.basis!r} / pseudo {s.pseudo!r}",
        )
    if s.relax == "volume":
        calc = _calculate(structure, s, journal=journal)
        res = calc.pop("result")
    else:  # the common case calls PySCF directly: config -> run_structure -> label_structure -> store -> here -> run_scf
        res = engine.run_scf(structure, s, checkpoint=store.checkpoint_path(journal))
        calc = {
            "relax": s.relax,
            "volume_ang3": float(structure.volume),
            "bulk_modulus_gpa": None,
            "volume_scan": None,
            "relax_note": None,
        }
    return _label_row(
        structure,
        structure_id,
        s.hash,
        energy_ha=res.energy_ha,
        energy_per_atom_ev=None if res.energy_ha is None else res.energy_ha * engine.HARTREE_EV / len(structure),
        gap_ev=res.gap_ev,
        converged=res.converged,
        status=res.status,
        error=res.error,
        scf_cycles=res.scf_cycles,
        attempts=res.attempts,
        wall_s=res.wall_s,
        max_rss_mb=res.max_rss_mb,
        kmesh=res.kmesh,
        **calc,
    )


def label_structure(
    structure: Structure, structure_id: str, out_path: str | os.PathLike[str], settings: Settings, config_hash: str = ""
) -> bool:
    """Write ``structure``'s one-row LABELS file to ``out_path``, through the label store.

    A store hit is copied (atomically), never recomputed; a miss is computed, written to the
    store by rename and then copied. ``unsupported`` rows are not stored (they cost nothing).
    Returns True when the result came from the store.
    """
    s = as_settings(settings)
    return store.get_or_compute(
        s,
        "structures",
        structure_id,
        out_path,
        config_hash,
        hit_msg=f"{structure_id}: label store hit",
        miss_msg=f"{structure_id} ({structure.composition.reduced_formula}, {len(structure)} atoms): computing label",
        compute=lambda journal: compute_label(structure, structure_id, s, journal),
    )


def read_target(targets_path: str, structure_id: str) -> Structure:
    """The structure of one row of a LABEL_TARGETS table (only that row is read)."""
    df = pq.read_table(
        targets_path, columns=["structure_id", "structure"], filters=[("structure_id", "==", structure_id)]
    ).to_pandas()
    if df.empty:
        raise KeyError(f"{targets_path}: no row with structure_id {structure_id!r}")
    try:
        return structure_from_json(df["structure"].iloc[0], f"{targets_path}: structure of {structure_id!r}")
    except UnsafeStructureJSON:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{targets_path}: structure of {structure_id!r} is not a pymatgen Structure JSON ({exc})"
        ) from exc


def run_structure(
    targets_path: str, structure_id: str, out_path: str, settings: Settings, config_hash: str = ""
) -> None:
    """Snakemake job: label one structure of a LABEL_TARGETS table into a one-row LABELS file."""
    label_structure(read_target(targets_path, structure_id), structure_id, out_path, as_settings(settings), config_hash)


# --- element references -------------------------------------------------------------------------


def compute_reference(
    element: str, settings: Settings, journal: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """One REFERENCES row for ``element``, computed now (no store; a volume scan resumes from
    ``journal``)."""
    from matscreen.label.refs import build_reference, load_reference_table

    s = as_settings(settings)
    row: dict[str, Any] = {c: None for c in tables.REFERENCES.column_names}
    row.update(element=element, settings_hash=s.hash, pyscf_version=_pyscf_version())
    refs = s.references
    if element not in load_reference_table(refs.file):
        row.update(status="unsupported", error=f"no reference phase for {element} in {refs.file}")
        return row
    phase = build_reference(element, refs.file, float(refs.box_ang))
    row["reference"] = phase.description
    if cell.unsupported_elements([element], s):
        row.update(
            status="unsupported",
            error=f"no basis/pseudopotential for {element} in basis {s.basis!r} / pseudo {s.pseudo!r}",
        )
        return row
    natoms = len(phase.structure)
    if phase.molecule:  # a molecule in a box has no equilibrium volume: one SCF at the Gamma point
        gamma = s.replace(kpoints=dataclasses.replace(s.kpoints, with_gamma_point=True))
        res = engine.run_scf(phase.structure, gamma, kmesh=[1, 1, 1], spin=phase.spin, unrestricted=bool(phase.spin))
        calc = {"relax": "none", "volume_ang3": None, "bulk_modulus_gpa": None}
    else:
        kmesh = cell.kmesh_for(phase.structure, s, kdensity=float(s.kpoints.reference_kdensity))
        calc = _calculate(phase.structure, s, kmesh=kmesh, journal=journal)
        res = calc.pop("result")
    row.update(
        energy_per_atom_ha=None if res.energy_ha is None else res.energy_ha / natoms,
        status=res.status,
        error=res.error,
        kmesh=cell.kmesh_str([1, 1, 1]) if phase.molecule else res.kmesh,
        wall_s=res.wall_s,
        relax=calc["relax"],
        volume_per_atom_ang3=None if calc["volume_ang3"] is None else calc["volume_ang3"] / natoms,
        bulk_modulus_gpa=calc["bulk_modulus_gpa"],
    )
    return row


def label_reference(element: str, out_path: str | os.PathLike[str], settings: Settings, config_hash: str = "") -> bool:
    """Write ``element``'s one-row REFERENCES file through the store; True on a store hit."""
    s = as_settings(settings)
    return store.get_or_compute(
        s,
        "references",
        element,
        out_path,
        config_hash,
        hit_msg=f"{element}: reference store hit",
        miss_msg=f"{element}: computing reference",
        compute=lambda journal: compute_reference(element, s, journal),
    )


def run_reference(element: str, out_path: str, settings: Settings, config_hash: str = "") -> None:
    """Snakemake job: one element's reference energy into a one-row REFERENCES file."""
    label_reference(element, out_path, as_settings(settings), config_hash)
