"""The HTML report's browser check (prunescope.glue.browser) and the report's captions. The checks in a real
browser run on a small self-made page (seconds); they are skipped where Chromium is not installed."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from prunescope.glue import browser
from prunescope.glue.browser import BrowserCheckError

ROOT = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
    reason=f"Chromium is not installed; {browser.INSTALL_HINT}")


def _png_bytes(size=(160, 90), blank=False) -> bytes:
    image = Image.new("RGB", size, "white")
    if not blank:
        draw = ImageDraw.Draw(image)
        for x in range(size[0]):
            draw.line([(x, 0), (x, size[1] // 2)], fill=(x % 256, 80, 255 - x % 256))
        draw.text((5, size[1] // 2 + 5), "accuracy change", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _report_page(script: str) -> str:
    """A page shaped like a Snakemake report: result data in `var results`, an app the script renders."""
    figure = base64.b64encode(_png_bytes()).decode()
    results = {"accuracy_change.png": {"caption": "<p>Accuracy change by category.</p>"},
               "accuracy.csv": {"caption": "<p>Accuracy per dataset.</p>"}}
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>report</title></head><body>
<script>var results = {json.dumps(results)};</script>
<div id="app"></div>
<script>{script}</script></body></html>""".replace("FIGURE", figure)


RENDER = """const app = document.getElementById("app");
for (const [name, entry] of Object.entries(results)) {
  const item = document.createElement("div");
  item.innerHTML = "<h2>" + name + "</h2>" + entry.caption;
  app.appendChild(item);
}
const img = document.createElement("img");
img.src = "data:image/png;base64,FIGURE";
img.width = 640;
app.appendChild(img);"""


def test_check_png_wants_a_non_blank_png_of_the_window_size(tmp_path):
    good, blank = tmp_path / "good.png", tmp_path / "blank.png"
    good.write_bytes(_png_bytes())
    blank.write_bytes(_png_bytes(blank=True))
    assert browser.check_png(good, (160, 90))["colours"] >= browser.MIN_COLOURS
    with pytest.raises(BrowserCheckError, match="looks blank"):
        browser.check_png(blank, (160, 90))
    with pytest.raises(BrowserCheckError, match="not the window's 1400x1000"):
        browser.check_png(good)
    jpeg = tmp_path / "shot.png"
    Image.open(good).save(jpeg, format="JPEG")
    with pytest.raises(BrowserCheckError, match="not PNG"):
        browser.check_png(jpeg, (160, 90))


def test_check_dom_names_what_is_missing():
    rendered = ('<div id="app"><p>ok</p></div><script>var results = {"reports/a.png": {"caption": "<p>A, see b.csv.'
                '</p>"}};</script>')
    assert browser.check_dom(rendered, ["a.png"])["results"] == ["reports/a.png"]
    with pytest.raises(BrowserCheckError, match="not in the report: b.csv"):  # named in a caption, not an entry
        browser.check_dom(rendered, ["a.png", "b.csv"])
    assert browser.check_dom('<p>plain page naming b.csv</p>', ["b.csv"])["results"] == []
    with pytest.raises(BrowserCheckError, match="did not render"):
        browser.check_dom('<div id="app"></div>')
    with pytest.raises(BrowserCheckError, match="without a caption: a.png"):
        browser.check_dom('<script>var results = {"a.png": {"caption": " "}};</script>')


def test_missing_chromium_says_how_to_install(tmp_path):
    with pytest.raises(BrowserCheckError, match="apt-get install -y chromium"):
        browser.find_chromium(str(tmp_path / "no-chromium"))
    assert browser.main([str(tmp_path / "report.html"), "--chromium", str(tmp_path / "no-chromium")]) == 1


def test_expect_globs_must_match(tmp_path):
    (tmp_path / "figures" / "nsa").mkdir(parents=True)
    (tmp_path / "figures" / "nsa" / "drop_scatter.png").write_bytes(b"")
    assert browser.expand([f"{tmp_path}/figures/**/*.png"]) == ["drop_scatter.png"]
    with pytest.raises(BrowserCheckError, match="matches no file"):
        browser.expand([f"{tmp_path}/tables/*.csv"])


def test_every_report_caption_exists_and_is_used():
    """Each report(..., caption=...) of the rules names a caption file, and each caption file is used."""
    rules = "\n".join(path.read_text() for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    used = {ROOT / "workflow" / "rules" / name for name in re.findall(r'caption="([^"]+)"', rules)}
    assert used, "no output is marked for the report"
    assert all(path.resolve().is_file() for path in used), sorted(map(str, used))
    snakefile = (ROOT / "Snakefile").read_text()
    assert re.search(r'^report: "workflow/report/workflow.rst"', snakefile, re.M)
    captions = set((ROOT / "workflow" / "report").glob("*.rst")) - {ROOT / "workflow" / "report" / "workflow.rst"}
    assert captions == {path.resolve() for path in used}


@needs_chromium
def test_browser_check_on_a_rendered_page(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_report_page(RENDER))
    summary = browser.check_report(page, tmp_path / "report.png", ["accuracy_change.png", "accuracy.csv"])
    assert summary["size"] == list(browser.WINDOW)
    assert summary["colours"] >= browser.MIN_COLOURS
    assert summary["results"] == ["accuracy.csv", "accuracy_change.png"]
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.format == "PNG" and shot.size == browser.WINDOW


@needs_chromium
def test_browser_check_fails_when_the_page_script_breaks(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_report_page("undefined_function();\n" + RENDER))
    with pytest.raises(BrowserCheckError, match="looks blank"):
        browser.check_report(page, tmp_path / "report.png")
