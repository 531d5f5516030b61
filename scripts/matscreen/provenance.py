"""Stable hashes and the provenance record stored in every output file."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from typing import Any

import matscreen

#: Packages whose versions decide what the pipeline computes.
TRACKED_PACKAGES = ("pymatgen", "pyscf", "matminer", "lightgbm", "pandas", "pyarrow", "numpy", "scikit-learn", "snakemake")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the input of every hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of ``obj``'s canonical JSON; identical across runs and machines."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"matscreen": matscreen.__version__}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(stage: str, settings: Mapping[str, Any] | None = None, config_hash: str = "") -> dict[str, Any]:
    """The record written under the ``matscreen`` key of a Parquet file's metadata."""
    return {
        "stage": stage,
        "settings_hash": stable_hash(dict(settings or {})),
        "settings": dict(settings or {}),
        "config_hash": config_hash,
        "versions": package_versions(),
    }
