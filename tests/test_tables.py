"""The table contracts: checked on write and on read, with provenance metadata."""

from __future__ import annotations

import os
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matscreen import paths, tables
from matscreen.provenance import provenance


def _funnel() -> pd.DataFrame:
    return pd.DataFrame({"family": ["perovskite", "perovskite"], "step": [0, 1], "filter": ["all", "charge"],
                         "remaining": [10, 4], "removed": [0, 6]})


def test_roundtrip_keeps_schema_and_provenance(tmp_path):
    path = tables.write_table(_funnel(), tmp_path / "f.parquet", tables.FUNNEL, provenance("enumerate", {"a": 1}, "cfg"))
    schema = pq.read_schema(path)
    assert schema.field("step").type == pa.int64()
    assert schema.field("family").nullable is False
    back = tables.read_table(path, tables.FUNNEL)
    pd.testing.assert_frame_equal(back, _funnel(), check_dtype=False)
    prov = tables.read_provenance(path)
    assert prov["table"] == "funnel" and prov["stage"] == "enumerate" and prov["config_hash"] == "cfg"
    assert prov["versions"]["pyarrow"] == pa.__version__


def test_missing_column_names_table_and_column(tmp_path):
    with pytest.raises(tables.ContractError, match=r"funnel: missing columns \['removed'\]"):
        tables.write_table(_funnel().drop(columns="removed"), tmp_path / "f.parquet", tables.FUNNEL)
    assert not list(tmp_path.iterdir()), "a failed write leaves no file"


def test_unknown_column_rejected_unless_table_allows_extras(tmp_path):
    with pytest.raises(tables.ContractError, match="not in the contract"):
        tables.write_table(_funnel().assign(oops=1), tmp_path / "f.parquet", tables.FUNNEL)
    feats = pd.DataFrame({"candidate_id": ["c-1"], "featurize_error": [None], "MagpieData_mean_Number": [3.0]})
    path = tables.write_table(feats, tmp_path / "x.parquet", tables.CANDIDATE_FEATURES)
    assert pq.read_schema(path).field("MagpieData_mean_Number").type == pa.float32()


def test_duplicate_key_and_null_key_rejected(tmp_path):
    dup = pd.concat([_funnel(), _funnel().head(1)])
    with pytest.raises(tables.ContractError, match="duplicate primary key"):
        tables.write_table(dup, tmp_path / "f.parquet", tables.FUNNEL)
    nulls = _funnel().astype({"family": object})
    nulls.loc[0, "family"] = None
    with pytest.raises(tables.ContractError, match="'family' must not be null"):
        tables.write_table(nulls, tmp_path / "f.parquet", tables.FUNNEL)


def test_uncastable_dtype_is_a_contract_error(tmp_path):
    bad = _funnel().assign(remaining=["ten", "four"])
    with pytest.raises(tables.ContractError, match="cannot cast"):
        tables.write_table(bad, tmp_path / "f.parquet", tables.FUNNEL)


def test_corrupt_file_gives_clear_error(tmp_path):
    path = tables.write_table(_funnel(), tmp_path / "f.parquet", tables.FUNNEL)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(tables.ContractError, match=r"f\.parquet: not a readable Parquet file"):
        tables.read_table(path, tables.FUNNEL)


def test_read_checks_contract(tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"family": ["x"]}), path)
    with pytest.raises(tables.ContractError, match="wrong.parquet"):
        tables.read_table(path, tables.FUNNEL)


def test_every_contract_is_consistent():
    for t in tables.ALL_TABLES.values():
        names = t.column_names
        assert len(names) == len(set(names)), t.name
        assert set(t.key) <= set(names), t.name
        for k in t.key:
            assert not t.column(k).nullable, f"{t.name}.{k} is a key and must not be nullable"
        empty = tables.empty_frame(t)
        assert list(empty.columns) == names


def test_markdown_lists_every_table():
    md = tables.markdown()
    for name in tables.ALL_TABLES:
        assert f"### `{name}`" in md


def test_readme_documents_the_current_contracts():
    from matscreen.config import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    assert tables.readme_section(text) == tables.markdown().strip(), (
        "README table contracts are stale: run `matscreen tables --update-readme README.md`"
    )


def test_every_contract_row_in_the_readme_has_five_cells():
    """A description with a pipe ("mean |prediction - label|") split its README row into extra
    columns; the contracts are written through the one Markdown table writer, which escapes it."""
    rows = [line for line in tables.markdown().splitlines() if line.startswith("| `")]
    assert rows
    bad = [line for line in rows if len(re.findall(r"(?<!\\)\|", line)) != 6]
    assert bad == []


def _rule_outputs() -> dict[str, list[str]]:
    """Every rule's declared outputs, read from the workflow itself (wildcard regexes dropped)."""
    from pathlib import Path

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    from matscreen.config import REPO_ROOT

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings()) as api:
            wf = api.workflow(resource_settings=ResourceSettings(), snakefile=Path(REPO_ROOT / "Snakefile"),
                              workdir=Path(REPO_ROOT))
            return {r.name: [re.sub(r"\{(\w+),[^}]*\}", r"{\1}", str(o)) for o in r.output] for r in wf._workflow.rules}
    finally:
        os.chdir(cwd)


def test_readme_contracts_name_exactly_the_files_the_rules_write():
    """The contract of every Parquet file a rule writes is in the README under that file's real
    name, and the README names no file that no rule writes (e.g. the old ``features/part-*``)."""

    from matscreen.config import REPO_ROOT

    outputs = {o for outs in _rule_outputs().values() for o in outs if o.endswith(".parquet")}
    # the shipped reference set is written by `matscreen export-labels` into the repository, not by a rule
    shipped = {paths.SHIPPED_LABELS, paths.SHIPPED_COMPETING}
    documented = {f for t in tables.ALL_TABLES.values() for f in t.files} - shipped

    def matches(pattern: str, path: str) -> bool:
        return re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(pattern)), path) is not None

    assert sorted(f for f in documented if not any(matches(f, o) for o in outputs)) == [], "documented, written by no rule"
    assert sorted(o for o in outputs if not any(matches(f, o) for f in documented)) == [], "written, documented nowhere"
    section = tables.readme_section((REPO_ROOT / "README.md").read_text())
    named = {f for line in section.splitlines() if line.startswith("Files: ") for f in re.findall(r"`([^`]+)`", line)}
    assert named == documented | shipped
