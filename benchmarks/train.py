"""Benchmark of the model against a plain baseline (a script that prints figures, not a test).

Baseline: magpie features only (matminer ElementProperty 'magpie', via matscreen's featurizer)
and ``lightgbm.LGBMRegressor()`` with its defaults. Model: matscreen's default ``train:``
settings (all default features, size-scaled parameters, bootstrap ensemble). Both on the *same*
grouped folds (``train.cv_groups``), pooled out-of-fold MAE.

Data sets:

1. a synthetic 2,000-row table: perovskite/double-perovskite/spinel/garnet candidates of the
   default enumeration (sites known) with a target built from physically motivated descriptors
   (tolerance-factor mismatch, electronegativity difference, mean atomic number) plus noise,
   the kind of table ``train.external_labels`` takes;
2. the pipeline's own labels if ``--results`` points at a run's ``results/`` folder
   (``label/labels.parquet``, ``featurize/labeled.parquet``), e.g. the tiny test config's run.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train.py [--rows 2000] [--results results]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from matscreen import featurize, tables, train  # noqa: E402


def compare(name: str, feats: pd.DataFrame, labels: pd.DataFrame, target: str, seed: int = 1) -> None:
    import lightgbm as lgb

    s = train.resolve_settings({"target": target, "learning_curve": {"enabled": False}})
    data = train.training_frame(feats, labels, target)
    cols = train.feature_columns(feats)
    magpie = [c for c in cols if c.startswith("MagpieData")]
    t0 = time.perf_counter()
    cv = train.cross_validate(data, cols, target, s, seed)
    t_model = time.perf_counter() - t0
    y = data[target].to_numpy()
    base = np.empty(len(y))
    t0 = time.perf_counter()
    for k in np.unique(cv.folds):
        te = cv.folds == k
        base[te] = (
            lgb.LGBMRegressor(verbose=-1, n_jobs=1).fit(data.loc[~te, magpie], y[~te]).predict(data.loc[te, magpie])
        )
    t_base = time.perf_counter() - t0
    m = train.pooled_metrics(cv.metrics).set_index("metric")["value"]
    mae_base = float(np.mean(np.abs(base - y)))
    print(f"{name}: {len(y)} rows, {len(np.unique(cv.folds))} folds grouped by {s.cv_groups}")
    print(f"  baseline (magpie, {len(magpie)} features, LGBMRegressor defaults): MAE {mae_base:.4f} ({t_base:.1f} s)")
    print(
        f"  matscreen default ({len(cols)} features, ensemble of {s.ensemble_size}): MAE {m['mae']:.4f}, "
        f"R2 {m['r2']:.3f}, 1-sigma coverage {m['coverage_1sigma']:.2f} raw -> "
        f"{m['coverage_1sigma_calibrated']:.2f} calibrated (factor {m['calibration_factor']:.2f}) ({t_model:.1f} s)"
    )
    print(f"  ratio model/baseline: {m['mae'] / mae_base:.3f}")


def synthetic(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    from matscreen import enumerate as en

    cand, _ = en.enumerate_candidates({})
    sample = (
        cand.sample(rows, random_state=seed).reset_index(drop=True).rename(columns={"candidate_id": "structure_id"})
    )
    feats = featurize.featurize_frame(sample, "structure_id", featurize.resolve_settings({}))
    rng = np.random.default_rng(seed)
    t = sample["tolerance_factor"].fillna(0.95).to_numpy()
    dchi = feats["site_oct_dchi_anion"].fillna(2.0).to_numpy()
    z = feats["MagpieData_mean_Number"].to_numpy()
    fam = sample["family"].map({"perovskite": 0.0, "double_perovskite": 0.05, "spinel": 0.1, "garnet": 0.15}).to_numpy()
    y = 2.0 * (t - 0.95) ** 2 + 0.05 * np.abs(dchi - 2.0) + 0.002 * (z - 20) + fam + 0.03 * rng.normal(size=rows)
    labels = pd.DataFrame(
        {
            "structure_id": sample["structure_id"],
            "formula": sample["formula"],
            "status": "ok",
            "e_above_hull_ev_per_atom": y,
        }
    )
    return feats, labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--results", default=None, help="a run's results/ folder (labels and labeled features)")
    p.add_argument("--target", default="e_above_hull_ev_per_atom")
    args = p.parse_args()
    feats, labels = synthetic(args.rows)
    compare(f"synthetic {args.rows}-row table", feats, labels, "e_above_hull_ev_per_atom")
    if args.results:
        r = Path(args.results)
        lab = tables.read_table(r / "label/labels.parquet", tables.LABELS)
        f = tables.read_table(r / "featurize/labeled.parquet", tables.STRUCTURE_FEATURES)
        compare(f"pipeline labels ({r})", f, lab, args.target)
    else:
        print("pipeline labels: skipped (no --results folder of a run given)")


if __name__ == "__main__":
    main()
