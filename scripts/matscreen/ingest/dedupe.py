"""De-duplication: structures that match an earlier one get ``duplicate_of``."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from pymatgen.analysis.structure_matcher import ElementComparator, StructureMatcher
from pymatgen.core import Structure

from matscreen.ingest.settings import DedupeSettings
from matscreen.structjson import UnsafeStructureJSON, structure_from_json

log = logging.getLogger(__name__)


def _matcher(d: DedupeSettings) -> StructureMatcher:
    return StructureMatcher(
        ltol=d.ltol,
        stol=d.stol,
        angle_tol=d.angle_tol,
        primitive_cell=True,
        scale=d.scale,
        comparator=ElementComparator(),
    )


def _bucket(formula: str, spacegroup: Any, same_sg: bool) -> tuple[str, int | None]:
    if not same_sg or spacegroup is None or pd.isna(spacegroup):
        return (formula, None)
    return (formula, int(spacegroup))


def mark_duplicates(
    structures: pd.DataFrame, settings: DedupeSettings, existing: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Set ``duplicate_of`` to the ``structure_id`` of the first earlier match (existing first, then input order).

    ``settings`` is ``ingest.dedupe``. Only structures with the same reduced formula (and, with ``same_spacegroup``, the same
    space group: BaTiO3 P4mm and Amm2 match at the default tolerances but are different
    polymorphs) are compared, and only against originals
    (rows that are not duplicates themselves), so chains point at the first occurrence.
    """
    out = structures.copy()
    if not settings.enabled or out.empty:
        return out
    matcher = _matcher(settings)
    same_sg = settings.same_spacegroup
    originals: dict[tuple[str, int | None], list[tuple[str, Structure]]] = {}
    if existing is not None and len(existing):
        keep = existing[existing["duplicate_of"].isna()] if "duplicate_of" in existing else existing
        for sid, formula, sg, js in zip(
            keep["structure_id"], keep["reduced_formula"], keep["spacegroup_number"], keep["structure"], strict=True
        ):
            try:
                originals.setdefault(_bucket(formula, sg, same_sg), []).append(
                    (sid, structure_from_json(js, f"existing structures table, structure {sid}"))
                )
            except UnsafeStructureJSON:
                raise
            except Exception as exc:
                log.warning("existing structure %s could not be read back (%s); not used for de-duplication", sid, exc)
    dup_of: list[str | None] = []
    for sid, formula, sg, js in zip(
        out["structure_id"], out["reduced_formula"], out["spacegroup_number"], out["structure"], strict=True
    ):
        s = structure_from_json(js, f"structure {sid}")
        found = None
        key = _bucket(formula, sg, same_sg)
        for osid, other in originals.get(key, ()):
            if osid == sid or bool(matcher.fit(s, other)):  # fit returns numpy.bool
                found = osid
                break
        dup_of.append(found)
        if found is None:
            originals.setdefault(key, []).append((sid, s))
    out["duplicate_of"] = dup_of
    return out
