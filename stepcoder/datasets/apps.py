"""APPS (Hendrycks et al. 2021, MIT) → Problem, from its two common layouts.

- **folder**: a directory of problem folders (``0001/``), each with ``question.txt``, ``solutions.json`` (a list of
  programs), ``input_output.json`` (``inputs``, ``outputs``, optional ``fn_name``), optional ``starter_code.py``
  and ``metadata.json`` (``difficulty``, ``url``). A root holding ``train/`` and ``test/`` is read per split.
- **JSONL** (the codeparrot/apps copies): one problem a line with ``problem_id``, ``question``, ``solutions`` and
  ``input_output`` (both JSON-encoded strings), ``starter_code``, ``difficulty``, ``url``.

Both give the same problems: ids ``apps/<folder name>`` (``apps/0001``; a JSONL ``problem_id`` 1 is ``0001``).
The canonical solution is the first non-empty one. Problems with ``fn_name`` are ``call`` tests (a function, or a
method of ``class Solution``); the rest are ``stdio``.

The APPS harness runs every program after a fixed import header (``from typing import List`` and friends; 2404's
canonical solution needs it). :data:`APPS_HEADER` is that header without numpy (the sandbox has the standard
library only); it is prepended to the solution and the starter code, so generated programs get it too.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepcoder.datasets._io import (
    RecordError,
    guarded,
    iter_jsonl,
    json_field,
    lf,
    pick,
    read_text,
    text_field,
)
from stepcoder.datasets.errors import DatasetError, Reject
from stepcoder.problems import Problem, TestSpec

SAMPLES_PATH = Path(__file__).resolve().parents[2] / "data" / "apps-samples"  # 5 problems, for tests and demos
DIFFICULTIES = ("introductory", "interview", "competition")
SPLITS = ("train", "test")

# hendrycks/apps eval/testing_util.py prepends these imports to every program (numpy dropped: not in the sandbox).
from stepcoder.execution.headers import APPS_HEADER  # noqa: E402  (one home for the APPS import header)


def with_header(header: str, code: str) -> str:
    """``header`` + ``code``, but after a leading docstring and ``from __future__`` imports, which must stay first."""
    if not header or not code.strip():
        return code
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError):
        return header + code
    end = 0
    for i, node in enumerate(body):
        docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str)
        if docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
            end = node.end_lineno
        else:
            break
    if not end:
        return header + code
    lines = code.splitlines(keepends=True)
    head = "".join(lines[:end])
    return head + ("" if head.endswith("\n") else "\n") + header + "".join(lines[end:])


def normalize_difficulty(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    value = str(raw).strip().lower()
    return value or None


def tests_from_io(io: Any, fn_name: str | None = None) -> TestSpec:
    """APPS ``input_output`` → TestSpec: ``call`` when there is a function name, else ``stdio``."""
    if io is None:
        raise RecordError("no_tests", "no input_output (no unit tests)")
    if not isinstance(io, dict):
        raise RecordError("malformed", "input_output must be an object with inputs and outputs")
    inputs, outputs = io.get("inputs"), io.get("outputs")
    if inputs is None and outputs is None:
        raise RecordError("no_tests", "input_output has no inputs/outputs (no unit tests)")
    if not isinstance(inputs, list) or not isinstance(outputs, list):
        raise RecordError("malformed", "input_output inputs and outputs must be lists")
    if len(inputs) != len(outputs):
        raise RecordError("malformed", f"input_output has {len(inputs)} inputs but {len(outputs)} outputs")
    if not inputs:
        raise RecordError("no_tests", "input_output has empty inputs (no unit tests)")
    fn_name = io.get("fn_name") or fn_name
    if fn_name:
        if not isinstance(fn_name, str) or not fn_name.isidentifier():
            raise RecordError("malformed", f"fn_name {fn_name!r} is not a Python name")
        return TestSpec(kind="call", inputs=tuple(inputs), outputs=tuple(outputs), fn_name=fn_name)
    for x in (*inputs, *outputs):
        if not isinstance(x, str) and not (isinstance(x, list) and all(isinstance(s, str) for s in x)):
            raise RecordError("malformed", "stdio inputs and outputs must be strings (or lists of lines)")
    return TestSpec(kind="stdio", inputs=tuple(inputs), outputs=tuple(outputs))


def ranked_solutions(solutions: Any) -> list[str]:
    """The non-empty programs of a solutions list (or a single program), shortest first (ties keep file order).

    The shortest is the canonical solution: CCCS cuts it into stages, so less code means fewer, cleaner split
    points. Validation moves on to the next-shortest when it fails its tests (see ``validate_problems``), so
    after validation a problem's solution is the shortest one that passes.
    """
    if solutions is None:
        return []
    if isinstance(solutions, str):
        solutions = [solutions]
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise RecordError("malformed", "solutions must be a list of program strings")
    return sorted((lf(s) for s in solutions if s.strip()), key=len)


def first_solution(solutions: Any) -> str:
    """The canonical (shortest) solution; "" when there is none. The others: :func:`ranked_solutions`."""
    ranked = ranked_solutions(solutions)
    return ranked[0] if ranked else ""


def make_problem(name: str, dataset: str, question: str, solution: str, tests: TestSpec, starter: str,
                 difficulty: str | None, header: str, meta: dict) -> Problem:
    if not question.strip():
        raise RecordError("malformed", "empty problem statement", f"{dataset}/{name}")
    starter = lf(starter)
    starter = starter.rstrip() + "\n" if starter.strip() else ""
    alternatives = meta.pop("alternatives", None)
    if alternatives:
        meta["alternatives"] = [with_header(header, a) for a in alternatives]
    return Problem(
        problem_id=f"{dataset}/{name}",
        dataset=dataset,
        statement=lf(question).strip(),
        solution=with_header(header, solution) if solution.strip() else "",
        tests=tests,
        entry_point=tests.fn_name,
        starter_code=header + starter if header else starter,
        difficulty=normalize_difficulty(difficulty),
        meta=meta,
    )


# ---------------------------------------------------------------- folder form


def _folder_problem(folder: Path, name: str, header: str) -> Problem:
    question_path = folder / "question.txt"
    if not question_path.is_file():
        raise RecordError("malformed", "no question.txt")

    def load_json(name: str) -> Any:
        p = folder / name
        if not p.is_file():
            return None
        text = read_text(p)
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise RecordError("unparsable", f"{name} is not valid JSON ({exc})") from None

    question = read_text(question_path)
    metadata = load_json("metadata.json") or {}
    if not isinstance(metadata, dict):
        raise RecordError("malformed", "metadata.json must be an object")
    starter_path = folder / "starter_code.py"
    starter = read_text(starter_path) if starter_path.is_file() else ""
    tests = tests_from_io(load_json("input_output.json"))
    ranked = ranked_solutions(load_json("solutions.json"))
    solution = ranked[0] if ranked else ""
    meta = {"url": metadata.get("url"), "source": "folder", "alternatives": ranked[1:]}
    if "/" in name:
        meta["split"] = name.split("/")[0]
    return make_problem(name, "apps", question, solution, tests, starter, metadata.get("difficulty"), header, meta)


def iter_apps_folders(root: Path, header: str = APPS_HEADER, split: str | None = None
                      ) -> Iterator[Problem | Reject]:
    """Problem folders under ``root`` in name order; ``root/train`` and ``root/test`` when it has them."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory of APPS problem folders")
    has_splits = any((root / s).is_dir() for s in SPLITS) and not (root / "question.txt").exists()
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown APPS split {split!r}; valid: {', '.join(SPLITS)}")
    if has_splits:
        roots = [(root / s, s) for s in ([split] if split else SPLITS) if (root / s).is_dir()]
    elif split is not None:
        raise DatasetError(f"{root}: APPS split {split!r} needs a root holding train/ and test/ folders")
    else:
        roots = [(root, None)]
    for base, split_name in roots:
        for folder in sorted(p for p in base.iterdir() if p.is_dir()):
            # train/0001 and test/0001 are different problems
            name = f"{split_name}/{folder.name}" if split_name else folder.name
            yield guarded(f"{folder}/", lambda: _folder_problem(folder, name, header), f"apps/{name}")


# ---------------------------------------------------------------- JSONL form


def _name(raw: Any) -> str:
    if isinstance(raw, bool) or raw is None:
        raise RecordError("malformed", "problem_id must be an integer or a string")
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        return f"{int(raw):04d}"
    if isinstance(raw, str) and raw.strip() and "/" not in raw:
        return raw.strip()
    raise RecordError("malformed", f"problem_id {raw!r} is not a usable id")


def _jsonl_problem(record: dict, header: str) -> Problem:
    name = _name(pick(record, "problem_id", "id"))
    question = text_field(record, "question")
    starter = text_field(record, "starter_code", default="")
    try:
        tests = tests_from_io(json_field(record, "input_output", default=None))
        solution = first_solution(json_field(record, "solutions", default=None))
    except RecordError as exc:
        exc.problem_id = f"apps/{name}"
        raise
    return make_problem(name, "apps", question, solution, tests, starter, record.get("difficulty"), header,
                        {"url": record.get("url"), "source": "jsonl"})


def iter_apps_jsonl(path: Path, header: str = APPS_HEADER) -> Iterator[Problem | Reject]:
    for where, _, record in iter_jsonl(path):
        yield record if isinstance(record, Reject) else guarded(where, lambda: _jsonl_problem(record, header))


def iter_apps(path: str | Path | None, split: str | None = None, header: str = APPS_HEADER
              ) -> Iterator[Problem | Reject]:
    """APPS problems from a folder root or a JSONL file (:data:`SAMPLES_PATH` holds 5 shipped samples).

    ``split`` picks ``train/`` or ``test/`` under a folder root that has them; a JSONL file is one split already.
    """
    if path is None:
        raise DatasetError("APPS is not shipped: give the path of its problem folders or JSONL file")
    path = Path(path)
    if path.is_dir():
        yield from iter_apps_folders(path, header, split)
    elif path.exists():
        if split is not None:
            raise DatasetError(f"{path}: a JSONL file is one APPS split already; load it without a split")
        yield from iter_apps_jsonl(path, header)
    else:
        raise DatasetError(f"{path}: no such APPS folder or JSONL file")


def folder_to_record(folder: Path) -> dict:
    """One APPS problem folder as a codeparrot-style JSONL record (JSON fields as strings), for conversions."""
    def text(name: str) -> str:
        p = folder / name
        return p.read_text(encoding="utf-8") if p.is_file() else ""

    meta = json.loads(text("metadata.json") or "{}")
    return {
        "problem_id": int(folder.name) if folder.name.isdigit() else folder.name,
        "question": text("question.txt"),
        "solutions": text("solutions.json"),
        "input_output": text("input_output.json"),
        "difficulty": meta.get("difficulty", ""),
        "url": meta.get("url", ""),
        "starter_code": text("starter_code.py"),
    }
