"""`stepcoder run` output: phase lines, the summary and real warnings on the terminal; library logs in a file."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.console_log import ConsoleFilter, ConsoleFormatter

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "stepcoder")
PHASES = ("generate", "execute", "store", "train", "advance", "commit")


def _record(name: str, level: int, msg: str = "m", **extra) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(("name", "level", "extra", "shown"), [
    ("prefect.flow_runs", logging.INFO, {"progress": True}, True),  # a phase line
    ("prefect.flow_runs", logging.INFO, {}, False),  # "Beginning flow run ..."
    ("prefect.task_runs", logging.INFO, {}, False),  # "Finished in state Completed()"
    ("prefect.task_runs", logging.WARNING, {}, True),  # a retry
    ("stepcoder.execution", logging.WARNING, {}, True),  # e.g. no cgroup limits on this host
    ("vllm.worker", logging.WARNING, {}, False),  # start-up notices: the log file
    ("py.warnings", logging.WARNING, {}, False),  # a library's deprecation warning
    ("vllm.worker", logging.ERROR, {}, True),  # anyone's error
    ("storage.store", logging.INFO, {}, False),
])
def test_console_filter(name, level, extra, shown):
    assert ConsoleFilter().filter(_record(name, level, **extra)) is shown


def test_console_format_keeps_phase_lines_short():
    assert re.fullmatch(r"\d\d:\d\d:\d\d train    2 PPO steps",
                        ConsoleFormatter().format(_record("prefect.flow_runs", logging.INFO, "train    2 PPO steps",
                                                          progress=True)))
    assert ConsoleFormatter().format(_record("stepcoder.execution", logging.WARNING, "no cgroup")).endswith(
        "WARNING stepcoder.execution: no cgroup")


def _run(root: Path, *extra: str) -> tuple[str, list[Path]]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a first run: the ephemeral API
    args = [CLI, "run", "-c", "infra/configs/tiny.yaml", "-r", "quiet", *extra,
            "--set", f"store={root / 'store'}", "--set", f"checkpoint_dir={root / 'ckpt'}",
            "--set", f"log_dir={root / 'logs'}", "--set", "data.limit=4"]
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout + res.stderr, sorted((root / "logs" / "quiet").glob("run-*.log"))


@pytest.mark.slow
def test_run_is_quiet_by_default_and_verbose_on_request(tiny_model, tmp_path):
    out, logs = _run(tmp_path)
    lines = out.splitlines()
    assert len(lines) < 60, out
    phases = [m.group(1) for line in lines if (m := re.match(r"^\d\d:\d\d:\d\d (\w+) ", line))]
    assert phases[0] == "run" and phases[1:] == list(PHASES), lines  # one line per phase, in order
    assert not [line for line in lines if "Task run" in line or "(MainProcess" in line or " INFO " in line], out
    [log] = logs
    assert f"library logs: {log}" in out
    text = log.read_text()
    assert re.search(r" vllm[.\w]*: ", text) and "prefect.task_runs: Finished in state Completed()" in text
    assert "train    " in text  # the phase lines are in the file too

    out, logs = _run(tmp_path, "--verbose")  # iteration 2: the libraries' records shown live as well
    assert "prefect.task_runs: Finished in state Completed()" in out and re.search(r" vllm[.\w]*", out)
    assert "policy iter-000001" in out
    assert len(logs) == 2
