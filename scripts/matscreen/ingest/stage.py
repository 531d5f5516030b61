"""The ingest stage: input discovery, every file read (through the cache), de-duplication, tables."""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from matscreen import tables
from matscreen.config import ConfigError, settings_dict
from matscreen.ingest.cache import cache_key, read_file_cached
from matscreen.ingest.dedupe import mark_duplicates
from matscreen.ingest.settings import IngestSettings, resolve_settings
from matscreen.provenance import provenance

log = logging.getLogger(__name__)


def expand_inputs(
    paths: list[str], ignore: list[str] | tuple[str, ...] = ()
) -> tuple[list[str], list[tuple[str, str]]]:
    """Files named by ``paths`` (files, folders searched recursively, globs), in a stable order.

    Files found by walking a folder are skipped when their name matches a pattern of ``ignore``
    (e.g. ``SOURCES.md`` beside the data); a file named explicitly is never skipped. Returns
    ``(files, missing)`` where ``missing`` lists ``(path, detail)`` of inputs that matched nothing.
    Broken symlinks and other non-regular entries are returned as files so they become rejects.

    Symlinked sub-folders are followed (the README promises that every input file ends in one of
    the two tables; ``os.walk`` skips them by default), each real folder once, so a link back up
    the tree cannot loop. A folder that holds no files is logged as a warning naming it.
    """
    files: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            files.append(p)

    def walk(folder: str) -> None:
        visited: set[str] = set()
        before = len(files)
        for root, dirs, names in os.walk(folder, followlinks=True):
            real = os.path.realpath(root)
            if real in visited:  # a symlink cycle, or two links to one folder: read it once
                dirs[:] = []
                continue
            visited.add(real)
            dirs[:] = sorted(d for d in dirs if not any(fnmatch.fnmatch(d, pat) for pat in ignore))
            for n in sorted(names):
                if not any(fnmatch.fnmatch(n, pat) for pat in ignore):
                    add(os.path.join(root, n))
        if len(files) == before:
            log.warning("config key 'ingest.inputs': folder %s holds no input files", folder)

    for entry in paths:
        if os.path.isdir(entry):
            walk(entry)
        elif os.path.lexists(entry):
            add(entry)
        elif any(ch in entry for ch in "*?["):
            matches = sorted(glob.glob(entry, recursive=True))
            if not matches:
                missing.append((entry, "glob matched no files"))
            for m in matches:
                walk(m) if os.path.isdir(m) else add(m)
        else:
            missing.append((entry, "no such file or folder"))
    return files, missing


def ingest(
    paths: list[str],
    settings: IngestSettings | Mapping[str, Any] | None,
    existing: pd.DataFrame | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every file under ``paths``; return ``(structures, rejects)`` conforming to the contracts.

    ``settings`` is :class:`IngestSettings` (or the ``ingest:`` config section: missing keys take
    the schema defaults); ``existing`` an earlier structures table whose
    entries new structures are checked against (``duplicate_of``); ``cache`` a folder of
    per-file results (:func:`read_file_cached`), so that a rerun reads only new or changed
    files. De-duplication always runs over all files, cached or not.
    """
    cfg = resolve_settings(settings)
    files, missing = expand_inputs(list(paths), cfg.ignore)
    if missing:  # a typo in a path must not look like a run over fewer files
        raise ConfigError("config key 'ingest.inputs': " + "; ".join(f"{p}: {d}" for p, d in missing))
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    key = cache_key(cfg) if cache is not None else None
    hits = 0
    for i, path in enumerate(files, 1):
        r, j, hit = read_file_cached(path, cfg, cache, key)
        hits += hit
        rows += r
        rejects += j
        if i % 100 == 0:
            log.info("ingest: %d/%d files read", i, len(files))
    if cache is not None:
        log.info("ingest cache %s: %d of %d files from the cache, %d read", cache, hits, len(files), len(files) - hits)
    structures = (
        tables.conform(pd.DataFrame(rows), tables.STRUCTURES) if rows else tables.empty_frame(tables.STRUCTURES)
    )
    structures = mark_duplicates(structures, cfg.dedupe, existing)
    rej = tables.conform(pd.DataFrame(rejects), tables.REJECTS) if rejects else tables.empty_frame(tables.REJECTS)
    check_every_file_accounted(files, structures, rej)
    return structures, rej


def check_every_file_accounted(files: list[str], structures: pd.DataFrame, rejects: pd.DataFrame) -> None:
    """The README's promise as an invariant: every input file is in ``structures`` or ``rejects``.

    A file in neither (a reader that returned nothing, an empty cache entry) would vanish from
    the run without a trace; this is a bug of ingest, so it stops the stage naming the files.
    """
    lost = sorted(set(files) - set(structures["source"]) - set(rejects["source"]))
    if lost:
        raise RuntimeError(
            f"ingest: {len(lost)} input file(s) ended in neither structures nor rejects "
            f"(first: {lost[0]}); please report this as a bug"
        )


def summary(n_files: int, structures: pd.DataFrame, rejects: pd.DataFrame) -> str:
    """One line: files read, structures kept, duplicates, rejected by reason."""
    dups = int(structures["duplicate_of"].notna().sum()) if len(structures) else 0
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(Counter(rejects["reason"]).items())) if len(rejects) else "none"
    return (
        f"ingest: read {n_files} files, kept {len(structures) - dups} new structures, "
        f"{dups} duplicates, rejected {len(rejects)} (by reason: {reasons})"
    )


def run(
    inputs: list[str],
    structures_path: str,
    rejects_path: str,
    settings: IngestSettings | Mapping[str, Any] | None,
    existing_path: str | None = None,
    config_hash: str = "",
) -> None:
    """Ingest ``inputs`` and write both tables with provenance; logs the summary line.

    ``existing_path`` names an earlier structures.parquet (nightly refresh); a missing file is
    treated as no earlier run. ``settings.cache`` (``ingest.cache``) is the per-file cache
    folder, None for none.
    """
    cfg = resolve_settings(settings)
    existing = None
    if existing_path and Path(existing_path).exists():
        existing = tables.read_table(existing_path, tables.STRUCTURES)
        log.info("ingest: de-duplicating against %d structures in %s", len(existing), existing_path)
    elif existing_path:
        log.info("ingest: %s does not exist yet; nothing to de-duplicate against", existing_path)
    structures, rejects = ingest(inputs, cfg, existing, cfg.cache)
    prov = provenance("ingest", settings_dict(cfg), config_hash)
    tables.write_tables(
        [(structures, structures_path, tables.STRUCTURES), (rejects, rejects_path, tables.REJECTS)], prov
    )  # both checked before either is written
    n_files = len({*structures["source"], *rejects["source"]})
    log.info(summary(n_files, structures, rejects))
