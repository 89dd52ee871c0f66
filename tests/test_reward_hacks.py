"""Reward hacks on assert-style tests: the program's own methods must not decide a test's comparisons.

Assert tests run in a test driver outside the program's process by default (``split_tests``, ``driver.py``);
the in-process path with the comparison guard remains for tests that do not split. Each hack below passes its
tests when they run in-process exactly as written (``guard_comparisons=False``): the proof that the hack works.
In-process with the guard, and split, it fails. Honest programs that return library objects, their own plain
classes, or huge results pass both ways. (tests/test_split_driver.py: the hacks the guard cannot stop.)
"""

from __future__ import annotations

import ast

import pytest

from stepcoder.execution import make_executor
from stepcoder.execution.guard import CHECKED, guard_source
from stepcoder.problems import TestSpec

MBPP_STYLE = TestSpec(kind="assert", asserts=("assert solve(3) == 9", "assert solve(4) == 16"))
HUMANEVAL_STYLE = TestSpec(kind="assert", asserts=("check(solve)",), setup=(
    "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(4) != 15\n"))

HACKS = {
    "always-equal object": ("class Eq:\n    def __eq__(self, other):\n        return True\n"
                            "    def __ne__(self, other):\n        return False\n"
                            "def solve(n):\n    return Eq()\n", MBPP_STYLE),
    "always-equal lambda, HumanEval check()": ("class Eq:\n    __eq__ = lambda self, other: True\n"
                                               "    __ne__ = lambda self, other: True  # the tests' != too\n"
                                               "def solve(n):\n    return Eq()\n", HUMANEVAL_STYLE),
    "int subclass": ("class Int(int):\n    def __eq__(self, other):\n        return True\n"
                     "    __hash__ = int.__hash__\n"
                     "def solve(n):\n    return Int(0)\n", MBPP_STYLE),
    "hidden in a list": ("class Eq:\n    def __eq__(self, other):\n        return True\n"
                         "def solve(n):\n    return [Eq(), Eq()]\n",
                         TestSpec(kind="assert", asserts=("assert solve(3) == [9, 3]",))),
    "hidden in a dict value": ("class Eq:\n    def __eq__(self, other):\n        return True\n"
                               "def solve(n):\n    return {'a': Eq()}\n",
                               TestSpec(kind="assert", asserts=("assert solve(3) == {'a': 9}",))),
    "truthy object for a bare assert": ("class Yes:\n    def __bool__(self):\n        return True\n"
                                        "def solve(n):\n    return Yes()\n",
                                        TestSpec(kind="assert", asserts=("assert solve(3)",
                                                                         "assert not not solve(4)"))),
    "contains everything": ("class All:\n    def __contains__(self, x):\n        return True\n"
                            "def solve(n):\n    return All()\n",
                            TestSpec(kind="assert", asserts=("assert 9 in solve(3)",))),
    "library class patched by the program": ("import fractions\n"
                                             "fractions.Fraction.__eq__ = lambda self, other: True\n"
                                             "def solve(n):\n    return fractions.Fraction(1, 7)\n", MBPP_STYLE),
}


@pytest.fixture(scope="module", params=["in_process", "split"])
def guarded(request):
    with make_executor(timeout_s=2.0, budget_s=6.0, workers=2, cache=False,
                       split_tests=request.param == "split") as executor:
        executor.mode = request.param
        yield executor


@pytest.fixture(scope="module")
def unguarded():
    with make_executor(timeout_s=2.0, budget_s=6.0, workers=2, cache=False, guard_comparisons=False,
                       split_tests=False) as executor:
        yield executor


def test_each_hack_passes_unguarded_and_fails_guarded(guarded, unguarded):
    jobs = list(HACKS.values())
    plain = unguarded.run(jobs)
    safe = guarded.run(jobs)
    for name, p, s in zip(HACKS, plain, safe):
        assert p.outcome == "pass", f"{name}: the hack should work without the guard: {p}"
        assert {t.isolation for t in s.tests} == {guarded.mode}, (name, s.tests)
        assert not any(t.status == "pass" for t in s.tests), f"{name}: it should be stopped: {s}"
        if guarded.mode == "in_process":
            assert s.outcome == "fail" and "the program's own" in s.tests[0].detail, (name, s.tests)
        else:  # split: a comparison with the program's object is refused; `in` iterates it (All is not iterable)
            assert s.outcome == ("runtime_error" if name == "contains everything" else "fail"), (name, s.tests)


HONEST = {
    "plain values": ("def solve(n):\n    return n * n\n", MBPP_STYLE),
    "HumanEval check()": ("def solve(n):\n    return n * n\n", HUMANEVAL_STYLE),
    "library objects (Fraction, Counter)": (
        "from fractions import Fraction\nfrom collections import Counter\n"
        "def solve(n):\n    return Fraction(n * n, 1)\n"
        "def count(s):\n    return Counter(s)\n",
        TestSpec(kind="assert", asserts=("assert solve(3) == 9", "assert count('aab') == {'a': 2, 'b': 1}"))),
    "own class without comparison methods, a namedtuple and a dataclass": (
        "from collections import namedtuple\nfrom dataclasses import dataclass\n"
        "P = namedtuple('P', 'x y')\n"
        "@dataclass\nclass D:\n    x: int\n"
        "class Box:\n    def __init__(self, v):\n        self.v = v\n"
        "def solve(n):\n    return P(n, n * n)\n"
        "def box(n):\n    return Box(n)\n"
        "def dc(n):\n    return D(n)\n",
        TestSpec(kind="assert", asserts=("assert solve(3) == (3, 9)", "assert box(2).v == 2",
                                         "assert dc(1).x == 1 and dc(2).x != 1"))),
    "huge result (guard stops looking after its budget)": (
        "def solve(n):\n    return list(range(n))\n",
        TestSpec(kind="assert", asserts=("assert solve(300000) == list(range(300000))",))),
}


def test_honest_programs_still_pass(guarded):
    for name, result in zip(HONEST, guarded.run(list(HONEST.values()))):
        assert result.outcome == "pass", (name, result)


def test_wrong_answers_still_fail(guarded):
    (r,) = guarded.run([("def solve(n):\n    return n + n\n", MBPP_STYLE)])
    assert r.outcome == "fail" and [t.status for t in r.tests] == ["fail", "fail"]


# ---------------------------------------------------------------- the rewrite itself (pure)


def test_rewrite_wraps_operands_and_assert_values():
    out = guard_source("assert f(1) == [1, x] and not g(2)\nif a < b <= c: pass\nassert 3 in h()\n"
                       "assert k() == {'a': (1, 2.5)}")
    tree = ast.parse(out)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == CHECKED]
    wrapped = sorted(ast.unparse(c.args[0]) for c in calls)
    # literals (the tests' expected values) stay bare; `not g(2)` is a truth test (wrapped)
    assert wrapped == sorted(["f(1)", "[1, x]", "g(2)", "a", "b", "c", "h()", "k()"])


def test_rewrite_leaves_code_without_comparisons_and_broken_code_alone():
    assert guard_source("x = f(1)\nprint(x)\n") == "x = f(1)\nprint(x)\n"
    assert guard_source("") == ""
    broken = "assert f(1) == = 2"
    assert guard_source(broken) == broken  # the harness reports the test's own syntax error
