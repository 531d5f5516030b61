"""Tests of the label stage (PySCF periodic DFT). Real PySCF runs are marked slow."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

from matscreen import label
from matscreen.config import ConfigError


def test_unsupported_elements_default_settings() -> None:
    # gth-szv-molopt-sr has no lanthanides; Sr, Ti, O are covered; 'Xx' is no element
    assert label.unsupported_elements(["Sr", "Ti", "O"], {}) == []
    assert label.unsupported_elements(["La", "Sr", "Ce", "O", "La"], {}) == ["Ce", "La"]
    assert label.unsupported_elements(["Xx"], {}) == ["Xx"]


def test_unsupported_elements_follows_settings() -> None:
    # plain gth-szv covers H-Ar and Ga-As only: Sr and Ti become unsupported
    assert label.unsupported_elements(["Sr", "Ti", "O", "Ga"], {"basis": "gth-szv"}) == ["Sr", "Ti"]


def test_resolve_settings_rejects_unknown_key() -> None:
    with pytest.raises(ConfigError, match="label"):
        label.resolve_settings({"xcc": "pbe"})
