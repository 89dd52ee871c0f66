"""The 150 APPS problems MapCoder (Islam et al. 2024) evaluates on → Problem. Evaluation only: no solutions.

Shipped in data/apps-eval150 (MIT). Records: ``id``, ``description``, ``difficulty``, ``starter_code``,
``sample_io`` and ``test_list``, lists of ``{"input": str, "output": [value]}``. MapCoder feeds every input to
stdin; we keep the APPS semantics instead:

- no starter code → ``stdio``: the input is stdin, ``output[0]`` the expected stdout;
- a ``def`` in the starter code → ``call`` of that function: the input holds one argument a line (MapCoder
  wrote ``str(arg)``), each read as a Python literal, else kept as a string. A line count that fits no call of
  the signature (a multi-line string argument) is a ``malformed`` reject. Caveat: a string argument that reads
  as a literal (``"13"``) comes back as a number; without canonical solutions this cannot be checked.

The file holds 150 records but 128 problems (20 twice, one three times): repeats are ``duplicate`` rejects.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepcoder.datasets._io import RecordError, guarded, iter_jsonl, pick, text_field
from stepcoder.datasets.apps import APPS_HEADER, make_problem
from stepcoder.datasets.errors import DatasetError, Reject, reject
from stepcoder.problems import Problem, TestSpec

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "apps-eval150" / "apps_selected150.jsonl"


def _signature(starter: str) -> tuple[str, int, int]:
    """(function name, required positional args, all positional args) of the last ``def`` in the starter code."""
    src = starter.expandtabs(4).rstrip() + "\n"
    indent = len(src.rstrip("\n").splitlines()[-1]) - len(src.rstrip("\n").splitlines()[-1].lstrip())
    try:
        tree = ast.parse(src + " " * (indent + 4) + "pass\n")
    except SyntaxError as exc:
        raise RecordError("malformed", f"starter_code does not parse ({exc.msg})") from None
    defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    if not defs:
        raise RecordError("malformed", "starter_code defines no function")
    fn = defs[-1]
    args = [a.arg for a in fn.args.posonlyargs + fn.args.args]
    if args and args[0] == "self":
        args = args[1:]
    return fn.name, len(args) - len(fn.args.defaults), len(args)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _tests(tests: Any, starter: str) -> TestSpec:
    if not isinstance(tests, list) or not all(isinstance(t, dict) and "input" in t and "output" in t for t in tests):
        raise RecordError("malformed", "test_list must be a list of {input, output} objects")
    if not tests:
        raise RecordError("no_tests", "test_list is empty")
    outputs = []
    for t in tests:
        out = t["output"]
        outputs.append(out[0] if isinstance(out, list) and len(out) == 1 else out)
        if not isinstance(t["input"], str):
            raise RecordError("malformed", "test inputs must be strings")
    if not starter.strip():
        if not all(isinstance(o, str) for o in outputs):
            raise RecordError("malformed", "stdio outputs must be strings")
        return TestSpec(kind="stdio", inputs=tuple(t["input"] for t in tests), outputs=tuple(outputs))
    fn_name, required, total = _signature(starter)
    inputs = []
    for i, t in enumerate(tests):
        lines = t["input"].split("\n")
        if total == 1:
            lines = [t["input"]]
        if not required <= len(lines) <= total:
            raise RecordError("malformed", f"test {i} input has {len(lines)} lines for {fn_name}() taking "
                                           f"{required}-{total} arguments (a multi-line argument?)")
        inputs.append([_literal(x) for x in lines])
    return TestSpec(kind="call", inputs=tuple(inputs), outputs=tuple(outputs), fn_name=fn_name)


def _record(record: dict, header: str) -> Problem:
    raw = pick(record, "id", "name")
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise RecordError("malformed", "id must be an integer or a string")
    name = f"{int(raw):04d}" if str(raw).isdigit() else str(raw)
    try:
        starter = text_field(record, "starter_code", default="")
        tests = _tests(pick(record, "test_list"), starter)
        return make_problem(name, "apps-eval150", text_field(record, "description"), "", tests, starter,
                            record.get("difficulty"), header, {"apps_id": raw, "split": "test"})
    except RecordError as exc:
        exc.problem_id = f"apps-eval150/{name}"
        raise


def iter_apps_eval150(path: str | Path | None = None, split: str | None = None, header: str = APPS_HEADER
                      ) -> Iterator[Problem | Reject]:
    """The problems in file order; repeated ids after the first are ``duplicate`` rejects."""
    if split not in (None, "test"):
        raise DatasetError(f"unknown apps-eval150 split {split!r}; valid: test")
    seen: dict[str, str] = {}
    for where, _, record in iter_jsonl(Path(path) if path else DEFAULT_PATH):
        item = record if isinstance(record, Reject) else guarded(where, lambda: _record(record, header))
        if isinstance(item, Problem):
            if item.problem_id in seen:
                item = reject(where, "duplicate", f"repeats {item.problem_id} of {seen[item.problem_id]}",
                              item.problem_id)
            else:
                seen[item.problem_id] = where
        yield item
