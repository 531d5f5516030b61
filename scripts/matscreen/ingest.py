"""Stage 1: read real structure files into a clean, de-duplicated, classified table.

Every input file ends up in exactly one place: one ``structures`` row per parsed structure
(CIF data block, POSCAR, JSON), possibly marked ``duplicate_of`` an earlier entry, or one
``rejects`` row per file or block with a short ``reason`` code and the message. Nothing a
file contains may stop the run: every failure while reading one file becomes a reject
(``internal_error`` if it is not one we know), and a per-file alarm turns parser hangs into
``timeout`` rejects.

Reject reasons: ``not_found`` (older tables only: an input path or glob that matches nothing is now a config error naming ``ingest.inputs``), ``unreadable`` (broken
symlink, not a regular file, permission denied), ``too_big``, ``empty``, ``not_text`` (binary
content), ``unknown_format`` (extension not CIF/POSCAR/JSON), ``parse_error``, ``no_structure``,
``symmetry_fallback`` (pymatgen could not use the CIF's symmetry and silently returned the
asymmetric unit), ``bad_occupancy`` (site occupancy above 1 or not positive), ``overlapping_sites``,
``too_large``, ``disordered`` (partial occupancy, with ``ingest.disordered: reject``),
``not_charge_balanced``, ``unsafe_json`` (a pymatgen JSON that names a Python module to import,
see :mod:`matscreen.structjson`), ``timeout`` and ``internal_error``.

Family and site roles come from :func:`matscreen.recognize.recognize` (topology, confirmed by
StructureMatcher against the family prototype). Duplicates are found with pymatgen's
``StructureMatcher`` (element comparator, so oxidation-state decorations do not matter), among
structures of the same reduced formula, within the run and against ``existing``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import hashlib
import json
import logging
import os
import re
import signal
import stat
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pymatgen.analysis.structure_matcher import ElementComparator, StructureMatcher
from pymatgen.core import Composition, Species, Structure
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp import Poscar
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from matscreen import tables
from matscreen.atomic import write_text
from matscreen.chemistry import shannon_radius
from matscreen.config import ConfigError
from matscreen.families import OTHER, SITE_LABELS, get_family, parse_occupancy
from matscreen.ids import structure_id
from matscreen.provenance import provenance, stable_hash
from matscreen.recognize import Recognition, recognize
from matscreen.structjson import NotAStructure, UnsafeStructureJSON, structure_from_json

log = logging.getLogger(__name__)

CIF_SUFFIXES = (".cif", ".mcif")
JSON_SUFFIXES = (".json",)
POSCAR_SUFFIXES = (".vasp", ".poscar")
POSCAR_NAMES = ("POSCAR", "CONTCAR")


class IngestTimeout(Exception):
    """A single file took longer than ``ingest.timeout_s``."""


@dataclass
class _Reject(Exception):
    """Raised inside the per-file code to turn a problem into a rejects row."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# --- settings -----------------------------------------------------------------------


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The ``ingest:`` section with the schema's defaults filled in; ConfigError names a bad key."""
    from matscreen.config import resolve_section

    return resolve_section("ingest", settings)


# --- input discovery ----------------------------------------------------------------


def expand_inputs(paths: list[str], ignore: list[str] | tuple[str, ...] = ()) -> tuple[list[str], list[tuple[str, str]]]:
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


# --- timeouts -----------------------------------------------------------------------


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`IngestTimeout` after ``seconds`` (SIGALRM; only in the main thread, else no limit)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise IngestTimeout(f"reading took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- reading ------------------------------------------------------------------------


def detect_format(path: str) -> str | None:
    """``cif``, ``json``, ``poscar`` from the file name, or None."""
    name = os.path.basename(path)
    low = name.lower()
    if low.endswith(CIF_SUFFIXES):
        return "cif"
    if low.endswith(JSON_SUFFIXES):
        return "json"
    if low.endswith(POSCAR_SUFFIXES) or any(name.startswith(p) for p in POSCAR_NAMES):
        return "poscar"
    return None


def _read_bytes(path: str, max_mb: float) -> bytes:
    try:
        st = os.stat(path)  # follows symlinks: a broken one fails here
    except FileNotFoundError:
        raise _Reject("unreadable", "broken symbolic link" if os.path.islink(path) else "file vanished") from None
    except OSError as exc:
        raise _Reject("unreadable", f"cannot stat: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (fifo, socket or device)"
        raise _Reject("unreadable", kind)
    if st.st_size > max_mb * 1024 * 1024:
        raise _Reject("too_big", f"{st.st_size / 1024 / 1024:.1f} MB > ingest.max_file_mb = {max_mb:g}")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise _Reject("unreadable", f"cannot read: {exc.strerror or exc}") from None


def _decode(data: bytes) -> str:
    if not data.strip():
        raise _Reject("empty", "file is empty" if not data else "file holds only whitespace")
    if b"\x00" in data:
        raise _Reject("not_text", "binary content (NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("latin-1")  # old CIFs in Latin-1 (e.g. author names)
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise _Reject("not_text", "not UTF-8 or Latin-1 text") from None
        controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
        if controls > max(5, len(text) // 100):
            raise _Reject("not_text", f"binary content ({controls} control characters)") from None
        return text


_DATA_RE = re.compile(r"^data_(\S*)", re.IGNORECASE)


def split_cif_blocks(text: str) -> list[tuple[str, str]]:
    """``(block name, block text)`` for every ``data_`` block; lines inside ``;`` text fields are skipped.

    Done here rather than via ``CifFile.data`` because that is a dict: two blocks with the same
    name (``data_global`` in every AMCSD file, so any concatenation of them) would silently
    collapse into one. Repeated names get ``#2``, ``#3`` appended.
    """
    blocks: list[tuple[str, list[str]]] = []
    in_text = False
    for line in text.splitlines():
        if line.startswith(";"):
            in_text = not in_text
        elif not in_text and (m := _DATA_RE.match(line.strip())):
            blocks.append((m.group(1), []))
        if blocks:
            blocks[-1][1].append(line)
    counts: Counter[str] = Counter()
    out = []
    for name, lines in blocks:
        counts[name] += 1
        out.append((name if counts[name] == 1 else f"{name}#{counts[name]}", "\n".join(lines) + "\n"))
    return out


def _parse_cif_block(text: str, occupancy_tolerance: float) -> tuple[Structure, list[str]]:
    low = text.lower()
    if "_atom_site_fract_x" not in low and "_atom_site_cartn_x" not in low:
        raise _Reject("no_structure", "the block has no atom sites (no _atom_site_fract_x or _atom_site_Cartn_x)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text, occupancy_tolerance=occupancy_tolerance)
            structures = parser.parse_structures(primitive=False, check_occu=True, on_error="raise")
        except _Reject:
            raise
        except ValueError as exc:
            msg = str(exc).strip().replace("\n", " ")
            if "exceeded tolerance" in msg:
                raise _Reject("bad_occupancy", msg) from None
            if "no structures" in msg.lower():
                raise _Reject("no_structure", msg) from None
            raise _Reject("parse_error", msg) from None
        except (IngestTimeout, MemoryError):
            raise
        except Exception as exc:  # pymatgen raises many types on garbage (IndexError, KeyError, ...)
            raise _Reject("parse_error", f"{type(exc).__name__}: {exc}") from None
    messages = [" ".join(str(w.message).split()) for w in caught]
    if any("Defaulting to P1" in m for m in messages):
        raise _Reject("symmetry_fallback", "pymatgen could not read the symmetry operations and would return only the asymmetric unit ('Defaulting to P1')")
    if not structures:
        raise _Reject("no_structure", "pymatgen returned no structure")
    return structures[0], [m for m in messages if not m.startswith("Possible issue in CIF file at line")]


def _structures_from_json(text: str) -> list[tuple[str, Structure]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Reject("parse_error", f"not valid JSON: {exc}") from None
    items = obj if isinstance(obj, list) else [obj]
    out = []
    for i, d in enumerate(items):
        block = "" if not isinstance(obj, list) else str(i)
        try:
            s = structure_from_json(d, f"JSON item {i}", transformed=True)
        except UnsafeStructureJSON as exc:
            raise _Reject("unsafe_json", str(exc)) from None
        except NotAStructure as exc:
            raise _Reject("no_structure", f"{exc} (expected a pymatgen Structure or TransformedStructure)") from None
        except (IngestTimeout, MemoryError):
            raise
        except Exception as exc:
            raise _Reject("parse_error", f"JSON item {i}: {type(exc).__name__}: {exc}") from None
        out.append((block, s))
    if not out:
        raise _Reject("no_structure", "empty JSON list")
    return out


def _structure_from_poscar(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Poscar.from_str(text, read_velocities=False).structure
        except (IngestTimeout, MemoryError):
            raise
        except Exception as exc:
            raise _Reject("parse_error", f"{type(exc).__name__}: {exc}") from None


# --- checks and transformations ----------------------------------------------------


def _check_structure(s: Structure, settings: dict[str, Any]) -> None:
    if len(s) == 0:
        raise _Reject("no_structure", "structure has no sites")
    if len(s) > settings["max_sites"]:
        raise _Reject("too_large", f"{len(s)} sites > ingest.max_sites = {settings['max_sites']}")
    if s.volume <= 1e-6 or not np.isfinite(s.lattice.matrix).all():
        raise _Reject("parse_error", f"degenerate lattice (volume {s.volume:g} Å^3)")
    for i, site in enumerate(s):
        occ = site.species.num_atoms
        if any(v <= 0 for v in site.species.values()) or occ > 1 + 1e-6:
            raise _Reject("bad_occupancy", f"site {i} ({site.species_string}) has total occupancy {occ:g}")
    dmin = settings["min_distance_ang"]
    if len(s) > 1 or dmin > 0:
        centers, points, _, d = s.get_neighbor_list(dmin, exclude_self=True)
        if len(d):
            j = int(np.argmin(d))
            raise _Reject(
                "overlapping_sites",
                f"sites {int(centers[j])} and {int(points[j])} are {float(d[j]):.3f} Å apart (< ingest.min_distance_ang = {dmin:g})",
            )


def disorder_summary(s: Structure) -> str:
    """Which sites are partial or mixed, e.g. ``'16 mixed sites (Mg0.85Al0.15 ...); 4 partial sites (O:0.25)'``."""
    mixed = Counter(site.species_string for site in s if len(site.species) > 1)
    partial = Counter(site.species_string for site in s if site.species.num_atoms < 1 - 1e-6)
    parts = []
    if mixed:
        parts.append(f"{sum(mixed.values())} mixed sites ({', '.join(sorted(mixed))})")
    if partial:
        parts.append(f"{sum(partial.values())} partially occupied sites ({', '.join(sorted(partial))})")
    return "; ".join(parts)


def ordered_approximant(s: Structure) -> tuple[Structure, str]:
    """The single ordered configuration of highest weight: each site takes its majority species.

    A site whose vacancy fraction exceeds every species' occupancy is removed. Cheap and
    deterministic (``OrderDisorderedStructureTransformation`` enumerates orderings and ranks them
    by Ewald energy, which needs oxidation states and takes minutes on 56-site cells). The note
    says what was done, so the row can be told apart from an ordered input.
    """
    species: list[Any] = []
    coords = []
    changed = removed = 0
    for site in s:
        occ = dict(site.species.items())
        vacancy = 1.0 - sum(occ.values())
        best, frac = max(occ.items(), key=lambda kv: (kv[1], str(kv[0])))
        if vacancy > frac + 1e-9:
            removed += 1
            continue
        if len(occ) > 1 or frac < 1 - 1e-6:
            changed += 1
        species.append(best)
        coords.append(site.frac_coords)
    out = Structure(s.lattice, species, coords)
    note = f"ordered approximant (majority species per site): {changed} sites set to their majority species, {removed} sites removed (mostly vacant); original: {disorder_summary(s)}"
    return out, note


def _charge_balanced_other(s: Structure) -> bool:
    """Charge balance of a structure of no family: given oxidation states, else pymatgen's guesses."""
    if all(isinstance(sp, Species) and sp.oxi_state is not None for sp in s.composition):
        return abs(sum(float(sp.oxi_state) * amt for sp, amt in s.composition.items())) < 1e-3
    comp = Composition(s.composition.reduced_formula)
    if len(comp.elements) == 1:
        return True  # elemental solids are neutral
    try:
        return bool(comp.oxi_state_guesses(max_sites=-1))
    except Exception as exc:  # pymatgen has no data for some elements: cannot tell, so do not reject
        log.debug("oxi_state_guesses failed for %s: %s", comp.reduced_formula, exc)
        return True


def _site_columns(rec: Recognition) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    fam = get_family(rec.family) if rec.family != OTHER else None
    for label in SITE_LABELS:
        occ = rec.occupancy.get(label)
        if fam is None or occ is None:
            cols.update({f"{label}_species": None, f"{label}_oxi": None, f"{label}_radius_ang": None})
            continue
        ions = parse_occupancy(occ)
        cn = fam.site(label).cn
        radii = [shannon_radius(i.element, i.oxidation, cn) for i in ions]
        cols[f"{label}_species"] = occ
        cols[f"{label}_oxi"] = float(sum(i.oxidation * i.fraction for i in ions))
        cols[f"{label}_radius_ang"] = None if any(r is None for r in radii) else float(sum(r * i.fraction for r, i in zip(radii, ions, strict=True)))  # type: ignore[operator]
    return cols


def _label_support(elements: list[str], label_settings: dict[str, Any] | None) -> tuple[bool | None, str | None]:
    if label_settings is None:
        return None, None
    from matscreen.label import unsupported_elements  # lazy: label imports PySCF

    bad = unsupported_elements(elements, label_settings)
    return (not bad), (" ".join(bad) if bad else None)


def _spacegroup(s: Structure, settings: dict[str, Any]) -> int | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # spglib's OLD_ERROR_HANDLING notice
            return int(SpacegroupAnalyzer(s, symprec=settings["symprec"], angle_tolerance=settings["angle_tolerance"]).get_space_group_number())
    except Exception as exc:  # spglib fails on some odd cells; the row is still useful
        log.debug("spglib failed: %s", exc)
        return None


def _recognize(s: Structure, settings: dict[str, Any], confirm: bool | None = None) -> Recognition:
    """:func:`recognize` with the config's options; a crash in it gives ``other`` with the reason."""
    cfg = settings["recognition"]
    try:
        return recognize(
            s,
            search_radius=cfg["search_radius_ang"],
            confirm_with_matcher=cfg["confirm_with_matcher"] if confirm is None else confirm,
            matcher_tolerances={k: cfg[k] for k in ("ltol", "stol", "angle_tol")},
        )
    except (IngestTimeout, MemoryError):
        raise
    except Exception as exc:  # keep the structure; only its family is unknown
        log.warning("recognition failed (%s: %s); family set to 'other'", type(exc).__name__, exc)
        return Recognition(OTHER, reason=f"recognition failed: {type(exc).__name__}: {exc}")


def _disordered_roles(original: Structure, settings: dict[str, Any]) -> list[str]:
    """Site occupancy of the disordered original (mixed but full sites only), for the note.

    The ordered approximant loses e.g. the 15 % inversion of a MgAl2O4 file; this keeps it on record.
    """
    rec = _recognize(original, settings, confirm=False)
    if rec.family == OTHER:
        return []
    occ = ", ".join(f"{k}={v}" for k, v in rec.occupancy.items())
    inv = f", inversion {rec.inversion:g}" if rec.inversion is not None else ""
    return [f"original {rec.family} site occupancy: {occ}{inv}"]


def _structure_row(s: Structure, source: str, block: str, sha: str, settings: dict[str, Any], label_settings: dict[str, Any] | None, notes: list[str]) -> dict[str, Any]:
    """Check, classify and describe one parsed structure; raises :class:`_Reject`."""
    _check_structure(s, settings)
    if not s.is_ordered:
        if settings["disordered"] == "reject":
            raise _Reject("disordered", f"partial occupancy: {disorder_summary(s)} (ingest.disordered = reject)")
        original = s
        s, note = ordered_approximant(s)
        notes = [*notes, note, *_disordered_roles(original, settings)]
        _check_structure(s, settings)
    rec = _recognize(s, settings)
    if settings["require_charge_balance"]:
        balanced = rec.charge_balanced if rec.family != OTHER else _charge_balanced_other(s)
        if not balanced:
            raise _Reject("not_charge_balanced", f"{s.composition.reduced_formula}: no charge-balanced oxidation states ({rec.family}: {rec.reason})")
    elements = sorted({el.symbol for el in s.composition.elements})
    supported, unsupported = _label_support(elements, label_settings)
    roles = rec.site_roles()
    if rec.family != OTHER:
        roles["reason"] = rec.reason
    row = {
        "structure_id": structure_id(s),
        "source": source,
        "block": block,
        "source_sha256": sha,
        "family": rec.family,
        "formula": s.composition.formula,
        "reduced_formula": s.composition.reduced_formula,
        "nsites": len(s),
        "spacegroup_number": _spacegroup(s, settings),
        "site_roles": json.dumps(roles, sort_keys=True) if roles else None,
        "inversion": rec.inversion,
        "duplicate_of": None,
        "label_supported": supported,
        "unsupported_elements": unsupported,
        "note": "; ".join([*notes, *([] if rec.family != OTHER else [f"family: {rec.reason}"])]) or None,
        **_site_columns(rec),
        "structure": json.dumps(s.as_dict()),
    }
    return row


def read_file(path: str, settings: dict[str, Any], label_settings: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Structures rows and rejects rows of one input file. Never raises for anything in the file."""
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []

    def reject(block: str, reason: str, detail: str) -> None:
        rejects.append({"source": path, "block": block, "reason": reason, "detail": detail})

    try:
        with _time_limit(settings["timeout_s"]):
            fmt = detect_format(path)
            data = _read_bytes(path, settings["max_file_mb"])
            sha = hashlib.sha256(data).hexdigest()
            if fmt is None:
                raise _Reject("unknown_format", f"file name {os.path.basename(path)!r} is not CIF (*.cif, *.mcif), POSCAR (POSCAR*, CONTCAR*, *.vasp, *.poscar) or pymatgen JSON (*.json)")
            text = _decode(data)
            parsed: list[tuple[str, Structure | _Reject, list[str]]] = []
            if fmt == "cif":
                blocks = split_cif_blocks(text)
                if not blocks:
                    raise _Reject("no_structure", "no data_ block in the CIF")
                for name, block_text in blocks:
                    try:
                        s, msgs = _parse_cif_block(block_text, settings["occupancy_tolerance"])
                        parsed.append((name, s, [f"pymatgen: {m}" for m in msgs]))
                    except _Reject as exc:
                        parsed.append((name, exc, []))
            elif fmt == "json":
                parsed = [(b, s, []) for b, s in _structures_from_json(text)]
            else:
                parsed = [("", _structure_from_poscar(text), [])]
            for block, item, notes in parsed:
                if isinstance(item, _Reject):
                    reject(block, item.reason, item.detail)
                    continue
                try:
                    rows.append(_structure_row(item, path, block, sha, settings, label_settings, notes))
                except _Reject as exc:
                    reject(block, exc.reason, exc.detail)
    except _Reject as exc:
        rows.clear()
        reject("", exc.reason, exc.detail)
    except IngestTimeout as exc:
        rows.clear()
        rejects.clear()
        reject("", "timeout", f"{exc} (ingest.timeout_s)")
    except MemoryError:
        rows.clear()
        rejects.clear()
        reject("", "internal_error", "out of memory while reading")
    except Exception as exc:  # the guarantee: a bad file never stops the run
        log.warning("%s: unexpected %s while reading (recorded as a reject): %s", path, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        rows.clear()
        rejects.clear()
        reject("", "internal_error", f"{type(exc).__name__}: {exc}")
    return rows, rejects


# --- per-file cache (nightly refresh) ---------------------------------------------------

#: Bump when the layout of a cache entry changes.
CACHE_FORMAT = 1

#: Settings that do not change what one file yields (they act across files or only choose files).
_CACHE_IGNORED_KEYS = ("inputs", "existing", "ignore", "dedupe", "cache")

#: Reject reasons that depend on the file's name, the clock or this machine rather than on its
#: content: never cached, so the next run tries again.
_UNCACHED_REASONS = ("not_found", "unreadable", "too_big", "unknown_format", "timeout", "internal_error")

#: Modules whose code decides the rows of one file; their source goes into the cache key, so an
#: edit to the reader or the recogniser invalidates every cached entry.
_CODE_MODULES = ("ingest", "recognize", "families", "chemistry", "ids", "prototypes", "tables")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _CODE_MODULES:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()[:16]


def cache_key(settings: dict[str, Any], label_settings: dict[str, Any] | None = None) -> str:
    """Hash of everything that decides what a file of given content yields.

    The resolved ``ingest:`` settings without the keys that act across files
    (:data:`_CACHE_IGNORED_KEYS`), the label basis/pseudopotential (they decide
    ``label_supported``), the source of the ingest code and the pymatgen version.
    """
    from importlib import metadata

    cfg = resolve_settings(settings)
    label = None
    if label_settings is not None:
        label = {k: label_settings.get(k, "<default>") for k in ("basis", "pseudo")}
    return stable_hash({
        "format": CACHE_FORMAT,
        "settings": {k: v for k, v in cfg.items() if k not in _CACHE_IGNORED_KEYS},
        "label": label,
        "code": _code_digest(),
        "pymatgen": metadata.version("pymatgen"),
    })


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _cache_entry(cache_dir: str | os.PathLike[str], key: str, sha: str, fmt: str) -> Path:
    return Path(cache_dir) / key / sha[:2] / f"{sha}.{fmt}.json"


def read_file_cached(
    path: str, settings: dict[str, Any], label_settings: dict[str, Any] | None, cache_dir: str | os.PathLike[str] | None,
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
        rows, rejects = read_file(path, settings, label_settings)
        return rows, rejects, False
    try:
        data = _read_bytes(path, settings["max_file_mb"])
    except _Reject:  # unreadable or too big: read_file records the reason, nothing to cache
        rows, rejects = read_file(path, settings, label_settings)
        return rows, rejects, False
    sha = hashlib.sha256(data).hexdigest()
    entry = _cache_entry(cache_dir, key or cache_key(settings, label_settings), sha, fmt)
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
    rows, rejects = read_file(path, settings, label_settings)
    if any(r["reason"] in _UNCACHED_REASONS for r in rejects):
        return rows, rejects, False
    write_text(entry, json.dumps({"rows": rows, "rejects": rejects}, default=_json_default))
    return rows, rejects, False


# --- de-duplication -----------------------------------------------------------------


def _matcher(settings: dict[str, Any]) -> StructureMatcher:
    d = settings["dedupe"]
    return StructureMatcher(ltol=d["ltol"], stol=d["stol"], angle_tol=d["angle_tol"], primitive_cell=True, scale=d["scale"], comparator=ElementComparator())


def _bucket(formula: str, spacegroup: Any, same_sg: bool) -> tuple[str, int | None]:
    if not same_sg or spacegroup is None or pd.isna(spacegroup):
        return (formula, None)
    return (formula, int(spacegroup))


def mark_duplicates(structures: pd.DataFrame, settings: dict[str, Any], existing: pd.DataFrame | None = None) -> pd.DataFrame:
    """Set ``duplicate_of`` to the ``structure_id`` of the first earlier match (existing first, then input order).

    Only structures with the same reduced formula (and, with ``dedupe.same_spacegroup``, the same
    space group: BaTiO3 P4mm and Amm2 match at the default tolerances but are different
    polymorphs) are compared, and only against originals
    (rows that are not duplicates themselves), so chains point at the first occurrence.
    """
    out = structures.copy()
    if not settings["dedupe"]["enabled"] or out.empty:
        return out
    matcher = _matcher(settings)
    same_sg = settings["dedupe"]["same_spacegroup"]
    originals: dict[tuple[str, int | None], list[tuple[str, Structure]]] = {}
    if existing is not None and len(existing):
        keep = existing[existing["duplicate_of"].isna()] if "duplicate_of" in existing else existing
        for sid, formula, sg, js in zip(keep["structure_id"], keep["reduced_formula"], keep["spacegroup_number"], keep["structure"], strict=True):
            try:
                originals.setdefault(_bucket(formula, sg, same_sg), []).append((sid, structure_from_json(js, f"existing structures table, structure {sid}")))
            except UnsafeStructureJSON:
                raise
            except Exception as exc:
                log.warning("existing structure %s could not be read back (%s); not used for de-duplication", sid, exc)
    dup_of: list[str | None] = []
    for sid, formula, sg, js in zip(out["structure_id"], out["reduced_formula"], out["spacegroup_number"], out["structure"], strict=True):
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


# --- public entry points ------------------------------------------------------------


def ingest(
    paths: list[str],
    settings: dict,
    label_settings: dict | None = None,
    existing: pd.DataFrame | None = None,
    cache: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every file under ``paths``; return ``(structures, rejects)`` conforming to the contracts.

    ``settings`` is the ``ingest:`` config section (missing keys take the schema defaults);
    ``label_settings`` the ``label:`` section, used only to flag elements PySCF cannot compute
    (``label_supported`` is null without it); ``existing`` an earlier structures table whose
    entries new structures are checked against (``duplicate_of``); ``cache`` a folder of
    per-file results (:func:`read_file_cached`), so that a rerun reads only new or changed
    files. De-duplication always runs over all files, cached or not.
    """
    cfg = resolve_settings(settings)
    files, missing = expand_inputs(list(paths), cfg["ignore"])
    if missing:  # a typo in a path must not look like a run over fewer files
        raise ConfigError("config key 'ingest.inputs': " + "; ".join(f"{p}: {d}" for p, d in missing))
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    key = cache_key(cfg, label_settings) if cache is not None else None
    hits = 0
    for i, path in enumerate(files, 1):
        r, j, hit = read_file_cached(path, cfg, label_settings, cache, key)
        hits += hit
        rows += r
        rejects += j
        if i % 100 == 0:
            log.info("ingest: %d/%d files read", i, len(files))
    if cache is not None:
        log.info("ingest cache %s: %d of %d files from the cache, %d read", cache, hits, len(files), len(files) - hits)
    structures = tables.conform(pd.DataFrame(rows), tables.STRUCTURES) if rows else tables.empty_frame(tables.STRUCTURES)
    structures = mark_duplicates(structures, cfg, existing)
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
        raise RuntimeError(f"ingest: {len(lost)} input file(s) ended in neither structures nor rejects "
                           f"(first: {lost[0]}); please report this as a bug")


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
    settings: dict,
    label_settings: dict | None = None,
    existing_path: str | None = None,
    config_hash: str = "",
) -> None:
    """Ingest ``inputs`` and write both tables with provenance; logs the summary line.

    ``existing_path`` names an earlier structures.parquet (nightly refresh); a missing file is
    treated as no earlier run. ``settings["cache"]`` (``ingest.cache``) is the per-file cache
    folder, null for none.
    """
    cfg = resolve_settings(settings)
    existing = None
    if existing_path and Path(existing_path).exists():
        existing = tables.read_table(existing_path, tables.STRUCTURES)
        log.info("ingest: de-duplicating against %d structures in %s", len(existing), existing_path)
    elif existing_path:
        log.info("ingest: %s does not exist yet; nothing to de-duplicate against", existing_path)
    structures, rejects = ingest(inputs, cfg, label_settings, existing, cfg["cache"])
    prov = provenance("ingest", cfg, config_hash)
    tables.write_tables([(structures, structures_path, tables.STRUCTURES), (rejects, rejects_path, tables.REJECTS)],
                        prov)  # both checked before either is written
    n_files = len({*structures["source"], *rejects["source"]})
    log.info(summary(n_files, structures, rejects))
