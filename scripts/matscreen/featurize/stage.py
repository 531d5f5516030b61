"""The stage: read candidate or structure tables, featurize, write the feature table (:func:`run`, the rule's)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from matscreen.config import settings_dict
from matscreen.featurize.compositions import SITE_SPECIES_COLUMNS
from matscreen.featurize.frames import featurize_frame
from matscreen.featurize.sets import citations, feature_name_map, feature_set_hash
from matscreen.featurize.settings import FeaturizeSettings, resolve_settings, structure_features_on
from matscreen.provenance import provenance
from matscreen.tables import CANDIDATE_FEATURES, STRUCTURE_FEATURES, Table, read_available, write_table

log = logging.getLogger(__name__)


STAGE = "featurize"


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


def run(
    input_paths: list[str],
    output_path: str,
    id_column: str,
    settings: FeaturizeSettings | Mapping[str, Any] | None,
    config_hash: str = "",
) -> None:
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
