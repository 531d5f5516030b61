"""The crystal-chemistry filters, in the order they are applied per family, and their descriptors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from matscreen import chemistry
from matscreen.enumerate.settings import EnumerateSettings
from matscreen.enumerate.space import Combos, max_cation_en, site_value

#: Filters in the order they are applied, per family.
FILTERS: dict[str, tuple[str, ...]] = {
    "perovskite": (
        "charge_neutrality",
        "shannon_radius",
        "electronegativity",
        "tolerance_factor",
        "octahedral_factor",
        "tau",
    ),
    "double_perovskite": (
        "charge_neutrality",
        "shannon_radius",
        "electronegativity",
        "tolerance_factor",
        "octahedral_factor",
        "tau",
    ),
    "spinel": ("charge_neutrality", "shannon_radius", "electronegativity", "radius_ratio"),
    "garnet": ("charge_neutrality", "shannon_radius", "electronegativity", "radius_ratio"),
}


@dataclass
class Descriptors:
    radius: dict[str, np.ndarray]
    oxidation: dict[str, np.ndarray]
    t: np.ndarray
    mu: np.ndarray
    tau: np.ndarray


def descriptors(combos: Combos, settings: EnumerateSettings) -> Descriptors:
    fam = combos.family
    cn_x = settings.anion_radius_cn
    radius = {s.label: site_value(combos, s.label, "radius", cn_x if s.is_anion else s.cn) for s in fam.sites}
    oxidation = {s.label: site_value(combos, s.label, "oxidation") for s in fam.sites}
    n = len(combos)
    t = mu = tau = np.full(n, np.nan)
    if fam.name in ("perovskite", "double_perovskite"):
        r_b = radius["B"] if fam.name == "perovskite" else 0.5 * (radius["B"] + radius["B2"])
        r_a, r_x = radius["A"], radius["X"]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.asarray(chemistry.goldschmidt_t(r_a, r_b, r_x), dtype=float)
            mu = np.asarray(chemistry.octahedral_factor(r_b, r_x), dtype=float)
            tau = np.asarray(chemistry.bartel_tau(r_a, r_b, r_x, oxidation["A"]), dtype=float)
    return Descriptors(radius, oxidation, t, mu, tau)


def filter_mask(name: str, combos: Combos, d: Descriptors, settings: EnumerateSettings) -> np.ndarray:
    fam = combos.family
    f = settings.filters
    if name == "charge_neutrality":
        charge = sum(s.multiplicity * d.oxidation[s.label] for s in fam.sites)
        return np.abs(charge) < 1e-6
    if name == "shannon_radius":
        ok = np.ones(len(combos), dtype=bool)
        for s in fam.sites:
            ok &= ~np.isnan(d.radius[s.label])
        return ok
    if name == "electronegativity":
        x_en = site_value(combos, "X", "electronegativity")
        return max_cation_en(combos) < x_en
    with np.errstate(invalid="ignore"):
        if name == "tolerance_factor":
            return (d.t >= f.tolerance_factor.min) & (d.t <= f.tolerance_factor.max)
        if name == "octahedral_factor":
            return (d.mu >= f.octahedral_factor.min) & (d.mu <= f.octahedral_factor.max)
        if name == "tau":
            return d.tau < f.tau.max
        if name == "radius_ratio":
            ok = np.ones(len(combos), dtype=bool)
            for label, (lo, hi) in f.radius_ratio.windows.get(fam.name, {}).items():
                ratio = d.radius[label] / d.radius["X"]
                ok &= (ratio >= lo) & (ratio <= hi)
            return ok
    raise ValueError(f"unknown filter {name!r}")


def filter_enabled(name: str, settings: EnumerateSettings) -> bool:
    f = getattr(settings.filters, name)
    return bool(f if isinstance(f, bool) else f.enabled)
