"""enumerate.mixing: mixed-site candidates on a fraction grid equal a brute-force count."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np

from matscreen import chemistry
from matscreen import enumerate as en
from matscreen.config import settings_dict
from matscreen.families import get_family


def _settings(**mixing):
    return en.resolve_settings(
        {
            "families": ["perovskite"],
            "cations": ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "La", "Al", "Ti", "Zr", "Nb", "Fe"],
            "sites": {"perovskite": {"A": None, "B": None, "X": ["O", "F"]}},
            "mixing": {"enabled": True, "denominator": 4, **mixing},
        }
    )


def _brute_force(settings) -> tuple[int, int]:
    """(all combinations, candidates passing every filter), by looping over every occupancy."""
    fam = get_family("perovskite")
    sd = settings_dict(settings)  # plain dicts, independent of the code under test
    f = sd["filters"]
    cn_x = sd["anion_radius_cn"]
    d = sd["mixing"]["denominator"]
    ions = {s.label: en.site_ions(settings, "perovskite", s.label) for s in fam.sites}

    def options(label):
        pure = [((ion, Fraction(1)),) for ion in ions[label]]
        if label not in sd["mixing"]["sites"]["perovskite"]:
            return pure, []
        mixed = [
            ((a, Fraction(k, d)), (b, Fraction(d - k, d)))
            for a, b in itertools.combinations(ions[label], 2)
            for k in range(1, d)
        ]
        return pure, mixed

    total = passing = 0
    opts = {s.label: options(s.label) for s in fam.sites}
    for mixed_label in [None, *sd["mixing"]["sites"]["perovskite"]]:
        per_site = [opts[s.label][1] if s.label == mixed_label else opts[s.label][0] for s in fam.sites]
        for combo in itertools.product(*per_site):
            total += 1
            occ = dict(zip(fam.site_labels, combo))
            charge = sum(s.multiplicity * sum(fr * ion[1] for ion, fr in occ[s.label]) for s in fam.sites)
            if charge != 0:
                continue
            radius = {}
            ok = True
            for s in fam.sites:
                cn = cn_x if s.is_anion else s.cn
                rs = [chemistry.shannon_radius(e, o, cn) for (e, o), _ in occ[s.label]]
                if any(r is None for r in rs):
                    ok = False
                    break
                radius[s.label] = sum(float(fr) * r for ((_, _), fr), r in zip(occ[s.label], rs))
            if not ok:
                continue
            x_en = chemistry.electronegativity(occ["X"][0][0][0])
            if max(chemistry.electronegativity(e) for s in ("A", "B") for (e, _), _ in occ[s]) >= x_en:
                continue
            t = chemistry.goldschmidt_t(radius["A"], radius["B"], radius["X"])
            mu = chemistry.octahedral_factor(radius["B"], radius["X"])
            ox_a = float(sum(fr * o for (_, o), fr in occ["A"]))
            if not (f["tolerance_factor"]["min"] <= t <= f["tolerance_factor"]["max"]):
                continue
            if not (f["octahedral_factor"]["min"] <= mu <= f["octahedral_factor"]["max"]):
                continue
            if radius["A"] <= radius["B"]:
                continue
            tau = chemistry.bartel_tau(radius["A"], radius["B"], radius["X"], ox_a)
            if not tau < f["tau"]["max"]:
                continue
            passing += 1
    return total, passing


def test_mixed_counts_equal_brute_force():
    settings = _settings()
    cand, funnel = en.enumerate_family("perovskite", settings)
    total, passing = _brute_force(settings)
    assert int(funnel["remaining"].iloc[0]) == total
    assert len(cand) == passing
    assert cand["candidate_id"].is_unique
    mixed = cand[cand["A_species"].str.contains(":") | cand["B_species"].str.contains(":")]
    assert len(mixed) > 0 and not (cand["A_species"].str.contains(":") & cand["B_species"].str.contains(":")).any()
    # radii are fraction-weighted: t recomputed from the site radii
    t = chemistry.goldschmidt_t(mixed["A_radius_ang"], mixed["B_radius_ang"], mixed["X_radius_ang"])
    np.testing.assert_allclose(mixed["tolerance_factor"], t)
    assert (np.abs(sum(m * mixed[f"{s}_oxi"] for s, m in (("A", 1), ("B", 1), ("X", 3)))) < 1e-9).all()


def test_mixing_off_leaves_the_default_space_unchanged():
    on = settings_dict(_settings())
    off = en.resolve_settings({**on, "mixing": {**on["mixing"], "enabled": False}})
    cand_off, _ = en.enumerate_family("perovskite", off)
    cand_pure, _ = en.enumerate_family(
        "perovskite", en.resolve_settings({**on, "mixing": {**on["mixing"], "sites": {}}})
    )
    assert cand_off["candidate_id"].tolist() == cand_pure["candidate_id"].tolist()
    assert not cand_off["A_species"].str.contains(":").any()
