"""Running untrusted programs against tests in a sandbox: pre-started workers that fork one confined child per
program (``sandbox.py`` embedded, ``docker_sandbox.py`` in warm containers; both run ``worker.py``).

Light on purpose: the backends are imported by ``make_executor`` when used.
"""

from stepcoder.execution.factory import BACKENDS, Executor, make_executor, shared_executor
from stepcoder.execution.headers import APPS_HEADER
from stepcoder.execution.results import OUTCOMES, ExecResult, TestResult

__all__ = [
    "APPS_HEADER", "BACKENDS", "OUTCOMES", "ExecResult", "Executor", "TestResult", "make_executor", "shared_executor",
]
