"""What running a program against its tests produced: per-test statuses, the overall outcome, executed lines."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TEST_STATUSES = ("pass", "fail", "runtime_error", "timeout")
OUTCOMES = ("pass", "fail", "runtime_error", "timeout", "compile_error")


@dataclass
class TestResult:
    """One test of one program. ``status`` is one of ``TEST_STATUSES``; ``detail`` is a short reason."""

    __test__ = False  # not a pytest class

    status: str
    time_ms: float
    detail: str = ""
    # "split": the test code and expected values stayed out of the program's process (a test driver, or the
    # parent comparing stdout/return values); "in_process": it ran beside the program, under the guard
    isolation: str = "split"


@dataclass
class ExecResult:
    """One program run against all of its problem's tests.

    ``executed_lines`` are sorted 1-based line numbers of the program text that ran: the union over all tests plus
    the module-level lines run while the program was loaded (the input of the FGO token mask). ``runner`` describes
    the sandbox that ran it: ``backend``, ``python`` version and ``interpreter``, ``coverage`` ("sys.monitoring" |
    "settrace" | "off"), ``missing`` protections, ``harness`` version, and the child's ``exit_code``.
    ``cache_hit``: this result was not run again but copied from an identical earlier job (same program, tests,
    harness version and limits; see ``cache.py``). ``coverage_complete``: False when the program was killed (time,
    memory, crash, output cap) before it reported every test it started, so ``executed_lines`` lacks the lines
    that ran in the test it died in (FGO then keeps every token rather than mask the code that was running).
    """

    outcome: str
    tests: list[TestResult]
    executed_lines: list[int]
    time_ms: float
    error: str = ""
    runner: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    coverage_complete: bool = True

    @property
    def tests_passed(self) -> int:
        return sum(t.status == "pass" for t in self.tests)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecResult:
        return cls(
            outcome=d["outcome"],
            tests=[TestResult(**t) for t in d["tests"]],
            executed_lines=list(d["executed_lines"]),
            time_ms=d["time_ms"],
            error=d.get("error", ""),
            runner=dict(d.get("runner", {})),
            cache_hit=bool(d.get("cache_hit", False)),
            coverage_complete=bool(d.get("coverage_complete", True)),
        )


def decide_outcome(tests: list[TestResult], load_status: str = "ok") -> str:
    """The outcome of a program from how it loaded and its per-test statuses.

    - The program does not compile → ``compile_error``; no test runs (decided by the runner, not here).
    - Module-level code raised while loading → ``runtime_error`` (every test is marked ``runtime_error``);
      module-level code ran out of time → ``timeout`` (every test ``timeout``).
    - Otherwise every test passes → ``pass``; else the first non-passing test, in test order, that is a
      ``runtime_error`` or ``timeout`` decides; if all non-passing tests are plain failures → ``fail``.
      A program with no tests that loads cleanly passes.
    """
    if load_status != "ok":
        return load_status
    for t in tests:
        if t.status in ("runtime_error", "timeout"):
            return t.status
    return "pass" if all(t.status == "pass" for t in tests) else "fail"
