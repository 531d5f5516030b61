"""One file's rows: each parsed structure checked, made ordered if asked, recognised and described.

:func:`read_file` is the per-file unit of ingest: it never raises for anything in the file; every
problem becomes a rejects row with a reason code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from pymatgen.core import Composition, Species, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from matscreen.chemistry import shannon_radius
from matscreen.families import OTHER, SITE_LABELS, get_family, parse_occupancy
from matscreen.ids import structure_id
from matscreen.ingest.readers import IngestTimeout, Reject, decode, detect_format, parse, read_bytes, time_limit
from matscreen.ingest.recognize import Recognition, recognize
from matscreen.ingest.settings import IngestSettings, resolve_settings

log = logging.getLogger(__name__)


def _check_structure(s: Structure, settings: IngestSettings) -> None:
    if len(s) == 0:
        raise Reject("no_structure", "structure has no sites")
    if len(s) > settings.max_sites:
        raise Reject("too_large", f"{len(s)} sites > ingest.max_sites = {settings.max_sites}")
    if s.volume <= 1e-6 or not np.isfinite(s.lattice.matrix).all():
        raise Reject("parse_error", f"degenerate lattice (volume {s.volume:g} Å^3)")
    for i, site in enumerate(s):
        occ = site.species.num_atoms
        if any(v <= 0 for v in site.species.values()) or occ > 1 + 1e-6:
            raise Reject("bad_occupancy", f"site {i} ({site.species_string}) has total occupancy {occ:g}")
    dmin = settings.min_distance_ang
    if len(s) > 1 or dmin > 0:
        centers, points, _, d = s.get_neighbor_list(dmin, exclude_self=True)
        if len(d):
            j = int(np.argmin(d))
            raise Reject(
                "overlapping_sites",
                f"sites {int(centers[j])} and {int(points[j])} are {float(d[j]):.3f} Å apart (< ingest.min_distance_ang = {dmin:g})",
            )


def disorder_summary(s: Structure) -> str:
    """Which sites are partial or mixed, e.g. ``'16 mixed sites (Mg0.85Al0.15 ...); 4 partial sites (O:0.25)'``."""
    mixed = Counter(site.species_string for site in s if len(site.species) > 1)
    partial = Counter(site.species_string for site in s if site.species.num_atoms < 1 - 1e-6)
    parts = []
    if mixed:
        parts.append(f"{sum(mixed.values())} mixed sites ({', '.join(sorted(mixed))})")
    if partial:
        parts.append(f"{sum(partial.values())} partially occupied sites ({', '.join(sorted(partial))})")
    return "; ".join(parts)


def ordered_approximant(s: Structure) -> tuple[Structure, str]:
    """The single ordered configuration of highest weight: each site takes its majority species.

    A site whose vacancy fraction exceeds every species' occupancy is removed. Cheap and
    deterministic (``OrderDisorderedStructureTransformation`` enumerates orderings and ranks them
    by Ewald energy, which needs oxidation states and takes minutes on 56-site cells). The note
    says what was done, so the row can be told apart from an ordered input.
    """
    species: list[Any] = []
    coords = []
    changed = removed = 0
    for site in s:
        occ = dict(site.species.items())
        vacancy = 1.0 - sum(occ.values())
        best, frac = max(occ.items(), key=lambda kv: (kv[1], str(kv[0])))
        if vacancy > frac + 1e-9:
            removed += 1
            continue
        if len(occ) > 1 or frac < 1 - 1e-6:
            changed += 1
        species.append(best)
        coords.append(site.frac_coords)
    out = Structure(s.lattice, species, coords)
    note = f"ordered approximant (majority species per site): {changed} sites set to their majority species, {removed} sites removed (mostly vacant); original: {disorder_summary(s)}"
    return out, note


def _charge_balanced_other(s: Structure) -> bool:
    """Charge balance of a structure of no family: given oxidation states, else pymatgen's guesses."""
    if all(isinstance(sp, Species) and sp.oxi_state is not None for sp in s.composition):
        return abs(sum(float(sp.oxi_state) * amt for sp, amt in s.composition.items())) < 1e-3
    comp = Composition(s.composition.reduced_formula)
    if len(comp.elements) == 1:
        return True  # elemental solids are neutral
    try:
        return bool(comp.oxi_state_guesses(max_sites=-1))
    except Exception as exc:  # pymatgen has no data for some elements: cannot tell, so do not reject
        log.debug("oxi_state_guesses failed for %s: %s", comp.reduced_formula, exc)
        return True


def _site_columns(rec: Recognition) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    fam = get_family(rec.family) if rec.family != OTHER else None
    for label in SITE_LABELS:
        occ = rec.occupancy.get(label)
        if fam is None or occ is None:
            cols.update({f"{label}_species": None, f"{label}_oxi": None, f"{label}_radius_ang": None})
            continue
        ions = parse_occupancy(occ)
        cn = fam.site(label).cn
        radii = [shannon_radius(i.element, i.oxidation, cn) for i in ions]
        cols[f"{label}_species"] = occ
        cols[f"{label}_oxi"] = float(sum(i.oxidation * i.fraction for i in ions))
        cols[f"{label}_radius_ang"] = (
            None
            if any(r is None for r in radii)
            else float(sum(r * i.fraction for r, i in zip(radii, ions, strict=True)))
        )  # type: ignore[operator]
    return cols


def _spacegroup(s: Structure, settings: IngestSettings) -> int | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # spglib's OLD_ERROR_HANDLING notice
            return int(
                SpacegroupAnalyzer(
                    s, symprec=settings.symprec, angle_tolerance=settings.angle_tolerance
                ).get_space_group_number()
            )
    except Exception as exc:  # spglib fails on some odd cells; the row is still useful
        log.debug("spglib failed: %s", exc)
        return None


def _recognize(s: Structure, settings: IngestSettings, confirm: bool | None = None) -> Recognition:
    """:func:`recognize` with the config's options; a crash in it gives ``other`` with the reason."""
    cfg = settings.recognition
    try:
        return recognize(
            s,
            search_radius=cfg.search_radius_ang,
            confirm_with_matcher=cfg.confirm_with_matcher if confirm is None else confirm,
            matcher_tolerances={"ltol": cfg.ltol, "stol": cfg.stol, "angle_tol": cfg.angle_tol},
        )
    except (IngestTimeout, MemoryError):
        raise
    except Exception as exc:  # keep the structure; only its family is unknown
        log.warning("recognition failed (%s: %s); family set to 'other'", type(exc).__name__, exc)
        return Recognition(OTHER, reason=f"recognition failed: {type(exc).__name__}: {exc}")


def _disordered_roles(original: Structure, settings: IngestSettings) -> list[str]:
    """Site occupancy of the disordered original (mixed but full sites only), for the note.

    The ordered approximant loses e.g. the 15 % inversion of a MgAl2O4 file; this keeps it on record.
    """
    rec = _recognize(original, settings, confirm=False)
    if rec.family == OTHER:
        return []
    occ = ", ".join(f"{k}={v}" for k, v in rec.occupancy.items())
    inv = f", inversion {rec.inversion:g}" if rec.inversion is not None else ""
    return [f"original {rec.family} site occupancy: {occ}{inv}"]


def _structure_row(
    s: Structure, source: str, block: str, sha: str, settings: IngestSettings, notes: list[str]
) -> dict[str, Any]:
    """Check, classify and describe one parsed structure; raises :class:`Reject`."""
    _check_structure(s, settings)
    if not s.is_ordered:
        if settings.disordered == "reject":
            raise Reject("disordered", f"partial occupancy: {disorder_summary(s)} (ingest.disordered = reject)")
        original = s
        s, note = ordered_approximant(s)
        notes = [*notes, note, *_disordered_roles(original, settings)]
        _check_structure(s, settings)
    rec = _recognize(s, settings)
    if settings.require_charge_balance:
        balanced = rec.charge_balanced if rec.family != OTHER else _charge_balanced_other(s)
        if not balanced:
            raise Reject(
                "not_charge_balanced",
                f"{s.composition.reduced_formula}: no charge-balanced oxidation states ({rec.family}: {rec.reason})",
            )
    roles = rec.site_roles()
    if rec.family != OTHER:
        roles["reason"] = rec.reason
    row = {
        "structure_id": structure_id(s),
        "source": source,
        "block": block,
        "source_sha256": sha,
        "family": rec.family,
        "formula": s.composition.formula,
        "reduced_formula": s.composition.reduced_formula,
        "nsites": len(s),
        "spacegroup_number": _spacegroup(s, settings),
        "site_roles": json.dumps(roles, sort_keys=True) if roles else None,
        "inversion": rec.inversion,
        "duplicate_of": None,
        "note": "; ".join([*notes, *([] if rec.family != OTHER else [f"family: {rec.reason}"])]) or None,
        **_site_columns(rec),
        "structure": json.dumps(s.as_dict()),
    }
    return row


def read_file(
    path: str, settings: IngestSettings | Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Structures rows and rejects rows of one input file. Never raises for anything in the file."""
    settings = resolve_settings(settings)
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []

    def reject(block: str, reason: str, detail: str) -> None:
        rejects.append({"source": path, "block": block, "reason": reason, "detail": detail})

    try:
        with time_limit(settings.timeout_s):
            fmt = detect_format(path)
            data = read_bytes(path, settings.max_file_mb)
            sha = hashlib.sha256(data).hexdigest()
            if fmt is None:
                raise Reject(
                    "unknown_format",
                    f"file name {os.path.basename(path)!r} is not CIF (*.cif, *.mcif), POSCAR (POSCAR*, CONTCAR*, *.vasp, *.poscar) or pymatgen JSON (*.json)",
                )
            text = decode(data)
            parsed = parse(text, fmt, settings.occupancy_tolerance)
            for block, item, notes in parsed:
                if isinstance(item, Reject):
                    reject(block, item.reason, item.detail)
                    continue
                try:
                    rows.append(_structure_row(item, path, block, sha, settings, notes))
                except Reject as exc:
                    reject(block, exc.reason, exc.detail)
    except Reject as exc:
        rows.clear()
        reject("", exc.reason, exc.detail)
    except IngestTimeout as exc:
        rows.clear()
        rejects.clear()
        reject("", "timeout", f"{exc} (ingest.timeout_s)")
    except MemoryError:
        rows.clear()
        rejects.clear()
        reject("", "internal_error", "out of memory while reading")
    except Exception as exc:  # the guarantee: a bad file never stops the run
        log.warning(
            "%s: unexpected %s while reading (recorded as a reject): %s",
            path,
            type(exc).__name__,
            exc,
            exc_info=log.isEnabledFor(logging.DEBUG),
        )
        rows.clear()
        rejects.clear()
        reject("", "internal_error", f"{type(exc).__name__}: {exc}")
    return rows, rejects
