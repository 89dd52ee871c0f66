"""One iteration's data path, as plain functions: plan prompts → (generate) → programs → (execute) → rows.

The flow's tasks call these; generation and execution themselves live in their adapters.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stepcoder.completion import Program, to_program
from stepcoder.curriculum import GLOBAL_KEY, num_stages, split_points, stage_prefix
from stepcoder.execution import ExecResult
from stepcoder.fgo import fgo_mask
from stepcoder.generation.types import Completion
from stepcoder.problems import Problem
from stepcoder.prompts import render_prompt
from stepcoder.rewards import sequence_reward


@dataclass(frozen=True)
class PromptPlan:
    """What one prompt asks: a problem at a CCCS stage."""

    problem: Problem
    stage: int  # the stage this prompt was cut at
    num_stages: int
    split_line: int | None
    prefix: str
    prompt: str
    curriculum_stage: int = 0  # the problem's own curriculum stage (differs for full-stage practice prompts)
    full_stage: bool = False


def sample_problems(problems: Sequence[Problem], k: int, seed: int, iteration: int) -> list[Problem]:
    """The ``k`` problems of iteration ``iteration`` (1-based): the next ``k`` of a seeded permutation of the
    pool, a fresh permutation for each pass over it (epoch).

    Every problem comes back once per ⌈n/k⌉ iterations, so the curriculum sees it again at its new stage; an
    independent random draw each iteration would leave some problems unvisited for many epochs. Deterministic
    per (seed, iteration): a re-run of an iteration asks the same prompts. A batch that straddles two epochs
    skips problems it already holds.
    """
    pool = sorted(problems, key=lambda p: p.problem_id)
    n, k = len(pool), min(k, len(pool))
    perms: dict[int, list[int]] = {}

    def at(index: int) -> Problem:
        epoch, pos = divmod(index, n)
        if epoch not in perms:
            perms[epoch] = random.Random(f"{seed}:epoch:{epoch}").sample(range(n), n)
        return pool[perms[epoch][pos]]

    chosen: dict[str, Problem] = {}
    index = max(iteration - 1, 0) * k
    while len(chosen) < k:
        problem = at(index)
        chosen.setdefault(problem.problem_id, problem)
        index += 1
    return list(chosen.values())


def prompt_seeds(seed: int, iteration: int, keys: Sequence[str]) -> list[int]:
    """One sampling seed per prompt, from (run seed, iteration, the prompt's key, e.g. its problem id).

    vLLM gives sample i of a request the seed ``s + i``. One shared seed would give every prompt the same random
    stream, and ``seed + iteration`` would make iteration 2's sample 0 reuse iteration 1's sample 1 stream. Hashed
    60-bit seeds make both coincidences negligible, and a re-run of an iteration asks exactly the same samples.
    """
    return [int(hashlib.sha256(f"{seed}:{iteration}:{key}".encode()).hexdigest()[:15], 16) for key in keys]


def plan_prompts(
    problems: Sequence[Problem],
    stages: dict[str, int],
    curriculum: bool,
    split_nodes: tuple[str, ...],
    chat_template: Callable[[str], str] | None,
    mode: str = "per_problem",
    full_stage: set[str] | frozenset[str] = frozenset(),
) -> list[PromptPlan]:
    """Prompt per problem at its current stage.

    Without curriculum every prompt is full generation. In global mode every problem sits at the shared
    stage index (capped at its own last stage). Problems in ``full_stage`` are asked at the final stage this
    iteration, for practice, without touching their curriculum stage.
    """
    plans = []
    for problem in problems:
        splits = split_points(problem.solution, split_nodes)
        total = num_stages(splits)
        if not curriculum:
            own = total - 1
        elif mode == "global":
            own = min(stages.get(GLOBAL_KEY, 0), total - 1)
        else:
            own = min(stages.get(problem.problem_id, 0), total - 1)
        practice = curriculum and problem.problem_id in full_stage
        cut = stage_prefix(problem.solution, splits, total - 1 if practice else own, problem.starter_code)
        plans.append(
            PromptPlan(problem, cut.stage, total, cut.split_line, cut.prefix,
                       render_prompt(problem, cut.prefix, chat_template), own, practice)
        )
    return plans


def programs_for(plans: Sequence[PromptPlan], completions: Sequence[Completion]) -> list[Program]:
    return [to_program(plans[c.prompt_index].prefix, c.text) for c in completions]


def rollout_rows(
    run: str,
    iteration: int,
    plans: Sequence[PromptPlan],
    completions: Sequence[Completion],
    programs: Sequence[Program],
    results: Sequence[ExecResult],
    reward_table: dict[str, float],
    fgo_enabled: bool,
    checkpoint_id: str,
    reward_mode: str = "stepcoder",
    ppocoder_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[list[dict], list[dict]]:
    """Rows of the ``rollouts`` and ``test_results`` tables, with each rollout's FGO mask and reward."""
    rollouts, tests = [], []
    for comp, program, result in zip(completions, programs, results):
        plan = plans[comp.prompt_index]
        pid = plan.problem.problem_id
        rid = f"{run}/{iteration}/{pid}/{comp.sample_index}"
        compile_error = result.outcome == "compile_error"
        if fgo_enabled:
            # A program killed before it reported every test lost the lines of the test it died in: keep every
            # token then, rather than mask exactly the code that looped or crashed.
            covered = result.runner.get("coverage", "off") != "off" and result.coverage_complete
            mask = fgo_mask(program, comp.token_spans, result.executed_lines if covered else None, compile_error,
                            comp.n_special)
        else:
            mask = [1] * len(comp.completion_ids)
        parts = sequence_reward(reward_mode, result.outcome, program.text, plan.problem, reward_table, ppocoder_weights)
        rollouts.append({
            "rollout_id": rid,
            "problem_id": pid,
            "sample_index": comp.sample_index,
            "stage": plan.stage,
            "num_stages": plan.num_stages,
            "split_line": plan.split_line,
            "prompt": plan.prompt,
            "completion": comp.text,
            "program": program.text,
            "prompt_ids": comp.prompt_ids,
            "completion_ids": comp.completion_ids,
            "old_logprobs": comp.logprobs,
            "fgo_mask": mask,
            "outcome": result.outcome,
            **parts,
            "tests_passed": result.tests_passed,
            "tests_total": plan.problem.tests.count,
            "executed_lines": list(result.executed_lines or []),
            "exec_time_ms": result.time_ms,
            "checkpoint_id": checkpoint_id,
            "cache_hit": result.cache_hit,
            "finish_reason": comp.finish_reason,
        })
        for ti, test in enumerate(result.tests):
            tests.append({"rollout_id": rid, "problem_id": pid, "sample_index": comp.sample_index,
                          "test_index": ti, "status": test.status, "time_ms": test.time_ms,
                          "isolation": test.isolation})
    return rollouts, tests
