"""The shipped reference label set (``resources/labels/``): export a labeled run as a data release.

A run of ``config/reference-labels.yaml`` leaves ``results/label/{targets,labels,references}.parquet``;
:func:`export` joins each label with its target row (identity, sites, structure JSON) and writes

* ``labels.parquet`` — the compounds (REFERENCE_LABELS contract), usable as ``train.external_labels``;
* ``competing.parquet`` — the competing phases of their hulls (same contract);
* ``references.parquet`` — the elemental references (REFERENCES contract);
* ``config.yaml`` — the config that produced them; ``README.md`` — how, with the statistics.

Every row keeps its status: failed and unsupported rows stay, with the reason. All labels must
share one settings hash (one level of theory); the export refuses a mix.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from matscreen import markdown, tables
from matscreen.atomic import atomic_path
from matscreen.label.hull import formula_elements
from matscreen.provenance import provenance

log = logging.getLogger(__name__)


def joined(targets: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Each label row with its target row, in the REFERENCE_LABELS contract; every label needs its target."""
    if labels["settings_hash"].nunique() > 1:
        raise tables.ContractError(
            f"labels of {labels['settings_hash'].nunique()} settings hashes: a reference set has one level of theory"
        )
    ident = [c for c in tables.REFERENCE_LABELS.column_names if c in targets.columns and c not in ("formula", "nsites")]
    lab = labels.drop(columns=[c for c in ("origin", "prototype") if c in labels.columns])
    missing = sorted(set(lab["structure_id"]) - set(targets["structure_id"]))
    if missing:
        raise tables.ContractError(f"{len(missing)} labels have no row in the targets table, e.g. {missing[:3]}")
    df = lab.merge(targets[ident], on="structure_id", how="left", validate="1:1")
    return tables.conform(df, tables.REFERENCE_LABELS)[tables.REFERENCE_LABELS.column_names]


def statistics(df: pd.DataFrame, refs: pd.DataFrame, targets: pd.DataFrame | None = None) -> dict[str, Any]:
    """Counts per family and status, failures with reasons, CPU time (the wall time of the one-thread
    jobs); with ``targets``, how many structures were chosen (a set still being computed has fewer labels)."""
    compounds = df[df["origin"] != "competing"]
    chosen = (
        {}
        if targets is None
        else {
            "compounds": int((targets["origin"] != "competing").sum()),
            "competing": int((targets["origin"] == "competing").sum()),
        }
    )
    return {
        "chosen": chosen,
        "compounds": compounds.groupby(["family", "status"]).size().unstack(fill_value=0),
        "competing": df[df["origin"] == "competing"]["status"].value_counts().to_dict(),
        "references": refs["status"].value_counts().to_dict(),
        "with_hull": int(compounds["e_above_hull_ev_per_atom"].notna().sum()),
        "stable": int(compounds["is_stable"].eq(True).sum()),
        "failed": df.loc[df["status"] != "ok", ["formula", "origin", "status", "error"]],
        "cpu_hours": float(
            pd.to_numeric(df["wall_s"], errors="coerce").sum() + pd.to_numeric(refs["wall_s"], errors="coerce").sum()
        )
        / 3600,
        "settings_hash": str(df["settings_hash"].iloc[0]) if len(df) else "",
        "costs": costs(df, targets),
    }


def export(
    targets_path: str,
    labels_path: str,
    references_path: str,
    out_dir: str | os.PathLike[str],
    config_path: str | None = None,
) -> dict[str, Any]:
    """Write the reference set into ``out_dir`` (module docstring); returns :func:`statistics`."""
    targets = tables.read_table(targets_path, tables.LABEL_TARGETS)
    labels = tables.read_table(labels_path, tables.LABELS)
    refs = tables.read_table(references_path, tables.REFERENCES)
    df = joined(targets, labels)
    refs = refs[refs["settings_hash"].isin(set(df["settings_hash"]))].reset_index(drop=True)
    out = Path(out_dir)
    prov = provenance("reference_set", {"targets": str(targets_path), "labels": str(labels_path)})
    competing = df["origin"] == "competing"
    tables.write_tables(
        [
            (df[~competing].reset_index(drop=True), out / "labels.parquet", tables.REFERENCE_LABELS),
            (df[competing].reset_index(drop=True), out / "competing.parquet", tables.REFERENCE_LABELS),
            (refs, out / "references.parquet", tables.REFERENCES),
        ],
        prov,
    )
    if config_path:
        with atomic_path(out / "config.yaml") as tmp:
            shutil.copyfile(config_path, tmp)
    stats = statistics(df, refs, targets)
    log.info(
        "reference set: %d compounds (%d with a hull), %d competing phases, %d references, %.1f CPU hours -> %s",
        int((~competing).sum()),
        stats["with_hull"],
        int(competing.sum()),
        len(refs),
        stats["cpu_hours"],
        out,
    )
    return stats


def _within(formulas: pd.Series, systems: set[frozenset[str]]) -> pd.Series:
    """Whether each formula's elements lie inside one of the chemical ``systems``."""
    return pd.Series(
        [any(formula_elements(f) <= sys for sys in systems) for f in formulas], index=formulas.index, dtype=bool
    )


def costs(df: pd.DataFrame, targets: pd.DataFrame | None = None) -> pd.DataFrame:
    """CPU time per family: its compounds, and the competing phases of their chemical systems.

    A competing phase belongs to a family when its elements are a subset of one of the family's
    compounds' (a phase shared by two families counts in both). ``wall_s`` is the one-thread
    calculation's wall time. With ``targets``, ``competing_chosen`` counts the phases planned for
    the family's systems, labeled or not (the same rule on the targets' formulas).
    """
    rows = []
    compounds = df[df["origin"] != "competing"]
    phases = df[df["origin"] == "competing"]
    planned = targets[targets["origin"] == "competing"] if targets is not None else None
    for family, group in compounds.groupby("family"):
        systems = {formula_elements(f) for f in group["formula"]}
        mine = phases[_within(phases["formula"], systems)]
        own_h = float(pd.to_numeric(group["wall_s"], errors="coerce").sum()) / 3600
        comp_h = float(pd.to_numeric(mine["wall_s"], errors="coerce").sum()) / 3600
        row = {
            "family": family,
            "compounds": len(group),
            "compound_cpu_h": own_h,
            "cpu_min_per_compound": 60 * own_h / len(group),
            "competing_labeled": len(mine),
            "competing_cpu_h": comp_h,
            "competing_per_compound_cost": comp_h / own_h if own_h > 0 else float("nan"),
        }
        if planned is not None:
            row["competing_chosen"] = int(_within(planned["formula"], systems).sum())
        rows.append(row)
    return pd.DataFrame(rows).set_index("family") if rows else pd.DataFrame()


def readme(stats: dict[str, Any], level_of_theory: str) -> str:
    """``resources/labels/README.md``: how the set was made, and what it holds (from :func:`statistics`)."""
    comp = stats["compounds"]
    lines = [
        "# Reference labels",
        "",
        "PySCF labels computed by matscreen itself and shipped with it, so that the default run trains on",
        "real data across every family it screens. Generated by `matscreen export-labels` (see the",
        "commands below); do not edit by hand.",
        "",
        "## How they were made",
        "",
        "- Sample: `config/reference-labels.yaml` (copied here as `config.yaml`): a seeded sample of the",
        "  default candidate spaces per family (`label.select.per_family`), interleaved over anions and",
        "  spinel arrangements, one candidate per composition, at most two per chemical system, in",
        "  non-magnetic elements the default basis covers. Structures are the prototypes of",
        "  `matscreen.prototypes` (lattice from Shannon radii, unrelaxed: `label.relax: none`).",
        "- Competing phases: the binaries of every compound's chemical system in the structure types of",
        "  `resources/competing_phases.yaml`; elemental references from `resources/element_references.yaml`.",
        f"- Level of theory (the defaults, settings hash `{stats['settings_hash']}`): {level_of_theory}.",
        "- Computed with `matscreen label` through the label store `resources/labels/store`, one thread",
        "  per calculation, `nice`d, resumable. The whole set is the commands below; it was run in batches",
        "  family by family and chemical system by system, cheapest first, and exported as it grew",
        "  (`resources/labels/batches.py` plans the batches and gathers what is stored; its docstring",
        "  has the commands):",
        "",
        "  ```bash",
        "  snakemake --configfile config/reference-labels.yaml --cores 1 --until select_label_targets",
        "  matscreen label --config config/reference-labels.yaml results/label/targets.parquet -o labels.parquet",
        "  matscreen export-labels --targets results/label/targets.parquet --labels labels.parquet \\",
        "      --references labels_references.parquet --config config/reference-labels.yaml -o resources/labels",
        "  ```",
        "",
        "## What is here",
        "",
        *(
            [
                f"**Partial:** {int(comp.to_numpy().sum()) if len(comp) else 0} of the {stats['chosen']['compounds']} "
                f"chosen compounds and {sum(stats['competing'].values())} of the {stats['chosen']['competing']} "
                "competing phases are labeled so far; the computation goes on (resumable, through the store).",
                "",
            ]
            if stats.get("chosen")
            and (
                int(comp.to_numpy().sum()) < stats["chosen"]["compounds"]
                or sum(stats["competing"].values()) < stats["chosen"]["competing"]
            )
            else []
        ),
        f"- `labels.parquet`: {int(comp.to_numpy().sum()) if len(comp) else 0} compounds, "
        f"{stats['with_hull']} with an energy above the hull ({stats['stable']} on it).",
        f"- `competing.parquet`: {sum(stats['competing'].values())} competing phases ({_counts(stats['competing'])}).",
        f"- `references.parquet`: {sum(stats['references'].values())} elemental references ({_counts(stats['references'])}).",
        f"- CPU time: {stats['cpu_hours']:.1f} hours (sum of the one-thread calculations' wall times; they ran "
        "`nice`d beside other work on 2 cores, so this is an upper bound).",
        "",
        "Compounds per family and status:",
        "",
        markdown.table(["family", *comp.columns], ([fam, *(int(v) for v in row)] for fam, row in comp.iterrows())),
        *_cost_lines(stats.get("costs")),
        "Rows that are not ok (they stay in the tables with their status and reason):",
        "",
    ]
    # the whole reason (every SCF attempt's outcome): what a reader needs to judge a failure
    failed = stats["failed"][["formula", "origin", "status", "error"]]
    lines.append(markdown.table(["formula", "origin", "status", "reason"], failed.itertuples(index=False)))
    return "\n".join(lines)


def _cost_lines(cost: pd.DataFrame | None) -> list[str]:
    """The README's table of CPU time per family (:func:`costs`)."""
    if cost is None or cost.empty:
        return []
    chosen = "competing_chosen" in cost.columns
    lines = [
        "CPU time per family (wall times of the one-thread calculations, as above; a competing phase counts",
        "for every family whose compounds' chemical systems contain it; the ratio is the competing phases'",
        "time over the compounds'):",
        "",
    ]
    columns = [
        "family",
        "compounds",
        "CPU h",
        "CPU min per compound",
        "competing phases labeled" + (" / chosen" if chosen else ""),
        "their CPU h",
        "ratio",
    ]
    rows = [
        [
            fam,
            int(r.compounds),
            f"{r.compound_cpu_h:.2f}",
            f"{r.cpu_min_per_compound:.1f}",
            f"{int(r.competing_labeled)}" + (f" / {int(r.competing_chosen)}" if chosen else ""),
            f"{r.competing_cpu_h:.2f}",
            f"{r.competing_per_compound_cost:.2f}",
        ]
        for fam, r in cost.iterrows()
    ]
    return [*lines, markdown.table(columns, rows)]


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(d.items())) or "none"
