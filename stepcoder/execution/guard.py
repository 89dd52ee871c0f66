"""Reward-hack guard for assert-style tests: the program's own code never decides a comparison in a test.

Assert tests (MBPP ``test_list``, HumanEval/LeetCode ``check(candidate)``) run in the program's process, on the
program's return values. A program can then pass ``assert f(x) == 4`` without computing anything, by returning an
object whose ``__eq__`` always says yes (or ``__bool__``, ``__contains__``, an ``int`` subclass...): a reward hack
that RL-trained code models are known to find. The parent rewrites the trusted test code once per test spec:

- every operand of every comparison (``==``, ``<``, ``in``, ... chained or not) becomes
  ``__stepcoder_checked__(operand)``;
- the bare value of an ``assert`` (``assert f(x)``, ``assert not f(x)``, ``assert a and b``) gets the same wrapper.

The harness defines ``__stepcoder_checked__`` (``harness._checked``): it returns its argument unchanged, unless the
value, or an element of a list/tuple/set/dict in it, has a type whose comparison, truth, length or containment
method was compiled from the program; then it raises ``AssertionError`` and the test fails. Library types, plain
values and the program's own classes without such methods pass untouched, so honest programs are unaffected.

What it does not stop: a program that rewrites the harness in its own memory, or builds its methods at run time
with ``exec``/``eval`` (their code is not compiled from the program's file name). Those are deliberate attacks on
the harness, not shortcuts a policy stumbles on; the stdin/stdout and call-based kinds are compared in the parent
and need no guard.
"""

from __future__ import annotations

import ast
from functools import lru_cache

CHECKED = "__stepcoder_checked__"  # the harness binds this name in the program's namespace before the tests run


class _Wrap(ast.NodeTransformer):
    def __init__(self):
        self.wrapped = 0

    def _call(self, value: ast.expr) -> ast.expr:
        if _literal(value):  # the test's own expected values: nothing of the program's in them
            return value
        self.wrapped += 1
        return ast.copy_location(ast.Call(ast.Name(CHECKED, ast.Load()), [value], []), value)

    def _truth(self, test: ast.expr) -> ast.expr:
        """Wrap the values whose truth an assert takes: through ``not``, ``and``/``or``; comparisons are done."""
        if isinstance(test, ast.Compare):
            return test
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test.operand = self._truth(test.operand)
            return test
        if isinstance(test, ast.BoolOp):
            test.values = [self._truth(v) for v in test.values]
            return test
        return self._call(test)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)  # comparisons nested in operands first
        node.left = self._call(node.left)
        node.comparators = [self._call(c) for c in node.comparators]
        return node

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self.generic_visit(node)
        node.test = self._truth(node.test)
        return node


def _literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


@lru_cache(maxsize=8192)
def guard_source(source: str) -> str:
    """``source`` (trusted test code) with every comparison operand and assert value wrapped; unchanged when it
    does not parse (the harness then reports the test's own syntax error) or holds nothing to wrap."""
    if not source.strip():
        return source
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    wrap = _Wrap()
    tree = wrap.visit(tree)
    return ast.unparse(ast.fix_missing_locations(tree)) if wrap.wrapped else source
