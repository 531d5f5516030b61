"""The report: its figures are drawn from the run's tables and summary.md prints the same numbers.

The fast tests draw from small synthetic tables; the slow ones rebuild the report of the shared
tiny run (:func:`workflow_utils.baseline_run`) in a copy and compare with its metrics tables.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_utils import baseline_run, copy_workdir, read_config

from matscreen import paths, report, tables
from matscreen.report import figures, table_html
from matscreen.train import load_models, primary_target, regression_metrics


def _oof(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    std = np.abs(rng.normal(0.5, 0.1, size=n))
    return pd.DataFrame(
        {
            "target": "t",
            "structure_id": [f"s-{i:04x}" for i in range(n)],
            "family": np.where(np.arange(n) % 3 == 0, "spinel", "perovskite"),
            "fold": np.arange(n) % 3,
            "y_true": y,
            "y_pred": y + rng.normal(0, 0.5, size=n),
            "y_std": std,
            "y_std_calibrated": 1.5 * std,
        }
    )


def test_parity_and_calibration_record_the_metrics_train_computes():
    oof = _oof()
    stats = figures.parity_stats(oof).set_index("family")
    cal = figures.calibration_table(oof)
    for fam in ("perovskite", "spinel"):
        d = oof[oof["family"] == fam]
        m = regression_metrics(d["y_true"].to_numpy(), d["y_pred"].to_numpy(), d["y_std_calibrated"].to_numpy())
        assert stats.loc[fam, "mae"] == pytest.approx(m["mae"]) and stats.loc[fam, "rmse"] == pytest.approx(m["rmse"])
        at1 = cal[(cal["family"] == fam) & (cal["sigma"] == "calibrated") & (cal["k"] == 1.0)]
        assert at1["observed"].item() == pytest.approx(m["coverage_1sigma"])
    raw = regression_metrics(oof["y_true"].to_numpy(), oof["y_pred"].to_numpy(), oof["y_std"].to_numpy())
    at1 = cal[(cal["family"] == "all") & (cal["sigma"] == "raw") & (cal["k"] == 1.0)]
    assert at1["observed"].item() == pytest.approx(raw["coverage_1sigma"])
    assert cal["expected"][cal["k"] == 1.0].iloc[0] == pytest.approx(math.erf(1 / math.sqrt(2)))


def test_a_changed_oof_row_changes_the_figure_and_its_data(tmp_path):
    oof = _oof()
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    first = figures.parity_plot(oof, "t", a)
    again = figures.parity_plot(oof, "t", b)
    assert a.read_bytes() == b.read_bytes() and first.equals(again)  # same table, same bytes
    changed = oof.copy()
    changed.loc[1, "y_pred"] += 3.0  # a perovskite row
    drawn = figures.parity_plot(changed, "t", c)
    assert a.read_bytes() != c.read_bytes()
    fam = drawn.set_index("family")
    assert fam.loc["perovskite", "mae"] != first.set_index("family").loc["perovskite", "mae"]
    assert fam.loc["spinel", "mae"] == first.set_index("family").loc["spinel", "mae"]
    cal_a, cal_c = tmp_path / "cal_a.png", tmp_path / "cal_c.png"
    figures.calibration_plot(oof, "t", cal_a)
    figures.calibration_plot(changed, "t", cal_c)
    assert cal_a.read_bytes() != cal_c.read_bytes()


def test_top_table_page_escapes_and_keeps_full_values():
    df = pd.DataFrame({"rank": [1, 2], "formula": ["<b>SrTiO3</b>", "KMgF3"], "score": [0.123456789, float("nan")]})
    page = table_html.render(df, "Top & co")
    assert "<b>SrTiO3</b>" not in page and "&lt;b&gt;SrTiO3&lt;/b&gt;" in page
    assert 'data-v="0.123456789">0.1235<' in page and 'data-v=""></td>' in page
    assert "<script>" in page and "http" not in page.split("<script>")[1]  # no network


# --- the report of a real run ------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiny run with its report rebuilt by :func:`report.run` (no history)."""
    work = copy_workdir(baseline_run(tmp_path_factory), tmp_path_factory.mktemp("report"))
    cfg = read_config(work)
    from matscreen.config import validate

    validate(cfg)
    out = work / "rebuilt"
    drawn = report.run(
        report.inputs_under(work / paths.RESULTS),
        str(out),
        {**cfg["report"], "history": None},
        cfg["label"],
        primary_target(cfg),
    )
    return work, {"cfg": cfg, "out": out, **drawn}


def _md_rows(text: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _close(shown: str, value: float) -> bool:
    return float(shown) == pytest.approx(value, rel=1e-3, abs=1e-12) if shown else math.isnan(value)


@pytest.mark.slow
def test_summary_numbers_equal_the_metrics_tables(rebuilt):
    work, built = rebuilt
    text = (built["out"] / "summary.md").read_text()
    r = work / paths.RESULTS
    metrics = tables.read_table(work / paths.CV_METRICS, tables.CV_METRICS)
    target = primary_target(built["cfg"])
    fam_rows = metrics[(metrics["fold"] == "all") & (metrics["target"] == target)]
    by = {(f, m): v for f, m, v in zip(fam_rows["family"], fam_rows["metric"], fam_rows["value"])}
    per_family = _md_rows(text, "| family | n | mae | rmse |")
    assert per_family, "no per-family table in summary.md"
    for fam, n, mae, rmse in per_family:
        assert int(n) == by[(fam, "n_test")]
        assert _close(mae, by[(fam, "mae")]) and _close(rmse, by[(fam, "rmse")])
    pooled = dict((m, v) for m, v in _md_rows(text, "| metric | value |"))
    for m in ("mae", "rmse", "coverage_1sigma", "calibration_factor"):
        assert _close(pooled[m], by[("all", m)])
    cal = {(row[0], row[1]): row for row in _md_rows(text, "| family | sigma | n |")}
    header = next(line for line in text.splitlines() if line.startswith("| family | sigma | n |"))
    k1 = [c.strip() for c in header.strip("|").split("|")].index("k=1")
    assert _close(cal[("all", "raw")][k1], by[("all", "coverage_1sigma")])
    for fam in {f for f, _ in by if f != "all"}:
        assert _close(cal[(fam, "calibrated")][k1], by[(fam, "coverage_1sigma")])
    # feature importances: the boosters' own gains
    model = load_models(r / paths.relative(paths.MODEL, paths.RESULTS))[target]
    gains = dict(zip(model.features, np.mean([b.feature_importance("gain") for b in model.boosters], axis=0)))
    rows = _md_rows(text, "| feature | gain |")
    assert len(rows) == min(figures.TOP_FEATURES, sum(g > 0 for g in gains.values()))
    for feat, gain in rows:
        assert _close(gain, gains[feat])
    # funnel and top candidates
    funnel = tables.read_table(work / paths.FUNNEL, tables.FUNNEL)
    shown = {(f, int(s)): int(rem) for f, s, _, rem, _ in _md_rows(text, "| family | step | filter |")}
    assert shown == {(f, s): rem for f, s, rem in zip(funnel["family"], funnel["step"], funnel["remaining"])}
    ranked = tables.read_table(work / paths.RANKED, tables.PREDICTIONS)
    top = _md_rows(text, "| rank | candidate_id |")
    assert [row[1] for row in top] == list(ranked["candidate_id"].head(built["cfg"]["report"]["top_n"]))
    for row, pred in zip(top, ranked["prediction"]):
        assert _close(row[4], pred)
    # every number of the HTML table is the summary's
    page = (built["out"] / paths.relative(paths.TOP_TABLE, paths.REPORT)).read_text()
    for row in top:
        assert re.search(rf">{re.escape(row[1])}<", page) and f">{row[4]}<" in page


@pytest.mark.slow
def test_a_changed_oof_row_changes_the_run_report(rebuilt, tmp_path):
    work, built = rebuilt
    oof = tables.read_table(work / paths.OOF_PREDICTIONS, tables.OOF_PREDICTIONS)
    changed = oof.copy()
    changed.loc[0, "y_pred"] += 2.0
    results = tmp_path / "results"
    inputs = report.inputs_under(work / paths.RESULTS)
    inputs["oof"] = str(results / "oof.parquet")
    tables.write_table(changed, inputs["oof"], tables.OOF_PREDICTIONS)
    cfg = built["cfg"]
    again = report.run(
        inputs, str(tmp_path / "out"), {**cfg["report"], "history": None}, cfg["label"], primary_target(cfg)
    )
    name = {k: paths.relative(p, paths.REPORT) for k, p in report.FIGURES.items()}
    for key in ("parity", "calibration"):
        assert (built["out"] / name[key]).read_bytes() != (tmp_path / "out" / name[key]).read_bytes(), key
        assert not again["drawn"][key].equals(built["drawn"][key]), key
    for key in ("funnel", "predictions", "importance"):  # not drawn from the OOF table
        assert (built["out"] / name[key]).read_bytes() == (tmp_path / "out" / name[key]).read_bytes(), key


def test_summary_tables_keep_a_pipe_in_a_cell_inside_its_cell():
    """A stalled SCF's error reads "stalled: |g| stayed above ...": unescaped, its pipes split the
    summary.md row into extra columns and shift every later cell."""
    from matscreen.report.summary import _md_table

    error = "SCF failed: attempt 3: stalled: |g| stayed above 1.03e-02\nfor 15 cycles"
    text = _md_table(pd.DataFrame({"formula": ["Ca2 Mg1 W1 O6"], "status": ["failed"], "error": [error]}))
    row = text.splitlines()[2]
    assert (
        row
        == "| Ca2 Mg1 W1 O6 | failed | SCF failed: attempt 3: stalled: \\|g\\| stayed above 1.03e-02 for 15 cycles |"
    )


def test_the_run_history_shows_a_missing_metric_as_an_empty_cell_not_nan():
    """summary.md, the reference set's README and the run history write their tables through one
    writer (matscreen.markdown.table); the history's own loop printed a NaN metric as 'nan'."""
    from matscreen import history

    rows = [{"metric": "cv_mae", "before": float("nan"), "after": 0.0381, "change": None}]
    text = history._table(rows, ["metric", "before", "after", "change"])
    assert text.splitlines() == [
        "| metric | before | after | change |",
        "|---|---|---|---|",
        "| cv_mae |  | 0.0381 |  |",
    ]
    assert history._table([], ["metric"]) == "_(none)_\n"
