"""Open an HTML report in headless Chromium, the way a reader would: screenshot it, check that the screenshot
is a non-blank PNG of the window's size, and check the rendered DOM (the report's app ran; every named file is
in it; for a Snakemake report, every result has a caption).

    python -m prunescope.glue.browser reports/report.html --screenshot reports/report.png \
        --expect 'reports/figures/**/*.png' --expect 'reports/tables/*.csv'
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

INSTALL_HINT = "install it: apt-get install -y chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=10000"]  # let the report's scripts run before the screenshot / DOM dump
WINDOW = (1400, 1000)
MIN_COLOURS = 32  # a blank page has 1; text and figures give hundreds
MAX_BACKGROUND = 0.995  # share of pixels the most common colour may cover


class BrowserCheckError(RuntimeError):
    """The report did not render as a reader would need it to."""


def find_chromium(executable: str | None = None) -> str:
    """The Chromium to run: `executable`, else $CHROMIUM, else `chromium` / `chromium-browser` on PATH."""
    candidates = [executable] if executable else [os.environ.get("CHROMIUM"), "chromium", "chromium-browser"]
    for candidate in filter(None, candidates):
        if path := shutil.which(candidate):
            return path
    raise BrowserCheckError(f"Chromium not found ({executable or 'chromium on PATH'}); {INSTALL_HINT}")


def _run(html: str | Path, args: Sequence[str], chromium: str | None, timeout: float) -> str:
    """Run headless Chromium on file://html with a fresh profile; its stdout."""
    url = Path(html).resolve().as_uri()
    if not Path(html).is_file():
        raise BrowserCheckError(f"no such report: {html}")
    with tempfile.TemporaryDirectory(prefix="prunescope-chromium-") as profile:
        command = [find_chromium(chromium), *FLAGS, f"--user-data-dir={profile}", *args, url]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise BrowserCheckError(f"Chromium did not finish {url} within {timeout:.0f} s") from err
    if done.returncode != 0:
        raise BrowserCheckError(f"Chromium failed on {url} (exit {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(html: str | Path, png: str | Path, window: tuple[int, int] = WINDOW, chromium: str | None = None,
               timeout: float = 120) -> Path:
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run(html, [f"--screenshot={png}", f"--window-size={window[0]},{window[1]}"], chromium, timeout)
    if not png.is_file():
        raise BrowserCheckError(f"Chromium wrote no screenshot {png}")
    return png


def dump_dom(html: str | Path, chromium: str | None = None, timeout: float = 120) -> str:
    """The document after its scripts ran, serialised."""
    return _run(html, ["--dump-dom"], chromium, timeout)


def check_png(png: str | Path, window: tuple[int, int] = WINDOW, min_colours: int = MIN_COLOURS) -> dict:
    """The screenshot is a PNG of the window's size with content: >= min_colours distinct colours and no single
    colour covering more than MAX_BACKGROUND of it. Returns what was measured."""
    from PIL import Image

    with Image.open(png) as image:
        if image.format != "PNG":
            raise BrowserCheckError(f"{png} is {image.format}, not PNG")
        if image.size != tuple(window):
            raise BrowserCheckError(f"{png} is {image.size[0]}x{image.size[1]}, not the window's {window[0]}x"
                                    f"{window[1]}")
        pixels = image.size[0] * image.size[1]
        colours = image.convert("RGB").getcolors(maxcolors=pixels)
    background = max(count for count, _ in colours) / pixels
    if len(colours) < min_colours or background > MAX_BACKGROUND:
        raise BrowserCheckError(f"{png} looks blank: {len(colours)} distinct colours (want >= {min_colours}), the "
                                f"most common one covers {background:.1%} of it")
    return {"size": list(image.size), "colours": len(colours), "background_share": round(background, 4)}


def _script_json(dom: str, name: str):
    """The JSON literal assigned by `var <name> = ...` in the document's scripts (a Snakemake report's data)."""
    start = dom.find(f"var {name} = {{")
    if start < 0:
        return None
    return json.JSONDecoder().raw_decode(dom, start + len(f"var {name} = "))[0]


def check_dom(dom: str, expected: Iterable[str] = ()) -> dict:
    """The page's app rendered (no empty <div id="app">); every expected name is a result of the Snakemake report
    (the file name of one of its entries) or, in any other page, occurs in the document; every result has a
    caption. Returns the report's categories and results (if any)."""
    if 'id="app"></div>' in dom:
        raise BrowserCheckError("the report's app did not render (<div id=\"app\"> is empty): a script failed")
    results = _script_json(dom, "results") or {}
    entries = {Path(path).name for path in results}
    missing = [name for name in expected if name not in (entries if results else dom)]
    if missing:
        raise BrowserCheckError(f"not in the report: {', '.join(missing)}")
    uncaptioned = [path for path, entry in results.items() if not (entry.get("caption") or "").strip()]
    if uncaptioned:
        raise BrowserCheckError(f"results without a caption: {', '.join(uncaptioned)}")
    categories = _script_json(dom, "categories") or {}
    return {"categories": {cat: {sub: len(files) for sub, files in subs.items()} for cat, subs in categories.items()},
            "results": sorted(results)}


def expand(patterns: Iterable[str]) -> list[str]:
    """File names (not paths: a Snakemake report shows names) matched by glob patterns; a pattern matching
    nothing is an error, so a missing output cannot pass unseen."""
    names = []
    for pattern in patterns:
        matched = sorted(glob.glob(pattern, recursive=True))
        if not matched:
            raise BrowserCheckError(f"--expect {pattern!r} matches no file")
        names += [Path(path).name for path in matched]
    return names


def check_report(html: str | Path, png: str | Path, expected: Iterable[str] = (), window: tuple[int, int] = WINDOW,
                 chromium: str | None = None) -> dict:
    """Screenshot html to png and check both the screenshot and the rendered DOM."""
    summary = {"report": str(html), "screenshot": str(screenshot(html, png, window, chromium))}
    summary |= check_png(png, window)
    summary |= check_dom(dump_dom(html, chromium), expected)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", help="the report to open")
    parser.add_argument("--screenshot", default=None, help="PNG to write (default: the report's name, .png)")
    parser.add_argument("--expect", action="append", default=[], metavar="GLOB",
                        help="files whose names must appear in the report (repeatable; ** recurses)")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: $CHROMIUM or chromium)")
    args = parser.parse_args(argv)
    try:
        png = args.screenshot or str(Path(args.html).with_suffix(".png"))
        summary = check_report(args.html, png, expand(args.expect), chromium=args.chromium)
    except BrowserCheckError as err:
        print(f"report check failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
