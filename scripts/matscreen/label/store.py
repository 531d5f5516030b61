"""The label store: one Parquet file per (settings hash, kind, key), written only by rename.

``<store>/<settings_hash>/<kind>/<key>.parquet``, ``kind`` ``structures`` (compounds and
competing phases) or ``references`` (elements); beside an entry still being computed, its
journal ``<key>.journal.json`` (:func:`journal_path`) and PySCF's checkpoint of the SCF under way
(:func:`checkpoint_path`). Every write goes through :mod:`matscreen.atomic`
(via :func:`matscreen.tables.write_table`), so a killed job leaves no entry and no temporary.
The checkpoint asks :func:`has_entry` to leave stored labels out of the DAG; the jobs use
:func:`get_or_compute`; gather reads stored entries directly.

``label.seed_stores`` are read-only stores of the same layout (the shipped reference set's
``resources/labels/store``): where the store has no entry, a seed's entry under the same settings
hash is copied into the store (:func:`find_entry`) and counts as a hit. Nothing writes to a seed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from matscreen import tables
from matscreen.label.settings import LabelSettings, physical_settings, resolve_path
from matscreen.provenance import provenance

log = logging.getLogger(__name__)

#: kind -> table contract of its entries
KINDS = {"structures": tables.LABELS, "references": tables.REFERENCES}


def entry_path(settings: LabelSettings, kind: str, key: str) -> Path:
    """Where the store keeps one entry: ``<store>/<settings_hash>/<kind>/<key>.parquet``.

    Relative store paths are taken from the current directory, i.e. the Snakemake working
    directory, like every other output path.
    """
    return _entry_in(Path(settings.store), settings, kind, key)


def _entry_in(root: Path, settings: LabelSettings, kind: str, key: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
    return root / settings.hash / kind / f"{safe}.parquet"


def journal_path(settings: LabelSettings, kind: str, key: str) -> Path:
    """Where a label still being computed keeps its finished steps (a volume scan's points:
    :mod:`matscreen.label.eos`), beside its entry: ``<key>.journal.json``. Removed once the entry
    is written; a rerun after a kill resumes from it."""
    entry = entry_path(settings, kind, key)
    return entry.with_name(entry.stem + ".journal.json")


def checkpoint_path(journal: str | os.PathLike[str] | None, point: str = "") -> Path | None:
    """PySCF's chkfile of one SCF of the label whose journal is ``journal`` (None: no journal, no
    checkpoint): ``<key>.journal.chk``, or ``<key>.journal.<point>.chk`` for one point of a volume
    scan. :func:`matscreen.label.pyscf.run_scf` resumes from it and removes it when done."""
    if journal is None:
        return None
    j = Path(journal)
    return j.with_name(f"{j.stem}{'.' + point if point else ''}.chk")


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` through the one atomic writer (:mod:`matscreen.atomic`: umask mode, rename)."""
    from matscreen.atomic import copy_file

    copy_file(src, dst)


def write_rows(
    rows: list[dict[str, Any]],
    path: str | os.PathLike[str],
    table: tables.Table,
    settings: LabelSettings,
    config_hash: str,
) -> None:
    """Contract-checked, atomic write of label rows with the label provenance."""
    df = tables.conform(pd.DataFrame(rows, columns=table.column_names), table)
    tables.write_table(df, path, table, provenance("label", physical_settings(settings), config_hash))


def _read_hit(entry: Path, table: tables.Table) -> pd.DataFrame | None:
    """The entry's rows when it is a readable, contract-conforming entry (never a half file:
    entries are only ever created by rename), else None."""
    if not entry.is_file():
        return None
    try:
        return tables.read_table(entry, table)
    except tables.ContractError as exc:
        log.warning("label store entry %s is unreadable (%s): recomputing it", entry, exc)
        return None


def is_hit(entry: Path, table: tables.Table) -> bool:
    """True when the store holds a readable, contract-conforming entry."""
    return _read_hit(entry, table) is not None


def find_entry(settings: LabelSettings, kind: str, key: str) -> Path | None:
    """The store's readable entry of ``key``, or None. Where the store has none and a seed store
    (``settings.seed_stores``) has one under the same hash, it is copied into the store first, so
    the store alone holds every label a run used."""
    table = KINDS[kind]
    entry = entry_path(settings, kind, key)
    if is_hit(entry, table):
        return entry
    for seed in settings.seed_stores:
        seeded = _entry_in(resolve_path(seed), settings, kind, key)
        if is_hit(seeded, table):
            log.info("%s of %s: copied from the seed store %s", kind, key, seed)
            atomic_copy(seeded, entry)
            return entry
    return None


def in_seed_store(settings: LabelSettings, kind: str, key: str) -> bool:
    """Whether a seed store (``settings.seed_stores``, read-only, versioned with the config) holds
    ``key`` under ``settings``' hash; the run's own store is not asked and nothing is copied."""
    return seed_store_status(settings, kind, key) is not None


def seed_store_status(settings: LabelSettings, kind: str, key: str) -> str | None:
    """The ``status`` of the first seed store's entry of ``key`` under ``settings``' hash ('ok',
    'failed', ...), or None when no seed store holds it (the run's own store is not asked)."""
    for seed in settings.seed_stores:
        rows = _read_hit(_entry_in(resolve_path(seed), settings, kind, key), KINDS[kind])
        if rows is not None:
            return str(rows["status"].iloc[0])
    return None


def has_entry(settings: LabelSettings, kind: str, key: str) -> bool:
    """Whether ``key`` of ``kind`` is stored (readable) under ``settings``' hash, in the store or
    in a seed store (then it is copied into the store)."""
    return find_entry(settings, kind, key) is not None


def read_entries(settings: LabelSettings, kind: str, keys: list[str]) -> list[str]:
    """Paths of the stored entries of ``keys`` (raises naming the entry when one is gone)."""
    out = []
    for key in keys:
        p = entry_path(settings, kind, key)
        if not p.is_file():  # gather reads the file itself: no contract read here, only the seed copy
            p = find_entry(settings, kind, key)
        if p is None:
            raise FileNotFoundError(
                f"label store entry {entry_path(settings, kind, key)} of {key} is gone since label-target selection "
                "marked it stored: rerun the workflow (select_label_targets recomputes it)"
            )
        out.append(str(p))
    return out


def get_or_compute(
    settings: LabelSettings,
    kind: str,
    key: str,
    out_path: str | os.PathLike[str],
    config_hash: str,
    *,
    hit_msg: str,
    miss_msg: str,
    compute: Callable[[Path], dict[str, Any]],
) -> bool:
    """Write the one-row file of store entry ``<store>/<hash>/<kind>/<key>`` to ``out_path``.

    A store hit is copied (atomically), never recomputed; a miss is computed, written to the
    store by rename and then copied. ``unsupported`` rows are not stored (they cost nothing).
    ``compute`` gets the entry's :func:`journal_path` (where a long calculation keeps its
    finished steps, so that a killed job's rerun resumes); it is removed once the entry exists.
    Returns True when the result came from the store.
    """
    table = KINDS[kind]
    entry = find_entry(settings, kind, key)
    if entry is not None:
        log.info("%s %s", hit_msg, entry)
        atomic_copy(entry, out_path)
        return True
    entry = entry_path(settings, kind, key)
    log.info("%s, settings %s", miss_msg, settings.hash)
    journal = journal_path(settings, kind, key)
    row = compute(journal)
    if row["status"] == "unsupported":
        write_rows([row], out_path, table, settings, config_hash)
    else:
        write_rows([row], entry, table, settings, config_hash)
        atomic_copy(entry, out_path)
    journal.unlink(missing_ok=True)
    return False
