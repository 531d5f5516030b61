"""The stage: filter each family's space, name its candidates, shard them (:func:`run`, the rule's)."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import zlib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matscreen import chemistry, tables
from matscreen.config import settings_dict
from matscreen.enumerate.filters import FILTERS, Descriptors, descriptors, filter_enabled, filter_mask
from matscreen.enumerate.settings import EnumerateSettings, mixing_sites, resolve_settings
from matscreen.enumerate.space import Combos, build_combos, mixed_combos
from matscreen.families import FAMILIES, SITE_LABELS, Ion, format_occupancy, get_family
from matscreen.ids import candidate_id
from matscreen.provenance import provenance

log = logging.getLogger(__name__)


def enumerate_family(family: str, settings: EnumerateSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Candidates and funnel rows of one family."""
    fam = get_family(family)
    if mixing_sites(fam, settings):
        combos, n_raw = mixed_combos(fam, settings)  # mixed rows: charge-neutral ones only
    else:
        combos = build_combos(fam, settings)
        n_raw = len(combos)
    pre_removed = n_raw - len(combos)
    funnel = [(fam.name, 0, "all_combinations", n_raw, 0)]
    d = descriptors(combos, settings)
    step = 0
    for name in FILTERS[fam.name]:
        if not filter_enabled(name, settings):
            log.info("%s: filter %s is switched off", fam.name, name)
            continue
        mask = filter_mask(name, combos, d, settings)
        before = len(combos)
        combos = combos.take(mask)
        d = Descriptors(
            {k: v[mask] for k, v in d.radius.items()},
            {k: v[mask] for k, v in d.oxidation.items()},
            d.t[mask],
            d.mu[mask],
            d.tau[mask],
        )
        step += 1
        if name == "charge_neutrality":  # mixed combinations that are not neutral were never built
            before, pre_removed = before + pre_removed, 0
        funnel.append((fam.name, step, name, len(combos), before - len(combos)))
    return _to_frame(combos, d), pd.DataFrame(funnel, columns=[c.name for c in tables.FUNNEL.columns])


@lru_cache(maxsize=65536)
def formula_unit(amounts: tuple[tuple[str, float], ...]) -> str:
    """Formula of one formula unit in pymatgen's element order (electronegativity), counts of 1
    left out: ``(("Al", 5), ("O", 12), ("Y", 3))`` -> ``'Y3Al5O12'``."""
    ordered = sorted(amounts, key=lambda item: (_en_or_inf(item[0]), item[0]))
    return "".join(el + ("" if n == 1 else f"{n:g}") for el, n in ordered)


def _en_or_inf(symbol: str) -> float:
    x = chemistry.electronegativity(symbol)
    return x if not math.isnan(x) else float("inf")


def _occupancy_strings(combos: Combos, label: str) -> np.ndarray:
    terms = combos.sites[label]
    if len(terms) == 1:
        t, idx, _ = terms[0]
        return t.label[idx]
    # one string per distinct (ions, fractions): mixed-site spaces have millions of rows, few distinct sites
    key = np.stack(
        [np.where(frac > 0, idx, -1) for t, idx, frac in terms] + [np.rint(frac * 1e6) for _, _, frac in terms], axis=1
    ).astype(np.int64)
    uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    texts = np.empty(len(uniq), dtype=object)
    for u, i in enumerate(first):
        ions = [
            Ion(t.element[idx[i]], float(t.oxidation[idx[i]]), float(frac[i])) for t, idx, frac in terms if frac[i] > 0
        ]
        texts[u] = format_occupancy(ions)
    return texts[inverse.ravel()] if len(combos) else np.empty(0, dtype=object)


def _to_frame(combos: Combos, d: Descriptors) -> pd.DataFrame:
    fam = combos.family
    n = len(combos)
    cols: dict[str, Any] = {}
    occ = {s.label: _occupancy_strings(combos, s.label) for s in fam.sites}
    # element amounts per formula unit, from the ordered terms (fractions x multiplicity)
    formulas = np.empty(n, dtype=object)
    for i in range(n):
        amounts: dict[str, float] = {}
        for s in fam.sites:
            for t, idx, frac in combos.sites[s.label]:
                if frac[i] > 0:
                    el = t.element[idx[i]]
                    amounts[el] = amounts.get(el, 0.0) + frac[i] * s.multiplicity
        formulas[i] = formula_unit(tuple(sorted(amounts.items())))
    ids = [candidate_id(fam.name, {s.label: occ[s.label][i] for s in fam.sites}) for i in range(n)]
    cols["candidate_id"] = ids
    cols["family"] = fam.name
    cols["formula"] = formulas
    cols["arrangement"] = combos.arrangement
    for s in SITE_LABELS:
        if s in fam.site_labels:
            cols[f"{s}_species"] = occ[s]
            cols[f"{s}_oxi"] = d.oxidation[s]
            cols[f"{s}_radius_ang"] = d.radius[s]
        else:
            cols[f"{s}_species"] = None
            cols[f"{s}_oxi"] = np.nan
            cols[f"{s}_radius_ang"] = np.nan
    cols["tolerance_factor"] = d.t
    cols["octahedral_factor"] = d.mu
    cols["tau"] = d.tau
    df = pd.DataFrame(cols, index=pd.RangeIndex(n))
    return tables.conform(df, tables.CANDIDATES)


def enumerate_candidates(settings: EnumerateSettings | Mapping[str, Any] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidates, funnel) of every family in ``settings.families``.

    ``settings`` is :class:`EnumerateSettings` (or the ``enumerate:`` config section, validated
    or partial: defaults are filled in). Candidates conform to :data:`tables.CANDIDATES`, sorted by family (order of
    :data:`families.FAMILIES`), formula, arrangement and id, so the order does not depend on the
    order of the config lists. The funnel conforms to :data:`tables.FUNNEL`.
    """
    settings = resolve_settings(settings)
    frames, funnels = [], []
    for name in FAMILIES:
        if name not in settings.families:
            continue
        t0 = time.perf_counter()
        cand, fun = enumerate_family(name, settings)
        log.info(
            "%s: %d of %d combinations pass (%.2f s)",
            name,
            len(cand),
            int(fun["remaining"].iloc[0]),
            time.perf_counter() - t0,
        )
        frames.append(cand)
        funnels.append(fun)
    cand = pd.concat(frames, ignore_index=True) if frames else tables.empty_frame(tables.CANDIDATES)
    order = {n: i for i, n in enumerate(FAMILIES)}
    cand = (
        cand.assign(_fam=cand["family"].map(order))
        .sort_values(["_fam", "formula", "arrangement", "candidate_id"], kind="mergesort")
        .drop(columns="_fam")
        .reset_index(drop=True)
    )
    funnel = pd.concat(funnels, ignore_index=True) if funnels else tables.empty_frame(tables.FUNNEL)
    funnel = funnel.astype({"step": "int64", "remaining": "int64", "removed": "int64"})
    return tables.conform(cand, tables.CANDIDATES), tables.conform(funnel, tables.FUNNEL)


def shard_of(candidate_id: str, n_shards: int) -> int:
    """Stable shard of a candidate: CRC32 of its id modulo ``n_shards`` (same on every machine)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return zlib.crc32(candidate_id.encode()) % n_shards


def format_funnel(funnel: pd.DataFrame) -> str:
    """The funnel as aligned text lines (for logs and the benchmark)."""
    lines = [f"{'family':<18} {'step':>4}  {'filter':<18} {'remaining':>10} {'removed':>10}"]
    for r in funnel.itertuples(index=False):
        lines.append(f"{r.family:<18} {r.step:>4}  {r.filter:<18} {r.remaining:>10} {r.removed:>10}")
    return "\n".join(lines)


def _clear_shard_folders(shard_paths: Sequence[str]) -> None:
    """Remove the manifest and every ``part-*.parquet`` not about to be rewritten from the shard folders.

    Runs before the first shard is written: a kill after this point leaves a set without a
    manifest (refused by readers), and a rerun with fewer shards leaves no stale shard that a
    ``part-*`` glob would pick up as current.
    """
    keep = {os.path.abspath(p) for p in shard_paths}
    for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in shard_paths}):
        Path(folder, tables.MANIFEST_NAME).unlink(missing_ok=True)
        for stale in sorted(Path(folder).glob("part-*.parquet")):
            if str(stale.resolve()) not in keep and os.path.abspath(stale) not in keep:
                log.info("removing stale shard %s of an earlier run", stale)
                stale.unlink()


def run(
    settings: EnumerateSettings | Mapping[str, Any] | None,
    shard_paths: list[str],
    funnel_path: str,
    config_hash: str = "",
) -> None:
    """Enumerate, then write one Parquet file per shard (empty shards too), the funnel and the manifest.

    A candidate goes to ``shard_paths[shard_of(id, len(shard_paths))]``, so a candidate keeps
    its shard when other candidates come and go. Every table is checked before the first is
    written; the shard manifest (:func:`matscreen.tables.write_manifest`) is written last, so a
    set that has one is complete and current.
    """
    if not shard_paths:
        raise ValueError("run() needs at least one shard path")
    t0 = time.perf_counter()
    settings = resolve_settings(settings)
    cand, funnel = enumerate_candidates(settings)
    prov = provenance("enumerate", settings_dict(settings), config_hash)
    shard = np.array([shard_of(c, len(shard_paths)) for c in cand["candidate_id"]], dtype=int)
    parts = [cand[shard == i].reset_index(drop=True) for i in range(len(shard_paths))]
    _clear_shard_folders(shard_paths)
    tables.write_tables(
        [
            *((part, path, tables.CANDIDATES) for part, path in zip(parts, shard_paths)),
            (funnel, funnel_path, tables.FUNNEL),
        ],
        prov,
    )
    for i, (part, path) in enumerate(zip(parts, shard_paths)):
        log.info("shard %d: %d candidates -> %s", i, len(part), path)
    folders: dict[str, list[str]] = {}
    for p in shard_paths:
        folders.setdefault(os.path.dirname(os.path.abspath(p)), []).append(p)
    run_id = f"{config_hash or 'noconfig'}-{uuid.uuid4().hex[:12]}"
    for folder, members in folders.items():
        tables.write_manifest(folder, members, run_id)
    log.info("funnel:\n%s", format_funnel(funnel))
    log.info("%d candidates in %.2f s", len(cand), time.perf_counter() - t0)
