"""The per-file ingest cache (nightly refresh): a rerun reads only new or changed files."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from matscreen.atomic import write_text
from matscreen.config import settings_dict
from matscreen.ingest.readers import Reject, detect_format, read_bytes
from matscreen.ingest.rows import read_file
from matscreen.ingest.settings import IngestSettings
from matscreen.provenance import stable_hash

log = logging.getLogger(__name__)

#: Bump when the layout of a cache entry changes.
CACHE_FORMAT = 1

#: Settings that do not change what one file yields (they act across files or only choose files).
_CACHE_IGNORED_KEYS = ("inputs", "existing", "ignore", "dedupe", "cache")

#: Reject reasons that depend on the file's name, the clock or this machine rather than on its
#: content: never cached, so the next run tries again.
_UNCACHED_REASONS = ("not_found", "unreadable", "too_big", "unknown_format", "timeout", "internal_error")

#: Modules outside this package whose code decides the rows of one file; their source and every
#: module of this package (the readers, the recogniser) go into the cache key, so an edit to any
#: of them invalidates every cached entry.
_CODE_MODULES = ("families", "chemistry", "ids", "prototypes", "tables")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for f in [*sorted(here.glob("*.py")), *(here.parent / f"{name}.py" for name in _CODE_MODULES)]:
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_key(settings: IngestSettings) -> str:
    """Hash of everything that decides what a file of given content yields.

    The resolved ``ingest:`` settings without the keys that act across files
    (:data:`_CACHE_IGNORED_KEYS`), the source of the ingest code and the pymatgen version.
    """
    from importlib import metadata

    cfg = settings_dict(settings)
    return stable_hash(
        {
            "format": CACHE_FORMAT,
            "settings": {k: v for k, v in cfg.items() if k not in _CACHE_IGNORED_KEYS},
            "code": _code_digest(),
            "pymatgen": metadata.version("pymatgen"),
        }
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _cache_entry(cache_dir: str | os.PathLike[str], key: str, sha: str, fmt: str) -> Path:
    return Path(cache_dir) / key / sha[:2] / f"{sha}.{fmt}.json"


def read_file_cached(
    path: str,
    settings: IngestSettings,
    cache_dir: str | os.PathLike[str] | None,
    key: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """:func:`read_file` through the per-file cache; returns ``(rows, rejects, hit)``.

    The entry is found by the file's sha256, its format (the reader depends on the name's
    suffix) and :func:`cache_key`, so a renamed or moved file is a hit (``source`` is set to
    the current path) and an edited file or changed settings are a miss. Entries are written
    by rename, never half. A cache entry that cannot be read is ignored (and rewritten). The
    cache is not a Snakemake output: Snakemake deletes declared outputs before a job runs.
    """
    fmt = detect_format(path)
    if cache_dir is None or fmt is None:
        rows, rejects = read_file(path, settings)
        return rows, rejects, False
    try:
        data = read_bytes(path, settings.max_file_mb)
    except Reject:  # unreadable or too big: read_file records the reason, nothing to cache
        rows, rejects = read_file(path, settings)
        return rows, rejects, False
    sha = hashlib.sha256(data).hexdigest()
    entry = _cache_entry(cache_dir, key or cache_key(settings), sha, fmt)
    if entry.is_file():
        try:
            cached = json.loads(entry.read_text())
            rows = [{**r, "source": path} for r in cached["rows"]]
            rejects = [{**r, "source": path} for r in cached["rejects"]]
            if rows or rejects:
                return rows, rejects, True
            # valid JSON but no row for the file: it would vanish from both tables; read it again
            log.warning("ingest cache entry %s holds no rows: reading %s again", entry, path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ingest cache entry %s is unreadable (%s): reading %s again", entry, exc, path)
    rows, rejects = read_file(path, settings)
    if any(r["reason"] in _UNCACHED_REASONS for r in rejects):
        return rows, rejects, False
    write_text(entry, json.dumps({"rows": rows, "rejects": rejects}, default=_json_default))
    return rows, rejects, False
