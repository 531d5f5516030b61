"""Stage 3, ``label``: one PySCF periodic DFT calculation per structure, cached and retried.

Every number a label depends on comes from the ``label:`` config section, resolved **once** into
a frozen :class:`~matscreen.label.settings.LabelSettings` at the public edge (Snakemake adapter,
CLI, test) and passed down as that object; nothing below the edge re-reads or re-validates it.
The settings that change a result are hashed (``LabelSettings.hash``, computed once per
instance); the label store keeps one Parquet file per (settings hash, structure), so nothing is
ever computed twice, and every write is atomic.

Modules, along the seams of the stage:

* :mod:`.settings` -- ``LabelSettings``, the settings hash, ``NON_PHYSICAL_KEYS`` (light import)
* :mod:`.checks` -- ``check_label_config(config)``: the semantic config checks (light import)
* :mod:`.cell` -- k-point mesh (``kmesh_for``), PySCF cell, pseudopotential-screening check,
  preflight (``unsupported_elements``)
* :mod:`.pyscf` -- SCF object, failure ladder, progress and stall watch, checkpoint resume, gap
* :mod:`.eos` -- ``label.relax: volume``: E(V) scan and equation of state
* :mod:`.refs` -- elemental reference phases
* :mod:`.hull` -- convex hulls (pymatgen ``PhaseDiagram``) per settings hash and chemical system
* :mod:`.store` -- the label store: entry paths, atomic write and copy, hit check, get-or-compute
* :mod:`.jobs` -- one job: ``compute_label``, ``label_structure``, ``run_structure``, references
* :mod:`.gathering` -- formation energies, plausibility window, hull columns, ``gather``, ``label_files``
  (not ``gather.py``: a submodule would shadow the re-exported function ``label.gather``)
* :mod:`.resources` -- ``estimate_resources`` (in the checkpoint), ``scale_resources`` (light import)
* :mod:`.targets` -- the checkpoint ``select_label_targets``: chooses the targets (ingested
  structures, a sample of the candidates, their competing phases), consults the store, estimates
  resources
* :mod:`.competing` -- the competing-phase library (``resources/competing_phases.yaml``): which
  binaries a chemical system needs, built in their structure types

**The path of one setting** (e.g. ``label.smearing.width``) from the config to PySCF, for a
structure job; each step is one call, and only the first builds (validates) the settings:

1. rule ``label_structure`` passes ``config["label"]`` as ``params.settings``; its adapter
   ``scripts/label_structure.py`` calls :func:`.jobs.run_structure`, which builds
   ``LabelSettings`` with :func:`.settings.as_settings` (schema defaults + validation, once);
2. :func:`.jobs.label_structure` (the instance passes ``as_settings`` unchanged);
3. :func:`.store.get_or_compute` (entry path from ``settings.store`` and ``settings.hash``);
4. :func:`.jobs.compute_label` (preflight; ``settings.relax`` picks the SCF or the volume scan);
5. :func:`.pyscf.run_scf`, which reads ``settings.smearing.width`` in :func:`.pyscf.make_scf`.

The public API is re-exported here lazily (``from matscreen import label; label.gather(...)``),
so importing ``matscreen.label`` or its light modules does not import PySCF or pymatgen: the
Snakemake controller imports only ``settings``, ``checks`` and ``resources``.
"""

from __future__ import annotations

from typing import Any

from matscreen.label.checks import check_label_config  # noqa: F401 (public API)
from matscreen.lazy import lazy_exports

#: name -> submodule of the re-exported public API
_EXPORTS = {
    "settings": (
        "LabelSettings",
        "NON_PHYSICAL_KEYS",
        "as_settings",
        "resolve_settings",
        "physical_settings",
        "settings_hash",
    ),
    "cell": ("unsupported_elements", "kmesh_for"),
    "pyscf": ("HARTREE_EV", "SCFResult", "run_scf"),
    "store": ("entry_path", "atomic_copy", "get_or_compute"),
    "jobs": (
        "compute_label",
        "compute_reference",
        "label_structure",
        "label_reference",
        "run_structure",
        "run_reference",
        "read_target",
    ),
    "gathering": (
        "gather",
        "formation_energies",
        "flag_implausible",
        "reference_elements",
        "read_structures",
        "references_path_for",
        "label_files",
    ),
    "hull": ("HULL_COLUMNS", "missing_competitors", "own_binaries", "own_binaries_of", "own_binaries_of_row"),
    "resources": ("estimate_resources", "scale_resources", "CYCLE_COST"),
    "checks": ("check_label_config", "check_pyscf_names"),
}
#: older names kept for callers outside this package
_ALIASES = {"_atomic_copy": ("store", "atomic_copy"), "_read_target": ("jobs", "read_target")}
_SUBMODULES = ("settings", "checks", "pyscf", "eos", "refs", "hull", "store", "jobs", "gathering", "resources")

__getattr__, _names = lazy_exports(__name__, _EXPORTS, _SUBMODULES, _ALIASES)
__all__ = sorted([*_names, "store_path"])


def store_path(settings: Any, kind: str, key: str) -> Any:
    """``<store>/<settings_hash>/<kind>/<key>.parquet`` of a (partial) ``label:`` section or LabelSettings."""
    from matscreen.label.settings import as_settings
    from matscreen.label.store import entry_path

    return entry_path(as_settings(settings), kind, key)
