"""EmbeddedSandbox: the default backend, no Docker needed. Pre-started workers on this machine fork one confined
child per program (``worker.py``, ``isolation.py``).

Started as root (the pipeline's normal case here), each worker gets fresh network/mount/PID/IPC/UTS namespaces, a
minimal read-only filesystem view with a private size-capped /tmp, and cgroup memory and pids limits (v1 or
v2, ``cgroups.py``) where the host has those controllers; each program's child runs in its own session as uid
65534 with rlimits, no-new-privileges and a seccomp filter. Not root: a user namespace gives the namespaces and the view, but not the
uid drop or cgroups. Whatever is missing is logged once, loudly, at start-up, and listed in every result's
``runner["missing"]``.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from stepcoder.execution.compare import call_matches, stdio_matches  # noqa: F401  (re-exported, older imports)
from stepcoder.execution.engine import PooledExecutor, warn_missing
from stepcoder.execution.interpreters import runner_candidates
from stepcoder.execution.options import SandboxOptions
from stepcoder.execution.cgroups import WorkerCgroups
from stepcoder.execution.cgroups import clean_stale as _clean_stale_cgroups
from stepcoder.execution.cgroups import rmdir as _rmdir  # with retries: also right for a view's mount point
from stepcoder.execution.pool import BOOTSTRAP, WORKER_ENV, Transport, WorkerPool, WorkerStartError

logger = logging.getLogger("stepcoder.execution")

WORKER_OVERHEAD_MB = 96  # the zygote's own memory, charged to the worker's cgroup with the program's
MB = 1 << 20


def clean_stale() -> None:
    """Remove what a killed parent left behind: empty per-worker cgroups, and the empty mount points of worker
    views (in use ones are mounted over in their own namespace only, so they are empty here too: rmdir of a live
    one would not disturb it, but only directories older than an hour are touched)."""
    cutoff = time.time() - 3600
    for d in glob.glob(os.path.join(tempfile.gettempdir(), "stepcoder-view-*")):
        try:
            if os.stat(d).st_mtime < cutoff:
                os.rmdir(d)
        except OSError:
            pass
    _clean_stale_cgroups()


# ---------------------------------------------------------------- one worker process


class ProcessTransport(Transport):
    """A worker process on this host, talking over its stdin/stdout pipes."""

    def __init__(self, cmd: list[str], config_overrides: dict[str, Any], cgroups: WorkerCgroups | None,
                 view_root: str | None):
        self.config_overrides, self._cgroups, self._view_root = config_overrides, cgroups, view_root
        self._stderr = tempfile.TemporaryFile()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp",
               "PYTHONHASHSEED": "0", **WORKER_ENV}  # same str hashes (set order) on every run; no parent secrets
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     env=env, cwd="/", start_new_session=True, bufsize=0)
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self._lock = threading.Lock()
        self._dead = False

    def fileno(self) -> int:
        return self._out

    def read(self) -> bytes | None:
        return os.read(self._out, 1 << 16)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def kill(self, grace_s: float = 0.0) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
        try:
            self.proc.stdin.close()  # EOF: the worker kills its program and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=grace_s) if grace_s > 0 else None
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the waiter and the zygote; the namespace dies with it
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        self.proc.stdout.close()
        if self._cgroups is not None:
            self._cgroups.remove()
        if self._view_root:
            _rmdir(Path(self._view_root))

    def describe(self) -> str:
        code = self.proc.poll()
        try:
            self._stderr.seek(0)
            tail = self._stderr.read()[-800:].decode(errors="replace").strip()
        except (OSError, ValueError):
            tail = ""
        parts = [f"exit code {code}" if code is not None else ""] + ([f"stderr: {tail}"] if tail else [])
        return "; ".join(p for p in parts if p)


# ---------------------------------------------------------------- the executor


class EmbeddedSandbox(PooledExecutor):
    """Runs programs in ``options.workers`` pre-started sandbox workers on this machine. ``options`` (or keywords
    of the same names): see ``SandboxOptions``."""

    backend = "embedded"

    def __init__(self, options: SandboxOptions | None = None, **kwargs: Any):
        o = SandboxOptions.of(options, **kwargs)
        self.workers = o.workers or os.cpu_count() or 1
        self.memory_mb, self.uid, self.tmp_mb, self.max_processes = o.memory_mb, o.uid, o.tmp_mb, o.max_processes
        self.site_packages = o.site_packages
        self._scratch = tempfile.mkdtemp(prefix="stepcoder-scratch-")
        os.chmod(self._scratch, 0o711)
        self._pool_id = uuid.uuid4().hex[:10]
        self._spawned = 0
        self._spawn_lock = threading.Lock()
        clean_stale()
        config = {
            "mode": "host", "uid": o.uid, "uid_drop": o.uid is not None, "memory_mb": o.memory_mb,
            "cpu_s": math.ceil(o.budget_s) + 1, "nproc": o.max_processes * self.workers + 16, "file_mb": o.tmp_mb,
            "tmp_mb": o.tmp_mb, "preload": list(o.preload), "line_cap": 8 * o.max_output_bytes + MB,
            "total_cap": max(64 * MB, 16 * o.max_output_bytes), "scratch_dir": self._scratch,
        }
        errors = []
        candidates = [o.python] if o.python else runner_candidates()
        for candidate in candidates:
            self.python = candidate
            try:
                pool = WorkerPool(self._spawn, self.workers, config, {"backend": self.backend},
                                  name="embedded")
                break
            except (WorkerStartError, OSError) as e:
                errors.append(f"{candidate}: {e}")
                logger.info("runner interpreter %s does not work here: %s", candidate, e)
        else:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise RuntimeError("no runner interpreter works for the embedded sandbox:\n  " + "\n  ".join(errors))
        self._start_engine(pool, o, fingerprint={"backend": self.backend, "python": self.python,
                                                 "site_packages": o.site_packages})
        warn_missing(self.backend, self.missing, "Run as root on Linux with the memory and pids cgroup controllers "
                     "(v1, or v2 delegable from this process's cgroup), or use the docker backend.")

    def _spawn(self) -> ProcessTransport:
        with self._spawn_lock:
            self._spawned += 1
            name = f"{self._pool_id}-{self._spawned}"
        cgroup_mb = self.memory_mb + self.tmp_mb + WORKER_OVERHEAD_MB
        cgroups = WorkerCgroups(name, cgroup_mb * MB, self.max_processes + 1)
        view_root = tempfile.mkdtemp(prefix="stepcoder-view-")
        cmd = [self.python, "-B", "-s", *([] if self.site_packages else ["-S"]), "-c", BOOTSTRAP]
        overrides = {"cgroups": cgroups.procs(), "oom_file": cgroups.oom_file(), "view_root": view_root}
        try:
            return ProcessTransport(cmd, overrides, cgroups, view_root)
        except OSError:
            cgroups.remove()
            _rmdir(Path(view_root))
            raise

    def close(self) -> None:
        super().close()
        shutil.rmtree(getattr(self, "_scratch", ""), ignore_errors=True)
