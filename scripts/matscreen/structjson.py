"""The one way matscreen turns structure JSON into a pymatgen ``Structure``, without running code.

pymatgen's ``Structure.from_dict`` hands every site's ``properties`` to monty's
``MontyDecoder``, which ``__import__``s whatever ``@module`` a dict names and calls its
``from_dict``: a structure file (or a ``structure`` cell of a Parquet table) could import and
run any module on ``sys.path``. :func:`structure_from_json` therefore

1. walks the whole parsed JSON first and refuses (:class:`UnsafeStructureJSON`, a
   ``ValueError`` naming ``where`` and the offending ``@module``) any ``@module``/``@class``/
   ``@callable``/... marker except the inert ones a plain pymatgen ``Structure`` or
   ``TransformedStructure`` dict carries at their documented places (the root, the lattice,
   a site, a species; transformation records in a ``TransformedStructure``'s ``history``, which
   is never decoded);
2. builds the structure from the lattice and the sites with their ``properties`` taken out,
   so pymatgen's decoder never sees them, and puts the (checked, plain JSON) properties back
   on the sites afterwards.

A dict that is safe but not a structure (a ``Molecule``, a ``Composition``) raises
:class:`NotAStructure`, also a ``ValueError``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pymatgen.core import Structure

__all__ = ["NotAStructure", "UnsafeStructureJSON", "structure_from_json"]

_STRUCTURE = {("pymatgen.core.structure", "Structure"), ("pymatgen.core.structure", "IStructure")}
_TRANSFORMED = ("pymatgen.alchemy.materials", "TransformedStructure")
_LATTICE = {("pymatgen.core.lattice", "Lattice")}
_SITE = {("pymatgen.core.sites", "PeriodicSite"), ("pymatgen.core.sites", "Site")}
_SPECIES = {("pymatgen.core.periodic_table", c) for c in ("Element", "Species", "DummySpecies", "DummyElement")}
#: keys beginning with "@" that are inert labels, not instructions to monty
_INERT_AT_KEYS = {"@module", "@class", "@version"}


class UnsafeStructureJSON(ValueError):
    """The JSON names Python code (an ``@module``/``@class`` pymatgen's decoder would import)."""


class NotAStructure(ValueError):
    """Safe JSON that is not a pymatgen Structure (or TransformedStructure) dict."""


def _marker(d: dict[str, Any]) -> tuple[Any, Any] | None:
    if any(isinstance(k, str) and k.startswith("@") for k in d):
        return d.get("@module"), d.get("@class")
    return None


def _refuse(where: str, path: str, d: dict[str, Any]) -> UnsafeStructureJSON:
    mod = d.get("@module")
    extra = sorted(k for k in d if isinstance(k, str) and k.startswith("@") and k not in _INERT_AT_KEYS)
    what = f"@module {mod!r}" + (f" (@class {d.get('@class')!r})" if "@class" in d else "")
    if extra:
        what += f" with {', '.join(extra)}"
    return UnsafeStructureJSON(
        f"{where}: unsafe structure JSON: {what} at {path}; only plain pymatgen Structure/"
        f"TransformedStructure dicts are read, a structure file must never name Python code to import")


def _walk(obj: Any, where: str, path: str, allowed: set[tuple[str, str]], in_history: bool,
          has_history: bool = False) -> None:
    """Refuse any dict carrying an @-marker that is not in ``allowed`` for this position
    (``has_history``: ``obj`` is the root of a TransformedStructure, whose ``history`` holds
    transformation records)."""
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk(v, where, f"{path}[{i}]", allowed, in_history)
        return
    if not isinstance(obj, dict):
        return
    m = _marker(obj)
    if m is not None:
        extra = [k for k in obj if isinstance(k, str) and k.startswith("@") and k not in _INERT_AT_KEYS]
        mod, cls = m
        ok = not extra and (
            (mod, cls) in allowed
            # records of pymatgen transformations in a TransformedStructure's history: kept as
            # data, never decoded (we build only the final structure)
            or (in_history and isinstance(mod, str) and mod.startswith("pymatgen.transformations.")
                and isinstance(cls, str))
            or (in_history and (mod, cls) in _STRUCTURE)
        )
        if not ok:
            raise _refuse(where, path, obj)
    for k, v in obj.items():
        sub = f"{path}.{k}"
        if k == "lattice":
            _walk(v, where, sub, _LATTICE, in_history)
        elif k == "sites" and isinstance(v, list):
            for i, site in enumerate(v):
                _walk_site(site, where, f"{sub}[{i}]", in_history)
        elif k == "history" and has_history:
            _walk(v, where, sub, set(), True)
        else:
            _walk(v, where, sub, set(), in_history)


def _walk_site(site: Any, where: str, path: str, in_history: bool) -> None:
    if not isinstance(site, dict):
        _walk(site, where, path, set(), in_history)
        return
    if _marker(site) is not None:
        _walk({k: v for k, v in site.items() if isinstance(k, str) and k.startswith("@")}, where, path, _SITE, in_history)
    for k, v in site.items():
        if isinstance(k, str) and k.startswith("@"):
            continue
        if k == "species" and isinstance(v, list):
            for i, sp in enumerate(v):
                _walk(sp, where, f"{path}.species[{i}]", _SPECIES, in_history)
        elif k == "lattice":
            _walk(v, where, f"{path}.lattice", _LATTICE, in_history)
        else:
            _walk(v, where, f"{path}.{k}", set(), in_history)


def structure_from_json(obj: str | bytes | dict[str, Any], where: str, *, transformed: bool = False) -> Structure:
    """A ``Structure`` from pymatgen JSON text or its parsed dict; never imports anything it names.

    ``where`` (a file, a table cell) is put in every error message. With ``transformed=True`` a
    ``TransformedStructure`` dict is accepted too and its final structure returned (its history is
    checked but not decoded). Raises :class:`UnsafeStructureJSON` when the JSON names any
    ``@module``/``@class`` other than the plain pymatgen ones, :class:`NotAStructure` for other
    safe JSON, ``ValueError`` for text that is not JSON or a malformed structure dict.
    """
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            d = json.loads(obj)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON: {exc}") from None
    else:
        d = obj
    if not isinstance(d, dict):
        raise NotAStructure(f"{where}: JSON is a {type(d).__name__}, not a pymatgen Structure dict")
    root_ok = set(_STRUCTURE) | ({_TRANSFORMED} if transformed else set())
    mod, cls = d.get("@module"), d.get("@class")
    is_ts = transformed and cls == _TRANSFORMED[1] and mod in (None, _TRANSFORMED[0])
    rest = {k: v for k, v in d.items() if not (isinstance(k, str) and k in ("@module", "@class", "@version"))}
    if "@module" in d or "@class" in d:
        if not (cls in {c for _, c in root_ok} and (mod is None or (mod, cls) in root_ok)):
            if mod is not None and not (isinstance(mod, str) and mod.startswith("pymatgen.")):
                raise _refuse(where, "$", d)
            # another plain pymatgen object (a Molecule, a Composition): nothing was imported; still
            # walk it so that a nested marker is reported as unsafe rather than as "not a structure"
            _walk(rest, where, "$", set(), False, cls == _TRANSFORMED[1])
            raise NotAStructure(f"{where}: not a pymatgen Structure{' or TransformedStructure' if transformed else ''} (@class={cls!r})")
    if any(isinstance(k, str) and k.startswith("@") for k in rest):
        raise _refuse(where, "$", d)
    _walk(rest, where, "$", set(), False, is_ts)
    if "lattice" not in d or not isinstance(d.get("sites"), list):
        raise NotAStructure(f"{where}: not a pymatgen Structure dict (needs 'lattice' and 'sites')")

    # Build from a copy whose sites carry no properties, so PeriodicSite.from_dict never runs
    # MontyDecoder on them; the properties (checked above: plain JSON) go back afterwards.
    bare = {k: v for k, v in d.items() if k in ("lattice", "sites", "charge", "properties")}
    bare["sites"] = [{k: v for k, v in site.items() if k != "properties"} if isinstance(site, dict) else site
                     for site in d["sites"]]
    bare["properties"] = copy.deepcopy(d.get("properties")) if isinstance(d.get("properties"), dict) else None
    try:
        s = Structure.from_dict(bare)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{where}: malformed pymatgen Structure dict ({type(exc).__name__}: {exc})") from None
    for site, sd in zip(s, d["sites"], strict=True):
        props = sd.get("properties") if isinstance(sd, dict) else None
        if props:
            if not isinstance(props, dict):
                raise ValueError(f"{where}: site properties must be a JSON object, got {type(props).__name__}")
            site.properties = copy.deepcopy(props)
    return s
