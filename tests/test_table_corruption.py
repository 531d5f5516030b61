"""Every table contract refuses a corrupted file, with a message naming the file (issue 11.16).

For each table in ``tables.ALL_TABLES``: write a valid small frame with ``tables.write_table``,
corrupt the file (truncate, flip bytes, drop a required column, null a non-null column, duplicate
a key row, change a column's type, an inf where the contract says finite) and read it back:
``tables.read_table`` must raise ``tables.ContractError`` naming the path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matscreen import tables

TABLES = sorted(tables.ALL_TABLES)
HAS_FINITE = "finite" in {f.name for f in dataclasses.fields(tables.Column)}
_OTHER_TYPE = {"string": pa.int64(), "float64": pa.string(), "float32": pa.string(), "int64": pa.string(),
               "int32": pa.string(), "bool": pa.string()}


def _value(dtype: str, i: int):
    return {"string": f"v{i}", "float64": i + 0.5, "float32": i + 0.25, "int64": i, "int32": i, "bool": bool(i % 2)}[dtype]


def valid_frame(table: tables.Table, n: int = 3) -> pd.DataFrame:
    """``n`` rows with distinct keys and every column filled; one extra column where extras are allowed."""
    df = pd.DataFrame({c.name: [_value(c.dtype, i) for i in range(n)] for c in table.columns})
    if table.extra_dtype:
        df["extra_feature"] = [_value(table.extra_dtype, i) for i in range(n)]
    return df


def _write_valid(table: tables.Table, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = tables.write_table(valid_frame(table), d / f"{table.name}.parquet", table, {"stage": "test"})
    tables.read_table(path, table)  # the uncorrupted file reads
    return path


def _rewrite(path: Path, arrow: pa.Table) -> None:
    """Write ``arrow`` over ``path`` as plain Parquet, bypassing the contract (a corrupting writer)."""
    pq.write_table(arrow, path)


def _refused(path: Path, table: tables.Table) -> None:
    with pytest.raises(tables.ContractError) as err:
        tables.read_table(path, table)
    assert str(path) in str(err.value), f"message does not name the file: {err.value}"


def _columns_where(table: tables.Table, pred) -> list[tables.Column]:
    return [c for c in table.columns if pred(c)]


CORRUPTIONS = ["truncate", "flip", "flip", "drop_column", "null", "duplicate_key", "dtype", "inf"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(TABLES), kind=st.sampled_from(CORRUPTIONS), data=st.data())
def test_corrupted_tables_are_refused_naming_the_file(tmp_path_factory, name: str, kind: str, data) -> None:
    table = tables.ALL_TABLES[name]
    path = _write_valid(table, tmp_path_factory.mktemp(name))
    raw = path.read_bytes()
    arrow = pq.read_table(path)
    if kind == "truncate":
        cut = data.draw(st.integers(0, len(raw) - 1), label="keep bytes")
        path.write_bytes(raw[:cut])
    elif kind == "flip":
        # bytes of the column chunks (after the 4-byte magic, before the footer): the data
        n_footer = int.from_bytes(raw[-8:-4], "little") + 8
        lo, hi = 4, len(raw) - n_footer
        offs = data.draw(st.lists(st.integers(lo, hi - 1), min_size=1, max_size=4, unique=True), label="offsets")
        buf = bytearray(raw)
        for o in offs:
            buf[o] ^= data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(buf))
        # a flip that leaves the data intact (page statistics, padding) is harmless; any other is refused
        before = pd.DataFrame(arrow.to_pandas())
        try:
            after = tables.read_table(path, table)
        except tables.ContractError as exc:
            assert str(path) in str(exc), f"message does not name the file: {exc}"
            return
        pd.testing.assert_frame_equal(after, before)
        return
    elif kind == "drop_column":
        col = data.draw(st.sampled_from(table.column_names), label="column")
        _rewrite(path, arrow.drop_columns([col]))
    elif kind == "null":
        cols = _columns_where(table, lambda c: not c.nullable)
        if not cols:
            return
        col = data.draw(st.sampled_from(cols), label="column")
        row = data.draw(st.integers(0, arrow.num_rows - 1), label="row")
        df = arrow.to_pandas()
        df[col.name] = df[col.name].astype(object)
        df.loc[row, col.name] = None
        _rewrite(path, pa.Table.from_pandas(df, preserve_index=False))
    elif kind == "duplicate_key":
        row = data.draw(st.integers(0, arrow.num_rows - 1), label="row")
        _rewrite(path, pa.concat_tables([arrow, arrow.slice(row, 1)]))
    elif kind == "dtype":
        col = data.draw(st.sampled_from(table.columns), label="column")
        i = arrow.schema.get_field_index(col.name)
        new = pa.array([str(v) if pa.types.is_string(_OTHER_TYPE[col.dtype]) else k
                        for k, v in enumerate(arrow.column(i).to_pylist())], type=_OTHER_TYPE[col.dtype])
        _rewrite(path, arrow.set_column(i, pa.field(col.name, new.type), new))
    elif kind == "inf":
        cols = _columns_where(table, lambda c: getattr(c, "finite", False) and c.dtype.startswith("float"))
        if not HAS_FINITE or not cols:
            return  # no contract says "finite" (yet): nothing to violate
        col = data.draw(st.sampled_from(cols), label="column")
        df = arrow.to_pandas()
        df.loc[data.draw(st.integers(0, len(df) - 1), label="row"), col.name] = data.draw(st.sampled_from([np.inf, -np.inf]))
        _rewrite(path, pa.Table.from_pandas(df, preserve_index=False))
    _refused(path, table)


@pytest.mark.parametrize("name", TABLES)
@pytest.mark.parametrize("kind", [k for k in CORRUPTIONS if k not in ("truncate", "flip")])
def test_every_table_refuses_every_structural_corruption(tmp_path: Path, name: str, kind: str) -> None:
    """The same, deterministically, first column / first row, so no (table, corruption) pair is left to chance."""
    table = tables.ALL_TABLES[name]
    path = _write_valid(table, tmp_path)
    arrow = pq.read_table(path)
    col = table.columns[0]
    if kind == "drop_column":
        _rewrite(path, arrow.drop_columns([col.name]))
    elif kind == "null":
        cols = _columns_where(table, lambda c: not c.nullable)
        if not cols:
            pytest.skip(f"{name} has no non-null column")
        df = arrow.to_pandas().astype({cols[-1].name: object})
        df.loc[0, cols[-1].name] = None
        _rewrite(path, pa.Table.from_pandas(df, preserve_index=False))
    elif kind == "duplicate_key":
        _rewrite(path, pa.concat_tables([arrow, arrow.slice(0, 1)]))
    elif kind == "dtype":
        last = table.columns[-1]
        i = arrow.schema.get_field_index(last.name)
        typ = _OTHER_TYPE[last.dtype]
        new = pa.array([str(v) if pa.types.is_string(typ) else k for k, v in enumerate(arrow.column(i).to_pylist())], type=typ)
        _rewrite(path, arrow.set_column(i, pa.field(last.name, typ), new))
    elif kind == "inf":
        cols = _columns_where(table, lambda c: getattr(c, "finite", False) and c.dtype.startswith("float"))
        if not HAS_FINITE or not cols:
            pytest.skip("no column of this contract is marked finite (Column has no 'finite' attribute yet)"
                        if not HAS_FINITE else f"{name} has no finite float column")
        df = arrow.to_pandas()
        df.loc[0, cols[0].name] = np.inf
        _rewrite(path, pa.Table.from_pandas(df, preserve_index=False))
    _refused(path, table)
