"""Reading one input file: bytes, text, and the structures pymatgen finds in it.

Everything here raises :class:`Reject` (reason code + message) for a problem of the file, never
anything else the caller has to know; :func:`time_limit` turns a parser that hangs into
:class:`IngestTimeout`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pymatgen.core import Structure
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp import Poscar

from matscreen.structjson import NotAStructure, UnsafeStructureJSON, structure_from_json

CIF_SUFFIXES = (".cif", ".mcif")
JSON_SUFFIXES = (".json",)
POSCAR_SUFFIXES = (".vasp", ".poscar")
POSCAR_NAMES = ("POSCAR", "CONTCAR")


class IngestTimeout(Exception):
    """A single file took longer than ``ingest.timeout_s``."""


@dataclass
class Reject(Exception):  # noqa: N818 (a reject, not an error of the program)
    """Raised inside the per-file code to turn a problem into a rejects row."""

    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# --- timeouts -----------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
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


def read_bytes(path: str, max_mb: float) -> bytes:
    try:
        st = os.stat(path)  # follows symlinks: a broken one fails here
    except FileNotFoundError:
        raise Reject("unreadable", "broken symbolic link" if os.path.islink(path) else "file vanished") from None
    except OSError as exc:
        raise Reject("unreadable", f"cannot stat: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (fifo, socket or device)"
        raise Reject("unreadable", kind)
    if st.st_size > max_mb * 1024 * 1024:
        raise Reject("too_big", f"{st.st_size / 1024 / 1024:.1f} MB > ingest.max_file_mb = {max_mb:g}")
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise Reject("unreadable", f"cannot read: {exc.strerror or exc}") from None


def decode(data: bytes) -> str:
    if not data.strip():
        raise Reject("empty", "file is empty" if not data else "file holds only whitespace")
    if b"\x00" in data:
        raise Reject("not_text", "binary content (NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("latin-1")  # old CIFs in Latin-1 (e.g. author names)
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            raise Reject("not_text", "not UTF-8 or Latin-1 text") from None
        controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
        if controls > max(5, len(text) // 100):
            raise Reject("not_text", f"binary content ({controls} control characters)") from None
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


def parse_cif_block(text: str, occupancy_tolerance: float) -> tuple[Structure, list[str]]:
    low = text.lower()
    if "_atom_site_fract_x" not in low and "_atom_site_cartn_x" not in low:
        raise Reject("no_structure", "the block has no atom sites (no _atom_site_fract_x or _atom_site_Cartn_x)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            parser = CifParser.from_str(text, occupancy_tolerance=occupancy_tolerance)
            structures = parser.parse_structures(primitive=False, check_occu=True, on_error="raise")
        except Reject:
            raise
        except ValueError as exc:
            msg = str(exc).strip().replace("\n", " ")
            if "exceeded tolerance" in msg:
                raise Reject("bad_occupancy", msg) from None
            if "no structures" in msg.lower():
                raise Reject("no_structure", msg) from None
            raise Reject("parse_error", msg) from None
        except (IngestTimeout, MemoryError):
            raise
        except Exception as exc:  # pymatgen raises many types on garbage (IndexError, KeyError, ...)
            raise Reject("parse_error", f"{type(exc).__name__}: {exc}") from None
    messages = [" ".join(str(w.message).split()) for w in caught]
    if any("Defaulting to P1" in m for m in messages):
        raise Reject(
            "symmetry_fallback",
            "pymatgen could not read the symmetry operations and would return only the asymmetric unit ('Defaulting to P1')",
        )
    if not structures:
        raise Reject("no_structure", "pymatgen returned no structure")
    return structures[0], [m for m in messages if not m.startswith("Possible issue in CIF file at line")]


def structures_from_json(text: str) -> list[tuple[str, Structure]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Reject("parse_error", f"not valid JSON: {exc}") from None
    items = obj if isinstance(obj, list) else [obj]
    out = []
    for i, d in enumerate(items):
        block = "" if not isinstance(obj, list) else str(i)
        try:
            s = structure_from_json(d, f"JSON item {i}", transformed=True)
        except UnsafeStructureJSON as exc:
            raise Reject("unsafe_json", str(exc)) from None
        except NotAStructure as exc:
            raise Reject("no_structure", f"{exc} (expected a pymatgen Structure or TransformedStructure)") from None
        except (IngestTimeout, MemoryError):
            raise
        except Exception as exc:
            raise Reject("parse_error", f"JSON item {i}: {type(exc).__name__}: {exc}") from None
        out.append((block, s))
    if not out:
        raise Reject("no_structure", "empty JSON list")
    return out


def structure_from_poscar(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Poscar.from_str(text, read_velocities=False).structure
        except (IngestTimeout, MemoryError):
            raise
        except Exception as exc:
            raise Reject("parse_error", f"{type(exc).__name__}: {exc}") from None


def parse(text: str, fmt: str, occupancy_tolerance: float) -> list[tuple[str, Structure | Reject, list[str]]]:
    """``(block, structure or Reject, notes)`` for every structure in a file of format ``fmt``.

    A CIF block that fails becomes a :class:`Reject` in its place, so the other blocks are kept;
    a JSON or POSCAR file that fails raises :class:`Reject` for the whole file.
    """
    parsed: list[tuple[str, Structure | Reject, list[str]]] = []
    if fmt == "cif":
        blocks = split_cif_blocks(text)
        if not blocks:
            raise Reject("no_structure", "no data_ block in the CIF")
        for name, block_text in blocks:
            try:
                s, msgs = parse_cif_block(block_text, occupancy_tolerance)
                parsed.append((name, s, [f"pymatgen: {m}" for m in msgs]))
            except Reject as exc:
                parsed.append((name, exc, []))
    elif fmt == "json":
        parsed = [(b, s, []) for b, s in structures_from_json(text)]
    else:
        parsed = [("", structure_from_poscar(text), [])]
    return parsed
