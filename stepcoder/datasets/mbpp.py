"""MBPP (Austin et al. 2021) → Problem: the full JSONL and the sanitized JSON. Copies ship in data/mbpp (CC-BY-4.0).

- full (``mbpp.jsonl``, 974 tasks): task_id, text, code, test_list, test_setup_code, challenge_test_list.
- sanitized (``sanitized-mbpp.json``, 427 tasks): task_id, prompt, code, test_imports, test_list. The
  ``test_imports`` lines run before the asserts, so they go into ``TestSpec.setup``.

Both use the paper's split by task_id (section 2.1), so the sanitized test split is the sanitized tasks 11-510.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from stepcoder.datasets._io import RecordError, iter_json_records, iter_jsonl, lf
from stepcoder.datasets.errors import DatasetError, Reject, reject
from stepcoder.problems import Problem, TestSpec

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "mbpp"
DEFAULT_PATH = DATA_DIR / "mbpp.jsonl"
SANITIZED_PATH = DATA_DIR / "sanitized-mbpp.json"

# Standard split by task_id (the MBPP paper, section 2.1).
SPLITS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}

_DEF_RE = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)

log = logging.getLogger("stepcoder.datasets")


def _entry_point(code: str, asserts: list[str]) -> str | None:
    """The function the asserts call: the first name called in an assert that the solution defines."""
    defined = _DEF_RE.findall(code)
    for line in asserts:
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", line):
            if name in defined:
                return name
    return defined[-1] if defined else None


def split_of(task_id: int) -> str | None:
    return next((name for name, ids in SPLITS.items() if task_id in ids), None)


def _check_split(split: str | None) -> range | None:
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown MBPP split {split!r}; valid: {', '.join(SPLITS)}")
    return SPLITS[split] if split else None


def _task_id(record: dict) -> int:
    try:
        value = record.get("task_id", -1)
        if isinstance(value, bool) or isinstance(value, float):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise RecordError("malformed", "task_id must be an integer") from None


def _asserts(record: dict, field: str = "test_list") -> list[str]:
    tests = record[field]
    if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise RecordError("malformed", f"{field} must be a non-empty list of assert strings")
    if not tests:
        raise RecordError("no_tests", f"{field} must be a non-empty list of assert strings")
    return tests


def problem_from_record(record: dict, where: str) -> Problem:
    """Normalize one full-MBPP record. ``where`` (file:line) goes into every error message."""
    try:
        return _full_record(record)
    except RecordError as exc:
        raise DatasetError(f"{where}: {exc.message}") from None


def _full_record(record: dict) -> Problem:
    missing = [k for k in ("task_id", "text", "code", "test_list") if k not in record]
    if missing:
        raise RecordError("malformed", f"MBPP record lacks field(s) {', '.join(missing)}")
    task_id = _task_id(record)
    tests = _asserts(record)
    if not isinstance(record["code"], str) or not isinstance(record["text"], str):
        raise RecordError("malformed", "text and code must be strings")
    setup = record.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise RecordError("malformed", "test_setup_code must be a string")
    code = lf(record["code"])
    return Problem(
        problem_id=f"mbpp/{task_id}",
        dataset="mbpp",
        statement=record["text"].strip(),
        solution=code,
        tests=TestSpec(kind="assert", asserts=tuple(tests), setup=lf(setup)),
        entry_point=_entry_point(code, tests),
        meta={"task_id": task_id, "split": split_of(task_id)},
    )


def _sanitized_record(record: dict) -> Problem:
    missing = [k for k in ("task_id", "prompt", "code", "test_list") if k not in record]
    if missing:
        raise RecordError("malformed", f"sanitized MBPP record lacks field(s) {', '.join(missing)}")
    task_id = _task_id(record)
    tests = _asserts(record)
    if not isinstance(record["code"], str) or not isinstance(record["prompt"], str):
        raise RecordError("malformed", "prompt and code must be strings")
    imports = record.get("test_imports") or []
    if not isinstance(imports, list) or not all(isinstance(t, str) for t in imports):
        raise RecordError("malformed", "test_imports must be a list of strings")
    code = lf(record["code"])
    return Problem(
        problem_id=f"mbpp-sanitized/{task_id}",
        dataset="mbpp-sanitized",
        statement=record["prompt"].strip(),
        solution=code,
        tests=TestSpec(kind="assert", asserts=tuple(tests), setup="\n".join(imports)),
        entry_point=_entry_point(code, tests),
        meta={"task_id": task_id, "split": split_of(task_id)},
    )


def iter_mbpp(path: str | Path | None = None, split: str | None = None) -> Iterator[Problem | Reject]:
    """Problems and rejects of the full MBPP JSONL, in file order, restricted to ``split`` (None = all)."""
    wanted = _check_split(split)
    path = Path(path) if path else DEFAULT_PATH
    for where, _, record in iter_jsonl(path):
        if isinstance(record, Reject):
            yield record
            continue
        try:
            if wanted is not None and _task_id(record) not in wanted:
                continue
            yield _full_record(record)
        except RecordError as exc:
            yield reject(where, exc.reason, exc.message)


def iter_mbpp_sanitized(path: str | Path | None = None, split: str | None = None) -> Iterator[Problem | Reject]:
    """Problems and rejects of sanitized MBPP (a JSON array, or JSONL), restricted to ``split`` (None = all)."""
    wanted = _check_split(split)
    path = Path(path) if path else SANITIZED_PATH
    records = iter_jsonl(path) if path.suffix in (".jsonl", ".gz") else iter_json_records(path)
    for where, _, record in records:
        if isinstance(record, Reject):
            yield record
            continue
        try:
            if wanted is not None and _task_id(record) not in wanted:
                continue
            yield _sanitized_record(record)
        except RecordError as exc:
            yield reject(where, exc.reason, exc.message)


def _collect(items: Iterator[Problem | Reject], strict: bool) -> list[Problem]:
    problems = []
    for item in items:
        if isinstance(item, Reject):
            if strict:
                raise item.error()
            log.warning("skipping malformed MBPP record: %s", item.detail)
        else:
            problems.append(item)
    return problems


def load_mbpp(path: str | Path | None = None, split: str | None = "train", strict: bool = False) -> list[Problem]:
    """Load MBPP problems of a standard split (None = all), in task_id order.

    A malformed record is reported (file:line and reason) and skipped, so the good ones still load;
    ``strict=True`` raises on the first one instead.
    """
    return _collect(iter_mbpp(path, split), strict)


def load_mbpp_sanitized(path: str | Path | None = None, split: str | None = "train", strict: bool = False
                        ) -> list[Problem]:
    """Load sanitized MBPP (427 tasks) of a standard split (None = all); bad records as in :func:`load_mbpp`."""
    return _collect(iter_mbpp_sanitized(path, split), strict)
