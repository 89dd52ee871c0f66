"""CCCS: Curriculum of Code Completion Subtasks (StepCoder, Dou et al. 2024, section 3.1).

The canonical solution is cut at the lines where conditional statements start (split points). Stage 0 shows
the longest solution prefix (cut at the last split point); each later stage cuts one split point earlier; the
final stage shows no solution at all, only the starter code. A problem moves one stage on once its samples at
the current stage pass often enough.

    split points  s_1 < s_2 < ... < s_S          (1-based line numbers)
    stage k < S   prefix = lines [1, s_{S-k})  (whole lines; the completion continues at their indentation)
    stage S       prefix = starter code          (the "write it all" stage; S = 0 → a single stage)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

DEFAULT_SPLIT_NODES: tuple[str, ...] = ("If", "For", "While")


def split_points(solution: str, node_types: tuple[str, ...] = DEFAULT_SPLIT_NODES) -> list[int]:
    """Sorted, unique 1-based lines where a statement of one of ``node_types`` starts (nested ones included).

    ``elif`` is an ``If`` node in ``ast``, so each branch of an if/elif chain is its own split point.
    A solution that does not parse has no split points (it gets a single, full-generation stage).
    """
    try:
        tree = ast.parse(solution)
    except (SyntaxError, ValueError):
        return []
    wanted = tuple(getattr(ast, name) for name in node_types if hasattr(ast, name))
    return sorted({node.lineno for node in ast.walk(tree) if isinstance(node, wanted)})


def num_stages(splits: list[int]) -> int:
    return len(splits) + 1


@dataclass(frozen=True)
class StagePrefix:
    stage: int
    num_stages: int
    split_line: int | None  # None for the final, full-generation stage
    prefix: str  # solution text the prompt ends with; the model continues it


def stage_prefix(solution: str, splits: list[int], stage: int, starter_code: str = "") -> StagePrefix:
    """The solution prefix shown at ``stage`` (0 = most help). Stages past the last clamp to the final one."""
    total = num_stages(splits)
    stage = max(0, min(stage, total - 1))
    if stage == total - 1:
        prefix = starter_code
        if prefix and not prefix.endswith("\n"):
            prefix += "\n"
        return StagePrefix(stage, total, None, prefix)
    split_line = splits[len(splits) - 1 - stage]
    lines = solution.splitlines(keepends=True)
    # Whole lines only: the model writes the split line's indentation itself. Ending a prompt in spaces
    # splits BPE indentation tokens unnaturally and derails small models.
    return StagePrefix(stage, total, split_line, "".join(lines[: split_line - 1]))


def next_stage(
    stage: int, total_stages: int, samples: int, passes: int, threshold: float, min_samples: int
) -> int:
    """Advance rule: move one stage on once pass rate ≥ ρ with at least ``min_samples`` samples.

    The final stage (total_stages - 1) is absorbing: problems that reach it keep being sampled there.
    """
    if samples >= min_samples and samples > 0 and passes / samples >= threshold:
        return min(stage + 1, total_stages - 1)
    return stage


@dataclass(frozen=True)
class StageResult:
    """One problem's samples at its stage in one iteration."""

    problem_id: str
    stage: int
    num_stages: int
    split_line: int | None
    samples: int
    passes: int


def advance(results: list[StageResult], threshold: float, min_samples: int) -> list[dict]:
    """Apply the advance rule per problem; one ``curriculum`` table row each."""
    rows = []
    for r in results:
        after = next_stage(r.stage, r.num_stages, r.samples, r.passes, threshold, min_samples)
        rows.append({
            "problem_id": r.problem_id,
            "stage_before": r.stage,
            "stage_after": after,
            "num_stages": r.num_stages,
            "split_line": r.split_line,
            "samples": r.samples,
            "passes": r.passes,
            "pass_rate": r.passes / r.samples if r.samples else 0.0,
            "advanced": after != r.stage,
        })
    return rows
