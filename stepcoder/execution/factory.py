"""The factory that picks a backend by name, and the shared per-process executors (``Executor``: executor.py)."""

from __future__ import annotations

import atexit
import threading
from typing import Any

from stepcoder.execution.executor import Executor

BACKENDS = ("embedded", "docker")


def make_executor(backend: str = "embedded", **kwargs: Any) -> Executor:
    """Build the executor named ``backend``: ``SandboxOptions`` fields as keywords (or ``options=``), plus the
    backend's own (Docker: ``image``, ``auto_build``). The caller owns it: ``close()`` it, or use it as a context manager."""
    if backend == "embedded":
        from stepcoder.execution.sandbox import EmbeddedSandbox

        return EmbeddedSandbox(**kwargs)
    if backend == "docker":
        from stepcoder.execution.docker_sandbox import DockerSandbox

        return DockerSandbox(**kwargs)
    raise ValueError(f"unknown execution backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


_shared: dict[tuple[str, str], Executor] = {}
_shared_lock = threading.Lock()


def shared_executor(backend: str = "embedded", **kwargs: Any) -> Executor:
    """One executor per (backend, options) for the whole process, started on first use and closed at exit.

    For callers that run many small batches (the pipeline's execute tasks, one per chunk): the workers start
    once, not once per batch, and the result cache spans batches. ``run`` is thread-safe, so concurrent tasks
    may share it. Do not ``close()`` it yourself.
    """
    key = (backend, repr(sorted(kwargs.items())))
    with _shared_lock:
        executor = _shared.get(key)
        if executor is None:
            executor = _shared[key] = make_executor(backend, **kwargs)
        return executor


@atexit.register
def close_shared_executors() -> None:
    with _shared_lock:
        executors = list(_shared.values())
        _shared.clear()
    for executor in executors:
        executor.close()
