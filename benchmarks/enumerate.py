"""Benchmark of the enumerate stage on the shipped default spaces (config/config.yaml).

Prints the funnel, combinations and candidates per second (median of --repeat runs), the time
to write the shards, and the time to build prototype cells per family (label-stage cost).

    .venv/bin/python benchmarks/enumerate.py [--repeat 3] [--prototypes 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from matscreen import enumerate as en  # noqa: E402
from matscreen import prototypes
from matscreen.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed enumeration runs (median reported)")
    parser.add_argument("--prototypes", type=int, default=3, help="prototype cells built per family and arrangement")
    args = parser.parse_args()

    settings = load_config()["enumerate"]
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        cand, funnel = en.enumerate_candidates(settings)
        times.append(time.perf_counter() - t0)
    wall = statistics.median(times)
    combos = int(funnel.loc[funnel["step"] == 0, "remaining"].sum())

    print(en.format_funnel(funnel))
    print()
    print(f"families: {', '.join(settings['families'])}; cation pool: {len(settings['cations'])} elements")
    print(f"combinations: {combos:,}   candidates: {len(cand):,}   ({len(cand) / combos:.2%} pass)")
    print(f"enumerate_candidates: median {wall:.2f} s over {args.repeat} runs (min {min(times):.2f} s)")
    print(f"  {combos / wall:,.0f} combinations/s, {len(cand) / wall:,.0f} candidates/s")

    with tempfile.TemporaryDirectory() as tmp:
        paths = [f"{tmp}/part-{i}.parquet" for i in range(settings["shards"])]
        t0 = time.perf_counter()
        en.run(settings, paths, f"{tmp}/funnel.parquet")
        t_run = time.perf_counter() - t0
        size = sum(Path(p).stat().st_size for p in paths)
    print(f"run() incl. {settings['shards']} shards: {t_run:.2f} s, {size / 1e6:.2f} MB on disk")

    if args.prototypes:
        print()
        print(f"{'prototype':<26} {'atoms':>5} {'s/cell':>8}")
        for (fam, arr), group in cand.groupby(["family", "arrangement"], sort=False):
            rows = group.sample(min(args.prototypes, len(group)), random_state=0)
            t0 = time.perf_counter()
            cells = [prototypes.build_prototype(r.to_dict()) for _, r in rows.iterrows()]
            dt = (time.perf_counter() - t0) / len(cells)
            print(f"{fam + (' ' + arr if arr else ''):<26} {len(cells[0]):>5} {dt:>8.3f}")


if __name__ == "__main__":
    main()
