"""Every relative link in the documentation resolves: README.md, CHANGELOG.md, CONTRIBUTING.md and docs/*.md.

A link is a Markdown link or image, [text](target) or ![alt](target), a reference definition `[label]: target`, or an
HTML href or src attribute, outside fenced code blocks and code spans. A target with a scheme (https:, mailto:) is
external and not checked. A relative target must name a file or folder inside the repository (relative to the linking
file; a leading / is the repository root). An #anchor, into the same file or another Markdown file, must name one of
its ATX headings (or an explicit <a id/name>), slugged as GitHub does: the heading's text without its Markdown, lower
case, every character but letters, digits, marks, `_`, `-` and spaces dropped, spaces turned into hyphens, and a
repeated slug suffixed -1, -2, ...
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "CHANGELOG.md", "CONTRIBUTING.md", "docs/*.md"]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""")
HTML_ANCHOR = re.compile(r"""<a\s[^>]*\b(?:id|name)\s*=\s*["']([^"']+)["']""")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
EXTERNAL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")


def prose_lines(text: str, spans: bool = False) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks, with code spans removed unless `spans`."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line.strip()[len(match.group(1)):].strip():
                fence = None
        else:
            lines.append((number, line if spans else CODE_SPAN.sub("", line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or c.isalnum() or unicodedata.category(c).startswith("M"))
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown file defines: its headings' slugs (repeats numbered) and explicit <a id/name>."""
    found, seen = set(), {}
    for _, line in prose_lines(text, spans=True):  # a heading's code spans are part of its text
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the file's prose."""
    found = []
    for number, line in prose_lines(text):
        targets = [m.group(1) for m in INLINE.finditer(line)] + HTML.findall(line)
        if match := REFERENCE.match(line):
            targets.append(match.group(1))
        found += [(number, target.strip("<>")) for target in targets]
    return found


def broken_links(root: Path, patterns: list[str]) -> list[str]:
    """'file:line: target (why)' for every relative link under root's documentation files that does not resolve."""
    root = root.resolve()
    files = sorted({path for pattern in patterns for path in root.glob(pattern) if path.is_file()})
    cache: dict[Path, set[str]] = {}
    broken = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for number, target in links(text):
            if EXTERNAL.match(target):
                continue
            where, _, fragment = target.partition("#")
            where = unquote(where.partition("?")[0])
            resolved = path if not where else (root / where.lstrip("/") if where.startswith("/")
                                               else path.parent / where).resolve()
            why = ""
            if not resolved.is_relative_to(root):
                why = "outside the repository"
            elif not resolved.exists():
                why = "no such file"
            elif fragment and resolved.suffix == ".md" and resolved.is_file():
                if resolved not in cache:
                    cache[resolved] = anchors(resolved.read_text(encoding="utf-8"))
                if unquote(fragment) not in cache[resolved]:
                    why = f"no heading #{fragment} in {resolved.relative_to(root)}"
            if why:
                broken.append(f"{path.relative_to(root)}:{number}: {target} ({why})")
    return broken


def test_every_relative_link_in_the_docs_resolves():
    for name in ("README.md", "CHANGELOG.md", "CONTRIBUTING.md", "docs/methods.md"):
        assert (ROOT / name).is_file(), f"{name} is missing"
    assert broken_links(ROOT, DOCS) == []


def test_a_planted_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "pic.png").write_bytes(b"")
    (tmp_path / "docs" / "b.md").write_text(
        "# Title\n\n## A heading: with `code`, punctuation!\n\n## Repeated\n\n## Repeated\n\n<a id=\"custom\"></a>\n",
        encoding="utf-8")
    (tmp_path / "a.md").write_text("\n".join([
        "# Local heading",
        "[ok](docs/b.md) [ok](docs/b.md#a-heading-with-code-punctuation) [ok](docs/b.md#repeated-1)",
        "![ok](pic.png) [ok](#local-heading) [ok](docs/b.md#custom) [ok](/docs/b.md) [ok](docs/)",
        "[external](https://example.org/missing.md) [mail](mailto:someone@example.org)",
        "`[in a code span](missing-in-span.md)`",
        "```",
        "[in a fence](missing-in-fence.md)",
        "```",
        "[bad file](docs/missing.md) ![bad image](missing.png)",
        "[bad anchor](docs/b.md#no-such-heading) [bad local](#nope) [third repeat](docs/b.md#repeated-2)",
        "[escapes](../outside.md)",
        '<img src="gone.svg"> [ref]: docs/also-missing.md',
        "[ref2]: docs/also-missing.md",
    ]) + "\n", encoding="utf-8")
    assert broken_links(tmp_path, ["*.md", "docs/*.md"]) == [
        "a.md:9: docs/missing.md (no such file)",
        "a.md:9: missing.png (no such file)",
        "a.md:10: docs/b.md#no-such-heading (no heading #no-such-heading in docs/b.md)",
        "a.md:10: #nope (no heading #nope in a.md)",
        "a.md:10: docs/b.md#repeated-2 (no heading #repeated-2 in docs/b.md)",
        "a.md:11: ../outside.md (outside the repository)",
        "a.md:12: gone.svg (no such file)",
        "a.md:13: docs/also-missing.md (no such file)",
    ]


def test_headings_are_slugged_as_github_does():
    assert slug("Scaling up: GPU workstation, offload, memory plan, SLURM") == \
        "scaling-up-gpu-workstation-offload-memory-plan-slurm"
    assert slug("The claims' statistics") == "the-claims-statistics"
    assert slug("`make run` and [the tests](x.md)") == "make-run-and-the-tests"
    assert slug("2026-12-04 (night): a first run") == "2026-12-04-night-a-first-run"
    assert slug("Données et modèles") == "données-et-modèles"
    assert slug("snake_case and  two spaces") == "snake_case-and--two-spaces"
