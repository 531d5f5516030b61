"""Config checks of the ``label:`` section that a JSON schema cannot express.

Plain functions: :func:`check_label_config` takes the whole (schema-validated) config and raises
:class:`~matscreen.config.ConfigError` naming the key; ``matscreen.config`` calls it from its list of
semantic checks. Importing this module registers nothing and imports neither PySCF nor pymatgen.

The PySCF name checks (``label.xc``, ``label.basis``, ``label.pseudo``) need PySCF itself. The
Snakemake controller must not import it (it would pay PySCF's import and memory for a name
lookup), so where PySCF is not loaded yet they run in a short child process
(:func:`pyscf_name_errors`); the ``select_label_targets`` checkpoint checks them again in-process
(:func:`check_pyscf_names`) before any label job.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

#: A basis or pseudopotential family covers at least one of these.
_PROBE = ("O", "H", "Si", "Ti", "Fe", "Ba", "La")


def check_label_config(config: dict[str, Any]) -> None:
    """Element symbols, the reference-phase file and the PySCF names of the ``label:`` section."""
    from matscreen.config import ConfigError  # here: matscreen.config may import this module

    sec = config.get("label") or {}
    for el in (sec.get("spin") or {}).get("magnetic_moments") or {}:
        if not _is_element(el):
            raise ConfigError(f"config key 'label.spin.magnetic_moments': unknown element {el!r}")
    for el in sec.get("init_guess_by_element") or {}:
        if not _is_element(el):
            raise ConfigError(f"config key 'label.init_guess_by_element': unknown element {el!r}")
    for i, el in enumerate((sec.get("select") or {}).get("elements") or []):
        if not _is_element(el):
            raise ConfigError(f"config key 'label.select.elements[{i}]': unknown element {el!r}")
    ref_file = (sec.get("references") or {}).get("file")
    if ref_file:
        from matscreen.label.refs import load_reference_table

        load_reference_table(ref_file)  # raises ConfigError naming 'label.references.file'
    errors = _name_errors(sec.get("xc"), sec.get("basis"), sec.get("pseudo"))
    if errors:
        raise ConfigError(errors[0])


def check_pyscf_names(settings: Any) -> None:
    """``label.xc``, ``label.basis`` and ``label.pseudo`` of a LabelSettings, checked in this process."""
    from matscreen.config import ConfigError

    errors = pyscf_name_errors(settings.xc, settings.basis, settings.pseudo)
    if errors:
        raise ConfigError(errors[0])


def _name_errors(xc: str | None, basis: str | None, pseudo: str | None) -> list[str]:
    if "pyscf" in sys.modules:
        return pyscf_name_errors(xc, basis, pseudo)
    return _name_errors_in_child(xc, basis, pseudo)


@lru_cache(maxsize=16)
def _name_errors_in_child(xc: str | None, basis: str | None, pseudo: str | None) -> list[str]:
    """:func:`pyscf_name_errors` in a child process, so this one never loads PySCF. Where PySCF is
    not installed (a controller whose label jobs run in their own environment) nothing is checked
    here: the checkpoint checks."""
    if find_spec("pyscf") is None:
        return []
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from matscreen.label.checks import pyscf_name_errors; "
        "print(json.dumps(pyscf_name_errors(*json.loads(sys.argv[2]))))"
    )
    scripts = str(Path(__file__).resolve().parents[2])
    res = subprocess.run(
        [sys.executable, "-c", code, scripts, json.dumps([xc, basis, pseudo])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if res.returncode != 0:
        from matscreen.config import ConfigError

        raise ConfigError(
            f"config key 'label': could not check the PySCF names ({res.stderr.strip().splitlines()[-1:]})"
        )
    return list(json.loads(res.stdout.strip().splitlines()[-1]))


def pyscf_name_errors(xc: str | None, basis: str | None, pseudo: str | None) -> list[str]:
    """Messages for names PySCF/libxc does not know (empty: all known). Only name lookups, nothing
    is computed: otherwise every label fails hours later without naming the key."""
    import warnings

    out = []
    if xc is not None:
        from pyscf.dft import libxc

        try:
            libxc.parse_xc(xc)
        except Exception as exc:  # KeyError for unknown names, ValueError for bad syntax
            out.append(
                f"config key 'label.xc': PySCF/libxc does not know the functional {xc!r} ({type(exc).__name__}: {exc})"
            )
    for key, name in (("basis", basis), ("pseudo", pseudo)):
        if name is None:
            continue
        if key == "basis":
            from pyscf.gto.basis import load as load_one
        else:
            from pyscf.pbc.gto.pseudo import load as load_one
        found = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PySCF suggests installing basis-set-exchange on a miss
            for el in _PROBE:
                try:
                    found = bool(load_one(name, el))
                except Exception:  # BasisNotFoundError and friends: try the next element
                    continue
                if found:
                    break
        if not found:
            out.append(
                f"config key 'label.{key}': PySCF knows no {key} {name!r} "
                f"(tried {', '.join(_PROBE)}; see pyscf/gto/basis for the names)"
            )
    return out


def _is_element(symbol: str) -> bool:
    from pymatgen.core import Element

    try:
        Element(symbol)
    except ValueError:
        return False
    return True
