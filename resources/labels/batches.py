"""How the reference set is computed in the background, in batches, and exported part-way.

The whole set is one command (``matscreen label`` over ``results/label/targets.parquet``, see
README.md), but it is days of one core, so it was run family by family and system by system, so
that every finished system has its hull early, and exported as it grew. Run from the repository
root with the project's Python:

    snakemake --configfile config/reference-labels.yaml --cores 1 --until select_label_targets
    python resources/labels/batches.py plan perovskite spinel --out batches/
    OMP_NUM_THREADS=1 nice -n 19 matscreen label --config config/reference-labels.yaml \\
        batches/batch-perovskite.parquet -o batches/labels-perovskite.parquet
    python resources/labels/batches.py gather --out batches/       # whatever is stored now
    matscreen export-labels --config config/reference-labels.yaml --targets batches/targets-now.parquet \\
        --labels batches/labels-now.parquet --references batches/references-now.parquet -o resources/labels
    python -m pytest tests/test_reference_labels.py    # incl. the demo round's seed-store check

A new export changes the model make run's active-learning round trains on, so the round may pick
other candidates; ``test_the_demo_round_labels_only_what_the_seed_store_holds`` then names the
labels the seed store lacks: label them into ``resources/labels/store`` (``make run`` once, then
copy its new entries from ``results/label/store``) before shipping the export.

On Linux with autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled`` 1, the default
on this project's machines), ``nice`` ranks a process only within its session: a batch started in
its own session (``setsid``, a second terminal, ``nohup`` from another login) shares the CPU
equally with the test suite however it is niced. Also lower its session's weight with
``echo 19 > /proc/<pid>/autogroup`` (or start it with ``echo 19 > /proc/self/autogroup; exec ...``).
Measured here (2 cores): two niced batches in their own sessions took about two thirds of a core
each through the test suite, whose workflow baseline then needed 19-20 min instead of about 5
(one run hit its 20-min timeout); with their autogroups at 19 they got about 1% of a core each
while the suite's PySCF jobs ran.

``plan`` writes ``batch-<family>.parquet``: the family's targets not yet in the store, one
chemical system after another (the cheapest first by the resource estimate; in each, its missing
competing phases, then the compound). Those with Mo or W (``HARD_SCF``) come last: their SCFs
are the slow and failing ones (a Mo/W oxide double perovskite takes 12-70 CPU min here, some fail
after three attempts), and what they would hold up is the cheap halides' count. Before them come
the compounds that can get no hull (:func:`matscreen.label.hull.missing_competitors`: the Nb, Ta
and Rb oxides, as the competing-phase library has no Nb2O5, Ta2O5 or Rb2O structure type; Rb
halides have RbF and RbCl): they still add formation energies, and their SCFs converge like the
rest (the Nb/Ta perovskites took 1.5-2.5 min, the Mo/W ones 2-4). A competing phase already
planned for an earlier family on the command line is left out of the later ones' batches, so two
batches can run side by side on two cores without computing it twice (``matscreen label`` still
labels every compound's competing phases at the end of its batch: by then those are hits).

``gather`` writes ``targets-now.parquet`` (the targets with their ``stored`` flags as they are now),
``labels-now.parquet`` and ``references-now.parquet`` (every stored label, with formation energies
and hulls, as the workflow's gather rule makes them), and computes first the element references
that stored labels need and the store lacks (``matscreen label`` computes them only at the end of
a batch).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from matscreen import tables
from matscreen.config import config_hash, load_config
from matscreen.label import store
from matscreen.label.gathering import gather, reference_elements
from matscreen.label.hull import formula_elements, missing_competitors, own_binaries_of_row
from matscreen.label.jobs import label_reference
from matscreen.label.settings import LabelSettings, as_settings

CONFIG = "config/reference-labels.yaml"
# Slow, failure-prone SCFs, whatever their estimate: Ca2MgWO6 failed all three attempts in 71 min,
# Na2MoWO6 was at |g| 3.5 after 35 min of its first; the Mo2O3 competing phase took 50 min
HARD_SCF = ("Mo", "W")


def _with_stored(targets: pd.DataFrame, settings: LabelSettings) -> pd.DataFrame:
    out = targets.copy()
    out["stored"] = [store.has_entry(settings, "structures", sid) for sid in out["structure_id"]]
    return out


def plan(targets: pd.DataFrame, families: list[str], out: Path) -> None:
    competing = targets[targets["origin"] == "competing"].copy()
    competing["elements"] = competing["formula"].map(formula_elements)
    planned: set[str] = set()
    for family in families:
        compounds = targets[(targets["family"] == family) & ~targets["stored"]]
        if compounds.empty and not (targets["family"] == family).any():
            raise SystemExit(f"batches.py: family {family!r}: no targets of that family")
        systems = []
        for row in compounds.to_dict("records"):
            elements = formula_elements(row["formula"])
            mine = competing[competing["elements"].map(elements.issuperset)]
            no_hull = missing_competitors(frozenset(elements), mine["formula"], own_binaries_of_row(row)) is not None
            need = mine[~mine["stored"]]
            cost = need["runtime_min"].sum() + row["runtime_min"]
            systems.append((bool(elements & set(HARD_SCF)), no_hull, cost, row["structure_id"], need))
        ids: list[str] = []
        for *_, sid, need in sorted(systems, key=lambda s: s[:3]):
            for cid in need.sort_values("runtime_min")["structure_id"]:
                if cid not in planned:
                    planned.add(cid)
                    ids.append(cid)
            ids.append(sid)
        batch = targets.set_index("structure_id").loc[ids].reset_index()[targets.columns]
        path = out / f"batch-{family}.parquet"
        tables.write_table(batch, path, tables.LABEL_TARGETS)
        n = int((batch["origin"] != "competing").sum())
        print(
            f"{path}: {n} compounds, {len(batch) - n} competing phases, estimated "
            f"{batch['runtime_min'].sum() / 60:.1f} CPU h (the estimate runs about 2.4x over the measured time)"
        )


def gather_stored(targets: pd.DataFrame, elements: list[str], cfg: dict, out: Path) -> None:
    settings = as_settings(cfg["label"])
    stored = tables.read_tables(
        store.read_entries(settings, "structures", list(targets.loc[targets["stored"], "structure_id"])), tables.LABELS
    )
    for el in reference_elements(stored[stored["status"] == "ok"]):
        if not store.has_entry(settings, "references", el):
            print(f"computing the reference of {el}", flush=True)
            label_reference(el, out / f"reference-{el}.parquet", settings, config_hash(cfg))
    refs = pd.DataFrame({"element": elements})
    refs["stored"] = [store.has_entry(settings, "references", el) for el in elements]
    tables.write_table(targets, out / "targets-now.parquet", tables.LABEL_TARGETS)
    tables.write_table(refs, out / "reference-targets-now.parquet", tables.REFERENCE_TARGETS)
    gather(
        [],
        [],
        str(out / "labels-now.parquet"),
        str(out / "references-now.parquet"),
        settings,
        config_hash(cfg),
        targets_path=str(out / "targets-now.parquet"),
        reference_targets_path=str(out / "reference-targets-now.parquet"),
    )
    print(
        f"{out}: {int(targets['stored'].sum())} of {len(targets)} targets stored, "
        f"{int(refs['stored'].sum())} of {len(refs)} references"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["plan", "gather"])
    p.add_argument("families", nargs="*", help="plan: the families, in the order they will run")
    p.add_argument("--targets", default="results/label/targets.parquet")
    p.add_argument("--reference-targets", default="results/label/reference_targets.parquet")
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--out", type=Path, default=Path("batches"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    targets = _with_stored(tables.read_table(args.targets, tables.LABEL_TARGETS), as_settings(cfg["label"]))
    if args.command == "plan":
        if not args.families:
            p.error("plan: name at least one family")
        plan(targets, args.families, args.out)
    else:
        elements = tables.read_table(args.reference_targets, tables.REFERENCE_TARGETS)["element"].tolist()
        gather_stored(targets, elements, cfg, args.out)


if __name__ == "__main__":
    sys.exit(main())
