"""What every workflow job does around its work: log to the rule's log file, pick its device, limit threads."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # torch is imported by job_device only: the reporting jobs never need it (3 s a job)
    import torch


@contextlib.contextmanager
def job_log(log_path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send logging, warnings, stdout and stderr (tqdm progress) to the rule's log file.

    A failure is logged with its traceback there, and its one-line message also goes to the console,
    so the user sees what went wrong without opening the log.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    console = sys.__stderr__
    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            yield logging.getLogger("prunescope.job")
        except Exception as err:
            logging.getLogger("prunescope.job").exception("job failed")
            print(f"prunescope: {type(err).__name__}: {err} (log: {log_path})", file=console)
            raise


GPU_SLOTS = Path(tempfile.gettempdir()) / "prunescope-gpu-slots"
_held_slot = None  # the lock file of this job's GPU, held until the process exits


def job_device(threads: int) -> torch.device:
    """The GPU this job was given, else the CPU; torch uses exactly the job's threads and, on a GPU, deterministic
    kernels where it has them (so a GPU rerun gives the same bytes too).

    With one visible GPU (a SLURM job's, or a one-GPU workstation) that GPU. With several, Snakemake hands out
    `gpu` resource units but not device indices, so the job claims the first free one itself (claim_gpu_slot).
    """
    global _held_slot
    import torch

    torch.set_num_threads(max(1, threads))
    if not torch.cuda.is_available():
        return torch.device("cpu")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode needs it, set early
    torch.use_deterministic_algorithms(True, warn_only=True)  # deterministic kernels where torch has them
    count = torch.cuda.device_count()
    if count == 1:
        return torch.device("cuda:0")
    index, _held_slot = claim_gpu_slot(count, GPU_SLOTS)
    logging.getLogger(__name__).info("GPU %d of %d claimed (lock in %s)", index, count, GPU_SLOTS)
    return torch.device(f"cuda:{index}")


def claim_gpu_slot(count: int, folder: Path, poll_seconds: float = 1.0) -> tuple[int, TextIO]:
    """The index of the first of `count` GPUs no other job holds, and its locked file (an exclusive flock the OS
    drops when the process ends, even if killed). Waits while every GPU is held."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(folder / f"gpu{index}.lock", "w")  # noqa: SIM115 - held for the job's lifetime
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return index, handle
        time.sleep(poll_seconds)
