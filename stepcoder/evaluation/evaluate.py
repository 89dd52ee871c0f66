"""Evaluate a policy on held-out problems: generate → program → sandbox → pass@k rows for the ``evals`` table.

Each problem is asked at the full-generation CCCS stage (the prompt ends with its starter code only), the same
prompt the final curriculum stage uses. Two modes:

- ``greedy``: temperature 0, one sample per problem, metric ``greedy/pass@1`` (the paper's headline number);
- ``sampled``: n samples at a temperature, ``sampled/pass@k`` for each k <= n with the unbiased estimator.

Metric names are fixed (the same in SQL, artifacts and plots)::

    {mode}/pass@{k}                   mean over problems
    {mode}/pass@{k}/{difficulty}      per difficulty (APPS introductory/interview/competition, LeetCode easy/...)
    {mode}/problems[/{difficulty}]    problems counted
    {mode}/samples                    programs run
    {mode}/outcome/{outcome}          fraction of samples per outcome (pass, fail, ..., prompt_too_long)

A prompt longer than the generator's context cannot be answered: its samples count as failures with the outcome
``prompt_too_long``, so the denominator never shrinks silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stepcoder.completion import to_program
from stepcoder.curriculum import stage_prefix
from stepcoder.evaluation.passk import mean_pass_at_k
from stepcoder.problems import Problem
from stepcoder.prompts import render_prompt

MODES = ("greedy", "sampled")
TOO_LONG = "prompt_too_long"
_DIFFICULTY_ORDER = ("introductory", "interview", "competition", "easy", "medium", "hard")


@dataclass(frozen=True)
class ProblemScore:
    """One problem's samples: ``c`` of ``n`` passed; ``outcomes`` counts each sandbox outcome."""

    problem_id: str
    difficulty: str | None
    n: int
    c: int
    outcomes: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass
class EvalResult:
    eval_name: str
    dataset: str
    mode: str
    ks: tuple[int, ...]
    scores: list[ProblemScore]
    rows: list[dict[str, Any]]  # rows of the `evals` table

    def metrics(self) -> dict[str, float]:
        return {r["metric"]: r["value"] for r in self.rows}


def eval_mode(n: int, temperature: float) -> str:
    """``greedy`` at temperature 0 (which needs n = 1: greedy samples are identical), else ``sampled``."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        if n != 1:
            raise ValueError(f"greedy decoding (temperature 0) gives n identical samples; use n=1, got n={n}")
        return "greedy"
    return "sampled"


def _check_ks(ks: Sequence[int], n: int) -> tuple[int, ...]:
    ks = tuple(sorted(set(ks)))
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"every k must be in [1, n={n}], got {list(ks)}")
    return ks


def score_problems(problems: Sequence[Problem], outcomes: Sequence[Sequence[str]]) -> list[ProblemScore]:
    """Per-problem (n, c) from each problem's sample outcomes."""
    if len(problems) != len(outcomes):
        raise ValueError(f"{len(problems)} problems but {len(outcomes)} outcome lists")
    return [ProblemScore(p.problem_id, p.difficulty, len(o), sum(x == "pass" for x in o), dict(Counter(o)))
            for p, o in zip(problems, outcomes)]


def _difficulty_key(d: str) -> tuple[int, str]:
    return (_DIFFICULTY_ORDER.index(d) if d in _DIFFICULTY_ORDER else len(_DIFFICULTY_ORDER), d)


def metric_rows(scores: Sequence[ProblemScore], ks: Sequence[int], mode: str, eval_name: str, dataset: str,
                checkpoint_uri: str = "") -> list[dict[str, Any]]:
    """Rows for the ``evals`` table (eval_name, dataset, metric, value, checkpoint_uri). Pure."""
    if mode not in MODES:
        raise ValueError(f"unknown eval mode {mode!r}; valid: {', '.join(MODES)}")

    def row(metric: str, value: float) -> dict[str, Any]:
        return {"eval_name": eval_name, "dataset": dataset, "metric": f"{mode}/{metric}", "value": float(value),
                "checkpoint_uri": checkpoint_uri}

    rows = [row("problems", len(scores)), row("samples", sum(s.n for s in scores))]
    levels = sorted({s.difficulty for s in scores if s.difficulty}, key=_difficulty_key)
    for k in ks:
        rows.append(row(f"pass@{k}", mean_pass_at_k(((s.n, s.c) for s in scores), k)))
        for level in levels:
            rows.append(row(f"pass@{k}/{level}",
                            mean_pass_at_k(((s.n, s.c) for s in scores if s.difficulty == level), k)))
    for level in levels:
        rows.append(row(f"problems/{level}", sum(s.difficulty == level for s in scores)))
    total = sum(s.n for s in scores)
    outcomes = Counter()
    for s in scores:
        outcomes.update(s.outcomes)
    for outcome in sorted(outcomes):
        rows.append(row(f"outcome/{outcome}", outcomes[outcome] / total if total else 0.0))
    return rows


def evaluate_programs(executor, problems: Sequence[Problem], programs: Sequence[Sequence[str | None]], *,
                      eval_name: str, dataset: str | None = None, ks: Sequence[int] = (1,),
                      mode: str = "sampled", checkpoint_uri: str = "") -> EvalResult:
    """Run given programs (``programs[i]`` are problem i's samples, all the same count n) and score them.

    A ``None`` program is a sample that could not be produced (prompt too long); it counts as a failure.
    """
    n = {len(s) for s in programs}
    if len(n) > 1:
        raise ValueError(f"every problem needs the same number of samples, got {sorted(n)}")
    ks = _check_ks(ks, n.pop() if n else max(ks))
    jobs = [(i, prog) for i, samples in enumerate(programs) for prog in samples if prog is not None]
    results = executor.run([(prog, problems[i].tests) for i, prog in jobs]) if jobs else []
    outcomes: list[list[str]] = [[] for _ in problems]
    ran = iter(results)
    for i, samples in enumerate(programs):
        outcomes[i] = [TOO_LONG if prog is None else next(ran).outcome for prog in samples]
    scores = score_problems(problems, outcomes)
    dataset = dataset or ",".join(sorted({p.dataset for p in problems}))
    return EvalResult(eval_name, dataset, mode, ks, scores, metric_rows(scores, ks, mode, eval_name, dataset,
                                                                        checkpoint_uri))


def eval_prompts(problems: Sequence[Problem], chat_template: Callable[[str], str] | None
                 ) -> tuple[list[str], list[str]]:
    """(prefix, prompt) per problem at the full-generation stage: the prefix is the starter code."""
    prefixes = [stage_prefix(p.solution, [], 0, p.starter_code).prefix for p in problems]
    return prefixes, [render_prompt(p, prefix, chat_template) for p, prefix in zip(problems, prefixes)]


def evaluate(generator, executor, problems: Sequence[Problem], *, eval_name: str, dataset: str | None = None,
             n: int = 1, ks: Sequence[int] = (1,), temperature: float = 0.0, top_p: float = 1.0,
             max_new_tokens: int = 256, seed: int = 0, chat_template: Callable[[str], str] | None = None,
             checkpoint_uri: str = "") -> EvalResult:
    """Sample ``n`` programs per problem from ``generator`` and score them in ``executor``.

    ``temperature=0`` is greedy mode (n must be 1). ``chat_template`` is the renderer of
    :func:`stepcoder.prompts.chat_renderer` (None = plain prompts); chat prompts stop at the closing code fence.
    """
    mode = eval_mode(n, temperature)
    ks = _check_ks(ks, n)
    prefixes, prompts = eval_prompts(problems, chat_template)
    fits = _fits(generator, prompts, max_new_tokens)
    asked = [i for i in range(len(problems)) if fits[i]]
    completions = generator.generate([prompts[i] for i in asked], n=n, temperature=temperature, top_p=top_p,
                                     max_new_tokens=max_new_tokens, seed=seed,
                                     stop=["```"] if chat_template else None) if asked else []
    programs: list[list[str | None]] = [[None] * n for _ in problems]
    for c in completions:
        i = asked[c.prompt_index]
        programs[i][c.sample_index] = to_program(prefixes[i], c.text).text
    return evaluate_programs(executor, problems, programs, eval_name=eval_name, dataset=dataset, ks=ks,
                             mode=mode, checkpoint_uri=checkpoint_uri)


def _fits(generator, prompts: list[str], max_new_tokens: int) -> list[bool]:
    """Which prompts leave room for ``max_new_tokens`` in the generator's context (all, if it cannot tell)."""
    tokenizer, limit = getattr(generator, "tokenizer", None), getattr(generator, "max_model_len", None)
    if tokenizer is None or limit is None:
        return [True] * len(prompts)
    return [len(tokenizer(p, add_special_tokens=False)["input_ids"]) + max_new_tokens <= limit for p in prompts]
