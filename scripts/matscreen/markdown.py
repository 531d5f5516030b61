"""Markdown tables (``summary.md``, the run history, the reference set's README, the table contracts in README.md)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd


def cell(text: object) -> str:
    """``text`` as one Markdown table cell: one line, its pipes escaped (an SCF error such as
    "|g| stayed above ..." would otherwise split the row into extra columns)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(v: object, floatfmt: str = ".4g") -> str:
    """A table value as a cell: a missing value (None, NA, NaN) is an empty cell, a float is
    formatted with ``floatfmt``."""
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else format(v, floatfmt)
    return cell(v)


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], floatfmt: str = ".4g") -> str:
    """A Markdown table with a header row, or ``_(none)_`` when there are no rows."""
    lines = [f"| {' | '.join(_value(v, floatfmt) for v in row)} |" for row in rows]
    if not lines:
        return "_(none)_\n"
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *lines]) + "\n"
