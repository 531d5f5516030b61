"""The one domain model of the structure families matscreen screens.

Every stage reads the families from here: ``enumerate`` (which sites to fill and with
what charge), ``prototypes`` (Wyckoff positions of the ideal structure), ``ingest``
(what a recognised structure's sites are: coordination numbers and counts) and
``featurize`` (site-aware descriptors). Adding a family here makes every stage know it.

Site labels are shared across families (``A``, ``B``, ``B2``, ``C``, ``D``, ``X``) so
that all tables can carry the same site columns; what a label *means* (its
coordination, multiplicity, Wyckoff position) is per family.

Site occupancy is written as a compact, canonical string (see :func:`format_occupancy`):
``"Sr2+"`` for a single ion and ``"Fe3+:0.5 Mg2+:0.5"`` for a mixed site (fractions sum
to 1, ions sorted by symbol).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

SiteRole = Literal["cuboctahedral", "dodecahedral", "octahedral", "tetrahedral", "anion"]

#: Union of site labels over all families, in the column order used by every table.
SITE_LABELS: tuple[str, ...] = ("A", "B", "B2", "C", "D", "X")


@dataclass(frozen=True)
class Site:
    """One crystallographic site of a family's prototype."""

    label: str
    role: SiteRole
    cn: int  #: coordination number of the ideal prototype (Shannon radii are looked up at it)
    multiplicity: int  #: ions of this site per formula unit
    wyckoff: str  #: Wyckoff letter with multiplicity in the prototype space group
    coords: tuple[float, float, float]  #: representative fractional coordinates

    @property
    def is_anion(self) -> bool:
        return self.role == "anion"


@dataclass(frozen=True)
class Family:
    """A structure family: its prototype and its sites."""

    name: str
    formula_template: str
    spacegroup: str  #: Hermann-Mauguin symbol accepted by ``Structure.from_spacegroup``
    spacegroup_number: int
    z_conventional: int  #: formula units in the conventional cell of the prototype
    sites: tuple[Site, ...]
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def site(self, label: str) -> Site:
        for s in self.sites:
            if s.label == label:
                return s
        raise KeyError(f"family {self.name!r} has no site {label!r} (sites: {self.site_labels})")

    @property
    def site_labels(self) -> tuple[str, ...]:
        return tuple(s.label for s in self.sites)

    @property
    def cation_sites(self) -> tuple[Site, ...]:
        return tuple(s for s in self.sites if not s.is_anion)

    @property
    def anion_site(self) -> Site:
        (x,) = [s for s in self.sites if s.is_anion]
        return x

    @property
    def atoms_per_formula_unit(self) -> int:
        return sum(s.multiplicity for s in self.sites)

    @property
    def primitive_atoms(self) -> int:
        """Atoms in the primitive cell of an ordered prototype (the conventional cell's formula
        units over its lattice centring: P 1, I 2, F 4): 5, 10, 14 and 80 for the four families.
        A mixed-site candidate's ordered supercell is larger."""
        centring = {"P": 1, "I": 2, "F": 4}[self.spacegroup[0]]
        return self.atoms_per_formula_unit * self.z_conventional // centring


PEROVSKITE = Family(
    name="perovskite",
    formula_template="ABX3",
    spacegroup="Pm-3m",
    spacegroup_number=221,
    z_conventional=1,
    description="Cubic perovskite ABX3: A cuboctahedral (CN 12), corner-sharing BX6 octahedra.",
    sites=(
        Site("A", "cuboctahedral", 12, 1, "1a", (0.0, 0.0, 0.0)),
        Site("B", "octahedral", 6, 1, "1b", (0.5, 0.5, 0.5)),
        Site("X", "anion", 2, 3, "3c", (0.0, 0.5, 0.5)),
    ),
)

DOUBLE_PEROVSKITE = Family(
    name="double_perovskite",
    formula_template="A2BB'X6",
    spacegroup="Fm-3m",
    spacegroup_number=225,
    z_conventional=4,
    description="Rock-salt ordered double perovskite A2BB'X6 (elpasolite setting).",
    sites=(
        Site("A", "cuboctahedral", 12, 2, "8c", (0.25, 0.25, 0.25)),
        Site("B", "octahedral", 6, 1, "4a", (0.0, 0.0, 0.0)),
        Site("B2", "octahedral", 6, 1, "4b", (0.5, 0.5, 0.5)),
        Site("X", "anion", 2, 6, "24e", (0.25, 0.0, 0.0)),
    ),
)

SPINEL = Family(
    name="spinel",
    formula_template="AB2X4",
    spacegroup="Fd-3m:2",  # origin choice 2: 'Fd-3m' (choice 1) gives the wrong stoichiometry
    spacegroup_number=227,
    z_conventional=8,
    description="Spinel AB2X4: A tetrahedral (8a), B octahedral (16d), X on 32e (u,u,u).",
    sites=(
        Site("A", "tetrahedral", 4, 1, "8a", (0.125, 0.125, 0.125)),
        Site("B", "octahedral", 6, 2, "16d", (0.5, 0.5, 0.5)),
        Site("X", "anion", 4, 4, "32e", (0.2625, 0.2625, 0.2625)),
    ),
)

GARNET = Family(
    name="garnet",
    formula_template="C3A2D3O12",
    spacegroup="Ia-3d",
    spacegroup_number=230,
    z_conventional=8,
    description="Garnet C3A2D3X12: C dodecahedral (24c), A octahedral (16a), D tetrahedral (24d).",
    sites=(
        Site("C", "dodecahedral", 8, 3, "24c", (0.125, 0.0, 0.25)),
        Site("A", "octahedral", 6, 2, "16a", (0.0, 0.0, 0.0)),
        Site("D", "tetrahedral", 4, 3, "24d", (0.375, 0.0, 0.25)),
        Site("X", "anion", 4, 12, "96h", (-0.0306, 0.0512, 0.1500)),  # YAG oxygen
    ),
)

#: All families by name. Order is the order used in reports.
FAMILIES: dict[str, Family] = {f.name: f for f in (PEROVSKITE, DOUBLE_PEROVSKITE, SPINEL, GARNET)}

#: Family value for structures that match none of the families.
OTHER = "other"


def get_family(name: str) -> Family:
    """Return the family called ``name`` or raise a ``KeyError`` listing the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}") from None


# --- site occupancy strings ---------------------------------------------------------

_ION_RE = re.compile(r"^([A-Z][a-z]?)(\d*(?:\.\d+)?)([+-])(?::([0-9.eE+-]+))?$")


@dataclass(frozen=True, order=True)
class Ion:
    """An ion on a site: element, oxidation state and fraction of the site it fills."""

    element: str
    oxidation: float
    fraction: float = 1.0


def _fmt_oxi(oxi: float) -> str:
    mag = abs(oxi)
    num = f"{mag:g}" if mag != 1 else ""
    return f"{num}{'+' if oxi >= 0 else '-'}"


def format_occupancy(ions: list[Ion] | tuple[Ion, ...]) -> str:
    """Canonical occupancy string: ions sorted by element then oxidation state.

    >>> format_occupancy([Ion("Sr", 2)])
    'Sr2+'
    >>> format_occupancy([Ion("Mg", 2, 0.5), Ion("Fe", 3, 0.5)])
    'Fe3+:0.5 Mg2+:0.5'
    """
    if not ions:
        raise ValueError("a site needs at least one ion")
    total = sum(i.fraction for i in ions)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"site fractions must sum to 1, got {total:g} for {ions}")
    ordered = sorted(ions, key=lambda i: (i.element, i.oxidation))
    if len(ordered) == 1:
        i = ordered[0]
        return f"{i.element}{_fmt_oxi(i.oxidation)}"
    return " ".join(f"{i.element}{_fmt_oxi(i.oxidation)}:{round(i.fraction, 6):g}" for i in ordered)


def parse_occupancy(text: str) -> tuple[Ion, ...]:
    """Inverse of :func:`format_occupancy`; raises ``ValueError`` naming the bad token."""
    ions = []
    for token in text.split():
        m = _ION_RE.match(token)
        if not m:
            raise ValueError(f"bad ion {token!r} in site occupancy {text!r} (expected e.g. 'Sr2+' or 'Fe3+:0.5')")
        el, mag, sign, frac = m.groups()
        oxi = float(mag) if mag else 1.0
        ions.append(Ion(el, oxi if sign == "+" else -oxi, float(frac) if frac else 1.0))
    if not ions:
        raise ValueError("empty site occupancy")
    total = sum(i.fraction for i in ions)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"site fractions in {text!r} sum to {total:g}, not 1")
    return tuple(ions)


def site_composition(family: Family, occupancy: dict[str, str]) -> dict[str, float]:
    """Element amounts per formula unit from per-site occupancy strings."""
    amounts: dict[str, float] = {}
    for site in family.sites:
        for ion in parse_occupancy(occupancy[site.label]):
            amounts[ion.element] = amounts.get(ion.element, 0.0) + ion.fraction * site.multiplicity
    return amounts


def net_charge(family: Family, occupancy: dict[str, str]) -> float:
    """Total charge per formula unit (0 for a charge-balanced candidate)."""
    return sum(
        ion.oxidation * ion.fraction * site.multiplicity
        for site in family.sites
        for ion in parse_occupancy(occupancy[site.label])
    )
