"""APPS+ (Dou et al. 2024, the StepCoder paper) → Problem. Users bring their own ``data.json``.

APPS+ is APPS refined: 7,413 problems (introductory 2,889, interview 3,592, competition 572), each with a problem
description, a canonical solution, a function name, unit tests as inputs and outputs, and starter code (the
beginning of the canonical solution). We cannot download it here, so the reader follows that public description
and accepts the field-name variants its copies use (first present name wins):

    id            id, problem_id, task_id, idx, index, name          (else the record's position)
    statement     prompt, question, description, problem_description, problem, text
    solution      canonical_solution, solution, solutions, code, gold_solution   (a list: its first program)
    function name fn_name, function_name, func_name, method_name, entry_point   (none or "" → stdin/stdout)
    tests         inputs + outputs; or input_output, unit_tests, test_cases, tests, test holding
                  {inputs, outputs} or a list of {input, output}; JSON-encoded strings are decoded
    starter code  starter_code, starter, code_prefix
    difficulty    difficulty, level, difficulty_level

The file may be a JSON array, an object holding the array (``data``, ``problems``, ``instances``), an object
keyed by id, or JSONL. Programs get the same import header as APPS (see :data:`stepcoder.datasets.apps.APPS_HEADER`).
There is no official train/test split: use a fixed hash split (:func:`stepcoder.datasets.splits.hash_split`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepcoder.datasets._io import RecordError, guarded, iter_json_records, iter_jsonl, json_field, pick, text_field
from stepcoder.datasets.apps import APPS_HEADER, first_solution, make_problem, tests_from_io
from stepcoder.datasets.errors import DatasetError, Reject
from stepcoder.problems import Problem

ID_FIELDS = ("id", "problem_id", "task_id", "idx", "index", "name")
STATEMENT_FIELDS = ("prompt", "question", "description", "problem_description", "problem", "text")
SOLUTION_FIELDS = ("canonical_solution", "solution", "solutions", "code", "gold_solution")
FN_FIELDS = ("fn_name", "function_name", "func_name", "method_name", "entry_point")
TEST_FIELDS = ("input_output", "unit_tests", "test_cases", "tests", "test")
STARTER_FIELDS = ("starter_code", "starter", "code_prefix")
DIFFICULTY_FIELDS = ("difficulty", "level", "difficulty_level")


def _name(record: dict, index: int) -> str:
    raw = pick(record, *ID_FIELDS, default=index)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip() or "/" in str(raw):
        raise RecordError("malformed", f"id {raw!r} must be an integer or a string without '/'")
    return str(raw).strip()


def _io(record: dict) -> Any:
    """The tests as an APPS ``input_output`` dict, from whichever layout the record uses."""
    if "inputs" in record or "outputs" in record:
        io = {"inputs": json_field(record, "inputs", default=None), "outputs": json_field(record, "outputs",
                                                                                          default=None)}
    elif "input" in record and "output" in record:
        io = {"inputs": json_field(record, "input"), "outputs": json_field(record, "output")}
    else:
        io = json_field(record, *TEST_FIELDS, default=None)
    if isinstance(io, list):  # [{"input": ..., "output": ...}, ...]
        if not all(isinstance(t, dict) and "input" in t and "output" in t for t in io):
            raise RecordError("malformed", "a test list must hold objects with input and output")
        io = {"inputs": [t["input"] for t in io], "outputs": [t["output"] for t in io]}
    return io


def _solutions(value: Any) -> Any:
    """A program, or a list of programs; a string holding a JSON list of strings (APPS style) is decoded."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value  # a program that starts with "["
        if isinstance(decoded, list) and all(isinstance(s, str) for s in decoded):
            return decoded
    return value


def _record(record: dict, index: int, header: str) -> Problem:
    name = _name(record, index)
    try:
        fn_name = pick(record, *FN_FIELDS, default=None)
        if fn_name is not None and not isinstance(fn_name, str):
            raise RecordError("malformed", "function name must be a string")
        tests = tests_from_io(_io(record), (fn_name or "").strip() or None)
        solution = first_solution(_solutions(pick(record, *SOLUTION_FIELDS, default=None)))
        return make_problem(name, "appsplus", text_field(record, *STATEMENT_FIELDS), solution, tests,
                            text_field(record, *STARTER_FIELDS, default=""),
                            pick(record, *DIFFICULTY_FIELDS, default=None), header, {"index": index})
    except RecordError as exc:
        exc.problem_id = exc.problem_id or f"appsplus/{name}"
        raise


def iter_appsplus(path: str | Path | None = None, split: str | None = None, header: str = APPS_HEADER
                  ) -> Iterator[Problem | Reject]:
    if path is None:
        raise DatasetError("APPS+ is not shipped (it cannot be downloaded here): give the path of its data.json, "
                           "e.g. appsplus:/data/APPS_Plus/data/v1/data.json")
    if split is not None:
        raise DatasetError("APPS+ has no official split; load it whole and use a hash split "
                           "(stepcoder.datasets.splits.hash_split)")
    path = Path(path)
    records = iter_jsonl(path) if path.suffix == ".jsonl" or path.name.endswith(".jsonl.gz") \
        else iter_json_records(path)
    for where, index, record in records:
        yield record if isinstance(record, Reject) else guarded(where, lambda: _record(record, index, header))
