"""Running untrusted programs against tests in a sandboxed child process (see ``sandbox.py``, ``harness.py``)."""

from stepcoder.execution.factory import BACKENDS, Executor, make_executor
from stepcoder.execution.results import OUTCOMES, ExecResult, TestResult

__all__ = ["BACKENDS", "OUTCOMES", "ExecResult", "Executor", "TestResult", "make_executor"]
