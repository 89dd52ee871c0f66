"""The learning benchmark's paired comparisons: every split, every pair of arms, and no pairing across problems."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import learn  # noqa: E402


def _final(passed: list[bool], ids: list[str] | None = None) -> dict:
    return {"problem_ids": ids or [f"p{i}" for i in range(len(passed))], "passed": passed}


def test_every_arm_pair_on_every_split_it_has():
    base = {"mbpp-test": _final([True, False, False, False]), "humaneval": _final([False, False])}
    arms = {
        "vanilla": {"final": {"mbpp-test": _final([True, True, False, False])}},  # finished before humaneval
        "stepcoder": {"final": {"mbpp-test": _final([False, True, True, True]),
                                "humaneval": _final([True, False])}},
    }
    got = {(c["a"], c["b"], c["split"]): c for c in learn.comparisons(base, arms)}
    # the paper's order puts StepCoder first whatever order the arms finished in
    assert set(got) == {("stepcoder", "base", "mbpp-test"), ("vanilla", "base", "mbpp-test"),
                        ("stepcoder", "vanilla", "mbpp-test"), ("stepcoder", "base", "humaneval")}
    c = got[("stepcoder", "vanilla", "mbpp-test")]
    # stepcoder solves p1 p2 p3, vanilla p0 p1: 2 only StepCoder, 1 only vanilla, difference (3 − 2) / 4
    assert (c["only_a"], c["only_b"], c["diff"]) == (2, 1, pytest.approx(0.25))
    assert got[("stepcoder", "base", "humaneval")]["diff"] == pytest.approx(0.5)


def test_outcomes_on_other_problems_are_refused():
    base = {"mbpp-test": _final([True, False])}
    arms = {"vanilla": {"final": {"mbpp-test": _final([True, False], ids=["p0", "p9"])}}}
    with pytest.raises(ValueError, match="vanilla: evaluated on other mbpp-test problems"):
        learn.comparisons(base, arms)
