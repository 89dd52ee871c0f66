"""MBPP+ (EvalPlus, Liu et al. 2023, Apache-2.0) → Problem: MBPP tasks with many more tests. A copy ships in
data/mbpp-plus with the expected outputs computed from it (``mbppplus_expected.py``).

A record has the task's ``prompt`` (its statement in a string literal), ``entry_point``, ``canonical_solution``,
``assertion`` (the base asserts, Python), ``base_input`` and ``plus_input`` (argument lists, JSON-encoded) and
``atol``. As in EvalPlus, a problem's tests are its base inputs, then its plus inputs, each checked against the
output of the canonical solution (computed once: ``data/mbpp-plus/expected.json.gz``, ``mbppplus_expected.py``);
the base asserts as written are the prompt's examples (``meta["examples"]``).

JSON has no tuples or sets, so a plus input is brought back to the argument types the base asserts use: each
argument position gets a *container template* from the literal arguments of the base asserts (``tuple`` of
``list``, ...), and the JSON value is rebuilt along it; deeper than the base inputs show (or where they differ),
JSON's own types stay, as in EvalPlus. A task whose JSON base inputs do not rebuild exactly into its base asserts'
arguments keeps its base asserts only (counted as "unconformable").

Comparisons follow the base asserts: ``set(f(...)) == set(...)`` compares as sets (so does an output whose order
changes with the hash seed); outputs holding floats compare with a tolerance (the record's ``atol``, at least
1e-6, plus 1e-6 relative); everything else with ``==``. Tasks left out: those whose canonical solution returns
objects (a ``re.Match``: only data crosses the sandbox, so no test could accept a correct program), and those whose
canonical solution contradicts its own base asserts (tasks 164 and 295: the prompt's examples would mislead). The
comparison runs in the test driver (``__mbpp_plus_eq__`` in the test setup), never in the candidate's process.
"""

from __future__ import annotations

import ast
import gzip
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from stepcoder.datasets._io import RecordError, iter_jsonl, lf, text_field
from stepcoder.datasets.errors import DatasetError, Reject, reject
from stepcoder.datasets.mbpp import SPLITS as MBPP_SPLITS
from stepcoder.datasets.mbpp import split_of
from stepcoder.problems import Problem, TestSpec

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "mbpp-plus"
DEFAULT_PATH = DATA_DIR / "MbppPlus.jsonl"
EXPECTED_PATH = DATA_DIR / "expected.json.gz"
SPLITS = tuple(MBPP_SPLITS)  # by MBPP task_id, as MBPP: "test" holds 237 usable tasks of MBPP-test (11-510)

EQ_HELPER = "__mbpp_plus_eq__"
SETUP = f'''\
def {EQ_HELPER}(out, expected, how, atol):
    """MBPP+ output comparison (EvalPlus): as sets, with a float tolerance, or exactly."""
    if how == "set":
        return set(out) == set(expected)
    def close(a, b):
        if type(b) is float:
            return type(a) in (int, float) and abs(a - b) <= atol + 1e-6 * abs(b)
        if type(b) in (list, tuple):
            return type(a) is type(b) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        if type(b) is dict:
            return type(a) is dict and a.keys() == b.keys() and all(close(a[k], b[k]) for k in b)
        return a == b
    return close(out, expected) if how == "close" else out == expected
'''


# ---------------------------------------------------------------- argument types from the base asserts

CONTAINERS = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
BUILD = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
MIXED = "mixed"  # elements of differing shapes: only atoms may appear there


class Unconformable(ValueError):
    """A JSON value that does not fit the argument's template."""


def template(value: Any) -> Any:
    """The container shape of a Python value: None for an atom, ``(kind, element template)`` for a list, tuple,
    set or frozenset, ``("dict", value template)`` for a dict with str keys, ``MIXED`` when elements differ."""
    kind = CONTAINERS.get(type(value))
    if kind is not None:
        return (kind, merge([template(x) for x in value]))
    if type(value) is dict:
        if not all(type(k) is str for k in value):
            return MIXED  # JSON turned its keys into strings: nothing to rebuild them from
        return ("dict", merge([template(x) for x in value.values()]))
    return None


def merge(templates: list) -> Any:
    """One template for values seen in one place: the common one, None when all are atoms (or there are
    none), ``MIXED`` when they differ."""
    shapes = {repr(t) for t in templates}
    if not shapes or shapes == {"None"}:
        return None
    if len(shapes) == 1:
        return templates[0]
    return MIXED


def conform(value: Any, tmpl: Any) -> Any:
    """The JSON ``value`` rebuilt along ``tmpl``; :class:`Unconformable` where it does not fit."""
    if tmpl is None or tmpl == MIXED:  # the base inputs say nothing here: JSON's own types (lists), as EvalPlus
        return value
    kind, inner = tmpl
    if kind == "dict":
        if type(value) is not dict:
            raise Unconformable(f"{type(value).__name__} where a dict is expected")
        return {k: conform(v, inner) for k, v in value.items()}
    if type(value) is not list:
        raise Unconformable(f"{type(value).__name__} where a {kind} is expected")
    items = [conform(x, inner) for x in value]
    try:
        return BUILD[kind](items)
    except TypeError as e:  # unhashable element for a set
        raise Unconformable(str(e)) from None


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (``(1, 2) == [1, 2]`` is not enough here; 1 == True neither)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is float and a != a:
        return b != b
    return a == b


# ---------------------------------------------------------------- the base asserts


NO_VALUE = object()  # a base assert whose expected value is not a literal (``assert not f(x)``, ``== g(y)``)


def _expected_side(test: ast.expr, call: ast.Call) -> Any:
    """The value a base assert expects of ``call``: the literal it is compared to with ``==`` (``set(literal)``
    as a set), or the number of a ``math.isclose(call, number, ...)``; ``NO_VALUE`` otherwise."""
    def value(node: ast.expr) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "set" \
                and len(node.args) == 1 and not node.keywords:
            return set(ast.literal_eval(node.args[0]))
        return ast.literal_eval(node)

    try:
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            return value(test.comparators[0])
        if isinstance(test, ast.Call) and getattr(test.func, "attr", None) == "isclose" and len(test.args) >= 2 \
                and test.args[0] is call:
            return float(ast.literal_eval(test.args[1]))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    return NO_VALUE


def base_calls(assertion: str, entry_point: str) -> list[tuple[tuple, str, Any]]:
    """(literal arguments, comparison, expected value) of each base assert whose call of ``entry_point`` has
    literal arguments only. Comparison: "set" for ``set(f(...)) == ...``, else "eq". Expected value: see
    :func:`_expected_side` (``NO_VALUE`` where the assert gives none)."""
    calls = []
    for line in assertion.splitlines():
        line = line.strip()
        if not line.startswith("assert"):
            continue
        try:
            tree = ast.parse(line)
        except SyntaxError:
            continue
        how = "set" if line.replace(" ", "").startswith("assertset(") else "eq"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point:
                try:
                    args = tuple(ast.literal_eval(a) for a in node.args)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    break
                if not node.keywords:
                    calls.append((args, how, _expected_side(tree.body[0].test, node)))
                break
    return calls


def agrees(out: Any, expected: Any, how: str) -> bool:
    """Does an output agree with what a base assert expects (sets unordered, floats to the base asserts'
    ``math.isclose(..., rel_tol=0.001)``)?"""
    if expected is NO_VALUE:
        return True
    try:
        if how == "set" or isinstance(expected, set):
            return set(out) == set(expected)
    except TypeError:
        return False
    if has_float(out) or has_float(expected):
        def close(a, b):
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                return abs(a - b) <= 1e-3 * max(abs(a), abs(b)) + 1e-9
            if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
                return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
            return a == b
        return close(out, expected)
    return out == expected


def arg_templates(calls: list[tuple[tuple, str, Any]], base_inputs: list) -> list | None:
    """One template per argument position, checked against the JSON base inputs: each must rebuild into the
    literal arguments of its base assert exactly. None where that fails (the task keeps its base asserts only)."""
    if not calls or len(base_inputs) < len(calls):
        return None
    arity = {len(args) for args, _, _ in calls}
    if len(arity) != 1:
        return None
    n = arity.pop()
    templates = [merge([template(args[k]) for args, _, _ in calls]) for k in range(n)]
    try:
        for (args, _, _), raw in zip(calls, base_inputs):
            if not isinstance(raw, list) or len(raw) != n:
                return None
            if not same(tuple(conform(v, t) for v, t in zip(raw, templates)), args):
                return None
    except Unconformable:
        return None
    return templates


def comparison(calls: list[tuple[tuple, str, Any]]) -> str:
    """"set" where the base asserts compare the outputs as sets (``set(f(...)) == set(...)``), else "eq"."""
    return "set" if calls and all(how == "set" for _, how, _ in calls) else "eq"


def has_float(value: Any) -> bool:
    if type(value) is float:
        return True
    if type(value) in (list, tuple, set, frozenset):
        return any(has_float(x) for x in value)
    if type(value) is dict:
        return any(has_float(x) for x in value.values())
    return False


# ---------------------------------------------------------------- problems


@lru_cache(maxsize=4)
def _expected(path: str) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def load_expected(path: Path | None = None) -> dict:
    path = path or EXPECTED_PATH
    if not path.exists():
        raise DatasetError(f"MBPP+ expected outputs missing: {path} (python -m stepcoder.datasets.mbppplus_expected)")
    return _expected(str(path))


def statement(prompt: str) -> str:
    """The task text inside the record's string literal (``'''\\nWrite a function ...\\n'''``)."""
    try:
        value = ast.literal_eval(prompt.strip())
        if isinstance(value, str):
            return value.strip()
    except (ValueError, SyntaxError):
        pass
    return prompt.strip().strip("'\"").strip()


def _record(record: dict, expected: dict) -> Problem:
    task_id = text_field(record, "task_id")
    entry_point = text_field(record, "entry_point")
    solution = lf(text_field(record, "canonical_solution", default=""))
    assertion = lf(text_field(record, "assertion"))
    if not entry_point.isidentifier():
        raise RecordError("malformed", f"entry_point {entry_point!r} is not a Python name", task_id)
    try:
        number = int(task_id.split("/")[-1])
    except ValueError:
        raise RecordError("malformed", f"task_id {task_id!r} is not Mbpp/<number>", task_id) from None
    lines = [line for line in assertion.splitlines() if line.strip()]
    examples = [line for line in lines if line.startswith("assert")]
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    kept = expected.get("tasks", {}).get(task_id, {})
    if kept.get("unusable"):
        raise RecordError("no_tests", kept["unusable"], task_id)
    tol = max(float(record.get("atol") or 0.0), 1e-6)

    def asserts(tests: list) -> tuple[str, ...]:  # [arguments source, expected source, comparison] each
        return tuple(f"assert {EQ_HELPER}({entry_point}({args}), {out}, {how!r}, {tol!r})" for args, out, how in tests)

    # Base tests as EvalPlus has them (the canonical outputs on base_input); the base asserts as written where
    # the base inputs could not be rebuilt
    base = asserts(kept.get("base", [])) or tuple(examples)
    plus = asserts(kept.get("plus", []))
    if not base + plus:
        raise RecordError("no_tests", "no test whose expected output is data (outputs are objects)", task_id)
    return Problem(
        problem_id=f"mbpp-plus/{number}",
        dataset="mbpp-plus",
        statement=statement(text_field(record, "prompt")),
        solution=solution.strip("\n") + "\n" if solution.strip() else "",
        tests=TestSpec(kind="assert", asserts=base + plus, setup="\n".join([*imports, SETUP])),
        entry_point=entry_point,
        meta={"task_id": number, "split": split_of(number), "examples": examples, "base_tests": len(base),
              "plus_tests": len(plus), "plus_dropped": kept.get("dropped", {})},
    )


def iter_mbpp_plus(path: str | Path | None = None, split: str | None = None) -> Iterator[Problem | Reject]:
    """Problems and rejects of MBPP+, in file order, restricted to an MBPP ``split`` by task_id (None = all)."""
    if split is not None and split not in MBPP_SPLITS:
        raise DatasetError(f"unknown MBPP+ split {split!r}; valid: {', '.join(MBPP_SPLITS)}")
    path = Path(path) if path else DEFAULT_PATH
    expected = load_expected(None if path == DEFAULT_PATH else path.with_name("expected.json.gz"))
    for where, _, record in iter_jsonl(path):
        if isinstance(record, Reject):
            yield record
            continue
        try:
            problem = _record(record, expected)
        except RecordError as exc:
            yield reject(where, exc.reason, f"{exc.problem_id}: {exc.message}" if exc.problem_id else exc.message,
                         exc.problem_id)
            continue
        if split is None or problem.meta["split"] == split:
            yield problem
