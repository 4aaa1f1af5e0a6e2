"""The process's peak resident set and its reset (Linux /proc), for benchmarks that measure one stage at a time.

Standard library only: llmcompressor_peer.py imports it from llm-compressor's own venv, and tests/memory_probe.py
from a bare fresh process."""

from pathlib import Path


def status_bytes(field: str) -> int:
    """A memory figure of /proc/self/status (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def peak_rss_bytes() -> int:
    """The peak resident set since the process started or since the last reset_peak_memory (VmHWM)."""
    return status_bytes("VmHWM")


def reset_peak_memory() -> None:
    """Lower the process's peak resident set to its current one, so the next stage reports its own peak."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
