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
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from matscreen.config import ConfigError, _with_defaults, load_schema, semantic_check
from matscreen.provenance import stable_hash

log = logging.getLogger(__name__)

#: Keys of the ``label:`` section that never change a computed number (selection, cache
#: location, memory cap, cluster resources). Everything else goes into :func:`settings_hash`.
NON_PHYSICAL_KEYS = ("select", "store", "max_memory_mb", "resources")


# --- settings -----------------------------------------------------------------------------


def resolve_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """A deep copy of the ``label:`` section with every default filled in and validated.

    Accepts ``{}`` (all defaults) or a partial section (e.g. a ``--settings`` YAML), so the
    library functions behave the same whether or not Snakemake validated the config first.
    """
    import jsonschema

    out = copy.deepcopy(dict(settings or {}))
    schema = load_schema()["properties"]["label"]
    cls = _with_defaults(jsonschema.Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = [f"config key 'label.{'.'.join(str(p) for p in e.absolute_path)}': {e.message}" for e in errors[:10]]
        raise ConfigError("invalid label settings:\n  " + "\n  ".join(msgs))
    return out


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


def _is_element(symbol: str) -> bool:
    from pymatgen.core import Element

    try:
        Element(symbol)
    except ValueError:
        return False
    return True
