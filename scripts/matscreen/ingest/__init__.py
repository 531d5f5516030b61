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

Family and site roles come from :func:`matscreen.ingest.recognize.recognize` (topology, confirmed by
StructureMatcher against the family prototype). Duplicates are found with pymatgen's
``StructureMatcher`` (element comparator, so oxidation-state decorations do not matter), among
structures of the same reduced formula, within the run and against ``existing``.

Whether PySCF can compute a structure is not ingest's business: label target selection decides.

The package along its seams:

* :mod:`~matscreen.ingest.settings`: :class:`IngestSettings` (the typed ``ingest:`` section);
* :mod:`~matscreen.ingest.readers`: bytes, text, CIF blocks / POSCAR / JSON into structures;
* :mod:`~matscreen.ingest.rows`: checks, ordered approximants, recognition, one file's rows;
* :mod:`~matscreen.ingest.recognize`: family and site roles of one structure (topology, bond
  valence, prototype match);
* :mod:`~matscreen.ingest.cache`: the per-file cache;
* :mod:`~matscreen.ingest.dedupe`: ``duplicate_of``;
* :mod:`~matscreen.ingest.stage`: input discovery, :func:`ingest`, :func:`run` (the rule's).
"""

from matscreen.ingest.cache import cache_key, read_file_cached
from matscreen.ingest.dedupe import mark_duplicates
from matscreen.ingest.readers import IngestTimeout, Reject, detect_format, split_cif_blocks
from matscreen.ingest.rows import disorder_summary, ordered_approximant, read_file
from matscreen.ingest.settings import DedupeSettings, IngestSettings, RecognitionSettings, resolve_settings
from matscreen.ingest.stage import check_every_file_accounted, expand_inputs, ingest, run, summary

__all__ = [
    "DedupeSettings",
    "IngestSettings",
    "IngestTimeout",
    "RecognitionSettings",
    "Reject",
    "cache_key",
    "check_every_file_accounted",
    "detect_format",
    "disorder_summary",
    "expand_inputs",
    "ingest",
    "mark_duplicates",
    "ordered_approximant",
    "read_file",
    "read_file_cached",
    "resolve_settings",
    "run",
    "split_cif_blocks",
    "summary",
]
