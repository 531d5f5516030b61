"""The top candidates as one self-contained HTML page with a table that sorts on a header click.

Snakemake's report shows an ``.html`` result in a frame (a CSV only as a download), so the
sortable table is a page of its own: inline CSS, a few lines of inline JavaScript, no network.
Cells show the numbers as ``summary.md`` prints them; each cell's ``data-v`` holds the full value
the sort compares.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from matscreen.atomic import write_text

_STYLE = """
body { font: 13px system-ui, sans-serif; margin: 12px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #eef; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""

# Click a header: sort by that column (numbers as numbers, empty cells last); click again: reverse.
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var key = function (tr) { return tr.cells[col].getAttribute("data-v"); };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var nx = Number(x), ny = Number(y);
      var c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return dir * c;
    });
    rows.forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def _cell(v: object, floatfmt: str) -> tuple[str, str, bool]:
    """(shown text, sort value, numeric) of one value."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return "", "", False
    if isinstance(v, bool):
        return str(v), str(v), False
    if isinstance(v, float):
        return format(v, floatfmt), repr(v), True
    if isinstance(v, int):
        return str(v), str(v), True
    return str(v), str(v), False


def render(df: pd.DataFrame, title: str, note: str = "", floatfmt: str = ".4g") -> str:
    """The page for ``df`` (columns in order, rows as given)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for rec in df.astype(object).itertuples(index=False):
        cells = []
        for v in rec:
            if hasattr(v, "item"):  # numpy scalar
                v = v.item()
            text, key, num = _cell(v, floatfmt)
            cls = ' class="num"' if num else ""
            cells.append(f'<td{cls} data-v="{html.escape(key, quote=True)}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h3>{html.escape(title)}</h3>"
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + f'<table class="sortable" id="top"><thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(body)
        + f"\n</tbody></table><script>{_SCRIPT}</script></body></html>\n"
    )


def write(df: pd.DataFrame, path: str | Path, title: str, note: str = "") -> pd.DataFrame:
    """Write :func:`render`'s page to ``path`` atomically; returns ``df`` (the data shown)."""
    write_text(path, render(df, title, note))
    return df
