"""Advance: move each sampled problem's CCCS stage on when its pass rate reached the threshold."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.curriculum import StageResult, advance


@task(name="advance-curriculum", cache_policy=NO_CACHE)
def advance_curriculum(plans: list, rollouts: list[dict], threshold: float, min_samples: int,
                       mode: str = "per_problem", global_stage: int = 0) -> list[dict]:
    by_problem: dict[str, list[int]] = {}
    for row in rollouts:
        counts = by_problem.setdefault(row["problem_id"], [0, 0])
        counts[0] += 1
        counts[1] += row["outcome"] == "pass"
    results = [
        StageResult(p.problem.problem_id, p.curriculum_stage, p.num_stages, p.split_line,
                    *by_problem.get(p.problem.problem_id, [0, 0]), full_stage=p.full_stage)
        for p in plans
    ]
    return advance(results, threshold, min_samples, mode, global_stage)
