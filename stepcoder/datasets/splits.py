"""Choosing problems: filters (difficulty, id list, seeded subset), hash splits, and the fixed held-out eval splits.

Everything here is deterministic and independent of input order, so a run config names a selection once and
gets the same problems on every machine and every re-run.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stepcoder.datasets.errors import DatasetError
from stepcoder.problems import Problem

# ---------------------------------------------------------------- filters


def by_difficulty(problems: Iterable[Problem], levels: Iterable[str]) -> list[Problem]:
    """Problems whose difficulty is one of ``levels`` (case-insensitive; APPS: introductory/interview/competition,
    LeetCode: easy/medium/hard). Problems without a difficulty never match."""
    wanted = {lv.strip().lower() for lv in levels}
    return [p for p in problems if p.difficulty is not None and p.difficulty.lower() in wanted]


def _matches(p: Problem, ids: set[str]) -> bool:
    """``ids`` may be full ("mbpp/601") or bare ("601") problem ids."""
    return p.problem_id in ids or p.problem_id.split("/", 1)[-1] in ids


def by_ids(problems: Iterable[Problem], ids: Iterable[str | int], strict: bool = True) -> list[Problem]:
    """Problems named in ``ids``, in the problems' order. ``strict``: an id that matches nothing is an error."""
    problems, wanted = list(problems), {str(i) for i in ids}
    chosen = [p for p in problems if _matches(p, wanted)]
    if strict:
        found = {p.problem_id for p in chosen} | {p.problem_id.split("/", 1)[-1] for p in chosen}
        missing = sorted(wanted - found)
        if missing:
            raise DatasetError(f"{len(missing)} id(s) match no problem: {', '.join(missing[:10])}"
                               + (" ..." if len(missing) > 10 else ""))
    return chosen


def excluding(problems: Iterable[Problem], ids: Iterable[str | int]) -> list[Problem]:
    wanted = {str(i) for i in ids}
    return [p for p in problems if not _matches(p, wanted)]


def random_subset(problems: Sequence[Problem], k: int, seed: int = 0) -> list[Problem]:
    """``k`` problems drawn with ``seed``, kept in input order. The draw depends only on the set of ids and the
    seed, not on the input order; ``k`` >= the number of problems returns them all."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ids = sorted(p.problem_id for p in problems)
    if k >= len(ids):
        return list(problems)
    chosen = set(random.Random(f"subset:{seed}").sample(ids, k))
    return [p for p in problems if p.problem_id in chosen]


def hash_split(problem_id: str, eval_fraction: float = 0.1, salt: str = "stepcoder") -> str:
    """``"test"`` for a fixed ``eval_fraction`` of ids, ``"train"`` for the rest. A problem's side depends on its id
    alone, so adding or removing other problems never moves it (a held-out split for data that has none)."""
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    h = int.from_bytes(hashlib.sha256(f"{salt}:{problem_id}".encode()).digest()[:8], "big")
    return "test" if h / 2**64 < eval_fraction else "train"


def by_hash_split(problems: Iterable[Problem], split: str, eval_fraction: float = 0.1) -> list[Problem]:
    if split not in ("train", "test"):
        raise DatasetError(f"unknown hash split {split!r}; valid: train, test")
    return [p for p in problems if hash_split(p.problem_id, eval_fraction) == split]


def select(problems: Sequence[Problem], difficulty: Iterable[str] | None = None, ids: Iterable[str] | None = None,
           exclude: Iterable[str] | None = None, subset: int | None = None, seed: int = 0,
           limit: int | None = None) -> list[Problem]:
    """Apply the filters in a fixed order: ids, exclude, difficulty, seeded subset, then the first ``limit``."""
    out = list(problems)
    if ids is not None:
        out = by_ids(out, ids)
    if exclude is not None:
        out = excluding(out, exclude)
    if difficulty is not None:
        out = by_difficulty(out, difficulty)
    if subset is not None:
        out = random_subset(out, subset, seed)
    if limit is not None:
        out = out[:limit]
    return out


# ---------------------------------------------------------------- held-out evaluation splits


@dataclass(frozen=True)
class EvalSplit:
    """A named, fixed evaluation set: never trained on (see :func:`check_held_out`)."""

    name: str
    dataset: str
    split: str | None
    description: str
    needs_path: bool = False
    # (dataset, split) whose problems this set must not repeat: its problems with the same statement as one of
    # them are left out (MBPP+ rewrote task 427's statement into that of MBPP train task 928)
    disjoint_from: tuple[str, str] | None = None


EVAL_SPLITS: dict[str, EvalSplit] = {e.name: e for e in (
    EvalSplit("mbpp-test", "mbpp", "test", "MBPP test split, task_ids 11-510 (500)"),
    EvalSplit("mbpp-validation", "mbpp", "validation", "MBPP validation split, task_ids 511-600 (90)"),
    EvalSplit("mbpp-sanitized-test", "mbpp-sanitized", "test", "sanitized MBPP tasks in 11-510 (257)"),
    EvalSplit("humaneval", "humaneval", None, "HumanEval, all 164"),
    EvalSplit("mbpp-plus-test", "mbpp-plus", "test", "MBPP+ tasks in MBPP-test, 11-510, with EvalPlus's tests, "
              "less one that repeats an MBPP train statement (236)", disjoint_from=("mbpp", "train")),
    EvalSplit("mbpp-plus", "mbpp-plus", None, "MBPP+, 394 of 399 (120 from MBPP's prompt/validation/train)"),
    EvalSplit("leetcode-test", "leetcode", "test", "LeetCodeDataset v0.2.0 test (200)"),
    EvalSplit("leetcode-test-v0.3.1", "leetcode", "test-v0.3.1", "LeetCodeDataset v0.3.1 test (228)"),
    EvalSplit("apps-eval150", "apps-eval150", None, "MapCoder's APPS selection (127 distinct usable problems)"),
    EvalSplit("appsplus-test", "appsplus", "hash:test", "APPS+ hash split, 10% (needs the data.json path)", True),
)}


def load_eval_split(name: str, path: str | None = None) -> list[Problem]:
    """The problems of a named eval split. ``path`` overrides the shipped copy (required for APPS+)."""
    from stepcoder.datasets import load_problems

    if name not in EVAL_SPLITS:
        raise DatasetError(f"unknown eval split {name!r}; valid: {', '.join(EVAL_SPLITS)}")
    e = EVAL_SPLITS[name]
    if e.needs_path and not path:
        raise DatasetError(f"eval split {name!r} needs the path of its {e.dataset} file")
    if e.split and e.split.startswith("hash:"):
        return by_hash_split(load_problems(e.dataset, path), e.split.split(":", 1)[1])
    problems = load_problems(e.dataset, path, e.split)
    if e.disjoint_from:
        dataset, split = e.disjoint_from
        repeated = {held for _, held, _ in overlaps(load_problems(dataset, split=split), problems)}
        problems = [p for p in problems if p.problem_id not in repeated]
    return problems


_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def overlaps(train: Iterable[Problem], held_out: Iterable[Problem]) -> list[tuple[str, str, str]]:
    """(training id, held-out id, why) for each held-out problem that is also in ``train``: the same id, or the same
    statement (whitespace and case aside). MBPP itself has three: test tasks 216, 217 and 248 repeat the statements
    of train tasks 872, 602 and 704 (with other tests)."""
    train = list(train)
    ids = {p.problem_id for p in train}
    texts = {_norm(p.statement): p.problem_id for p in train if p.statement.strip()}
    found = []
    for p in held_out:
        if p.problem_id in ids:
            found.append((p.problem_id, p.problem_id, "same id"))
        elif (other := texts.get(_norm(p.statement))) is not None:
            found.append((other, p.problem_id, "same statement"))
    return found


def without_held_out(train: Iterable[Problem], held_out: Iterable[Problem]) -> list[Problem]:
    """``train`` minus every problem that overlaps ``held_out`` (see :func:`overlaps`): never train on eval data."""
    train = list(train)
    drop = {t for t, _, _ in overlaps(train, held_out)}
    return [p for p in train if p.problem_id not in drop]


def check_held_out(train: Iterable[Problem], held_out: Iterable[Problem]) -> None:
    """DatasetError naming each held-out problem that is also a training problem (see :func:`overlaps`)."""
    found = overlaps(train, held_out)
    if found:
        shown = ", ".join(f"{e} ({why} as {t})" if why != "same id" else e for t, e, why in found[:10])
        raise DatasetError(f"{len(found)} evaluation problem(s) are in the training set: {shown}"
                           + (" ..." if len(found) > 10 else ""))
