"""Logging set-up shared by the command line and the Snakemake scripts."""

from __future__ import annotations

import logging
import sys
import warnings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_path: str | None = None, level: int = logging.INFO) -> None:
    """Log to ``log_path`` (a Snakemake ``log:`` file) if given, else to stderr.

    With a log file, stderr is redirected to it too, so tracebacks and warnings of
    third-party code (pymatgen, PySCF) end up in the job's log and not in the controller's.
    """
    handlers: list[logging.Handler]
    if log_path:
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
