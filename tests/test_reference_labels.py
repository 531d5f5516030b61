"""The shipped reference label set (resources/labels/): contract, ids, settings, and real recomputation."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import yaml

from matscreen import label, tables
from matscreen.config import REPO_ROOT
from matscreen.ids import structure_id
from matscreen.structjson import structure_from_json

SHIPPED = REPO_ROOT / "resources" / "labels"


def _shipped_settings() -> dict:
    cfg = yaml.safe_load((SHIPPED / "config.yaml").read_text())
    assert (SHIPPED / "config.yaml").read_text() == (REPO_ROOT / "config" / "reference-labels.yaml").read_text()
    return label.resolve_settings(cfg.get("label") or {})


def test_shipped_tables_pass_their_contracts_with_unique_rebuildable_ids() -> None:
    compounds = tables.read_table(SHIPPED / "labels.parquet", tables.REFERENCE_LABELS)
    competing = tables.read_table(SHIPPED / "competing.parquet", tables.REFERENCE_LABELS)
    refs = tables.read_table(SHIPPED / "references.parquet", tables.REFERENCES)
    assert len(compounds)  # competing phases and references may still be empty while the set is computed
    assert refs["element"].is_unique
    both = [*compounds.itertuples(), *competing.itertuples()]
    ids = [r.structure_id for r in both]
    assert len(ids) == len(set(ids))
    for r in both:
        assert structure_id(structure_from_json(r.structure, f"{r.structure_id}")) == r.structure_id
    assert set(compounds["origin"]) <= {"candidate", "ingest"} and set(competing["origin"]) <= {"competing"}


def test_every_row_has_the_settings_hash_of_the_shipped_config() -> None:
    want = label.settings_hash(_shipped_settings())
    assert set(tables.read_table(SHIPPED / "labels.parquet", tables.REFERENCE_LABELS)["settings_hash"]) == {want}
    # (competing phases and references may still be empty while the set is computed)
    assert set(tables.read_table(SHIPPED / "competing.parquet", tables.REFERENCE_LABELS)["settings_hash"]) <= {want}
    assert set(tables.read_table(SHIPPED / "references.parquet", tables.REFERENCES)["settings_hash"]) <= {want}
    assert want == label.settings_hash({}), "the shipped set is at the default level of theory"


@pytest.mark.slow
def test_two_random_small_rows_recompute_to_the_same_energy() -> None:
    """Two rows (at most 5 atoms, ok, of the cheaper half by recorded wall time) drawn at random,
    recomputed now with the recorded settings: same energy to 1e-6 Ha."""
    s = _shipped_settings()
    df = tables.read_table(SHIPPED / "labels.parquet", tables.REFERENCE_LABELS)
    df = df[(df["status"] == "ok") & (df["nsites"] <= 5)]
    df = df[df["wall_s"] <= df["wall_s"].median()].reset_index(drop=True)
    assert len(df) >= 2
    for i in np.random.default_rng().choice(len(df), size=2, replace=False):
        row = df.iloc[int(i)]
        st = structure_from_json(row["structure"], row["structure_id"])
        new = label.compute_label(st, row["structure_id"], s)
        assert new["status"] == "ok", new["error"]
        assert new["energy_ha"] == pytest.approx(row["energy_ha"], abs=1e-6), row["formula"]


def test_the_default_run_trains_on_every_usable_shipped_label(tmp_path) -> None:
    """make run's config names the shipped table in train.external_labels, at its own level of
    theory. Trained on it alone with the default train: section (a run adds its own labels on
    top), every target model of the default run fits every shipped compound that has a value of
    that target: the default run trains on at least the shipped count of labels."""
    from matscreen import featurize, train
    from matscreen.config import load_config
    from matscreen.train import external

    cfg = load_config()
    assert str(SHIPPED / "labels.parquet").endswith(cfg["train"]["external_labels"][0])
    target = cfg["train"]["target"]
    targets = [target] if isinstance(target, str) else list(target)
    shipped = tables.read_table(SHIPPED / "labels.parquet", tables.REFERENCE_LABELS)
    ok = shipped[shipped["status"] == "ok"]
    usable = {t: int(ok[t].notna().sum()) for t in targets if t in ok.columns}
    # alone, the shipped set feeds the targets with at least train.min_labels values (in a run, its own labels add)
    trainable = [t for t, n in usable.items() if n >= cfg["train"]["min_labels"]]
    assert trainable, usable
    ext = tmp_path / "external.parquet"
    external.run([str(SHIPPED / "labels.parquet")], str(ext), trainable, "", label.settings_hash(cfg["label"]))
    feats = tmp_path / "external_features.parquet"
    featurize.run([str(ext)], str(feats), "structure_id", cfg["featurize"])
    own_feats, own_labels = tmp_path / "own_features.parquet", tmp_path / "own_labels.parquet"  # none of its own
    tables.write_table(
        tables.read_table(feats, tables.STRUCTURE_FEATURES).head(0), own_feats, tables.STRUCTURE_FEATURES
    )
    tables.write_table(tables.empty_frame(tables.LABELS), own_labels, tables.LABELS)
    out = {k: tmp_path / f"{k}.out" for k in ("model", "metrics", "oof")}
    train.run(
        str(own_feats),
        str(own_labels),
        str(out["model"]),
        str(out["metrics"]),
        str(out["oof"]),
        {**cfg["train"], "target": trainable},
        cfg["seed"],
        external_features_path=str(feats),
        external_labels_path=str(ext),
    )
    metrics = tables.read_table(out["metrics"], tables.CV_METRICS)
    for t in trainable:
        pooled = train.pooled_metrics(metrics, t).set_index("metric")["value"]
        assert pooled["n_test"] == usable[t], (t, pooled["n_test"], usable[t])


def _batches_tool():
    """resources/labels/batches.py, the script that plans the background batches of the set."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reference_batches", SHIPPED / "batches.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_batches_put_each_systems_competing_phases_before_its_compound_and_none_twice(tmp_path) -> None:
    import pandas as pd

    from matscreen.label.hull import formula_elements

    rows = pd.concat(
        [tables.read_table(SHIPPED / f, tables.REFERENCE_LABELS) for f in ("labels.parquet", "competing.parquet")]
    )
    targets = tables.conform(rows.assign(stored=False, runtime_min=rows["nsites"]), tables.LABEL_TARGETS)
    targets = targets[tables.LABEL_TARGETS.column_names]
    targets.loc[targets.index[:3], "stored"] = True  # stored rows are never planned
    hull_less = set(rows.loc[rows["hull_error"].notna(), "structure_id"])
    assert hull_less and any("Rb" in f and "F" in f for f in rows["formula"])  # the cases the order is about
    families = sorted(set(targets["family"]) - {"other"}, reverse=True)  # every shipped family, in a fixed order
    _batches_tool().plan(targets, families, tmp_path)

    seen: set[str] = set()
    for family in families:
        batch = tables.read_table(tmp_path / f"batch-{family}.parquet", tables.LABEL_TARGETS)
        assert not batch["stored"].any() and not set(batch["structure_id"]) & seen  # nothing twice
        compounds = targets[(targets["family"] == family) & ~targets["stored"]]
        assert set(compounds["structure_id"]) <= set(batch["structure_id"])
        done: set[str] = set(seen)
        last = (False, False)
        for row in batch.itertuples():
            done.add(row.structure_id)
            if row.origin == "competing":
                continue
            els = formula_elements(row.formula)
            need = targets[(targets["origin"] == "competing") & ~targets["stored"]]
            need = need[need["formula"].map(formula_elements).map(els.issuperset)]
            assert set(need["structure_id"]) <= done, f"{row.formula}: a competing phase comes after it"
            # the slow Mo and W ones come last; before them the compounds the shipped hull could not
            # place (Nb, Ta, Rb oxides); Rb halides, which have RbF and RbCl, are not held back
            key = (bool(els & {"Mo", "W"}), row.structure_id in hull_less)
            assert key >= last, f"{row.formula} after a compound that has Mo or W or gets no hull"
            last = key
        seen |= set(batch["structure_id"])


@pytest.mark.slow
def test_the_demo_round_labels_only_what_the_seed_store_holds(tmp_path) -> None:
    """make run's active-learning round picks its candidates from a model trained on the shipped
    labels, so every export of the reference set can change what it picks. Whatever it picks
    (compounds, their competing phases and the references of round 0 and 1) must already be in the
    shipped seed store, or make run computes PySCF labels for minutes to tens of minutes (after one
    export, round 1 chose NaNiF3: a Ni reference and two spin-polarised NiF2). When this fails,
    label what it names into resources/labels/store (or narrow rounds.elements) and ship it.
    The round must also choose compounds the shipped labels do not hold: before, it chose shipped
    perovskites (seed-store hits, so this check alone passed) and 'checked' the model on them."""
    import shutil

    from workflow_utils import snakemake

    from matscreen import paths
    from matscreen.config import load_config
    from matscreen.label.store import entry_path

    work = tmp_path / "demo"
    work.mkdir()
    (work / "resources").symlink_to(REPO_ROOT / "resources")  # the default config's relative paths
    shutil.copy(REPO_ROOT / "config" / "config.yaml", work / "config.yaml")
    cfg = load_config(work / "config.yaml")
    assert cfg["rounds"]["count"] >= 2, "the demo runs an active-learning round"
    res = snakemake(work, "--until", "acquire", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    seed = label.resolve_settings(cfg["label"]).replace(store=str(REPO_ROOT / cfg["label"]["seed_stores"][0]))
    last = cfg["rounds"]["count"] - 1
    plan = tables.read_table(work / paths.round_targets(last), tables.LABEL_TARGETS)
    refs = tables.read_table(work / paths.round_reference_targets(last), tables.REFERENCE_TARGETS)
    assert (plan["round"] == last).any(), "the last round chose nothing: the demo no longer shows a round"
    missing = [
        f"{f} ({i})"
        for i, f in zip(plan["structure_id"], plan["formula"], strict=True)
        if not entry_path(seed, "structures", i).exists()
    ]
    missing += [f"reference {e}" for e in refs["element"] if not entry_path(seed, "references", e).exists()]
    assert not missing, f"make run would compute {len(missing)} labels the seed store lacks: {', '.join(missing)}"
    # and none of its compounds is one the model already trains on (the shipped labels are
    # train.external_labels): the round's check of the model must be on data it has not seen
    from pymatgen.core import Composition

    from matscreen.train.settings import primary_target

    shipped = tables.read_table(SHIPPED / "labels.parquet", tables.REFERENCE_LABELS)
    target = primary_target(cfg)
    known = {Composition(f).reduced_formula for f in shipped.loc[shipped[target].notna(), "formula"]}
    chosen = plan[(plan["round"] == last) & (plan["origin"] != "competing")]
    again = sorted({Composition(f).reduced_formula for f in chosen["formula"]} & known)
    assert not again, f"the demo round chose compounds the shipped labels already give {target}: {again}"
