"""MBPP (Austin et al. 2021) → Problem. The full JSONL copy ships in data/mbpp (CC-BY-4.0)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from stepcoder.datasets.errors import DatasetError
from stepcoder.problems import Problem, TestSpec

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "data" / "mbpp" / "mbpp.jsonl"

# Standard split by task_id (the MBPP paper, section 2.1).
SPLITS: dict[str, range] = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}

_DEF_RE = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.M)
_CALL_RE = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\(|math\.isclose\(|abs\()?\s*([A-Za-z_]\w*)\s*\(")


def _entry_point(code: str, asserts: list[str]) -> str | None:
    """The function the asserts call: the first name called in an assert that the solution defines."""
    defined = _DEF_RE.findall(code)
    for line in asserts:
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", line):
            if name in defined:
                return name
    return defined[-1] if defined else None


def problem_from_record(record: dict, where: str) -> Problem:
    """Normalize one MBPP record. ``where`` (file:line) goes into every error message."""
    missing = [k for k in ("task_id", "text", "code", "test_list") if k not in record]
    if missing:
        raise DatasetError(f"{where}: MBPP record lacks field(s) {', '.join(missing)}")
    tests = record["test_list"]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise DatasetError(f"{where}: test_list must be a non-empty list of assert strings")
    if not isinstance(record["code"], str) or not isinstance(record["text"], str):
        raise DatasetError(f"{where}: text and code must be strings")
    code = record["code"].replace("\r\n", "\n").replace("\r", "\n")
    setup = (record.get("test_setup_code") or "").replace("\r\n", "\n")
    return Problem(
        problem_id=f"mbpp/{record['task_id']}",
        dataset="mbpp",
        statement=record["text"].strip(),
        solution=code,
        tests=TestSpec(kind="assert", asserts=tuple(tests), setup=setup),
        entry_point=_entry_point(code, tests),
        meta={"task_id": int(record["task_id"])},
    )


log = logging.getLogger("stepcoder.datasets")


def load_mbpp(path: str | Path | None = None, split: str | None = "train", strict: bool = False) -> list[Problem]:
    """Load MBPP problems of a standard split (None = all), in task_id order.

    A malformed record is reported (file:line and reason) and skipped, so the good ones still load;
    ``strict=True`` raises on the first one instead.
    """
    path = Path(path) if path else DEFAULT_PATH
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown MBPP split {split!r}; valid: {', '.join(SPLITS)}")
    wanted = SPLITS[split] if split else None
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DatasetError(f"{where}: record must be a JSON object")
                try:
                    task_id = int(record.get("task_id", -1))
                except (TypeError, ValueError):
                    raise DatasetError(f"{where}: task_id must be an integer") from None
                if wanted is not None and task_id not in wanted:
                    continue
                problems.append(problem_from_record(record, where))
            except DatasetError as exc:
                if strict:
                    raise
                log.warning("skipping malformed MBPP record: %s", exc)
    return problems
