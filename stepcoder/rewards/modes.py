"""``reward.mode``: which sequence reward a run trains on. Each mode returns R and its stored components."""

from __future__ import annotations

from collections.abc import Mapping

from stepcoder.problems import Problem
from stepcoder.rewards.outcome import execution_reward

REWARD_MODES = ("stepcoder", "ppocoder")


def sequence_reward(mode: str, outcome: str, program: str, problem: Problem, table: Mapping[str, float],
                    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, float | None]:
    """``{"reward": R, "r_exec", "r_ast", "r_dfg"}`` for one executed program (r_ast/r_dfg: PPOCoder mode only).

    stepcoder: R = the outcome table's value. ppocoder: R = w_exec·r_exec + w_ast·r_ast + w_dfg·r_dfg, with the
    full program (CCCS prefix included) compared against the full reference solution; a problem without tests
    gets PPOCoder's compile-only signal as r_exec.
    """
    if mode == "stepcoder":
        r = execution_reward(outcome, table)
        return {"reward": r, "r_exec": r, "r_ast": None, "r_dfg": None}
    if mode == "ppocoder":
        from stepcoder.rewards.ppocoder import ppocoder_reward

        parts = ppocoder_reward(outcome if problem.tests.count else None, program, problem.solution, weights, table)
        return {k: parts[k] for k in ("reward", "r_exec", "r_ast", "r_dfg")}
    raise ValueError(f"unknown reward mode {mode!r}; valid: {', '.join(REWARD_MODES)}")
