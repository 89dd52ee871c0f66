"""CCCS split points and stage prefixes on real MBPP solutions, checked against hand-read expectations."""

import pytest

from stepcoder.curriculum import StageResult, advance, next_stage, num_stages, split_points, stage_prefix
from stepcoder.datasets.mbpp import load_mbpp

PROBLEMS = {p.problem_id: p for p in load_mbpp(split=None)}


@pytest.mark.parametrize(
    "pid, expected",
    [
        ("mbpp/601", [8, 9, 10, 13, 14]),  # nested for/for/if, then for/if; class + method have none
        ("mbpp/605", [2, 3, 4]),  # if > for > if/else, nested
        ("mbpp/603", [3, 6, 9]),  # for, while, nested while
        ("mbpp/2", []),  # no conditionals: a single, full-generation stage
    ],
)
def test_split_points_of_real_solutions(pid, expected):
    assert split_points(PROBLEMS[pid].solution) == expected


def test_elif_chain_and_configurable_node_set():
    src = "def f(x):\n    if x < 0:\n        return -1\n    elif x == 0:\n        return 0\n    else:\n        return 1\n"
    assert split_points(src) == [2, 4]  # elif is its own If node; else has no statement of its own
    loop = "for i in range(3):\n    if i:\n        pass\n"
    assert split_points(loop, ("For",)) == [1]
    assert split_points(loop, ("If",)) == [2]
    assert split_points("def broken(:\n") == []


def test_stages_cut_one_split_point_earlier_each():
    sol = PROBLEMS["mbpp/603"].solution
    splits = split_points(sol)
    lines = sol.splitlines(keepends=True)
    assert num_stages(splits) == 4
    s0 = stage_prefix(sol, splits, 0)
    assert (s0.stage, s0.split_line, s0.prefix) == (0, 9, "".join(lines[:8]))
    s1 = stage_prefix(sol, splits, 1)
    assert (s1.split_line, s1.prefix) == (6, "".join(lines[:5]))
    s2 = stage_prefix(sol, splits, 2)
    assert (s2.split_line, s2.prefix) == (3, "def get_ludic(n):\n\tludics = []\n")
    final = stage_prefix(sol, splits, 3, starter_code="def get_ludic(n):")
    assert (final.split_line, final.prefix) == (None, "def get_ludic(n):\n")
    assert stage_prefix(sol, splits, 99).stage == 3  # clamps to the final stage
    # Prefixes are whole lines and shrink monotonically.
    assert all(p.endswith("\n") for p in (s0.prefix, s1.prefix, s2.prefix))
    assert len(s0.prefix) > len(s1.prefix) > len(s2.prefix)


def test_solution_without_split_points_has_one_full_generation_stage():
    sol = PROBLEMS["mbpp/2"].solution
    only = stage_prefix(sol, split_points(sol), 0)
    assert (only.stage, only.num_stages, only.split_line, only.prefix) == (0, 1, None, "")


def test_advance_rule():
    # ρ = 0.8, m = 4: 3/4 stays, 4/4 moves on, 2/2 has too few samples, final stage is absorbing.
    assert next_stage(0, 4, samples=4, passes=3, threshold=0.8, min_samples=4) == 0
    assert next_stage(0, 4, samples=4, passes=4, threshold=0.8, min_samples=4) == 1
    assert next_stage(0, 4, samples=2, passes=2, threshold=0.8, min_samples=4) == 0
    assert next_stage(3, 4, samples=4, passes=4, threshold=0.8, min_samples=4) == 3


def test_advance_drives_a_problem_from_stage_0_to_the_final_stage():
    stage, history = 0, []
    for passes in [1, 4, 2, 4, 4, 4]:  # simulated passes out of 4 samples per iteration
        (row,) = advance([StageResult("p", stage, 4, None, 4, passes)], threshold=0.8, min_samples=4)
        history.append((row["stage_before"], row["stage_after"], row["advanced"]))
        stage = row["stage_after"]
    assert history == [(0, 0, False), (0, 1, True), (1, 1, False), (1, 2, True), (2, 3, True), (3, 3, False)]
