"""The executor interface and the factory that picks a backend by name."""

from __future__ import annotations

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
    """Build the executor named ``backend`` with the backend's own keyword arguments."""
    if backend == "embedded":
        from stepcoder.execution.sandbox import EmbeddedSandbox

        return EmbeddedSandbox(**kwargs)
    if backend == "docker":
        from stepcoder.execution.docker_sandbox import DockerSandbox

        return DockerSandbox(**kwargs)
    raise ValueError(f"unknown execution backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
