"""Text as one cell of a Markdown table (``summary.md``, the run history, the reference set's README)."""

from __future__ import annotations


def cell(text: object) -> str:
    """``text`` as one Markdown table cell: one line, its pipes escaped (an SCF error such as
    "|g| stayed above ..." would otherwise split the row into extra columns)."""
    return " ".join(str(text).split()).replace("|", "\\|")
