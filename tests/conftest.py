"""Shared fixtures.

``replay_scf`` replays recorded PySCF results (as atomate2's tests replay VASP runs): tests of
the label stage's plumbing (store, ladder bookkeeping, gather, hull, checkpoint) get real numbers
without running PySCF. The recordings are in ``tests/data/replay/scf.json``, made by
``tests/data/replay/record.py`` from real ``run_scf`` calls; tests that check physics stay real
(and slow where they take long).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPLAY = Path(__file__).parent / "data" / "replay" / "scf.json"


class NotRecorded(KeyError):
    """A cell the recording does not hold: record it (tests/data/replay/record.py) or run PySCF."""


@dataclass
class ReplaySCF:
    """What ``replay_scf`` yields: the recordings and the cells ``run_scf`` was asked for."""

    recorded: dict[str, dict[str, Any]]
    calls: list[str] = field(default_factory=list)  #: replay keys, in call order

    def key(self, structure: Any, kmesh: Any) -> str:
        from matscreen.ids import structure_id
        from matscreen.label.cell import kmesh_str

        return f"{structure_id(structure)}|{kmesh_str(kmesh)}|{structure.volume:.3f}"

    def run_scf(
        self,
        structure: Any,
        settings: Any,
        *,
        kmesh: Any = None,
        spin: Any = None,
        unrestricted: Any = None,
        dm0: Any = None,
        checkpoint: Any = None,
    ) -> Any:
        from matscreen.label.cell import kmesh_for
        from matscreen.label.pyscf import SCFResult

        kmesh = list(kmesh) if kmesh is not None else kmesh_for(structure, settings)
        key = self.key(structure, kmesh)
        self.calls.append(key)
        if key not in self.recorded:
            raise NotRecorded(
                f"no recorded SCF for {structure.composition.reduced_formula} ({key}); "
                f"recorded: {sorted(self.recorded)}"
            )
        rec = {k: v for k, v in self.recorded[key].items() if k not in ("formula", "settings")}
        return SCFResult(**rec)


@pytest.fixture
def replay_scf(monkeypatch: pytest.MonkeyPatch) -> ReplaySCF:
    """``run_scf`` (every place the label stage calls it) replaced by the recorded results."""
    from matscreen.label import eos
    from matscreen.label import pyscf as engine

    replay = ReplaySCF(json.loads(REPLAY.read_text()))
    monkeypatch.setattr(engine, "run_scf", replay.run_scf)
    monkeypatch.setattr(eos, "run_scf", replay.run_scf)
    return replay
