"""Benchmark of the featurize stage (a script that prints figures, not a test).

1. On the same N compositions (default 20,000 synthetic candidates of all four families, about
   20 % of sites mixed): rows/s of the vectorised fast path, rows/s of matminer per row
   (``featurize_dataframe`` with ``set_n_jobs(1)``, no progress bar; on a subsample, default
   2,000 rows, because matminer needs about 4 ms per row), their ratio, and the deviation
   between the two on the subsample.
2. One million candidates streamed by shard (default 10 shards of 100,000): shards are written
   by a first child process, then a second child runs ``featurize.run`` on each shard (read,
   featurize, write) and reports wall time and its peak RSS.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/featurize.py [--rows 20000] [--matminer-rows 2000]
        [--million 1000000] [--shards 10] [--skip-million]
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
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from matscreen import featurize  # noqa: E402
from matscreen.families import FAMILIES, Ion, format_occupancy  # noqa: E402

#: cation pool of the default enumerate config, with pymatgen's common oxidation states
CATION_ELEMENTS = ("Li Na K Rb Cs Be Mg Ca Sr Ba Sc Y La Ce Pr Nd Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Ti Zr Hf V Nb Ta "
                   "Cr Mo W Mn Re Fe Ru Os Co Rh Ir Ni Pd Pt Cu Ag Au Zn Cd Hg B Al Ga In Tl Si Ge Sn Pb As Sb Bi Te").split()
ANIONS = [("O", -2), ("F", -1), ("Cl", -1), ("Br", -1), ("I", -1), ("S", -2), ("Se", -2)]
COMPOSITION_ONLY = {"site_features": False}  # magpie + stoichiometry + valence orbital (the defaults)


def _cations() -> list[tuple[str, float]]:
    from pymatgen.core import Element

    return [(e, float(o)) for e in CATION_ELEMENTS for o in Element(e).common_oxidation_states if o > 0]


def _vocabulary(rng: np.random.Generator, pool: list[tuple[str, float]], n_mixed: int) -> list[str]:
    """Single-ion occupancies plus ``n_mixed`` random binary mixes."""
    out = [format_occupancy([Ion(el, ox)]) for el, ox in pool]
    for _ in range(n_mixed):
        i, j = rng.choice(len(pool), 2, replace=False)
        if pool[i][0] == pool[j][0] and pool[i][1] == pool[j][1]:
            continue
        f = float(rng.choice([0.125, 0.25, 0.5, 0.75, 0.875]))
        out.append(format_occupancy([Ion(*pool[i], f), Ion(*pool[j], 1 - f)]))
    return out


def synthetic_candidates(n: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    """Candidate-like rows: family round robin, sites drawn from vocabularies (about 20 % mixed)."""
    rng = np.random.default_rng(seed)
    cat = _vocabulary(rng, _cations(), 60)
    an = _vocabulary(rng, ANIONS, 6)
    n_single_cat = len(_cations())
    p_cat = np.where(np.arange(len(cat)) < n_single_cat, 0.8 / n_single_cat, 0.2 / (len(cat) - n_single_cat))
    p_an = np.where(np.arange(len(an)) < len(ANIONS), 0.8 / len(ANIONS), 0.2 / (len(an) - len(ANIONS)))
    fams = np.array(list(FAMILIES))[np.arange(n) % len(FAMILIES)]
    df = pd.DataFrame({"candidate_id": [f"c-{start + i:09d}" for i in range(n)], "family": fams,
                       "formula": "", "arrangement": ""})
    cat_arr, an_arr = np.array(cat, dtype=object), np.array(an, dtype=object)
    for label in ("A", "B", "B2", "C", "D", "X"):
        col = np.full(n, None, dtype=object)
        for fname, fam in FAMILIES.items():
            if label not in fam.site_labels:
                continue
            rows = np.flatnonzero(fams == fname)
            if label == "X":
                col[rows] = an_arr[rng.choice(len(an), len(rows), p=p_an)]
            else:
                col[rows] = cat_arr[rng.choice(len(cat), len(rows), p=p_cat)]
        df[f"{label}_species"] = col
    return df


def matminer_reference(df: pd.DataFrame) -> tuple[np.ndarray, float]:
    """matminer's featurize_dataframe (n_jobs=1) for magpie + stoichiometry + valence orbital."""
    from matminer.featurizers.composition import ElementProperty, Stoichiometry, ValenceOrbital

    comps = [featurize.row_composition(r.family, {s: getattr(r, f"{s}_species") for s in ("A", "B", "B2", "C", "D", "X")})
             for r in df.itertuples()]
    frame = pd.DataFrame({"composition": comps})
    blocks = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in (ElementProperty.from_preset("magpie"), Stoichiometry(), ValenceOrbital()):
            f.set_n_jobs(1)
            res = f.featurize_dataframe(frame, "composition", ignore_errors=True, pbar=False)
            blocks.append(res[f.feature_labels()].astype(float).to_numpy())
    return np.hstack(blocks), time.perf_counter() - t0


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def compare(n_rows: int, n_matminer: int) -> None:
    df = synthetic_candidates(n_rows, seed=1)
    featurize.feature_values(df.iloc[:50], COMPOSITION_ONLY)  # build the element tables once
    times = []
    for _ in range(3):  # the first run also parses the occupancy strings (cached per unique string)
        t0 = time.perf_counter()
        fast, _ = featurize.feature_values(df, COMPOSITION_ONLY)
        times.append(time.perf_counter() - t0)
    t_first, t_fast = times[0], min(times)
    t_all = min(_timed(lambda: featurize.feature_values(df, {})) for _ in range(3))
    sub = df.iloc[:n_matminer]
    ref, t_mm = matminer_reference(sub)
    fsub = fast[:n_matminer]
    both = ~np.isnan(ref)
    same_nan = bool((np.isnan(fsub) == np.isnan(ref)).all())
    rel = np.abs(fsub[both] - ref[both]) / np.maximum(np.abs(ref[both]), 1e-300)
    rate_fast, rate_mm = n_rows / t_fast, n_matminer / t_mm
    print(f"compositions: {n_rows} (matminer on the first {n_matminer}), features: {fast.shape[1]} "
          "(ElementProperty magpie + Stoichiometry + ValenceOrbital)")
    print(f"  matminer per row : {rate_mm:12,.0f} rows/s  ({1e3 * t_mm / n_matminer:.2f} ms/row)")
    print(f"  fast path        : {rate_fast:12,.0f} rows/s  ({1e6 * t_fast / n_rows:.1f} us/row, best of 3; "
          f"first run {n_rows / t_first:,.0f} rows/s)")
    print(f"  ratio            : {rate_fast / rate_mm:12,.0f} x  (first run: {n_rows / t_first / rate_mm:,.0f} x)")
    print(f"  fast path + site features (default settings): {n_rows / t_all:,.0f} rows/s (best of 3)")
    print(f"  deviation vs matminer on {n_matminer} rows: max relative {rel.max():.2e}, max absolute "
          f"{np.abs(fsub[both] - ref[both]).max():.2e}, bit-identical {np.mean(fsub[both] == ref[both]):.4%} of "
          f"values, NaN pattern identical: {same_nan}")


def _child_write(args: argparse.Namespace, folder: str) -> None:
    from matscreen.tables import CANDIDATES, conform, write_table

    per = args.million // args.shards
    for k in range(args.shards):
        df = synthetic_candidates(per, seed=100 + k, start=k * per)
        write_table(conform(df, CANDIDATES), Path(folder) / f"part-{k}.parquet", CANDIDATES)


def _child_run(args: argparse.Namespace, folder: str) -> None:
    from matscreen.tables import CANDIDATE_FEATURES, write_table

    settings = featurize.resolve_settings({})
    featurize.feature_values(synthetic_candidates(50), settings)  # tables built outside the timing
    t_read = t_feat = t_write = 0.0
    n = 0
    t0 = time.perf_counter()
    for k in range(args.shards):
        src = Path(folder) / f"part-{k}.parquet"
        a = time.perf_counter()
        df = featurize.stage._read_inputs([str(src)], "candidate_id", False)
        b = time.perf_counter()
        feats = featurize.featurize_frame(df, "candidate_id", settings)
        c = time.perf_counter()
        write_table(feats, Path(folder) / f"features-{k}.parquet", CANDIDATE_FEATURES,
                    {"feature_set_hash": featurize.feature_set_hash(settings)})
        d = time.perf_counter()
        t_read, t_feat, t_write = t_read + b - a, t_feat + c - b, t_write + d - c
        n += len(df)
        ncols = feats.shape[1] - 2
        del df, feats
    total = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": n, "features": ncols, "total_s": total, "read_s": t_read, "featurize_s": t_feat,
                      "write_s": t_write, "peak_rss_mb": peak_mb}))


def million(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="featurize-bench-") as folder:
        me = [sys.executable, __file__, "--million", str(args.million), "--shards", str(args.shards)]
        t0 = time.perf_counter()
        subprocess.run([*me, "--child-write", folder], check=True)
        print(f"wrote {args.million:,} synthetic candidates in {args.shards} shards in "
              f"{time.perf_counter() - t0:.1f} s (not timed below)")
        out = subprocess.run([*me, "--child-run", folder], check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['rows']:,} candidates x {r['features']} features (default settings), {args.shards} shards, "
              f"one process:")
        print(f"  featurize {r['featurize_s']:.1f} s ({r['rows'] / r['featurize_s']:,.0f} rows/s), "
              f"read {r['read_s']:.1f} s, write {r['write_s']:.1f} s, total {r['total_s']:.1f} s")
        print(f"  peak RSS {r['peak_rss_mb']:,.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--matminer-rows", type=int, default=2000)
    p.add_argument("--million", type=int, default=1_000_000)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--skip-million", action="store_true")
    p.add_argument("--child-write")
    p.add_argument("--child-run")
    args = p.parse_args()
    if args.child_write:
        return _child_write(args, args.child_write)
    if args.child_run:
        return _child_run(args, args.child_run)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cores: {os.cpu_count()}")
    compare(args.rows, min(args.matminer_rows, args.rows))
    if not args.skip_million:
        million(args)


if __name__ == "__main__":
    main()
