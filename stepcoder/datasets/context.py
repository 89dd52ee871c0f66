"""The trusted part of a problem's prompt that its test code may use: ``TestSpec.context``.

HumanEval tests call helpers the prompt defines (``encode_cyclic``, ``poly``); LeetCode tests use what the prompt
imports (``deque``, ``inf``). When tests run in a driver outside the program's process, those names must come
from the dataset, not from the program: a program that redefined ``encode_cyclic`` as the identity would
otherwise pass ``decode_cyclic`` tests by returning its input.
"""

from __future__ import annotations

import ast

# defined by the driver itself (execution/driver.py), so values of these types cross the sandbox as data
DRIVER_CLASSES = frozenset({"ListNode", "TreeNode"})


def _plain_value(node: ast.expr) -> bool:
    """A literal, or a call of a builtin on literals (``inf = float('inf')``)."""
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords
            and all(_plain_value(a) for a in node.args))


def trusted_context(prompt: str, exclude: set[str] | frozenset[str] = frozenset()) -> str:
    """Imports, constant assignments and complete definitions at the top of ``prompt``, minus the definitions
    named in ``exclude`` (the function or class the program writes). "" when the prompt does not parse."""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ""
    keep: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            keep.append(node)
        elif isinstance(node, ast.Assign) and _plain_value(node.value) and all(
                isinstance(t, ast.Name) for t in node.targets):
            keep.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name not in exclude and node.name not in DRIVER_CLASSES and not _stub(node):
                keep.append(node)
    return ast.unparse(ast.Module(body=keep, type_ignores=[])) + "\n" if keep else ""


def _stub(node: ast.stmt) -> bool:
    """A definition with nothing but a docstring (or ``...``/``pass``): the part the program writes."""
    body = [b for b in node.body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))]
    return not body or all(isinstance(b, ast.Pass) for b in body)
