"""Site-aware descriptors: one column set for every family, by coordination role.

Ye et al. (Nat. Commun. 9, 3800, 2018) predicted garnet and perovskite stabilities from the
Pauling electronegativity and Shannon ionic radius of the ion on each site of the prototype;
the tolerance factors (Goldschmidt 1926, Bartel et al. 2019) add the classic size criteria.

Site *labels* mean different things in different families (``A`` is cuboctahedral in a
perovskite, tetrahedral in a spinel and octahedral in a garnet), so the features are defined
per **coordination role** instead, which serves all families with one set of columns:

============  ==============================  =========================================
role          meaning                         sites
============  ==============================  =========================================
``large``     cuboctahedral or dodecahedral   perovskite A, double perovskite A, garnet C
``oct``       octahedral cation               perovskite B, double perovskite B+B2,
                                              spinel B, garnet A
``tet``       tetrahedral cation              spinel A, garnet D
``anion``     the anion site                  X everywhere
============  ==============================  =========================================

A role a family lacks gives NaN (a spinel has no ``large`` site), so the pattern of NaNs also
tells the families apart. Where a role holds two sites (B and B2 of a double perovskite) the
role values are multiplicity-weighted averages and ``site_oct_split_*`` give the B/B2 contrast.
Mixed occupancy ("La3+:0.5 Sr2+:0.5") is averaged by fraction; ``site_<role>_r_var`` is the
size variance sigma^2 = <r^2> - <r>^2 of the role's ions (Rodriguez-Martinez & Attfield 1996).

Cation radii are Shannon radii at the site's coordination number from :mod:`matscreen.families`;
anion radii are taken at ``anion_cn`` (default 6: the tolerance factors are defined with
six-coordinate anion radii and Shannon lists Cl-, Br- and I- only at CN 6). Where Shannon has no
radius at that CN, ``radius_fallback: nearest_cn`` takes the nearest tabulated CN (ties: the
larger), ``none`` leaves NaN and reports it in ``featurize_error``.

Everything is computed once per unique occupancy string and gathered per row, so it is exact
and fast at any scale. :mod:`matscreen.featurize.featurizers` wraps the same features as matminer
``BaseFeaturizer`` subclasses (one row at a time, for ``featurize_dataframe``); a test keeps the
two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from matscreen import chemistry
from matscreen.families import FAMILIES, Family, parse_occupancy

ROLES: tuple[str, ...] = ("large", "oct", "tet", "anion")
CATION_ROLES: tuple[str, ...] = ("large", "oct", "tet")
_ROLE_OF = {
    "cuboctahedral": "large",
    "dodecahedral": "large",
    "octahedral": "oct",
    "tetrahedral": "tet",
    "anion": "anion",
}
_ROLE_TEXT = {
    "large": "large cation site (cuboctahedral/dodecahedral: perovskite A, garnet C)",
    "oct": "octahedral cation site(s) (perovskite B, double perovskite B and B2, spinel B, garnet A)",
    "tet": "tetrahedral cation site (spinel A, garnet D)",
    "anion": "anion site X",
}
PEROVSKITE_FAMILIES = ("perovskite", "double_perovskite")

CITATIONS: tuple[str, ...] = (
    "@article{ye_2018, title={Deep neural networks for accurate predictions of crystal stability}, "
    "author={Ye, Weike and Chen, Chi and Wang, Zhenbin and Chu, Iek-Heng and Ong, Shyue Ping}, "
    "journal={Nature Communications}, volume={9}, pages={3800}, year={2018}, doi={10.1038/s41467-018-06322-x}}",
    "@article{goldschmidt_1926, title={Die Gesetze der Krystallochemie}, author={Goldschmidt, V. M.}, "
    "journal={Naturwissenschaften}, volume={14}, pages={477--485}, year={1926}, doi={10.1007/BF01507527}}",
    "@article{bartel_2019, title={New tolerance factor to predict the stability of perovskite oxides and halides}, "
    "author={Bartel, Christopher J. and Sutton, Christopher and Goldsmith, Bryan R. and Ouyang, Runhai and "
    "Musgrave, Charles B. and Ghiringhelli, Luca M. and Scheffler, Matthias}, journal={Science Advances}, "
    "volume={5}, pages={eaav0693}, year={2019}, doi={10.1126/sciadv.aav0693}}",
    "@article{shannon_1976, title={Revised effective ionic radii and systematic studies of interatomic distances "
    "in halides and chalcogenides}, author={Shannon, R. D.}, journal={Acta Crystallographica A}, volume={32}, "
    "pages={751--767}, year={1976}, doi={10.1107/S0567739476001551}}",
)


def feature_labels() -> dict[str, str]:
    """Column name -> description of every site feature, in output order."""
    out: dict[str, str] = {}
    for role in ROLES:
        t = _ROLE_TEXT[role]
        out[f"site_{role}_chi"] = f"fraction-weighted Pauling electronegativity on the {t}"
        out[f"site_{role}_r"] = f"fraction-weighted Shannon ionic radius (angstrom) on the {t}"
        out[f"site_{role}_oxi"] = f"fraction-weighted oxidation state on the {t}"
        out[f"site_{role}_r_var"] = f"ionic size variance <r^2>-<r>^2 (angstrom^2) on the {t}"
    for role in CATION_ROLES:
        out[f"site_{role}_dchi_anion"] = f"electronegativity difference anion - {role} cation (bond ionicity)"
        out[f"site_{role}_r_ratio_anion"] = f"radius ratio {role} cation / anion (Pauling's first rule)"
    for a, b in (("large", "oct"), ("large", "tet"), ("oct", "tet")):
        out[f"site_{a}_{b}_r_ratio"] = f"radius ratio {a} / {b} cation site"
        out[f"site_{a}_{b}_dchi"] = f"electronegativity difference {a} - {b} cation site"
    out["site_oct_split_dr"] = "|r(B) - r(B2)| of the two octahedral sites of a double perovskite (angstrom)"
    out["site_oct_split_doxi"] = "|oxi(B) - oxi(B2)| of the two octahedral sites of a double perovskite"
    out["site_oct_split_dchi"] = "|chi(B) - chi(B2)| of the two octahedral sites of a double perovskite"
    out["site_goldschmidt_t"] = "Goldschmidt tolerance factor (rA + rX) / (sqrt(2) (rB + rX)) (perovskites)"
    out["site_octahedral_factor"] = "octahedral factor rB / rX (perovskites)"
    out["site_bartel_tau"] = "Bartel et al. 2019 tolerance factor tau (perovskites; NaN where rA <= rB)"
    return out


@dataclass(frozen=True)
class SiteValues:
    """Fraction-weighted values of one occupancy string at one coordination."""

    chi: float
    r: float
    oxi: float
    r2: float  #: fraction-weighted <r^2>
    error: str | None
    fatal: bool = False  #: the occupancy itself is unusable (not just a missing radius)


def _radius(element: str, oxi: float, cn: int, fallback: str) -> tuple[float, str | None]:
    r = chemistry.shannon_radius(element, oxi, cn)
    if r is not None:
        return r, None
    if fallback == "nearest_cn":
        tab = chemistry.shannon_table()
        cns = sorted(set(tab.loc[(tab.element == element) & (tab.oxidation == float(oxi)), "cn"].tolist()))
        for c in sorted(cns, key=lambda c: (abs(c - cn), -c)):
            r = chemistry.shannon_radius(element, oxi, int(c))
            if r is not None:
                return r, None
    return float("nan"), f"no Shannon radius for {element}{oxi:+g} at CN {cn}"


@lru_cache(maxsize=65536)
def site_values(occupancy: str, cn: int, fallback: str) -> SiteValues:
    """Electronegativity, radius, oxidation state and <r^2> of a site, averaged by fraction."""
    try:
        ions = parse_occupancy(occupancy)
    except ValueError as exc:
        return SiteValues(np.nan, np.nan, np.nan, np.nan, str(exc), True)
    chi = r = oxi = r2 = 0.0
    errors = []
    for ion in ions:
        try:
            x = chemistry.electronegativity(ion.element)
        except ValueError as exc:  # unknown element symbol
            return SiteValues(np.nan, np.nan, np.nan, np.nan, f"{occupancy!r}: {exc}", True)
        if np.isnan(x):
            errors.append(f"no Pauling electronegativity for {ion.element}")
        ri, err = _radius(ion.element, ion.oxidation, cn, fallback)
        if err:
            errors.append(err)
        chi += ion.fraction * x
        r += ion.fraction * ri
        r2 += ion.fraction * ri * ri
        oxi += ion.fraction * ion.oxidation
    return SiteValues(chi, r, oxi, r2, "; ".join(errors) or None)


def _site_arrays(values: np.ndarray, cn: int, fallback: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-row chi/r/oxi/r2 arrays, error strings (object, None = fine) and fatal flags for one site column."""
    codes, uniques = pd.factorize(values)
    u = [site_values(str(s), cn, fallback) for s in uniques]
    cols = {}
    for name in ("chi", "r", "oxi", "r2"):
        table = np.array([getattr(v, name) for v in u] + [np.nan], dtype=float)
        cols[name] = table[codes]  # code -1 (null) picks the trailing NaN
    errs = np.array([v.error for v in u] + ["missing site occupancy"], dtype=object)[codes]
    fatal = np.array([v.fatal for v in u] + [True], dtype=bool)[codes]
    return cols, errs, fatal


def site_features(
    families: np.ndarray, site_columns: dict[str, np.ndarray], anion_cn: int, fallback: str
) -> tuple[np.ndarray, np.ndarray]:
    """Site features (n, len(feature_labels())) float64 and per-row error strings (object array).

    ``families``: family name per row; ``site_columns``: ``{label}_species`` arrays by site label.
    Rows of a family not in :data:`matscreen.families.FAMILIES` get NaN and no error.
    """
    labels = list(feature_labels())
    col = {name: i for i, name in enumerate(labels)}
    n = len(families)
    out = np.full((n, len(labels)), np.nan)
    errors = np.full(n, None, dtype=object)
    for fname, fam in FAMILIES.items():
        rows = np.flatnonzero(families == fname)
        if len(rows) == 0:
            continue
        _family_block(fam, rows, site_columns, anion_cn, fallback, out, errors, col)
    return out, errors


def _family_block(
    fam: Family,
    rows: np.ndarray,
    site_columns: dict[str, np.ndarray],
    anion_cn: int,
    fallback: str,
    out: np.ndarray,
    errors: np.ndarray,
    col: dict[str, int],
) -> None:
    per_site: dict[str, dict[str, np.ndarray]] = {}
    row_err = np.full(len(rows), None, dtype=object)
    broken = np.zeros(len(rows), dtype=bool)
    for site in fam.sites:
        cn = anion_cn if site.is_anion else site.cn
        vals, errs, fatal = _site_arrays(site_columns[site.label][rows], cn, fallback)
        broken |= fatal
        per_site[site.label] = vals
        bad = np.array([e is not None for e in errs], dtype=bool)
        for i in np.flatnonzero(bad):
            msg = f"site {site.label}: {errs[i]}"
            row_err[i] = msg if row_err[i] is None else f"{row_err[i]}; {msg}"
    role: dict[str, dict[str, np.ndarray]] = {}
    for rname in ROLES:
        sites = [s for s in fam.sites if _ROLE_OF[s.role] == rname]
        if not sites:
            continue
        if len(sites) == 1:
            v = per_site[sites[0].label]
            chi, r, oxi, r2 = v["chi"], v["r"], v["oxi"], v["r2"]
        else:
            m = float(sum(s.multiplicity for s in sites))
            chi = sum(per_site[s.label]["chi"] * (s.multiplicity / m) for s in sites)
            r = sum(per_site[s.label]["r"] * (s.multiplicity / m) for s in sites)
            oxi = sum(per_site[s.label]["oxi"] * (s.multiplicity / m) for s in sites)
            r2 = sum(per_site[s.label]["r2"] * (s.multiplicity / m) for s in sites)
        role[rname] = {"chi": chi, "r": r, "oxi": oxi, "r_var": np.maximum(r2 - r * r, 0.0)}
    with np.errstate(divide="ignore", invalid="ignore"):
        for rname, v in role.items():
            for k in ("chi", "r", "oxi", "r_var"):
                out[rows, col[f"site_{rname}_{k}"]] = v[k]
        x = role["anion"]
        for rname in CATION_ROLES:
            if rname in role:
                out[rows, col[f"site_{rname}_dchi_anion"]] = x["chi"] - role[rname]["chi"]
                out[rows, col[f"site_{rname}_r_ratio_anion"]] = role[rname]["r"] / x["r"]
        for a, b in (("large", "oct"), ("large", "tet"), ("oct", "tet")):
            if a in role and b in role:
                out[rows, col[f"site_{a}_{b}_r_ratio"]] = role[a]["r"] / role[b]["r"]
                out[rows, col[f"site_{a}_{b}_dchi"]] = role[a]["chi"] - role[b]["chi"]
        octs = [s.label for s in fam.sites if _ROLE_OF[s.role] == "oct"]
        if len(octs) == 2:
            s1, s2 = per_site[octs[0]], per_site[octs[1]]
            out[rows, col["site_oct_split_dr"]] = np.abs(s1["r"] - s2["r"])
            out[rows, col["site_oct_split_doxi"]] = np.abs(s1["oxi"] - s2["oxi"])
            out[rows, col["site_oct_split_dchi"]] = np.abs(s1["chi"] - s2["chi"])
        if fam.name in PEROVSKITE_FAMILIES:
            ra, rb, rx = role["large"]["r"], role["oct"]["r"], x["r"]
            out[rows, col["site_goldschmidt_t"]] = chemistry.goldschmidt_t(ra, rb, rx)
            out[rows, col["site_octahedral_factor"]] = chemistry.octahedral_factor(rb, rx)
            out[rows, col["site_bartel_tau"]] = chemistry.bartel_tau(ra, rb, rx, role["large"]["oxi"])
    out[rows[broken]] = np.nan  # a malformed occupancy makes the whole row's site description unusable
    errors[rows] = row_err
