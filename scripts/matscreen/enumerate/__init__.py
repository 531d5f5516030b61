"""Stage 2: enumerate candidate compositions of every family, filter them with crystal chemistry.

The chemical space of a family is the cartesian product of its site lists (ions = element +
oxidation state). Each site list comes from config (``enumerate.sites.<family>.<site>``); an
entry is either an ion (``"Fe3+"``: exactly that state) or an element (``"Fe"``: every state
pymatgen lists for it under ``enumerate.oxidation_states`` with the sign of the site). A site
left ``null`` takes the shared cation pool ``enumerate.cations``.

The product is filtered in a fixed order; each filter can be switched off and its thresholds are
config keys. The funnel table records how many candidates of each family survive each step:

0. ``all_combinations`` - every site assignment (spinels: times two, normal and inverse);
1. ``charge_neutrality`` - the formula unit is neutral with the chosen oxidation states. Mixed
   valence (Fe2+ and Fe3+ in Fe3O4, Fe2+/Mo6+ in Sr2FeMoO6) arises naturally because each site
   takes its own ion and the inverse spinel puts two ions on the octahedral site;
2. ``shannon_radius`` - every cation has a Shannon radius at its site's coordination number
   (``families.Site.cn``) and the anion at ``enumerate.anion_radius_cn``;
3. ``electronegativity`` - every cation is less electronegative (Pauling) than the anion;
4. perovskites: ``tolerance_factor`` (Goldschmidt t in [min, max]), ``octahedral_factor``
   (mu = rB/rX in [min, max]) and ``tau`` (Bartel et al. 2019, tau < max);
   spinels and garnets: ``radius_ratio`` (r_site / r_X inside a window per site).

A descriptor that cannot be computed (missing radius when ``shannon_radius`` is off, Bartel
tau where rA <= rB) counts as failing the filter that needs it: a candidate passes only what it
can be shown to satisfy.

Site lists for the spinel are the formula roles A (1 per formula unit) and B (2 per formula
unit). The *normal* arrangement puts A on the tetrahedral site; the *inverse* one puts B on the
tetrahedral site and A and B half-and-half on the octahedral site (``"Fe2+:0.5 Fe3+:0.5"``).
Both have the same charge, so every charge-balanced pair gives two candidates, which the radius
filters then judge separately (the ions sit at different coordination numbers).

Double perovskites take unordered pairs of distinct B-site ions (rock-salt ordering makes B and
B' equivalent, so ``B`` holds the ion that sorts first); the tolerance descriptors use the mean
B radius.

The package along its seams:

* :mod:`.settings` -- ``EnumerateSettings`` (the typed ``enumerate:`` section), site lists, config checks (light import)
* :mod:`.space` -- ion tables and every site assignment of a family (``build_combos``, ``mixed_combos``)
* :mod:`.filters` -- ``FILTERS`` in order, their descriptors and masks
* :mod:`.stage` -- ``enumerate_family``, ``enumerate_candidates``, ``shard_of``, ``run`` (the rule's)

The public API is re-exported here lazily (``from matscreen import enumerate as en; en.run(...)``),
so the controller's config check imports only :mod:`.settings`.
"""

from __future__ import annotations

from matscreen.lazy import lazy_exports

#: name -> submodule of the re-exported public API
_EXPORTS = {
    "settings": (
        "EnumerateSettings",
        "EnumerateFilters",
        "MixingSettings",
        "RangeFilter",
        "TauFilter",
        "RadiusRatioFilter",
        "resolve_settings",
        "parse_ion_entry",
        "site_ions",
        "check_settings",
        "check_config",
        "mixing_sites",
        "check_mixing",
    ),
    "space": ("IonTable", "ion_table", "Combos", "build_combos", "mixed_combos"),
    "filters": ("FILTERS", "Descriptors"),
    "stage": ("enumerate_family", "formula_unit", "enumerate_candidates", "shard_of", "format_funnel", "run"),
}
_SUBMODULES = ("settings", "space", "filters", "stage")

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS, _SUBMODULES)
