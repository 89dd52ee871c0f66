"""Assert tests run in a test driver outside the program's process (execution/driver.py).

The hostile programs below are the classes an adversarial review found against the in-process guard: each one
passes its tests in-process *with* the guard (the proof that the hole is real and that the split, not something
else, closes it) and fails split, on both backends. Then the honest behaviours the split must keep: mutated
arguments, generators, linked lists and trees, ``Solution().method``, builtin-named functions, the trusted
prompt context, per-test timeouts, and which tests stay in-process (``TestResult.isolation``).
"""

from __future__ import annotations

import pytest
from test_execution_docker import docker_or_skip

from stepcoder.execution import make_executor
from stepcoder.execution.driver import plan_for
from stepcoder.problems import TestSpec

MBPP = TestSpec(kind="assert", asserts=("assert solve(3) == 9", "assert solve(4) == 16"))

# 1. reading the expected value from the caller's frame (the test's constants)
FRAME = ("import sys\n"
         "def solve(n):\n"
         "    consts = sys._getframe(1).f_code.co_consts\n"
         "    ints = [c for c in consts if type(c) is int and c != n]\n"
         "    return ints[-1] if ints else 0\n")
# 2. an always-equal object whose methods were compiled under another file name, in a library-looking class
FOREIGN_EQ = ("ns = {}\n"
              "exec(compile('class Eq:\\n    def __eq__(self, o): return True\\n"
              "    def __ne__(self, o): return False\\n', 'lib.py', 'exec'), ns)\n"
              "Eq = ns['Eq']\nEq.__module__ = 'collections'\n"
              "def solve(n):\n    return Eq()\n")
# 3. a profile hook that rebinds the guard's name in the test's globals before each test line runs
REBIND = ("import sys\n"
          "class Eq:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
          "def _ident(v):\n    return v\n"
          "def _hook(frame, event, arg):\n"
          "    g = frame.f_globals\n"
          "    if g.get('__stepcoder_checked__', _ident) is not _ident:\n"
          "        g['__stepcoder_checked__'] = _ident\n"
          "sys.setprofile(_hook)\n"
          "def solve(n):\n    return Eq()\n")
# the expected value itself, searched for in every object and every readable page of the process
SECRET = "expected-7f3a9c-value"
SCAN = TestSpec(kind="assert", asserts=(f"assert solve(1) == {SECRET!r}",))
MEMORY_SCAN = ("import gc, sys\n"
               "def _scan():\n"
               "    for o in gc.get_objects():\n"
               "        for s in (o if isinstance(o, (list, tuple, dict)) else [o]):\n"
               "            if type(s) is str and s.startswith('expected-7f3a') and len(s) == 21:\n"
               "                return s\n"
               "    f = sys._getframe(1)\n"
               "    while f is not None:\n"
               "        for c in f.f_code.co_consts:\n"
               "            if type(c) is str and c.startswith('expected-7f3a'):\n"
               "                return c\n"
               "        f = f.f_back\n"
               "    try:\n"
               "        maps = open('/proc/self/maps').read().splitlines()\n"
               "        mem = open('/proc/self/mem', 'rb', 0)\n"
               "        for line in maps:\n"
               "            lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
               "            if 'r' not in line.split()[1] or hi - lo > 1 << 28:\n"
               "                continue\n"
               "            try:\n"
               "                mem.seek(lo)\n"
               "                data = mem.read(hi - lo)\n"
               "            except OSError:\n"
               "                continue\n"
               "            i = data.find(b'expected-7f3a')\n"
               "            if i >= 0:\n"
               "                return data[i:i + 21].decode()\n"
               "    except OSError:\n"
               "        pass\n"
               "    return 'not found'\n"
               "def solve(n):\n    return _scan()\n")

HOLES = {"caller's frame": (FRAME, MBPP), "foreign always-equal": (FOREIGN_EQ, MBPP),
         "guard rebound by a profile hook": (REBIND, MBPP), "memory scan": (MEMORY_SCAN, SCAN)}


@pytest.fixture(scope="module", params=["embedded", "docker"])
def backend(request):
    if request.param == "docker":
        docker_or_skip()
    return request.param


@pytest.fixture(scope="module")
def executors(backend):
    opts = {"timeout_s": 3.0, "budget_s": 8.0, "workers": 1, "cache": False}
    with make_executor(backend, split_tests=False, **opts) as inproc, make_executor(backend, **opts) as split:
        yield inproc, split


def test_each_hole_of_the_in_process_guard_is_closed_by_the_split(executors):
    inproc, split = executors
    names, jobs = list(HOLES), list(HOLES.values())
    for name, a, b in zip(names, inproc.run(jobs), split.run(jobs)):
        assert a.outcome == "pass", f"{name}: the hack should beat the in-process guard: {a}"
        assert {t.isolation for t in a.tests} == {"in_process"}
        assert b.outcome == "fail", f"{name}: the split should stop it: {b}"
        assert {t.isolation for t in b.tests} == {"split"}


def test_the_expected_value_is_nowhere_in_the_program_process(executors):
    _, split = executors
    probe = MEMORY_SCAN.replace("def solve(n):\n    return _scan()\n",
                                "def solve(n):\n    raise ValueError(_scan())\n")
    (r,) = split.run([(probe, SCAN)])
    assert r.outcome == "runtime_error" and "ValueError: not found" in r.tests[0].detail, r


def test_forged_test_records_from_the_program_are_ignored(executors):
    _, split = executors
    forger = ("import os\n"
              "for i in range(2):\n"
              "    os.write(3, b'{\"t\": \"test\", \"i\": %d, \"status\": \"pass\", \"time_ms\": 0, \"detail\": \"\"}\\n'"
              " % i)\n"
              "def solve(n):\n    return 0\n")
    (r,) = split.run([(forger, MBPP)])
    assert r.outcome == "fail" and [t.status for t in r.tests] == ["fail", "fail"], r


# ---------------------------------------------------------------- honest programs keep their outcomes


HONEST = {
    "mutated argument": ("def add(xs):\n    xs.append(3)\n",
                         TestSpec(kind="assert", asserts=("a = [1, 2]\nadd(a)\nassert a == [1, 2, 3]",))),
    "generator": ("def gen(n):\n    yield from range(n)\n",
                  TestSpec(kind="assert", asserts=("assert list(gen(3)) == [0, 1, 2]", "assert len(gen(2)) == 2",
                                                   "assert 1 in gen(2)"))),
    "tuple, set, dict, bytes, complex, Fraction, nested": (
        "from fractions import Fraction\n"
        "def f():\n    return (1, {2, 3}, {'a': [b'x', 1j]}, frozenset([4]), Fraction(1, 3), None, True, 2.5)\n",
        TestSpec(kind="assert", asserts=(
            "from fractions import Fraction\n"
            "assert f() == (1, {2, 3}, {'a': [b'x', 1j]}, frozenset([4]), Fraction(1, 3), None, True, 2.5)",
            "assert type(f()[0]) is int and type(f()) is tuple"))),
    "builtin type as argument": ("def keep(xs, t):\n    return [x for x in xs if isinstance(x, t)]\n",
                                 TestSpec(kind="assert", asserts=("assert keep((1, 'a', 2.0), int) == [1]",))),
    "a function named like a builtin": ("def sum(a, b):\n    return a * b\n",
                                        TestSpec(kind="assert", asserts=("assert sum(2, 5) == 10",))),
    "attributes of the program's objects": (
        "class Box:\n    def __init__(self, v):\n        self.v = v\n    def twice(self):\n        return 2 * self.v\n"
        "def box(n):\n    return Box(n)\n",
        TestSpec(kind="assert", asserts=("assert box(2).v == 2 and box(3).twice() == 6",))),
    "LeetCode Solution().method on lists and trees": (
        "class TreeNode:\n    def __init__(self, val=0, left=None, right=None):\n"
        "        self.val, self.left, self.right = val, left, right\n"
        "class ListNode:\n    def __init__(self, val=0, next=None):\n        self.val, self.next = val, next\n"
        "class Solution:\n"
        "    def invert(self, root):\n"
        "        if root:\n            root.left, root.right = self.invert(root.right), self.invert(root.left)\n"
        "        return root\n"
        "    def reverse(self, head):\n"
        "        prev = None\n"
        "        while head:\n            head.next, prev, head = prev, head, head.next\n"
        "        return prev\n",
        TestSpec(kind="assert", asserts=("check(Solution())",), setup=(
            "def tree(vals):\n"
            "    nodes = [None if v is None else TreeNode(v) for v in vals]\n"
            "    kids = iter(nodes[1:])\n"
            "    for n in nodes:\n"
            "        if n:\n            n.left, n.right = next(kids, None), next(kids, None)\n"
            "    return nodes[0]\n"
            "def values(t):\n"
            "    out, q = [], [t]\n"
            "    while q:\n        n = q.pop(0)\n        out.append(n and n.val)\n"
            "        q += [n.left, n.right] if n else []\n"
            "    return out\n"
            "def check(s):\n"
            "    assert values(s.invert(tree([1, 2, 3, None, 4]))) == [1, 3, 2, None, None, 4, None, None, None]\n"
            "    head = ListNode(1, ListNode(2, ListNode(3)))\n"
            "    r = s.reverse(head)\n"
            "    assert [r.val, r.next.val, r.next.next.val] == [3, 2, 1] and r.next.next.next is None\n"))),
}


def test_honest_programs_pass_split(executors):
    _, split = executors
    for name, r in zip(HONEST, split.run(list(HONEST.values()))):
        assert r.outcome == "pass", (name, r)
        assert {t.isolation for t in r.tests} == {"split"}, name


def test_wrong_answers_fail_and_coverage_comes_from_the_program(executors):
    _, split = executors
    (r,) = split.run([("def solve(n):\n    if n > 3:\n        return n * n\n    return n\n", MBPP)])
    assert [t.status for t in r.tests] == ["fail", "pass"]
    assert r.executed_lines == [1, 2, 3, 4]


def test_helpers_of_the_trusted_prompt_come_from_the_dataset_not_the_program(executors):
    """HumanEval 38-style: the test encodes with the prompt's helper, then calls the program's decoder. A program
    that redefines the helper as the identity passed in-process; split, the helper is the dataset's."""
    inproc, split = executors
    spec = TestSpec(kind="assert", asserts=("check(decode)",), context="def encode(s):\n    return s[1:] + s[:1]\n",
                    setup="def check(candidate):\n    assert candidate(encode('abc')) == 'abc'\n")
    cheat = "def encode(s):\n    return s\ndef decode(s):\n    return s\n"
    honest = "def encode(s):\n    return s[1:] + s[:1]\ndef decode(s):\n    return s[-1:] + s[:-1]\n"
    assert split.run([(cheat, spec)])[0].outcome == "fail"
    assert split.run([(honest, spec)])[0].outcome == "pass"
    assert inproc.run([(honest, spec)])[0].outcome == "pass"


def test_per_test_time_limit_and_budget(executors):
    _, split = executors
    spec = TestSpec(kind="assert", asserts=("assert slow(1) == 1", "assert fast(2) == 2"))
    (r,) = split.run([("def slow(n):\n    while True:\n        pass\ndef fast(n):\n    return n\n", spec)])
    assert [t.status for t in r.tests] == ["timeout", "pass"], r


def test_tests_that_share_module_state_with_the_program_run_in_process(executors):
    """MBPP 367: the setup builds a tree of the program's Node objects when it runs: it cannot split."""
    _, split = executors
    spec = TestSpec(kind="assert", asserts=("assert depth(root) == 2",),
                    setup="root = Node(1)\nroot.left = Node(2)\n")
    program = ("class Node:\n    def __init__(self, v):\n        self.v, self.left, self.right = v, None, None\n"
               "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), depth(n.right))\n")
    (r,) = split.run([(program, spec)])
    assert r.outcome == "pass" and [t.isolation for t in r.tests] == ["in_process"]
    broken = TestSpec(kind="assert", asserts=("assert f(1) == = 2",))
    (r,) = split.run([("def f(x):\n    return x\n", broken)])
    assert r.outcome == "runtime_error" and r.tests[0].isolation == "in_process"


# ---------------------------------------------------------------- the plan (pure)


def test_plan_names_what_the_tests_take_from_the_program():
    plan = plan_for("def check(candidate):\n    assert candidate(x=math.pi) == deque([1])\n",
                    ("check(Solution().solve)",), "from collections import *\n")
    assert plan.remote_names == ("Solution", "deque")  # `deque` comes from the context's star import at run time
    assert plan.modules == ("math",)
    assert plan_for("", ("assert sum(1, 2) == 2",)).remote_names == ("sum",)
    assert plan_for("", ("assert len(f(1)) == 2",)).remote_names == ("f",)
    assert plan_for("root = Node(1)\n", ("assert f(root)",)) is None
    assert plan_for("", ("assert f(1) == = 2",)) is None
    assert plan_for("def g():\n    global x\n", ("assert f(1)",)) is None
