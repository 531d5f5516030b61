"""Issue 11, part A: nothing wrong passes silently.

Each test reproduces one report of the issue (it fails on the code before the fix, ef8848e) and
checks that the mistake now stops with one clear line naming the file, row or config key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from matscreen import cli, ingest, screen, tables, train
from matscreen import enumerate as enumerate_stage
from matscreen.config import DEFAULT_CONFIG, ConfigError, load_config, validate
from matscreen.train import external

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "structures"
TRAIN_SETTINGS = {**yaml.safe_load(DEFAULT_CONFIG.read_text())["train"], "ensemble_size": 2, "target": "formation_energy_ev_per_atom", "num_boost_round": 20,
                  "cv_folds": 2}
TINY_ENUMERATE = {"families": ["perovskite"], "cations": ["Sr", "Ba", "Ca", "Ti", "Zr"],
                  "sites": {"perovskite": {"A": None, "B": None, "X": ["O"]}}}


def _config_file(tmp_path: Path, **sections: object) -> str:
    """A config file: the tiny test config with ``sections`` replacing whole keys."""
    cfg = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
    cfg.update(sections)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _run_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().err


def _train_data(n: int = 24, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels in the contracts: y = 2 f0 - f1, 2 rows per composition."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    ids = [f"s-{i:04x}" for i in range(n)]
    feats = pd.DataFrame({"structure_id": ids, "featurize_error": None,
                          **{f"f{j}": x[:, j].astype("float32") for j in range(3)}})
    labels = tables.conform(pd.DataFrame({
        "structure_id": ids, "settings_hash": "h1", "formula": [f"Sr{1 + i // 2}TiO3" for i in range(n)],
        "status": "ok", "formation_energy_ev_per_atom": 2 * x[:, 0] - x[:, 1],
    }), tables.LABELS)
    return feats, labels


# --- 1. every candidate has its feature row ----------------------------------------------------


@pytest.fixture(scope="module")
def screen_inputs(tmp_path_factory) -> dict[str, object]:
    """Two enumerated candidate shards (with manifest), their features, a model and empty targets."""
    d = tmp_path_factory.mktemp("screen")
    shards = [str(d / "enumerate" / "candidates" / f"part-{i}.parquet") for i in range(2)]
    enumerate_stage.run(TINY_ENUMERATE, shards, str(d / "enumerate" / "funnel.parquet"))
    rng = np.random.default_rng(0)
    features = []
    for i, shard in enumerate(shards):
        cand = tables.read_table(shard, tables.CANDIDATES)
        assert len(cand) >= 2
        f = pd.DataFrame({"candidate_id": cand["candidate_id"], "featurize_error": None,
                          **{f"f{j}": rng.normal(size=len(cand)).astype("float32") for j in range(3)}})
        features.append(str(tables.write_table(f, d / "features" / f"part-{i}.parquet", tables.CANDIDATE_FEATURES)))
    feats, labels = _train_data()
    ens, _, _ = train.train(feats, labels, TRAIN_SETTINGS, seed=1)
    model = d / "model.json"
    model.write_text(ens.to_json())
    targets = str(tables.write_table(tables.empty_frame(tables.LABEL_TARGETS), d / "targets.parquet", tables.LABEL_TARGETS))
    return {"dir": d, "shards": shards, "features": features, "model": str(model), "targets": targets}


def test_screen_with_swapped_or_empty_features_shards_fails_naming_the_files(screen_inputs, tmp_path, capsys):
    s = screen_inputs
    cfg = _config_file(tmp_path)
    base = ["screen", "--config", cfg, "--model", s["model"], "--targets", s["targets"], "--candidates", *s["shards"]]
    rc, err = _run_cli(capsys, *base, "--features", *s["features"], "-o", str(tmp_path / "ok"))
    assert rc == 0, err
    ranked = tables.read_table(tmp_path / "ok" / "ranked.parquet", tables.PREDICTIONS)
    assert ranked["prediction"].nunique() > 1

    rc, err = _run_cli(capsys, *base, "--features", *reversed(s["features"]), "-o", str(tmp_path / "swapped"))
    assert rc == 2
    assert err.startswith("matscreen screen: error: ") and err.count("\n") == 1, err
    assert s["shards"][0] in err and s["features"][1] in err
    assert not (tmp_path / "swapped" / "ranked.parquet").exists()

    empty = tables.write_table(tables.empty_frame(tables.CANDIDATE_FEATURES), tmp_path / "empty.parquet",
                               tables.CANDIDATE_FEATURES)
    rc, err = _run_cli(capsys, *base, "--features", str(empty), s["features"][1], "-o", str(tmp_path / "empty"))
    assert rc == 2 and str(empty) in err and "have no row in" in err


def test_join_one_to_one_refuses_duplicates_and_missing_partners():
    left = pd.DataFrame({"k": ["a", "b"]})
    with pytest.raises(tables.ContractError, match="R.parquet: k 'a' appears more than once"):
        tables.join_one_to_one(left, pd.DataFrame({"k": ["a", "a", "b"]}), "k", left_name="L", right_name="R.parquet")
    with pytest.raises(tables.ContractError, match="R: 1 of 3 rows have no row in L"):
        tables.join_one_to_one(left, pd.DataFrame({"k": ["a", "b", "c"]}), "k", left_name="L", right_name="R")
    out = tables.join_one_to_one(left, pd.DataFrame({"k": ["a", "b", "c"], "v": 1}), "k", left_name="L",
                                 right_name="R", complete="left")
    assert list(out["k"]) == ["a", "b"]


def test_train_refuses_a_label_without_its_feature_row():
    feats, labels = _train_data()
    with pytest.raises(tables.ContractError, match="labels.parquet: 1 of 24 rows have no row in feats.parquet"):
        train.training_frame(feats.iloc[1:], labels, "formation_energy_ev_per_atom", "feats.parquet", "labels.parquet")


# --- 2. screen.kappa must be finite -------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"config key 'screen.kappa': must be a finite number"):
        load_config(None, {"screen": {"kappa": value}})
    with pytest.raises(ConfigError, match=r"config key 'enumerate.filters.tolerance_factor.max': must be a finite"):
        load_config(None, {"enumerate": {"filters": {"tolerance_factor": {"max": value}}}})


def test_yaml_nan_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("screen:\n  kappa: .nan\n")
    with pytest.raises(ConfigError, match="screen.kappa"):
        load_config(path)


# --- 3. no infinite or absurd label is trained on ----------------------------------------------


@pytest.mark.parametrize("value", [np.inf, 1e300])
def test_labels_parquet_with_inf_or_absurd_label_is_refused_on_read(tmp_path, value):
    _, labels = _train_data()
    path = tmp_path / "labels.parquet"
    tables.write_table(labels, path, tables.LABELS)
    bad = labels.copy()
    bad.loc[3, "formation_energy_ev_per_atom"] = value
    with pytest.raises(tables.ContractError, match=r"formation_energy_ev_per_atom.*row 4 \(structure_id s-0003\)"):
        tables.write_table(bad, path, tables.LABELS)
    # a file written by another tool: refused on read, naming the file
    bad.to_parquet(tmp_path / "other.parquet")
    with pytest.raises(tables.ContractError, match=r"other.parquet.*formation_energy_ev_per_atom"):
        tables.read_table(tmp_path / "other.parquet", tables.LABELS)


def test_train_refuses_a_large_label_naming_file_and_row():
    feats, labels = _train_data()
    labels.loc[5, "formation_energy_ev_per_atom"] = 5e7  # finite, under the contract's cap, absurd as a label
    with pytest.raises(tables.ContractError, match=r"labels.parquet: row 6 \(structure_id s-0005\)"):
        train.training_frame(feats, labels, "formation_energy_ev_per_atom", "f.parquet", "labels.parquet")


def test_external_csv_with_inf_or_absurd_label_is_left_out_with_a_warning(tmp_path, caplog):
    csv = tmp_path / "ext.csv"
    csv.write_text("formula,formation_energy_ev_per_atom\nSrTiO3,-3.5\nBaTiO3,inf\nCaTiO3,1e300\nBaZrO3,-3.6\n")
    ext = external.read_external([str(csv)], "formation_energy_ev_per_atom")
    assert sorted(ext["formula"]) == ["BaZrO3", "SrTiO3"], "the good rows are kept"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"{csv} row 2: left out" in warned and f"{csv} row 3: left out" in warned


# --- 4. ingest.inputs: symlinked folders followed, missing paths and empty folders not silent ----


def test_symlinked_sub_folder_is_read_and_a_cycle_is_read_once(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    shutil.copy(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json", real / "SrTiO3.json")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(inputs, target_is_directory=True)  # a cycle back up the tree
    files, missing = ingest.expand_inputs([str(inputs)])
    assert files == [str(inputs / "linked" / "SrTiO3.json")] and missing == []
    structures, rejects = ingest.ingest([str(inputs)], {})
    assert len(structures) == 1 and rejects.empty


def test_missing_input_path_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'ingest.inputs': .*nowhere: no such file or folder"):
        ingest.ingest([str(tmp_path / "nowhere")], {})
    with pytest.raises(ConfigError, match=r"config key 'ingest.inputs': .*\*\.cif: glob matched no files"):
        ingest.ingest([str(tmp_path / "*.cif")], {})


def test_empty_input_folder_is_a_warning_naming_it(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    structures, rejects = ingest.ingest([str(tmp_path / "empty")], {})
    assert structures.empty and rejects.empty
    assert any(str(tmp_path / "empty") in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


# --- 5. values that validated and failed later --------------------------------------------------


@pytest.mark.parametrize(("override", "key", "why"), [
    ({"seed": -1}, "seed", "less than the minimum"),
    ({"enumerate": {"shards": 2.0}}, "enumerate.shards", "must be an integer, got 2.0"),
    ({"train": {"target": "structure_id"}}, "train.target", "not a numeric label column"),
    ({"train": {"target": "status"}}, "train.target", "not a numeric label column"),
    ({"label": {"xc": "no-such-functional"}}, "label.xc", "does not know the functional"),
    ({"label": {"basis": "no-such-basis"}}, "label.basis", "knows no basis"),
    ({"label": {"select": {"elements": ["Xx"]}}}, "label.select.elements[0]", "unknown element 'Xx'"),
])
def test_bad_values_are_refused_naming_the_key(override, key, why):
    with pytest.raises(ConfigError, match=f"config key '{re.escape(key)}': .*{re.escape(why)}"):
        load_config(None, override)


def test_good_label_names_pass():
    load_config(None, {"label": {"xc": "pbe", "basis": "gth-dzvp", "pseudo": "gth-pbe"}})


@pytest.mark.parametrize("shards", ["0", "-2"])
def test_cli_enumerate_refuses_nonpositive_shards(shards, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["enumerate", "--shards", shards])
    assert exc.value.code == 2 and "--shards: must be at least 1" in capsys.readouterr().err


# --- 6. outputs are readable by the group -------------------------------------------------------


def test_outputs_get_the_umask_mode_not_0600(tmp_path):
    from matscreen import history, label

    old = os.umask(0o027)
    try:
        t = tables.write_table(tables.empty_frame(tables.FUNNEL), tmp_path / "f.parquet", tables.FUNNEL)
        preds = tables.write_table(tables.empty_frame(tables.PREDICTIONS), tmp_path / "p.parquet", tables.PREDICTIONS)
        targets = tables.write_table(tables.empty_frame(tables.LABEL_TARGETS), tmp_path / "t.parquet",
                                     tables.LABEL_TARGETS)
        screen.run_rank([str(preds)], str(targets), str(tmp_path / "r.parquet"), str(tmp_path / "top.csv"),
                        str(tmp_path / "n.parquet"), {})
        j = tmp_path / "top.csv"
        label._atomic_copy(t, tmp_path / "store" / "copy.parquet")
        history._write_json(tmp_path / "h.json", {})
        cache = tmp_path / "cache"
        src = tmp_path / "SrTiO3.json"
        shutil.copy(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json", src)
        ingest.ingest([str(src)], {}, cache=cache)
        paths = [t, j, tmp_path / "store" / "copy.parquet", tmp_path / "h.json", *cache.rglob("*.json")]
    finally:
        os.umask(old)
    assert len(paths) == 5
    for p in paths:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640, p
    assert not list(tmp_path.rglob(".*.tmp")), "no temporary file is left behind"


# --- 7. a failed stage leaves no finished-looking output ----------------------------------------


def _two_hash_labels(tmp_path: Path) -> tuple[str, str, pd.DataFrame]:
    feats, labels = _train_data()
    other = labels.copy()
    other["settings_hash"] = "h2"
    other["formation_energy_ev_per_atom"] += 1.0
    fpath = str(tables.write_table(feats, tmp_path / "labeled.parquet", tables.STRUCTURE_FEATURES))
    lpath = str(tables.write_table(pd.concat([labels, other], ignore_index=True), tmp_path / "labels.parquet",
                                   tables.LABELS))
    return fpath, lpath, labels


def test_train_with_labels_of_two_settings_hashes_writes_nothing_or_uses_the_configured_one(tmp_path):
    fpath, lpath, labels = _two_hash_labels(tmp_path)
    out = tmp_path / "train"
    outputs = [str(out / "model.json"), str(out / "cv_metrics.parquet"), str(out / "oof_predictions.parquet")]
    with pytest.raises(ValueError, match=rf"{lpath}: labels of 2 label settings \(settings_hash h1, h2\)"):
        train.run(fpath, lpath, *outputs, TRAIN_SETTINGS, 1, label_settings_hash="h9")
    assert not any(Path(p).exists() for p in outputs)
    train.run(fpath, lpath, *outputs, TRAIN_SETTINGS, 1, label_settings_hash="h1")
    oof = tables.read_table(outputs[2], tables.OOF_PREDICTIONS)
    np.testing.assert_allclose(oof.sort_values("structure_id")["y_true"],
                               labels.sort_values("structure_id")["formation_energy_ev_per_atom"])


def test_a_failing_write_removes_the_outputs_already_written(tmp_path, monkeypatch):
    feats, labels = _train_data()
    fpath = str(tables.write_table(feats, tmp_path / "labeled.parquet", tables.STRUCTURE_FEATURES))
    lpath = str(tables.write_table(labels, tmp_path / "labels.parquet", tables.LABELS))
    out = tmp_path / "train"
    outputs = [str(out / "model.json"), str(out / "cv_metrics.parquet"), str(out / "oof_predictions.parquet")]
    real = tables._write_arrow

    def fail_on_oof(arrow, path):
        if str(path).endswith("oof_predictions.parquet"):
            raise OSError(28, "No space left on device", str(path))
        return real(arrow, path)

    monkeypatch.setattr(tables, "_write_arrow", fail_on_oof)
    with pytest.raises(OSError, match="No space left"):
        train.run(fpath, lpath, *outputs, TRAIN_SETTINGS, 1)
    assert not any(Path(p).exists() for p in outputs), "model.json and cv_metrics.parquet were left behind"


# --- 8. one-line CLI errors; model.json named; Snakemake names the key --------------------------


def test_cli_error_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MATSCREEN_DEBUG", raising=False)
    cfg = _config_file(tmp_path)
    rc, err = _run_cli(capsys, "train", "--config", cfg, "--features", str(tmp_path / "nope.parquet"),
                       "--labels", str(tmp_path / "l.parquet"), "-o", str(tmp_path / "t"))
    assert rc == 2
    assert err.startswith(f"matscreen train: error: {tmp_path / 'nope.parquet'}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    with pytest.raises(tables.ContractError):  # --debug: the traceback, for bug reports
        cli.main(["--debug", "train", "--config", cfg, "--features", str(tmp_path / "nope.parquet"),
                  "--labels", str(tmp_path / "l.parquet"), "-o", str(tmp_path / "t")])


def test_cli_config_error_is_one_line(tmp_path, capsys):
    rc, err = _run_cli(capsys, "config", "--config", _config_file(tmp_path, screen={"kappa": float("inf")}))
    assert rc == 2 and err.count("\n") == 1
    assert "config key 'screen.kappa': must be a finite number" in err


def test_truncated_model_json_is_named(screen_inputs, tmp_path):
    model = tmp_path / "model.json"
    model.write_text(Path(screen_inputs["model"]).read_text()[:100])
    with pytest.raises(ValueError, match=rf"{model}: not a matscreen model.json"):
        train.Ensemble.load(model)


def test_snakemake_names_the_config_key(tmp_path):
    """Snakemake validates with matscreen's validator: ``config key 'screen.kappa'``, not a schema path."""
    from workflow_utils import snakemake

    (tmp_path / "config.yaml").write_text("screen:\n  kappa: .nan\nenumerate:\n  shards: 2.0\n")
    res = snakemake(tmp_path, "-n", timeout=300, cores=1)
    assert res.returncode != 0
    assert "config key 'screen.kappa': must be a finite number" in res.stderr + res.stdout
    cfg = {"screen": {"kappa": 2}}
    validate(cfg)  # the call common.smk makes: defaults filled into Snakemake's dict in place
    assert cfg["screen"]["top_n"] and cfg["enumerate"]["shards"]


# --- 9. stale and unfinished shard sets ---------------------------------------------------------


def test_rerun_with_fewer_shards_removes_stale_shards_and_readers_check_the_manifest(tmp_path, capsys):
    folder = tmp_path / "enumerate" / "candidates"
    funnel = str(tmp_path / "enumerate" / "funnel.parquet")
    enumerate_stage.run(TINY_ENUMERATE, [str(folder / f"part-{i}.parquet") for i in range(3)], funnel)
    manifest = json.loads((folder / tables.MANIFEST_NAME).read_text())
    assert [s["file"] for s in manifest["shards"]] == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    stale = folder / "part-2.parquet"
    kept = stale.read_bytes()
    enumerate_stage.run(TINY_ENUMERATE, [str(folder / f"part-{i}.parquet") for i in range(2)], funnel)
    assert sorted(p.name for p in folder.iterdir()) == [tables.MANIFEST_NAME, "part-0.parquet", "part-1.parquet"]
    assert tables.resolve_shards([str(folder)]) == [str(folder / "part-0.parquet"), str(folder / "part-1.parquet")]
    # a stale shard put back (e.g. an older copy): refused by name
    stale.write_bytes(kept)
    with pytest.raises(tables.ContractError, match=rf"{stale}: not in .*_manifest.json: a stale shard"):
        tables.resolve_shards(sorted(str(p) for p in folder.glob("part-*.parquet")))
    stale.unlink()
    # an interrupted run leaves no manifest: the set is refused
    (folder / tables.MANIFEST_NAME).unlink()
    with pytest.raises(tables.ContractError, match="no _manifest.json"):
        tables.resolve_shards([str(folder)])
    cfg = _config_file(tmp_path)
    rc, err = _run_cli(capsys, "select", "--config", cfg, "--structures", str(tmp_path / "s.parquet"),
                       "--candidates", str(folder / "part-0.parquet"), "-o", str(tmp_path / "t.parquet"))
    assert rc == 2 and "part-0.parquet: no _manifest.json beside it" in err


def test_read_tables_refuses_a_key_in_two_shards(tmp_path):
    folder = tmp_path / "c"
    enumerate_stage.run(TINY_ENUMERATE, [str(folder / "part-0.parquet")], str(tmp_path / "funnel.parquet"))
    shutil.copy(folder / "part-0.parquet", folder / "part-1.parquet")
    with pytest.raises(tables.ContractError, match=r"more than one shard .*part-0.parquet, .*part-1.parquet"):
        tables.read_tables([folder / "part-0.parquet", folder / "part-1.parquet"], tables.CANDIDATES)


# --- 11. an empty ingest-cache entry is a miss --------------------------------------------------


def test_empty_cache_entry_is_a_miss_and_every_file_is_accounted(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DATA / "perovskite" / "SrTiO3_Pm-3m_pymatgen.json", src / "SrTiO3.json")
    cache = tmp_path / "cache"
    first, _ = ingest.ingest([str(src)], {}, cache=cache)
    (entry,) = list(cache.rglob("*.json"))
    entry.write_text(json.dumps({"rows": [], "rejects": []}))
    again, rejects = ingest.ingest([str(src)], {}, cache=cache)
    assert list(again["source"]) == [str(src / "SrTiO3.json")] and rejects.empty
    pd.testing.assert_frame_equal(first, again)
    assert json.loads(entry.read_text())["rows"], "the entry is rewritten"


def test_a_file_in_neither_table_stops_ingest(tmp_path, monkeypatch):
    src = tmp_path / "a.cif"
    src.write_text("data_x\n")
    monkeypatch.setattr(ingest.stage, "read_file_cached", lambda *a, **k: ([], [], False))
    with pytest.raises(RuntimeError, match=rf"ended in neither structures nor rejects \(first: {src}\)"):
        ingest.ingest([str(src)], {})
