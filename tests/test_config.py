"""Config validation: defaults filled, bad keys named before any job runs."""

from __future__ import annotations

import copy

import pytest
import yaml

from matscreen.config import DEFAULT_CONFIG, ConfigError, load_config, load_schema, validate


def _shipped() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def test_shipped_config_is_valid_and_complete():
    cfg = load_config()
    for section in ("ingest", "enumerate", "label", "featurize", "train", "screen", "rounds", "report"):
        assert section in cfg
    assert cfg["train"]["target"][0] == "e_above_hull_ev_per_atom"  # the first ranks (screen.rank_by: null)


def test_defaults_filled_from_schema():
    cfg = validate({})
    assert cfg["seed"] == 42
    assert cfg["screen"]["kappa"] == 1.0
    assert cfg["label"]["select"]["max_sites"] == 14


def test_unknown_key_is_named():
    cfg = _shipped()
    cfg["train"]["cv_fold"] = 3
    with pytest.raises(ConfigError, match=r"config key 'train'.*'cv_fold'"):
        validate(cfg)


def test_wrong_type_is_named():
    cfg = _shipped()
    cfg["screen"]["top_n"] = "many"
    with pytest.raises(ConfigError, match=r"config key 'screen.top_n'"):
        validate(cfg)


def test_semantic_check_names_key():
    cfg = _shipped()
    cfg["train"]["target"] = "energy_kcal"
    with pytest.raises(ConfigError, match=r"config key 'train.target'"):
        validate(cfg)


def test_every_schema_key_has_description_and_default():
    def walk(node: dict, path: str) -> None:
        for key, sub in (node.get("properties") or {}).items():
            where = f"{path}.{key}" if path else key
            assert "description" in sub, f"{where} has no description"
            assert "default" in sub, f"{where} has no default"
            if sub.get("type") == "object":
                walk(sub, where)

    walk(load_schema(), "")


def test_config_readme_documents_every_top_level_and_section_key():
    from matscreen.config import REPO_ROOT

    text = (REPO_ROOT / "config" / "README.md").read_text()
    schema = load_schema()
    for section, sub in schema["properties"].items():
        assert f"`{section}`" in text, section
        for key in sub.get("properties") or {}:
            assert f"`{section}.{key}" in text, f"{section}.{key} is not documented in config/README.md"


def test_validate_does_not_share_default_objects():
    a, b = validate({}), validate({})
    a["train"]["tuning"]["grid"]["num_leaves"] = [99]
    assert b["train"]["tuning"]["grid"]["num_leaves"] != [99]
    assert copy.deepcopy(b) == b


def test_controller_config_check_imports_no_heavy_science():
    """The Snakemake controller validates the config (and every cluster job re-reads the Snakefile):
    the checks of every stage run without LightGBM, matminer, scikit-learn, SciPy or PySCF. Before,
    featurize built matminer's featurizers and train imported LightGBM (about 2.8 s per start)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    heavy = ("lightgbm", "matminer", "sklearn", "scipy", "pyscf")
    code = (
        "import sys; from matscreen.config import load_config; load_config(); "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules) or 'none')"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root / "scripts")},
    ).stdout.strip()
    assert out == "none"


def test_every_feature_set_switched_off_is_named():
    cfg = _shipped()
    cfg["featurize"].update(
        element_property=[],
        stoichiometry=False,
        valence_orbital=False,
        ion_property=False,
        oxidation_states=False,
        site_features=False,
    )
    cfg["featurize"]["structure"] = {"density": False, "global_symmetry": False, "site_stats_fingerprint": False}
    with pytest.raises(ConfigError, match=r"config key 'featurize': every feature set is switched off"):
        validate(cfg)
    cfg["featurize"]["structure"]["density"] = True  # one structure set is enough
    validate(cfg)


def test_snakemake_configfile_replaces_the_shipped_config(tmp_path):
    """`snakemake --configfile my.yaml` reads my.yaml alone (keys it leaves out take the schema's
    defaults), as `matscreen --config my.yaml` does. Before, Snakemake merged my.yaml over the
    working directory's config/config.yaml: the reference set run from the repository took the
    demo's competing.oxidation_states (common), so Nb and Ta had no binary oxide and their
    perovskites' hulls compared them with the bare metals."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "config").mkdir()
    demo = yaml.safe_load((root / "tests/config/tiny.yaml").read_text())
    bad = copy.deepcopy(demo)
    bad["train"] = {**bad.get("train", {}), "target": "bandgap_exp"}  # no such column: validation fails
    (tmp_path / "config/config.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(demo))
    (tmp_path / "inputs").mkdir()
    snk = [
        str(Path(sys.executable).with_name("snakemake")),
        "-s",
        str(root / "Snakefile"),
        "-d",
        str(tmp_path),
        "-n",
        "--cores",
        "1",
    ]
    # without --configfile the working directory's config/config.yaml is the config (and is wrong)
    res = subprocess.run(snk, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "config key 'train.target': 'bandgap_exp'" in res.stdout + res.stderr
    # with --configfile, only my.yaml counts
    res = subprocess.run([*snk, "--configfile", str(tmp_path / "my.yaml")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "bandgap_exp" not in res.stdout + res.stderr
