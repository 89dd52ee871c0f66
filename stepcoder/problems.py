"""The normalized problem type every dataset loader produces and every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TestKind = Literal["assert", "stdio", "call"]


@dataclass(frozen=True)
class TestSpec:
    """How a program is checked. One of three forms.

    - ``assert``: ``setup`` runs after the program, then each snippet in ``asserts`` (MBPP ``test_list``,
      HumanEval/LeetCode ``check(candidate)`` calls). A snippet passes if it raises nothing.
    - ``stdio``: the program runs once per test with ``inputs[i]`` on stdin; stdout is compared to ``outputs[i]``
      (APPS standard input/output problems).
    - ``call``: the program defines ``fn_name`` (a function, or a method of ``class Solution``); it is called with
      ``*inputs[i]`` and the result compared to ``outputs[i]`` (APPS call-based problems).
    """

    __test__ = False  # not a pytest class

    kind: TestKind
    asserts: tuple[str, ...] = ()
    setup: str = ""
    inputs: tuple[Any, ...] = ()
    outputs: tuple[Any, ...] = ()
    fn_name: str | None = None
    # assert tests: trusted code of the problem's prompt that the test code may use (LeetCode's imports, HumanEval's
    # helper functions). In-process it is already in the program's namespace; a test driver outside the program's
    # process (execution/driver.py) runs it first, so those names never come from the program.
    context: str = ""

    @property
    def count(self) -> int:
        return len(self.asserts) if self.kind == "assert" else len(self.inputs)


@dataclass(frozen=True)
class Problem:
    """One training or evaluation problem, whatever dataset it came from."""

    problem_id: str  # dataset-qualified and stable, e.g. "mbpp/601"
    dataset: str
    statement: str  # natural-language problem text
    solution: str  # canonical solution (LF line endings)
    tests: TestSpec
    entry_point: str | None = None  # function the tests call, when there is one
    starter_code: str = ""  # signature / class header the final CCCS stage still shows
    difficulty: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
