"""The executor interface and the factory that picks a backend by name."""

from __future__ import annotations

import atexit
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stepcoder.execution.results import ExecResult
    from stepcoder.problems import TestSpec

BACKENDS = ("embedded", "docker")


class Executor(ABC):
    """Runs untrusted programs against their tests in a sandbox, never in the caller's process."""

    @abstractmethod
    def run(self, jobs: Sequence[tuple[str, TestSpec]], progress: bool = False) -> list[ExecResult]:
        """Run each ``(program, tests)`` job; results come back in input order."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(backend: str = "embedded", **kwargs: Any) -> Executor:
    """Build the executor named ``backend`` with the backend's own keyword arguments (see ``EmbeddedSandbox``
    and ``DockerSandbox``). The caller owns it: ``close()`` it, or use it as a context manager."""
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
