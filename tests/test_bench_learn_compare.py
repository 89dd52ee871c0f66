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


def test_replicate_names_round_trip():
    assert learn.run_name("no-fgo", 0) == "no-fgo" and learn.parse_run("no-fgo") == ("no-fgo", 0)
    assert learn.parse_run(learn.run_name("no-fgo", 3)) == ("no-fgo", 3)
    assert learn.arm_overrides("vanilla-seed2")[-1] == "generation.seed=2"
    assert "generation.seed=0" not in " ".join(learn.arm_overrides("vanilla"))
    assert learn.parse_run("nonsense-seed1") == ("nonsense-seed1", 0)  # not an arm: refused by --arms


def test_replicates_mean_and_range_and_paper_order():
    base = {"mbpp-test": _final([False] * 4)}
    arms = {
        "vanilla-seed1": {"final": {"mbpp-test": {**_final([True, True, False, False]), "pass@1": 0.5}}},
        "vanilla": {"final": {"mbpp-test": {**_final([True, False, False, False]), "pass@1": 0.25}}},
        "stepcoder": {"final": {"mbpp-test": {**_final([False, False, False, False]), "pass@1": 0.0}}},
    }
    rep = learn.replicates(arms)
    assert set(rep) == {"vanilla"}  # one run of StepCoder: no spread to report
    assert rep["vanilla"]["runs"] == ["vanilla", "vanilla-seed1"]
    assert rep["vanilla"]["pass@1"]["mbpp-test"] == {"each": [0.25, 0.5], "mean": 0.375, "range": [0.25, 0.5]}
    between = [(c["a"], c["b"]) for c in learn.comparisons(base, arms) if c["b"] != "base"]
    assert between == [("stepcoder", "vanilla"), ("stepcoder", "vanilla-seed1"), ("vanilla", "vanilla-seed1")]
