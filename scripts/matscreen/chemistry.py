"""Ionic chemistry shared by enumerate, ingest and featurize: radii, electronegativity, tolerance factors.

All data come from pymatgen (Shannon 1976 radii as shipped in ``periodic_table.json``,
Pauling electronegativity). Lookups are cached; :func:`shannon_table` gives the whole
table at once for vectorised code.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
import pandas as pd
from pymatgen.core import Element

_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX", 10: "X", 11: "XI", 12: "XII", 14: "XIV"}

#: Spin state preferred when Shannon lists both (high spin is the usual choice for oxides).
SPIN_PREFERENCE = ("High Spin", "", "Low Spin")


def roman(cn: int) -> str:
    try:
        return _ROMAN[cn]
    except KeyError:
        raise ValueError(f"no Shannon coordination label for CN {cn}") from None


def _oxi_key(oxi: float) -> str:
    return str(int(oxi)) if float(oxi).is_integer() else f"{oxi:g}"


@cache
def shannon_radius(element: str, oxidation: float, cn: int, kind: str = "ionic_radius") -> float | None:
    """Shannon radius (Å) of ``element`` in ``oxidation`` at coordination ``cn``; None if not tabulated.

    Where Shannon lists spin states, high spin is taken (see :data:`SPIN_PREFERENCE`).
    """
    data = Element(element).data.get("Shannon radii", {})
    by_cn = data.get(_oxi_key(oxidation), {})
    spins = by_cn.get(roman(cn))
    if not spins:
        return None
    for spin in SPIN_PREFERENCE:
        if spin in spins:
            return float(spins[spin][kind])
    return float(next(iter(spins.values()))[kind])


@cache
def electronegativity(element: str) -> float:
    """Pauling electronegativity (NaN where pymatgen has none, e.g. noble gases)."""
    x = Element(element).X
    return float(x) if x is not None and not math.isnan(x) else float("nan")


@lru_cache(maxsize=1)
def shannon_table() -> pd.DataFrame:
    """Every tabulated Shannon radius: element, oxidation, cn, spin, ionic/crystal radius (Å)."""
    rows = []
    for el in Element:
        data = el.data.get("Shannon radii") or {}
        for oxi, by_cn in data.items():
            if not oxi.lstrip("+-").replace(".", "", 1).isdigit():  # a few entries have no oxidation state
                continue
            for cn_label, spins in by_cn.items():
                cn = next((k for k, v in _ROMAN.items() if v == cn_label), None)
                if cn is None:  # square-planar 'IVSQ', pyramidal 'IVPY' etc. are not site CNs we use
                    continue
                for spin, radii in spins.items():
                    rows.append((el.symbol, float(oxi), cn, spin, radii["ionic_radius"], radii["crystal_radius"]))
    return pd.DataFrame(rows, columns=["element", "oxidation", "cn", "spin", "ionic_radius", "crystal_radius"])


def goldschmidt_t(r_a: float | np.ndarray, r_b: float | np.ndarray, r_x: float | np.ndarray) -> float | np.ndarray:
    """Goldschmidt tolerance factor t = (rA + rX) / (sqrt(2) (rB + rX))."""
    return (np.asarray(r_a) + r_x) / (np.sqrt(2.0) * (np.asarray(r_b) + r_x))


def octahedral_factor(r_b: float | np.ndarray, r_x: float | np.ndarray) -> float | np.ndarray:
    """Octahedral factor mu = rB / rX."""
    return np.asarray(r_b) / r_x


def bartel_tau(r_a: float | np.ndarray, r_b: float | np.ndarray, r_x: float | np.ndarray, n_a: float | np.ndarray) -> float | np.ndarray:
    """Bartel et al., Sci. Adv. 5, eaav0693 (2019): tau = rX/rB - nA (nA - (rA/rB) / ln(rA/rB)).

    Requires rA > rB (the A cation is the larger one); where rA <= rB tau is NaN.
    Perovskites are predicted for tau < 4.18.
    """
    r_a, r_b, r_x, n_a = (np.asarray(v, dtype=float) for v in (r_a, r_b, r_x, n_a))
    ratio = r_a / r_b
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = r_x / r_b - n_a * (n_a - ratio / np.log(ratio))
    return np.where(ratio > 1.0, tau, np.nan)
