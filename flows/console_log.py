"""What `stepcoder run` shows at the terminal, and where everything else goes.

By default the terminal gets one line per phase of each iteration (records logged with ``extra={"progress":
True}``), the summary, warnings from our own code and errors from anyone. What the libraries log (vLLM's
start-up and weight loading, Prefect's task-run lines, torch and transformers notices, Python warnings) goes to
a log file for the run instead, where it is there when something goes wrong. ``--verbose`` shows it all live
as well. vLLM's generation progress bar stays (a long phase shows progress); transformers' bars for loading
and writing weights do not.

Must run before vLLM is imported: vLLM decides at import whether to install its own console handler.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

# Loggers whose warnings a user should see: ours, and Prefect's run loggers (retries, crashed tasks).
OUR_LOGGERS = ("stepcoder", "flows", "tasks", "storage", "bench", "prefect.flow_runs", "prefect.task_runs")
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class ConsoleFilter(logging.Filter):
    """Pass phase lines, our warnings and anyone's errors; everything else is for the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "progress", False) or record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and record.name.startswith(OUR_LOGGERS)


def log_file_for(log_dir: str | os.PathLike, run: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(log_dir).expanduser().resolve() / run / f"run-{stamp}.log"


class ConsoleFormatter(logging.Formatter):
    """Phase lines as ``HH:MM:SS message``; warnings and errors with their level and logger."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%H:%M:%S")
        if getattr(record, "progress", False):
            return f"{stamp} {record.getMessage()}"
        text = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(log_file: Path, verbose: bool = False) -> None:
    """Send every log record to ``log_file``; unless ``verbose``, keep the console to what ConsoleFilter passes.

    Our handlers sit on the root logger before Prefect configures logging; Prefect then leaves the root logger
    alone (it does when it finds a user's handler there), so its console handler does not print twice.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if not verbose:
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's records reach the root logger, not stdout
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    root = logging.getLogger()
    for h in list(root.handlers):  # Prefect's console handler, if Prefect configured logging already
        if type(h).__name__ == "PrefectConsoleHandler":
            root.removeHandler(h)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setFormatter(ConsoleFormatter())
    if not verbose:
        to_console.addFilter(ConsoleFilter())
    root.addHandler(to_file)
    root.addHandler(to_console)
    root.setLevel(logging.INFO)  # libraries' INFO lines land in the file; the console filter drops them
    logging.captureWarnings(True)  # Python warnings (deprecations in libraries) become records: to the file
    if not verbose:
        _quiet_library_handlers()


def _quiet_library_handlers() -> None:
    """transformers installs its own stderr handler and progress bars: records go to the root logger like
    everyone else's, bars nowhere."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()
