"""Evaluation: pass@k (Chen et al. 2021) over held-out problems, greedy pass@1, breakdown by difficulty.

Light on import: the evaluator touches a generator and an executor only through the objects it is given.
"""

from stepcoder.evaluation.evaluate import (
    MODES,
    EvalResult,
    ProblemScore,
    evaluate,
    evaluate_programs,
    metric_rows,
    score_problems,
)
from stepcoder.evaluation.passk import mean_pass_at_k, pass_at_k

__all__ = [
    "MODES", "EvalResult", "ProblemScore", "evaluate", "evaluate_programs", "mean_pass_at_k", "metric_rows",
    "pass_at_k", "score_problems",
]
