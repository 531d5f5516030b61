"""External label tables: read with row-level rejects, featurized like candidates, trained on."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest
from workflow_utils import DATA, baseline_run, copy_workdir, read_config, snakemake, write_config

from matscreen import featurize, tables
from matscreen.train import external

CSV = DATA.parent / "external" / "formation_energies.csv"
TARGET = "formation_energy_ev_per_atom"


def test_good_rows_kept_bad_rows_named(caplog):
    with caplog.at_level(logging.WARNING):
        ext = external.read_external([str(CSV)], TARGET)
    tables.check_frame(ext, tables.EXTERNAL_LABELS)
    assert ext["formula"].tolist() == ["KMgF3", "NaMgF3", "BaZrO3", "CaTiO3"]
    assert ext["row"].tolist() == [1, 2, 3, 6]
    assert ext.loc[0, "B_species"] == "Mg2+" and ext.loc[1, "family"] == "other"
    assert ext["value"].tolist() == [-3.9, -3.8, -3.6, -3.5]
    msgs = caplog.text
    assert "formation_energies.csv row 4: left out: bad formula 'Xx2O3'" in msgs
    assert f"row 5: left out: no {TARGET}" in msgs
    assert "row 7: left out: unknown family 'rocksalt'" in msgs
    assert ext["structure_id"].is_unique and ext["structure_id"].str.startswith("x-").all()
    again = external.read_external([str(CSV)], TARGET)
    assert again["structure_id"].tolist() == ext["structure_id"].tolist(), "ids are stable"


def test_missing_columns_and_unknown_format_name_the_file(tmp_path):
    bad = tmp_path / "labels.csv"
    pd.DataFrame({"formula": ["KMgF3"], "energy": [-1.0]}).to_csv(bad, index=False)
    with pytest.raises(tables.ContractError, match=rf"labels.csv: external label table lacks column\(s\) \['{TARGET}'\]"):
        external.read_external([str(bad)], TARGET)
    txt = tmp_path / "labels.txt"
    txt.write_text("formula\n")
    with pytest.raises(tables.ContractError, match=r"labels.txt: external label tables must be .csv or .parquet"):
        external.read_external([str(txt)], TARGET)


def test_external_rows_get_the_same_features_as_candidates(tmp_path):
    ext = external.read_external([str(CSV)], TARGET)
    feats = featurize.featurize_frame(ext, "structure_id", featurize.resolve_settings({}))
    # The same composition and sites as a candidate row give identical features.
    cand = ext.iloc[[0]].rename(columns={"structure_id": "candidate_id"})
    cfeats = featurize.featurize_frame(cand, "candidate_id", featurize.resolve_settings({}))
    cols = [c for c in feats.columns if c not in ("structure_id", "featurize_error")]
    assert cols == [c for c in cfeats.columns if c not in ("candidate_id", "featurize_error")]
    pd.testing.assert_series_equal(feats.loc[0, cols], cfeats.loc[0, cols], check_names=False)
    site_cols = [c for c in cols if c.startswith("site_")]
    assert feats.loc[1, site_cols].isna().all(), "a formula-only row has no site features"
    assert feats.loc[0, site_cols].notna().any()


@pytest.mark.slow
def test_workflow_trains_on_external_labels(tmp_path_factory):
    base = baseline_run(tmp_path_factory)
    work = copy_workdir(base, tmp_path_factory.mktemp("external"))
    shutil.copy(CSV, work / "my labels.csv")
    cfg = read_config(work)
    cfg["train"]["external_labels"] = ["my labels.csv"]
    cfg["train"]["target"] = "formation_energy_ev_per_atom"  # the column the table has
    # one round: a model trained on other data would choose other round-1 candidates (new labels)
    cfg["rounds"]["count"] = 1
    write_config(work, cfg)
    res = snakemake(work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    log = res.stdout + res.stderr
    assert "rule label_structure" not in log and "rule ingest" not in log, "only training and later steps rerun"
    r = work / "results"
    ext = tables.read_table(r / "train/external_labels.parquet", tables.EXTERNAL_LABELS)
    assert len(ext) == 4
    base_oof = tables.read_table(base / "results/rounds/0/train/oof_predictions.parquet", tables.OOF_PREDICTIONS)
    oof = tables.read_table(r / "train/oof_predictions.parquet", tables.OOF_PREDICTIONS)
    assert set(oof["structure_id"]) == set(base_oof["structure_id"]) | set(ext["structure_id"])
    ext_feats = tables.read_table(r / "featurize/external.parquet", tables.STRUCTURE_FEATURES)
    labeled = pd.read_parquet(r / "featurize/labeled.parquet")
    assert list(ext_feats.columns) == list(labeled.columns)
