"""`stepcoder exec`: run candidate programs against a dataset's tests in the sandbox, with the pipeline's engine.

    stepcoder exec --dataset mbpp --candidates cands.jsonl --out results.jsonl [--backend docker] [--workers 4]

Candidates are JSONL lines ``{"problem_id": ..., "code": ...}``; ``problem_id`` may be the dataset-qualified id
(``mbpp/601``, ``apps/0001``, ``humaneval/HumanEval/0``) or the dataset's own (``601``, ``1``, ``HumanEval/0``).
Results are JSONL lines in input order: ``problem_id``, ``outcome``, ``reward``, ``tests`` (status, time_ms,
detail), ``executed_lines``, ``error``, ``cache_hit`` and ``runner`` (backend, interpreter, coverage, missing
protections). A progress bar goes to stderr, a summary after it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer


def _split_source(dataset: str) -> tuple[str, str | None]:
    fmt, sep, path = dataset.partition(":")
    return fmt.strip(), (path.strip() or None) if sep else None


def _id_aliases(problem_id: str, dataset: str) -> list[str]:
    """The ids a candidate may use for a problem: qualified, unqualified, and digits without leading zeros."""
    ids = [problem_id]
    for prefix in (f"{dataset}/", problem_id.split("/", 1)[0] + "/"):
        if problem_id.startswith(prefix):
            ids.append(problem_id[len(prefix):])
    ids += [i.lstrip("0") or "0" for i in ids if i.isdigit()]
    return ids


def _read_candidates(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "problem_id" not in row or not isinstance(row.get("code"), str):
                    raise ValueError("needs problem_id and a code string")
            except ValueError as e:
                raise typer.BadParameter(f"{path}:{n}: {e}", param_hint="--candidates") from None
            rows.append(row)
    return rows


def _parse_rewards(items: list[str]) -> dict[str, float]:
    from stepcoder.rewards import DEFAULT_REWARDS

    table = dict(DEFAULT_REWARDS)
    for item in items:
        outcome, sep, value = item.partition("=")
        if not sep or outcome not in table:
            raise typer.BadParameter(f"{item!r}: expected OUTCOME=VALUE with OUTCOME one of {', '.join(table)}",
                                     param_hint="--reward")
        table[outcome] = float(value)
    return table


def exec_command(
    dataset: str = typer.Option(..., "--dataset", "-d",
                                help="FORMAT or FORMAT:PATH; FORMAT is mbpp, humaneval, apps or leetcode (apps: a "
                                     "directory of problem folders or an APPS/APPS+ JSON/JSONL file)"),
    candidates: Path = typer.Option(..., "--candidates", "-c", exists=True, dir_okay=False,
                                    help='JSONL: {"problem_id": ..., "code": ...} per line'),
    out: Path = typer.Option(..., "--out", "-o", help="results JSONL (input order)"),
    backend: str = typer.Option("embedded", "--backend", "-b", help="embedded | docker"),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, help="programs at once (default: CPUs)"),
    timeout_s: float = typer.Option(4.0, "--timeout", help="seconds per test"),
    budget_s: float = typer.Option(20.0, "--budget", help="seconds per program, all tests"),
    memory_mb: int = typer.Option(1024, "--memory-mb"),
    header: str = typer.Option("auto", "--header",
                               help="code run before each program: auto (the APPS import header for apps), apps, "
                                    "none"),
    lenient_stdio: bool = typer.Option(False, "--lenient-stdio",
                                       help="also accept stdout whose per-line token sets match (passes wrong "
                                            "answers)"),
    stop_on_first_failure: bool = typer.Option(False, "--stop-on-first-failure"),
    guard: bool = typer.Option(True, "--guard/--no-guard",
                               help="assert tests refuse comparisons decided by the program's own __eq__, "
                                    "__bool__, ... (a reward hack); --no-guard runs them exactly as written"),
    reward: list[str] = typer.Option([], "--reward", help="override the reward table, e.g. --reward fail=-0.5"),
) -> None:
    """Run candidate programs against a dataset's tests in the sandbox; write one result line per candidate."""
    from stepcoder.datasets import load_problems
    from stepcoder.execution import APPS_HEADER, make_executor
    from stepcoder.rewards import execution_reward

    fmt, path = _split_source(dataset)
    rewards = _parse_rewards(reward)
    if header not in ("auto", "apps", "none"):
        raise typer.BadParameter("auto, apps or none", param_hint="--header")
    use_header = APPS_HEADER if header == "apps" or (header == "auto" and fmt.startswith("apps")) else ""
    rows = _read_candidates(candidates)
    problems = load_problems(fmt, path, split=None)
    by_id: dict[str, Any] = {}
    for p in problems:
        for alias in _id_aliases(p.problem_id, fmt):
            by_id.setdefault(alias, p)
    unknown = sorted({str(r["problem_id"]) for r in rows if str(r["problem_id"]) not in by_id})
    if unknown:
        typer.echo(f"error: {len(unknown)} problem ids not in {dataset}: {', '.join(unknown[:10])}"
                   + (" ..." if len(unknown) > 10 else ""), err=True)
        raise typer.Exit(2)
    jobs = [(r["code"], by_id[str(r["problem_id"])].tests) for r in rows]
    t0 = time.perf_counter()
    with make_executor(backend, timeout_s=timeout_s, budget_s=budget_s, memory_mb=memory_mb, workers=workers,
                       header=use_header, lenient_stdio=lenient_stdio,
                       stop_on_first_failure=stop_on_first_failure, guard_comparisons=guard) as executor:
        results = executor.run(jobs, progress=True)
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    with tmp.open("w") as f:
        for row, result in zip(rows, results):
            line = {"problem_id": row["problem_id"], "outcome": result.outcome,
                    "reward": execution_reward(result.outcome, rewards),
                    "tests": [{"status": t.status, "time_ms": round(t.time_ms, 3), "detail": t.detail}
                              for t in result.tests],
                    "executed_lines": result.executed_lines, "error": result.error, "cache_hit": result.cache_hit,
                    "runner": result.runner}
            f.write(json.dumps(line) + "\n")
    tmp.replace(out)  # readers never see a half-written file
    counts = Counter(r.outcome for r in results)
    hits = sum(r.cache_hit for r in results)
    summary = ", ".join(f"{k} {v}" for k, v in counts.most_common())
    typer.echo(f"{len(results)} programs in {seconds:.1f}s ({len(results) / max(seconds, 1e-9):.0f}/s; "
               f"{hits} cached): {summary} -> {out}", err=True)
    if results:
        r = results[0].runner
        typer.echo(f"runner: {r.get('backend')} Python {r.get('python')} ({r.get('interpreter')}), coverage "
                   f"{r.get('coverage')}, missing protections: {', '.join(r.get('missing', [])) or 'none'}",
                   err=True)
    sys.stderr.flush()
