"""CCCS: Curriculum of Code Completion Subtasks (StepCoder, Dou et al. 2024, section 3.1).

The canonical solution is cut at the lines where conditional statements start (split points). Stage 0 shows
the longest solution prefix (cut at the last split point); each later stage cuts one split point earlier; the
final stage shows no solution at all, only the starter code. A problem moves one stage on once its samples at
the current stage pass often enough.

    split points  s_1 < s_2 < ... < s_S          (1-based line numbers)
    stage k < S   prefix = lines [1, s_{S-k})  (whole lines, without the last line break: the completion
                                                starts with the newline and the split line's indentation)
    stage S       prefix = starter code          (the "write it all" stage; S = 0 → a single stage)
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

# Split-point kinds: the paper's "conditional statements". Else/Except are the header lines of those blocks.
SPLIT_NODES: tuple[str, ...] = ("If", "Else", "For", "While", "Try", "Except", "With", "Match")
DEFAULT_SPLIT_NODES = SPLIT_NODES

_STATEMENTS = {
    "If": (ast.If,),
    "For": (ast.For, ast.AsyncFor),
    "While": (ast.While,),
    "Try": (ast.Try,) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ()),
    "With": (ast.With, ast.AsyncWith),
    "Match": (ast.Match,),
}


def _else_line(node: ast.stmt, lines: list[str]) -> int | None:
    """Line of the ``else:`` header of an if/for/while/try, or None (no else, or an ``elif``)."""
    orelse = getattr(node, "orelse", None)
    if not orelse:
        return None
    last = node.handlers[-1] if isinstance(node, ast.Try) and node.handlers else node.body[-1]
    for line in range((last.end_lineno or last.lineno) + 1, orelse[0].lineno + 1):
        if lines[line - 1].lstrip().startswith("else"):
            return line
    return None  # `elif`: the nested If's own line is already a split point


def split_points(solution: str, node_types: tuple[str, ...] = DEFAULT_SPLIT_NODES) -> list[int]:
    """Sorted, unique 1-based lines where a conditional statement of one of ``node_types`` starts.

    Nested statements count. ``elif`` is an ``If`` in ``ast``, so each branch of an if/elif chain is a split
    point; ``Else`` adds ``else:`` header lines and ``Except`` the ``except ...:`` lines. A solution that does
    not parse has no split points (it gets a single, full-generation stage).
    """
    unknown = sorted(set(node_types) - set(SPLIT_NODES))
    if unknown:
        raise ValueError(f"unknown split node(s) {unknown}; valid: {', '.join(SPLIT_NODES)}")
    try:
        tree = ast.parse(solution)
    except (SyntaxError, ValueError):
        return []
    lines = solution.splitlines()
    wanted = tuple(t for name in node_types for t in _STATEMENTS.get(name, ()))
    points = set()
    for node in ast.walk(tree):
        if wanted and isinstance(node, wanted):
            points.add(node.lineno)
        if "Else" in node_types and isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try)):
            line = _else_line(node, lines)
            if line is not None:
                points.add(line)
        if "Except" in node_types and isinstance(node, ast.ExceptHandler):
            points.add(node.lineno)
    return sorted(points)


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
        return StagePrefix(stage, total, None, _open_end(starter_code))
    split_line = splits[len(splits) - 1 - stage]
    lines = solution.splitlines(keepends=True)
    return StagePrefix(stage, total, split_line, _open_end("".join(lines[: split_line - 1])))


def _open_end(prefix: str) -> str:
    """The prefix without its trailing line break (and trailing blanks): the model's first token is then the
    newline plus the split line's indentation, which BPE tokenizers merge into one token ("\n    " after a
    header line). A prompt ending in a bare "\n" token, or in spaces, is a token sequence the tokenizer never
    produces for real code, and small models then continue without indentation (0 of 12 samples did)."""
    return prefix.rstrip()


def full_stage_problems(problem_ids: list[str], fraction: float, seed: str) -> set[str]:
    """The problems sampled at the final stage this iteration regardless of their curriculum stage, so the
    model keeps practising whole programs (round(fraction × n), chosen deterministically per seed)."""
    import random

    k = round(fraction * len(problem_ids))
    return set(random.Random(seed).sample(sorted(problem_ids), k)) if k else set()


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
    stage: int  # the problem's curriculum stage
    num_stages: int
    split_line: int | None
    samples: int
    passes: int
    full_stage: bool = False  # sampled at the final stage for practice: says nothing about its own stage


GLOBAL_KEY = "__global__"  # curriculum row holding the shared stage index in global mode
MODES = ("per_problem", "global")


def advance(
    results: list[StageResult], threshold: float, min_samples: int, mode: str = "per_problem",
    global_stage: int = 0,
) -> list[dict]:
    """Apply the advance rule; one ``curriculum`` table row per problem (+ one ``__global__`` row in global mode).

    per_problem: each problem moves on when *its* pass rate at its stage reaches ρ.
    global: one shared stage index g moves on when the pass rate of the whole batch (practice samples at the
    final stage excluded) reaches ρ; each problem then sits at min(g, its last stage).
    """
    if mode not in MODES:
        raise ValueError(f"unknown curriculum mode {mode!r}; valid: {', '.join(MODES)}")
    counted = [r for r in results if not r.full_stage]
    if mode == "global":
        samples = sum(r.samples for r in counted)
        passes = sum(r.passes for r in counted)
        # The shared index only ever moves forward. It moves on while some problem of this batch still has a
        # stage past it; a batch of shallow problems leaves a deeper index where it is (capping it at this
        # batch's depth would move it backwards: 5 → 2 on a batch whose deepest problem has 3 stages).
        deepest = max((r.num_stages for r in results), default=1)
        moved = next_stage(global_stage, max(deepest, global_stage + 1), samples, passes, threshold, min_samples)
        new_global = max(global_stage, moved)
    rows = []
    for r in results:
        if r.full_stage:
            after = r.stage
        elif mode == "global":
            after = min(new_global, r.num_stages - 1)
        else:
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
            "full_stage": r.full_stage,
        })
    if mode == "global":
        rows.append({"problem_id": GLOBAL_KEY, "stage_before": global_stage, "stage_after": new_global,
                     "num_stages": None, "split_line": None, "samples": samples, "passes": passes,
                     "pass_rate": passes / samples if samples else 0.0, "advanced": new_global != global_stage,
                     "full_stage": False})
    return rows


def stage_counts(rows: list[dict]) -> list[dict]:
    """Curriculum progress per iteration, from ``curriculum`` table rows (iteration, problem_id, stage_before,
    stage_after, full_stage): problems per stage after each iteration, over the problems seen so far (each at
    its latest stage), and how many moved on in that iteration. Practice rows and the global row are skipped.

    Returns one ``{"iteration", "problems", "advanced", "stages": {stage: count}}`` per iteration present.
    """
    latest: dict[str, int] = {}
    by_iteration: dict[int, list[dict]] = {}
    for r in rows:
        if r.get("full_stage") or r["problem_id"] == GLOBAL_KEY:
            continue
        by_iteration.setdefault(int(r["iteration"]), []).append(r)
    out = []
    for it in sorted(by_iteration):
        advanced = 0
        for r in by_iteration[it]:
            advanced += r["stage_after"] > r["stage_before"]
            latest[r["problem_id"]] = r["stage_after"]
        counts: dict[int, int] = {}
        for stage in latest.values():
            counts[stage] = counts.get(stage, 0) + 1
        out.append({"iteration": it, "problems": len(latest), "advanced": advanced,
                    "stages": dict(sorted(counts.items()))})
    return out
