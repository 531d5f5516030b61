"""Lazy re-exports for the stage packages (``label``, ``train``, ``enumerate``, ``featurize``).

A package's ``__init__`` names its public API and the submodule each name lives in; a name is
imported from its submodule the first time it is asked for (PEP 562 module ``__getattr__``). So
``from matscreen import train; train.run(...)`` works as if the package were one module, while
``import matscreen.train`` (or one of its light submodules, as the Snakemake controller's config
check does) imports no LightGBM, PySCF or matminer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str,
    exports: Mapping[str, Iterable[str]],
    submodules: Iterable[str],
    aliases: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` of ``package``: ``exports`` maps a submodule to the names it
    provides; ``submodules`` may be asked for as attributes; ``aliases`` maps an old name to
    ``(submodule, name)``."""
    where = {name: mod for mod, names in exports.items() for name in names}
    subs = frozenset(submodules)
    old = dict(aliases or {})

    def __getattr__(name: str) -> Any:  # noqa: N807 (the module-level hook of PEP 562)
        if name in where:
            mod, attr = where[name], name
        elif name in old:
            mod, attr = old[name]
        elif name in subs:
            return importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{mod}"), attr)

    return __getattr__, sorted(where)
