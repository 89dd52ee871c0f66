"""StepCoder's own problem file: one normalized :class:`Problem` a JSON line. ``stepcoder data validate`` writes
the clean subset in this form, and ``stepcoder:PATH`` reads it back exactly."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from stepcoder.datasets._io import RecordError, guarded, iter_jsonl, pick
from stepcoder.datasets.errors import DatasetError, Reject
from stepcoder.problems import Problem, TestSpec

_KINDS = ("assert", "stdio", "call")


def problem_to_dict(p: Problem) -> dict:
    return asdict(p)


def problem_from_dict(d: dict) -> Problem:
    t = pick(d, "tests")
    if not isinstance(t, dict) or t.get("kind") not in _KINDS:
        raise RecordError("malformed", f"tests must be an object with kind in {', '.join(_KINDS)}")
    for name in ("problem_id", "dataset", "statement", "solution"):
        if not isinstance(d.get(name), str):
            raise RecordError("malformed", f"{name} must be a string")
    try:
        tests = TestSpec(kind=t["kind"], asserts=tuple(t.get("asserts") or ()), setup=t.get("setup") or "",
                         inputs=tuple(t.get("inputs") or ()), outputs=tuple(t.get("outputs") or ()),
                         fn_name=t.get("fn_name"), context=t.get("context") or "")
    except TypeError as exc:
        raise RecordError("malformed", f"tests: {exc}") from None
    if tests.count == 0:
        raise RecordError("no_tests", "no tests", d["problem_id"])
    return Problem(problem_id=d["problem_id"], dataset=d["dataset"], statement=d["statement"],
                   solution=d["solution"], tests=tests, entry_point=d.get("entry_point"),
                   starter_code=d.get("starter_code") or "", difficulty=d.get("difficulty"),
                   meta=dict(d.get("meta") or {}))


def write_problems(problems: Iterable[Problem], path: str | Path) -> int:
    """Write problems as JSONL (temp file + rename, so readers never see half a file). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for p in problems:
            fh.write(json.dumps(problem_to_dict(p), ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def iter_problems_jsonl(path: str | Path | None = None, split: str | None = None) -> Iterator[Problem | Reject]:
    if path is None:
        raise DatasetError("the stepcoder format needs a path (a file written by `stepcoder data validate`)")
    if split is not None:
        raise DatasetError("a stepcoder problem file has no splits")
    for where, _, record in iter_jsonl(Path(path)):
        yield record if isinstance(record, Reject) else guarded(where, lambda: problem_from_dict(record))
