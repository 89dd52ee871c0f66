"""Execution reward table (StepCoder eq. 1, after CodeRL / PPOCoder).

    R = +1    all tests pass
        -0.3  a test fails
        -0.6  runtime error or timeout
        -1    compile error
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_REWARDS: Mapping[str, float] = {
    "pass": 1.0,
    "fail": -0.3,
    "runtime_error": -0.6,
    "timeout": -0.6,
    "compile_error": -1.0,
}


def reward_table(pass_reward: float, fail: float, runtime_error: float, timeout: float, compile_error: float) -> dict[str, float]:
    return {"pass": pass_reward, "fail": fail, "runtime_error": runtime_error, "timeout": timeout, "compile_error": compile_error}


def execution_reward(outcome: str, table: Mapping[str, float] = DEFAULT_REWARDS) -> float:
    """Scalar reward of one program's outcome. Unknown outcomes raise with the valid list."""
    try:
        return float(table[outcome])
    except KeyError:
        raise ValueError(f"unknown outcome {outcome!r}; valid: {', '.join(table)}") from None
