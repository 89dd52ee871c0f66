"""A real Prefect API server for tests and benches: ``prefect server start`` on a free loopback port, its own
PREFECT_HOME (SQLite database) in a temp dir, stopped by pid.

Unlike ``prefect_test_harness`` this is the server users run (``make server``), so deployments, the runner
behind ``flow.serve`` and the scheduler all work against it. Use the context manager ``local_prefect_server()``;
point subprocesses at it with ``server.env``. ``stop_tree`` stops any process we started together with its
descendants (the runner starts one process per flow run), each by pid, and reports what refused to die.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PrefectServer:
    url: str  # http://127.0.0.1:<port>/api
    home: Path
    pid: int
    log: Path = field(repr=False)

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess that talks to this server (CLI, serve, flows)."""
        env = dict(os.environ)
        env.update(
            PREFECT_API_URL=self.url,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
            PREFECT_RUNNER_POLL_FREQUENCY="1",  # the runner polls for new runs every second (default 10)
            PREFECT_CLI_WRAP_LINES="false",
            PYTHONUNBUFFERED="1",
        )
        return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_prefect_server(workdir: str | os.PathLike | None = None, ready_timeout_s: float = 120.0,
                   scheduler_loop_s: float = 2.0) -> Iterator[PrefectServer]:
    """Start ``prefect server start --host 127.0.0.1 --port <free>``, wait for /api/health, stop it on exit.

    ``scheduler_loop_s``: how often the scheduler service looks for deployments to schedule (default 60 s).
    """
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="prefect-server-"))
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    log_path = root / "server.log"
    port = free_port()
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",  # nobody looks at it in tests; saves start time
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=str(scheduler_loop_s),
    )
    cmd = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
           "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = PrefectServer(f"http://127.0.0.1:{port}/api", home, proc.pid, log_path)
    try:
        _wait_healthy(server, proc, ready_timeout_s)
        yield server
    finally:
        left = stop_tree(proc)
        assert not left, f"prefect server processes survived: {left}"


def _wait_healthy(server: PrefectServer, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{tail(server.log)}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"prefect server not healthy after {timeout_s:.0f} s:\n{tail(server.log)}")
        time.sleep(0.25)


def stop_tree(proc: subprocess.Popen, first: int = signal.SIGTERM, grace_s: float = 20.0) -> list[int]:
    """Stop ``proc`` and every descendant, each by pid: ``first`` signal to the parent, a grace period for it to
    clean up its children, then SIGKILL to whatever is left. Returns the pids still alive (should be none)."""
    try:
        family = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        os.kill(proc.pid, first)
    _, alive = psutil.wait_procs(family, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=10)
    try:
        proc.wait(5)  # reap it, so it does not linger as a zombie
    except subprocess.TimeoutExpired:
        pass
    return [p.pid for p in alive]


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
