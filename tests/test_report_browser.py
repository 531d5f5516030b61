"""The HTML report of a finished run, opened in a real (headless) browser.

Installs nothing: where Chromium is on PATH (Debian package ``chromium``; ``.ci/run`` installs it
as root) it builds ``snakemake --report`` of the shared tiny run, screenshots it, reads the
browser's console from its log, and has the browser decode every embedded figure; elsewhere the
tests skip and say why.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from workflow_utils import baseline_run, copy_workdir, read_config, snakemake

from matscreen import paths, report, tables
from matscreen.config import validate
from matscreen.train import primary_target

CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH (Debian package chromium; .ci/run installs it)"),
]

#: Harmless lines of Chromium's log: no D-Bus in a container, and Snakemake's report embeds the
#: Tailwind "play CDN" script, which warns on the console that it is not for production.
HARMLESS = (re.compile(r"dbus|D-Bus"), re.compile(r'CONSOLE.*"cdn\.tailwindcss\.com should not be used in production'))
PNG = b"\x89PNG\r\n\x1a\n"

#: Appended to a copy of the report: decode every embedded figure in the page itself and count
#: the pixels that are not background; the results land in <pre id="probe"> for --dump-dom.
PROBE = """<script>
(async function () {
  const out = {};
  for (const [path, entry] of Object.entries(results)) {
    if (!entry.mime_type.startsWith("image/")) { out[path] = {mime: entry.mime_type}; continue; }
    const img = new Image();
    try {  // onload, not img.decode(): under --virtual-time-budget decode() never settles
      await new Promise(function (ok, fail) { img.onload = ok; img.onerror = fail; img.src = entry.data_uri; });
    } catch (e) { out[path] = {mime: entry.mime_type, error: "cannot decode"}; continue; }
    const c = document.createElement("canvas");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let i = 0; i < px.length; i += 4) { if (px[i] < 200 || px[i + 1] < 200 || px[i + 2] < 200) { ink++; } }
    out[path] = {mime: entry.mime_type, width: img.naturalWidth, height: img.naturalHeight, ink: ink / (c.width * c.height)};
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""

#: Appended to a copy of the top-candidates page: click a header once, then again, and record
#: the column's order after each click.
SORT_PROBE = """<script>
(function () {
  const table = document.getElementById("top");
  const names = Array.from(table.tHead.rows[0].cells).map(function (c) { return c.textContent; });
  const col = names.indexOf("%s");
  const read = function () { return Array.from(table.tBodies[0].rows).map(function (r) { return r.cells[col].getAttribute("data-v"); }); };
  const out = {before: read()};
  table.tHead.rows[0].cells[col].click();
  out.first = read();
  table.tHead.rows[0].cells[col].click();
  out.second = read();
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` with its log (console messages included) on stderr."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            "--virtual-time-budget=8000",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


def complaints(stderr: str) -> list[str]:
    """Console messages and errors in Chromium's log, less the harmless ones."""
    bad = [line for line in stderr.splitlines() if ":CONSOLE" in line or ":ERROR:" in line or "Uncaught" in line]
    return [line for line in bad if not any(p.search(line) for p in HARMLESS)]


def probed(res: subprocess.CompletedProcess) -> dict:
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, "the probe script wrote nothing: " + res.stderr[-3000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the tiny run and its ``snakemake --report`` page."""
    work = copy_workdir(baseline_run(tmp_path_factory), tmp_path_factory.mktemp("browser"))
    page = work / "report.html"
    res = snakemake(work, "--report", str(page))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return work, page


def embedded(page: Path) -> dict[str, dict]:
    """The report's results (``const results = {...}`` in the page): path -> entry with its data URI."""
    text = page.read_text()
    start = text.index("results = {") + len("results = ")
    entries, _ = json.JSONDecoder().raw_decode(text, start)
    return entries


def test_report_loads_without_console_errors(built, tmp_path):
    _, page = built
    shot = tmp_path / "report.png"
    res = chromium(page, f"--screenshot={shot}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 10_000
    assert complaints(res.stderr) == [], "\n".join(complaints(res.stderr))
    dom = chromium(page, "--dump-dom")
    assert "matscreen: a high-throughput screen of" in dom.stdout  # the landing page, workflow.rst
    assert complaints(dom.stderr) == []


def test_every_figure_is_a_real_image_drawn_from_the_run(built, tmp_path):
    work, page = built
    entries = embedded(page)
    wanted = {*report.FIGURES.values(), paths.TOP_TABLE, paths.SUMMARY}
    assert wanted <= set(entries), f"missing from the report: {sorted(wanted - set(entries))}"
    probe = tmp_path / "probe.html"
    text = page.read_text()
    cut = text.rindex("</body>")
    probe.write_text(text[:cut] + PROBE + text[cut:])
    res = chromium(probe, "--dump-dom")
    seen = probed(res)
    assert complaints(res.stderr) == []
    # the figures as the run's tables give them now: report.run on the run's results, no history
    cfg = read_config(work)
    validate(cfg)
    again = tmp_path / "again"
    report.run(
        report.inputs_under(work / paths.RESULTS),
        str(again),
        {**cfg["report"], "history": None},
        cfg["label"],
        primary_target(cfg),
    )
    for path in report.FIGURES.values():
        got = seen[path]
        assert got["mime"] == "image/png" and "error" not in got, got
        assert got["width"] > 100 and got["height"] > 100 and got["ink"] > 0.005, (path, got)
        data = base64.b64decode(entries[path]["data_uri"].split(",", 1)[1])
        assert data.startswith(PNG)
        assert data == (work / path).read_bytes() == (again / paths.relative(path, paths.REPORT)).read_bytes(), path
    table = base64.b64decode(entries[paths.TOP_TABLE]["data_uri"].split(",", 1)[1]).decode()
    assert table.count("<tr>") == 1 + min(
        cfg["report"]["top_n"], len(tables.read_table(work / paths.RANKED, tables.PREDICTIONS))
    )


def test_top_candidates_table_sorts_on_a_header_click(built, tmp_path):
    work, _ = built
    page = tmp_path / "top.html"
    text = (work / paths.TOP_TABLE).read_text()
    cut = text.rindex("</body>")
    page.write_text(text[:cut] + SORT_PROBE % "prediction" + text[cut:])
    res = chromium(page, "--dump-dom")
    order = probed(res)
    assert complaints(res.stderr) == []
    values = [float(v) for v in order["first"]]
    assert values == sorted(values) and [float(v) for v in order["second"]] == sorted(values, reverse=True)
    assert sorted(order["before"]) == sorted(order["first"])
