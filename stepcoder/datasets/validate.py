"""Canonical-solution validation, the way APPS+ was refined: keep only problems whose solution passes its own tests.

For every problem, in order:
1. static checks: it has tests, it has a solution, the solution and the test code compile;
2. duplicates: a repeated id, or the same statement with the same tests, as an earlier problem (the first stays);
3. the canonical solution runs against its tests in the sandbox; any outcome but ``pass`` rejects it. Timeouts
   are retried once with three times the limits, so a loaded machine does not reject a correct solution.

Loader rejects (bad UTF-8, bad JSON, missing fields, no tests...) come first in the report. The result is a
clean subset (written as ``stepcoder`` JSONL, which loads back exactly) and a rejects report of (id, reason,
detail, where), as JSONL or CSV.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stepcoder.datasets.errors import REJECT_REASONS, Reject
from stepcoder.problems import Problem

if TYPE_CHECKING:
    from stepcoder.execution import ExecResult, Executor

log = logging.getLogger("stepcoder.datasets")

RETRY_FACTOR = 3.0  # timeouts are re-run once with limits this many times larger
_WS = re.compile(r"\s+")


@dataclass
class ValidationReport:
    source: str
    clean: list[Problem] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    executed: int = 0  # canonical solutions run in the sandbox
    retried: int = 0  # timeouts run again with larger limits
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {r: 0 for r in REJECT_REASONS}
        for r in self.rejects:
            out[r.reason] += 1
        return {k: v for k, v in out.items() if v}

    def rejected_ids(self, reason: str | None = None) -> list[str]:
        return [r.problem_id for r in self.rejects if r.problem_id and (reason is None or r.reason == reason)]

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "clean": len(self.clean), "rejected": len(self.rejects),
                "by_reason": self.counts(), "executed": self.executed, "retried": self.retried,
                "seconds": round(self.seconds, 1)}


def _compiles(code: str, what: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like: the sandbox decides
            compile(code, f"<{what}>", "exec")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        return f"{what} does not compile" + (f" (line {line}: {exc.msg})" if line else f" ({exc})")
    return None


def static_reject(p: Problem) -> Reject | None:
    """No tests, no solution, a solution or test code that does not compile."""
    if p.tests.count == 0:
        return Reject(p.problem_id, "no_tests", f"{p.problem_id}: no unit tests")
    if not p.solution.strip():
        return Reject(p.problem_id, "no_solution", f"{p.problem_id}: no canonical solution")
    if err := _compiles(p.solution, "canonical solution"):
        return Reject(p.problem_id, "syntax_error", f"{p.problem_id}: {err}")
    if p.tests.kind == "assert":
        for i, code in enumerate((p.tests.setup, *p.tests.asserts)):
            if err := _compiles(code, "test setup" if i == 0 else f"test {i - 1}"):
                return Reject(p.problem_id, "malformed", f"{p.problem_id}: {err}")
    return None


def _key(p: Problem) -> tuple:
    t = p.tests
    return (_WS.sub(" ", p.statement).strip().lower(), t.kind, repr((t.asserts, t.setup, t.inputs, t.outputs,
                                                                    t.fn_name)))


def duplicate_rejects(problems: Iterable[Problem]) -> dict[int, Reject]:
    """index → reject for each problem that repeats an earlier one's id, or its statement and tests."""
    ids: dict[str, int] = {}
    keys: dict[tuple, str] = {}
    out = {}
    for i, p in enumerate(problems):
        if p.problem_id in ids:
            out[i] = Reject(p.problem_id, "duplicate", f"{p.problem_id}: id repeated (first at position "
                                                       f"{ids[p.problem_id]})")
            continue
        ids[p.problem_id] = i
        k = _key(p)
        if k in keys:
            out[i] = Reject(p.problem_id, "duplicate", f"{p.problem_id}: same statement and tests as {keys[k]}")
        else:
            keys[k] = p.problem_id
    return out


def _failure(p: Problem, r: ExecResult) -> Reject:
    first = next(((i, t) for i, t in enumerate(r.tests) if t.status != "pass"), None)
    where = f"test {first[0]}: {first[1].status}: {first[1].detail}" if first else r.error
    return Reject(p.problem_id, "failing",
                  f"{p.problem_id}: canonical solution fails its own tests ({r.outcome}; {where})"[:500])


def validate_problems(problems: Sequence[Problem], executor: Executor,
                      retry: Callable[[], Executor] | None = None, source: str = "",
                      prior_rejects: Iterable[Reject] = ()) -> ValidationReport:
    """Check every problem; return the clean ones (input order) and a reject for each other one.

    ``retry`` makes the executor (larger limits) that re-runs timeouts once; None = no retry.
    ``prior_rejects`` (the loader's) open the report.
    """
    t0 = time.monotonic()
    report = ValidationReport(source, rejects=list(prior_rejects))
    verdict: dict[int, Reject] = {}
    problems = [_compiling_solution(p) for p in problems]
    for i, p in enumerate(problems):
        if (r := static_reject(p)) is not None:
            verdict[i] = r
    dups = duplicate_rejects(problems[i] for i in range(len(problems)) if i not in verdict)
    alive = [i for i in range(len(problems)) if i not in verdict]
    for j, r in dups.items():
        verdict[alive[j]] = r
    to_run = [i for i in alive if i not in verdict]
    results = executor.run([(problems[i].solution, problems[i].tests) for i in to_run])
    report.executed = len(to_run)
    timeouts = [i for i, r in zip(to_run, results) if r.outcome == "timeout"]
    by_index = dict(zip(to_run, results))
    if timeouts and retry is not None:
        log.info("re-running %d timed-out canonical solutions with %.0fx limits", len(timeouts), RETRY_FACTOR)
        with retry() as slow:
            for i, r in zip(timeouts, slow.run([(problems[i].solution, problems[i].tests) for i in timeouts])):
                by_index[i] = r
        report.retried = len(timeouts)
    for i, r in by_index.items():
        if r.outcome != "pass":
            fixed = _shortest_passing_alternative(problems[i], executor)
            if fixed is None:
                verdict[i] = _failure(problems[i], r)
            else:
                problems[i] = fixed
    report.clean = [p for i, p in enumerate(problems) if i not in verdict]
    report.rejects += [verdict[i] for i in sorted(verdict)]
    report.seconds = time.monotonic() - t0
    return report


def _compiling_solution(problem: Problem) -> Problem:
    """Swap a canonical solution that does not compile for the shortest alternative that does."""
    import dataclasses

    if not problem.solution.strip() or _compiles(problem.solution, "") is None:
        return problem
    for alt in problem.meta.get("alternatives") or []:
        if _compiles(alt, "") is None:
            rest = [a for a in problem.meta["alternatives"] if a is not alt]
            return dataclasses.replace(problem, solution=alt, meta={**problem.meta, "alternatives": rest})
    return problem


def _shortest_passing_alternative(problem: Problem, executor: Executor) -> Problem | None:
    """When the canonical (shortest) solution fails, the next-shortest alternative that passes, if any."""
    import dataclasses

    for alt in problem.meta.get("alternatives") or []:
        (result,) = executor.run([(alt, problem.tests)])
        if result.outcome == "pass":
            return dataclasses.replace(problem, solution=alt)
    return None


def validate_source(dataset: str, path: str | None = None, split: str | None = None, *,
                    problems_filter: Callable[[list[Problem]], list[Problem]] | None = None,
                    timeout_s: float = 4.0, budget_s: float = 20.0, workers: int | None = None,
                    retry_timeouts: bool = True) -> ValidationReport:
    """Load a source (keeping its loader rejects) and validate it in the embedded sandbox."""
    from stepcoder.datasets import scan
    from stepcoder.execution import make_executor

    loaded = scan(dataset, path, split)
    problems = problems_filter(loaded.problems) if problems_filter else loaded.problems
    # Coverage is off: validation needs outcomes only, and tracing slows CPU-heavy solutions several times.
    options = {"timeout_s": timeout_s, "budget_s": budget_s, "workers": workers, "coverage": False}
    slow = {**options, "timeout_s": timeout_s * RETRY_FACTOR, "budget_s": budget_s * RETRY_FACTOR}
    with make_executor("embedded", **options) as ex:
        return validate_problems(problems, ex, (lambda: make_executor("embedded", **slow)) if retry_timeouts
                                 else None, loaded.source, loaded.rejects)


def write_rejects(rejects: Iterable[Reject], path: str | Path) -> int:
    """Rejects report: CSV when ``path`` ends in .csv, else JSONL. Columns: problem_id, reason, detail, where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r.to_dict() for r in rejects]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        if path.suffix == ".csv":
            writer = csv.DictWriter(fh, fieldnames=["problem_id", "reason", "detail", "where"])
            writer.writeheader()
            writer.writerows(rows)
        else:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(rows)
