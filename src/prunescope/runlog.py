"""What every workflow job does around its work: log to the rule's log file, pick its device, limit threads."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

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


def job_device(threads: int) -> torch.device:
    """The GPU this job was given, else the CPU; torch uses exactly the job's threads."""
    torch.set_num_threads(max(1, threads))
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
