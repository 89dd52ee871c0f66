"""The executor interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stepcoder.execution.results import ExecResult
    from stepcoder.problems import TestSpec


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
