"""Benchmark of screening at scale (a script that prints figures, not a test).

Setup (a first child process, not timed): enumerate the default candidate space with mixed sites
on (``enumerate.mixing``, eighths by default), top it up to ``--rows`` with synthetic candidates
of ``benchmarks/featurize.py`` if the space is smaller, and write it in ``--shards`` shards; train
the *default* ensemble (``train:`` defaults: 5 boosters x 300 rounds, size-scaled parameters) on
2,000 of those candidates with a synthetic target.

Timed (a second child process, so its peak RSS is the screen's alone): for each shard read the
candidates, featurize them (default settings, vectorised path), predict with every booster
(``screen.predict``, blocks of 100,000 rows: ``matscreen.train.predict_fast``), write the predictions;
then rank all shards (``screen.rank``) and write ranked.parquet and top.csv. Prints wall time per
step, peak RSS and the load average (other processes share the cores).

Then, not timed: LightGBM's own ``Booster.predict`` and the fast path on the first ``--check-rows``
candidates, their times and whether the predictions are equal bit for bit.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/screen.py [--rows 1000000] [--shards 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

COLUMNS = [
    "candidate_id",
    "family",
    "formula",
    "A_species",
    "B_species",
    "B2_species",
    "C_species",
    "D_species",
    "X_species",
]


def setup(args: argparse.Namespace, folder: Path) -> None:
    from matscreen import enumerate as en
    from matscreen import featurize, train

    t0 = time.perf_counter()
    cand, _ = en.enumerate_candidates({"mixing": {"enabled": True, "denominator": args.denominator}})
    n_enum = len(cand)
    t_enum = time.perf_counter() - t0
    cand = cand[COLUMNS]
    if len(cand) < args.rows:
        from featurize import synthetic_candidates

        extra = synthetic_candidates(args.rows - len(cand), seed=1)
        extra = extra.reindex(columns=COLUMNS)
        extra["candidate_id"] = ["syn-" + str(c) for c in extra["candidate_id"]]
        cand = pd.concat([cand, extra], ignore_index=True)
    cand = cand.sample(frac=1.0, random_state=0).head(args.rows).reset_index(drop=True)
    per = -(-len(cand) // args.shards)
    for k in range(args.shards):
        cand.iloc[k * per : (k + 1) * per].to_parquet(folder / f"cand-{k}.parquet")
    # the default ensemble, trained on 2,000 candidates with a synthetic, learnable target
    sample = cand.sample(2000, random_state=3).reset_index(drop=True).rename(columns={"candidate_id": "structure_id"})
    feats = featurize.featurize_frame(sample, "structure_id", featurize.resolve_settings({}))
    rng = np.random.default_rng(0)
    cols = train.feature_columns(feats)
    y = np.nan_to_num(feats[cols[:3]].to_numpy(np.float64)) @ rng.normal(size=3) * 1e-3 + 0.05 * rng.normal(
        size=len(feats)
    )
    labels = pd.DataFrame(
        {
            "structure_id": sample["structure_id"],
            "formula": sample["formula"],
            "status": "ok",
            "e_above_hull_ev_per_atom": y,
        }
    )
    t1 = time.perf_counter()
    s = train.resolve_settings({"learning_curve": {"enabled": False}})
    data = train.training_frame(feats, labels, "e_above_hull_ev_per_atom")
    boosters, params = train.fit_model(
        data[cols], data["e_above_hull_ev_per_atom"].to_numpy(), np.arange(len(data)), s, 1
    )
    models = {"e_above_hull_ev_per_atom": train.Ensemble(cols, "e_above_hull_ev_per_atom", boosters, {}, 1.3, params)}
    (folder / "model.json").write_text(train.models_to_json(models))
    print(
        f"setup: enumerated {n_enum:,} candidates with mixed sites (denominator {args.denominator}) in {t_enum:.1f} s; "
        f"{len(cand):,} candidates in {args.shards} shards ({max(0, args.rows - n_enum):,} synthetic); "
        f"default ensemble ({len(boosters)} boosters x {s.num_boost_round} rounds, {len(cols)} features) "
        f"trained in {time.perf_counter() - t1:.1f} s",
        flush=True,
    )


def timed(args: argparse.Namespace, folder: Path) -> None:
    from matscreen import featurize, screen, tables, train

    models = train.load_models(folder / "model.json")
    fs = featurize.resolve_settings({})
    t = {"read": 0.0, "featurize": 0.0, "predict": 0.0, "write": 0.0}
    t0 = time.perf_counter()
    n = 0
    for k in range(args.shards):
        a = time.perf_counter()
        cand = pd.read_parquet(folder / f"cand-{k}.parquet")
        b = time.perf_counter()
        feats = featurize.featurize_frame(cand, "candidate_id", fs)
        c = time.perf_counter()
        preds = screen.predict(models, cand, feats, block_rows=100_000, threads=args.threads)
        d = time.perf_counter()
        tables.write_table(preds, folder / f"pred-{k}.parquet", tables.PREDICTIONS)
        e = time.perf_counter()
        t["read"] += b - a
        t["featurize"] += c - b
        t["predict"] += d - c
        t["write"] += e - d
        n += len(cand)
        del cand, feats, preds
    a = time.perf_counter()
    preds = tables.read_tables([folder / f"pred-{k}.parquet" for k in range(args.shards)], tables.PREDICTIONS)
    ranked = screen.rank(preds, {})
    tables.write_table(ranked, folder / "ranked.parquet", tables.PREDICTIONS)
    ranked.head(50).to_csv(folder / "top.csv", index=False)
    t["rank"] = time.perf_counter() - a
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    check = compare_with_lightgbm(models, folder, fs, args.check_rows, args.threads) if args.check_rows else {}
    print(
        json.dumps(
            {
                "rows": n,
                "wall_s": round(wall, 1),
                "peak_rss_mb": round(peak),
                **{k: round(v, 1) for k, v in t.items()},
                "load_1min": round(load, 1),
                **check,
            }
        )
    )


def compare_with_lightgbm(models, folder: Path, fs, rows: int, threads: int) -> dict:
    """LightGBM's Booster.predict vs the fast path of Ensemble.predict on the first rows of shard 0."""
    from matscreen import featurize

    ens = next(iter(models.values()))
    cand = pd.read_parquet(folder / "cand-0.parquet").head(rows)
    X = featurize.featurize_frame(cand, "candidate_id", fs)[ens.features].to_numpy(dtype=np.float32)
    forest = ens.fast_forest()
    a = time.perf_counter()
    slow = np.stack([b.predict(X, num_threads=threads) for b in ens.boosters])
    b = time.perf_counter()
    fast = forest.predict(X, num_threads=threads) if forest is not None else slow
    c = time.perf_counter()
    return {
        "check_rows": len(X),
        "trees": sum(b.num_trees() for b in ens.boosters),
        "lightgbm_s": round(b - a, 2),
        "fast_s": round(c - b, 2),
        "fast_path": forest is not None,
        "bitwise_equal": bool(np.array_equal(slow, fast)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="LightGBM prediction threads (default: 2 cores)")
    p.add_argument("--denominator", type=int, default=8)
    p.add_argument("--check-rows", type=int, default=100_000, help="rows of the LightGBM comparison (0: none)")
    p.add_argument("--child", choices=["setup", "timed"], default=None)
    p.add_argument("--folder", default=None)
    args = p.parse_args()
    if args.child:
        (setup if args.child == "setup" else timed)(args, Path(args.folder))
        return
    with tempfile.TemporaryDirectory() as folder:
        base = [
            sys.executable,
            __file__,
            "--rows",
            str(args.rows),
            "--shards",
            str(args.shards),
            "--threads",
            str(args.threads),
            "--denominator",
            str(args.denominator),
            "--check-rows",
            str(args.check_rows),
            "--folder",
            folder,
        ]
        subprocess.run([*base, "--child", "setup"], check=True)
        out = subprocess.run([*base, "--child", "timed"], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"screened {r['rows']:,} candidates (featurize + predict with the default ensemble + rank) in "
            f"{r['wall_s']} s, peak RSS {r['peak_rss_mb']} MB; read {r['read']} s, featurize {r['featurize']} s, "
            f"predict {r['predict']} s ({args.threads} threads), write {r['write']} s, rank {r['rank']} s; "
            f"load average {r['load_1min']}"
        )
        if "check_rows" in r:
            print(
                f"check (not timed): {r['check_rows']:,} rows x {r['trees']} trees: LightGBM Booster.predict "
                f"{r['lightgbm_s']} s, fast path {r['fast_s']} s ({r['lightgbm_s'] / max(r['fast_s'], 1e-9):.1f}x; "
                f"used: {r['fast_path']}), bitwise equal: {r['bitwise_equal']}"
            )


if __name__ == "__main__":
    main()
