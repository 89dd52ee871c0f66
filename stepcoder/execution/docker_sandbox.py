"""DockerSandbox: the production backend. A pool of warm, hardened containers, each running the same
fork-per-program worker as the embedded backend (``worker.py``), so there is no ``docker run`` per program.

Each container: ``--network none``, read-only root filesystem, size-capped tmpfs /tmp and /dev/shm (the only
places a program can write), ``--cap-drop ALL``, ``no-new-privileges``, uid 65534, memory (no swap) and pids
limits, no core dumps, private IPC and cgroup namespaces. The worker is the container's PID 1: after each program
it kills every other process in the container, empties /tmp and /dev/shm and removes the SysV IPC objects
(``isolation.reset_writable``), so the next program starts from the state the first one found. Inside, each
program still gets its own session, rlimits and the seccomp filter. The container reads the worker's sources on
stdin at start, so the image (``runner_image.py``) only has to provide an interpreter.

The memory and pids limits are the container's cgroup (v1 or v2, whichever the engine uses): one program runs
at a time in a container, so they bound that program's processes together. The worker reads the cgroup's OOM
kill count (read-only) to report a program killed for memory as such.

The image must exist: ``make runner-image`` (``infra/docker/build-image.sh``), or ``auto_build=True``.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import uuid
from typing import Any

from stepcoder.execution.engine import PooledExecutor, warn_missing
from stepcoder.execution.options import SandboxOptions
from stepcoder.execution.pool import BOOTSTRAP, WORKER_ENV, Transport, WorkerPool
from stepcoder.execution.runner_image import DEFAULT_IMAGE, build_image

logger = logging.getLogger("stepcoder.execution")

LABEL = "stepcoder.runner"
CONTAINER_OVERHEAD_MB = 96  # the worker's own memory inside the container's limit
CONTAINER_PROTECTIONS = ("network", "mount_view", "private_tmp", "ipc_namespace", "cgroup_memory", "cgroup_pids",
                         "cap_drop", "no_new_privileges")
MB = 1 << 20


class DockerUnavailable(RuntimeError):
    """No Docker engine answers (or the runner image is missing)."""


def docker_client(timeout_s: int = 120):
    """A client for the local engine; DockerUnavailable (with the reason) when none answers."""
    try:
        import docker

        client = docker.from_env(timeout=timeout_s)
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001 - any failure here means "no engine"
        raise DockerUnavailable(f"no Docker engine: {e}") from e


class DockerTransport(Transport):
    """One warm container; the worker's stdin/stdout through the engine's attach stream (demultiplexed)."""

    def __init__(self, api, image: str, cmd: list[str], host_config: dict, labels: dict[str, str]):
        self._api = api
        self.cid = api.create_container(image, command=cmd, user="65534:65534", stdin_open=True, tty=False,
                                        detach=False, working_dir="/tmp", labels=labels, network_disabled=True,
                                        environment={"PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8", "HOME": "/tmp",
                                                     **WORKER_ENV},
                                        host_config=host_config)["Id"]
        self._dead, self._lock = False, threading.Lock()
        try:
            resp = api.attach_socket(self.cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._keep = resp  # the HTTP response owns the connection
            self._sock: socket.socket = getattr(resp, "_sock", resp)
            self._sock.settimeout(None)
            api.start(self.cid)
        except BaseException:
            self._remove()
            raise
        self._buf = bytearray()
        self._stderr = bytearray()

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> bytes | None:
        data = self._sock.recv(1 << 16)
        if not data:
            return b""
        self._buf += data
        out = bytearray()
        while len(self._buf) >= 8:  # the engine's frames: stream (1 byte), 3 zero bytes, size (4 bytes)
            n = int.from_bytes(self._buf[4:8], "big")
            if len(self._buf) < 8 + n:
                break
            if self._buf[0] == 1:
                out += self._buf[8:8 + n]
            else:
                self._stderr = (self._stderr + self._buf[8:8 + n])[-4096:]
            del self._buf[:8 + n]
        return bytes(out) if out else None

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def kill(self, grace_s: float = 0.0) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
        try:
            self._sock.shutdown(socket.SHUT_WR)  # stdin EOF: the worker exits
        except OSError:
            pass
        if grace_s > 0:
            try:
                self._api.wait(self.cid, timeout=grace_s)
            except Exception:  # noqa: BLE001 - removed by force below anyway
                pass
        self._remove()
        try:
            self._sock.close()
        except OSError:
            pass

    def _remove(self) -> None:
        try:
            self._api.remove_container(self.cid, force=True)
        except Exception as e:  # noqa: BLE001
            logger.debug("removing container %s: %s", self.cid[:12], e)

    def describe(self) -> str:
        parts = []
        try:
            state = self._api.inspect_container(self.cid)["State"]
            parts.append(f"container {state.get('Status')}, exit code {state.get('ExitCode')}"
                         + (", OOM-killed" if state.get("OOMKilled") else ""))
        except Exception:  # noqa: BLE001 - already removed
            pass
        tail = self._stderr.decode(errors="replace").strip()[-800:]
        if tail:
            parts.append(f"stderr: {tail}")
        return "; ".join(parts)


def remove_stale_containers(client) -> int:
    """Remove runner containers that are no longer running (left by a parent that was killed)."""
    n = 0
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        if c.status in ("exited", "created", "dead"):
            try:
                c.remove(force=True)
                n += 1
            except Exception:  # noqa: BLE001
                pass
    return n


class DockerSandbox(PooledExecutor):
    """Runs programs in ``options.workers`` warm runner containers. ``options`` (or keywords of the same names):
    see ``SandboxOptions``; ``python`` defaults to the image's ``stepcoder.python`` label, and containers always
    run uid 65534 with the stdlib only (``uid``, ``site_packages`` are ignored). Plus:

    Args:
        image: the runner image (default ``stepcoder-runner:latest``).
        auto_build: build the image from this machine's interpreter if it is missing.
    """

    backend = "docker"

    def __init__(self, options: SandboxOptions | None = None, *, image: str = DEFAULT_IMAGE,
                 auto_build: bool = False, **kwargs: Any):
        o = SandboxOptions.of(options, **kwargs)
        memory_mb, tmp_mb, max_processes = o.memory_mb, o.tmp_mb, o.max_processes
        import docker

        self.workers = o.workers or os.cpu_count() or 1
        self.image = image
        self._client = docker_client()
        remove_stale_containers(self._client)
        try:
            img = self._client.images.get(image)
        except docker.errors.ImageNotFound:
            if not auto_build:
                raise DockerUnavailable(f"runner image {image!r} not found: build it with `make runner-image` "
                                        "(infra/docker/build-image.sh)") from None
            logger.warning("runner image %s not found: building it from this machine's interpreter", image)
            build_image(tag=image, client=self._client)
            img = self._client.images.get(image)
        self.python = o.python or (img.labels or {}).get("stepcoder.python") or "/usr/bin/python3"
        self._pool_id = uuid.uuid4().hex[:10]
        container_mb = memory_mb + 2 * tmp_mb + CONTAINER_OVERHEAD_MB  # tmpfs pages are charged to it too
        self._host_config = self._client.api.create_host_config(
            network_mode="none", read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            tmpfs={"/tmp": f"size={tmp_mb}m,mode=1777,nosuid,nodev"}, shm_size=tmp_mb * MB,
            mem_limit=container_mb * MB, memswap_limit=container_mb * MB, pids_limit=max_processes + 2,
            ipc_mode="private", cgroupns="private", ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)],
            init=False)
        config = {
            "mode": "container", "uid": None, "uid_drop": False, "memory_mb": memory_mb,
            "cpu_s": math.ceil(o.budget_s) + 1, "nproc": max_processes * self.workers + 16, "file_mb": tmp_mb,
            "tmp_mb": tmp_mb, "preload": list(o.preload), "line_cap": 8 * o.max_output_bytes + MB,
            "total_cap": max(64 * MB, 16 * o.max_output_bytes), "scratch_dir": "/tmp",
            "container_protections": list(CONTAINER_PROTECTIONS),
        }
        pool = WorkerPool(self._spawn, self.workers, config, {"backend": self.backend, "image": image},
                          name="docker")
        self._start_engine(pool, o, fingerprint={"backend": self.backend, "image": img.id, "python": self.python})
        warn_missing(self.backend, self.missing, "Check the Docker engine and the runner image.")

    def _spawn(self) -> DockerTransport:
        cmd = [self.python, "-B", "-s", "-S", "-c", BOOTSTRAP]
        labels = {LABEL: "1", "stepcoder.pool": self._pool_id}
        return DockerTransport(self._client.api, self.image, cmd, self._host_config, labels)

    def close(self) -> None:
        super().close()
        client = getattr(self, "_client", None)
        if client is not None:
            try:
                for c in client.containers.list(all=True, filters={"label": f"stepcoder.pool={self._pool_id}"}):
                    c.remove(force=True)
            except Exception:  # noqa: BLE001
                pass
            client.close()
