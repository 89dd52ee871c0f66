"""CCCS split points and stage prefixes on real MBPP solutions, checked against hand-read expectations."""

import gzip
import json
from pathlib import Path

import pytest

from stepcoder.curriculum import (
    GLOBAL_KEY, StageResult, advance, full_stage_problems, next_stage, num_stages, split_points, stage_prefix,
)
from stepcoder.datasets.mbpp import load_mbpp

DATA = Path(__file__).resolve().parents[1] / "data"
PROBLEMS = {p.problem_id: p for p in load_mbpp(split=None)}


def _apps_shortest(folder: str) -> str:
    return min(json.loads((DATA / "apps-samples" / folder / "solutions.json").read_text()), key=len)


def _leetcode(index: int) -> str:
    with gzip.open(DATA / "leetcode" / "LeetCodeDataset-v0.2.0-train.jsonl.gz", "rt") as fh:
        for i, line in enumerate(fh):
            if i == index:
                return json.loads(line)["completion"]
    raise IndexError(index)


SOLUTIONS = {
    "mbpp/601": lambda: PROBLEMS["mbpp/601"].solution,
    "mbpp/605": lambda: PROBLEMS["mbpp/605"].solution,
    "mbpp/603": lambda: PROBLEMS["mbpp/603"].solution,
    "mbpp/2": lambda: PROBLEMS["mbpp/2"].solution,
    "mbpp/611": lambda: PROBLEMS["mbpp/611"].solution,
    "mbpp/625": lambda: PROBLEMS["mbpp/625"].solution,
    "apps/0001": lambda: _apps_shortest("0001"),
    "apps/4184": lambda: _apps_shortest("4184"),
    "leetcode/two-sum": lambda: _leetcode(0),
    "leetcode/median": lambda: _leetcode(3),
}


@pytest.mark.parametrize(
    "key, expected",
    [
        ("mbpp/601", [8, 9, 10, 13, 14]),  # nested for/for/if, then for/if; class + method have none
        ("mbpp/605", [2, 3, 4, 6, 8]),  # if > for > if/else, nested, plus both else: headers
        ("mbpp/603", [3, 6, 9]),  # for, while, nested while
        ("mbpp/2", []),  # no conditionals: a single, full-generation stage
        ("mbpp/611", []),  # a one-liner with a generator expression: comprehensions are not statements
        ("mbpp/625", []),  # straight-line swap
        ("apps/0001", [3, 7, 9, 11, 13]),  # stdin program: for > if/elif/elif/else chain
        ("apps/4184", []),  # conditional *expressions* are not split points
        ("leetcode/two-sum", [4, 6]),  # class Solution: for > if
        ("leetcode/median", [4, 6, 8]),  # nested helper function with three guard ifs
    ],
)
def test_split_points_of_real_solutions(key, expected):
    assert split_points(SOLUTIONS[key]()) == expected


def test_try_with_match_and_except_are_split_points():
    src = (
        "def f(p, x):\n"           # 1
        "    try:\n"               # 2
        "        with open(p) as h:\n"  # 3
        "            d = h.read()\n"    # 4
        "    except OSError:\n"     # 5
        "        d = ''\n"          # 6
        "    match x:\n"            # 7
        "        case 1:\n"         # 8
        "            return d\n"    # 9
        "    return None\n"         # 10
    )
    assert split_points(src) == [2, 3, 5, 7]
    assert split_points(src, ("Try", "With")) == [2, 3]
    with pytest.raises(ValueError, match="valid: If, Else"):
        split_points(src, ("Lambda",))


def test_class_solution_final_stage_keeps_the_starter_code():
    sol = _leetcode(0)
    starter = "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n"
    splits = split_points(sol)
    final = stage_prefix(sol, splits, num_stages(splits) - 1, starter_code=starter)
    assert (final.split_line, final.prefix) == (None, starter.rstrip("\n"))
    s0 = stage_prefix(sol, splits, 0)
    assert s0.prefix == "".join(sol.splitlines(keepends=True)[:5]).rstrip()  # up to `if y in m:` at line 6


def test_elif_chain_and_configurable_node_set():
    src = "def f(x):\n    if x < 0:\n        return -1\n    elif x == 0:\n        return 0\n    else:\n        return 1\n"
    assert split_points(src) == [2, 4, 6]  # elif is its own If node; else: is its header line
    assert split_points(src, ("If",)) == [2, 4]
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
    assert (s0.stage, s0.split_line, s0.prefix) == (0, 9, "".join(lines[:8]).rstrip())
    s1 = stage_prefix(sol, splits, 1)
    assert (s1.split_line, s1.prefix) == (6, "".join(lines[:5]).rstrip())
    s2 = stage_prefix(sol, splits, 2)
    assert (s2.split_line, s2.prefix) == (3, "def get_ludic(n):\n\tludics = []")
    final = stage_prefix(sol, splits, 3, starter_code="def get_ludic(n):")
    assert (final.split_line, final.prefix) == (None, "def get_ludic(n):")
    assert stage_prefix(sol, splits, 99).stage == 3  # clamps to the final stage
    # Prefixes are whole lines and shrink monotonically.
    # The prompt ends on the last line's text: the completion starts with the newline and the indentation.
    assert not any(p.endswith(("\n", " ", "\t")) for p in (s0.prefix, s1.prefix, s2.prefix))
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


def test_full_stage_practice_does_not_move_a_problem():
    rows = advance([StageResult("a", 1, 4, 7, 4, 4, full_stage=True), StageResult("b", 1, 4, 7, 4, 4)], 0.8, 4)
    assert [(r["problem_id"], r["stage_after"], r["full_stage"]) for r in rows] == [("a", 1, True), ("b", 2, False)]
    ids = [f"p{i}" for i in range(20)]
    chosen = full_stage_problems(ids, 0.1, "0:1")
    assert len(chosen) == 2 and chosen == full_stage_problems(ids, 0.1, "0:1") and chosen <= set(ids)
    assert full_stage_problems(ids, 0.0, "0:1") == set()


def test_global_mode_moves_one_shared_stage_on_the_batch_pass_rate():
    results = [StageResult("a", 1, 5, None, 4, 4), StageResult("b", 1, 2, None, 4, 3)]
    rows = advance(results, 0.8, 2, mode="global", global_stage=1)  # 7/8 = 0.875 ≥ 0.8 → g: 1 → 2
    by_id = {r["problem_id"]: r for r in rows}
    assert by_id[GLOBAL_KEY]["stage_after"] == 2 and by_id[GLOBAL_KEY]["pass_rate"] == pytest.approx(0.875)
    assert by_id["a"]["stage_after"] == 2 and by_id["b"]["stage_after"] == 1  # b has only 2 stages
    with pytest.raises(ValueError, match="valid: per_problem, global"):
        advance(results, 0.8, 2, mode="lockstep")


def test_global_stage_never_moves_backwards_on_a_shallow_batch():
    """Regression: g = 5 and a batch whose deepest problem has 3 stages used to give g = 2 on a passing batch."""
    shallow = [StageResult("a", 2, 3, None, 4, 4), StageResult("b", 1, 2, None, 4, 4)]
    for passes in (4, 0):  # passing or failing, the shared index stays
        rows = advance([shallow[0], StageResult("b", 1, 2, None, 4, passes)], 0.5, 2, mode="global", global_stage=5)
        assert {r["problem_id"]: r["stage_after"] for r in rows}[GLOBAL_KEY] == 5
    deep = [StageResult("c", 5, 9, None, 4, 4)]
    (row, glob) = advance(deep, 0.5, 2, mode="global", global_stage=5)
    assert glob["stage_after"] == 6 and row["stage_after"] == 6  # a deeper batch still moves it on
    for g in range(0, 12):  # property: whatever the batch, g never decreases
        for batch in (shallow, deep, shallow + deep):
            rows = advance(batch, 0.5, 2, mode="global", global_stage=g)
            assert rows[-1]["stage_after"] >= g


def test_advance_survives_a_restart_through_the_store(tmp_path):
    """The advance rule over simulated pass rates, with the state written to and reloaded from a real store."""
    from storage import open_store
    from storage.run_state import load_run_state

    store = open_store(str(tmp_path / "store"))
    for it, passes in enumerate([1, 4, 2, 4, 4, 4], start=1):
        state = load_run_state(store, "sim")  # a fresh "process" each iteration: state only from the store
        assert state.iteration == it
        stage = state.stages.get("p", 0)
        rows = advance([StageResult("p", stage, 4, None, 4, passes)], 0.8, 4)
        store.stage("sim", it, "curriculum", rows)
        store.stage("sim", it, "iterations", [{"checkpoint_uri": f"/ckpt/{it}"}])
        store.commit("sim", it)
    final = load_run_state(store, "sim")
    assert final.stages == {"p": 3} and final.checkpoint_uri == "/ckpt/6" and final.iteration == 7


def test_sampling_revisits_every_problem_once_per_pass_over_the_pool():
    """The curriculum can only move a problem it sees again: every problem comes back within each pass."""
    from stepcoder.problems import Problem, TestSpec
    from stepcoder.rollouts import sample_problems

    pool = [Problem(f"p/{i}", "p", "s", "x = 1\n", TestSpec(kind="assert")) for i in range(37)]
    k, n = 8, len(pool)
    batches = {it: [p.problem_id for p in sample_problems(pool, k, 0, it)] for it in range(1, 30)}
    assert all(len(b) == len(set(b)) == k for b in batches.values())
    assert batches[3] == [p.problem_id for p in sample_problems(list(reversed(pool)), k, 0, 3)]  # deterministic
    for epoch in range(5):  # the iterations whose windows touch pass `epoch` see every problem
        its = [it for it in batches if (it - 1) * k < (epoch + 1) * n and it * k > epoch * n]
        assert {pid for it in its for pid in batches[it]} == {p.problem_id for p in pool}
    assert batches[1] != batches[6]  # a new order each pass
    assert len(sample_problems(pool[:3], 8, 0, 1)) == 3


def test_stage_counts_per_iteration_hand_computed():
    from stepcoder.curriculum import stage_counts

    rows = [
        {"iteration": 1, "problem_id": "a", "stage_before": 0, "stage_after": 1, "full_stage": False},
        {"iteration": 1, "problem_id": "b", "stage_before": 0, "stage_after": 0, "full_stage": False},
        {"iteration": 1, "problem_id": "c", "stage_before": 0, "stage_after": 0, "full_stage": True},  # practice
        {"iteration": 2, "problem_id": "a", "stage_before": 1, "stage_after": 2, "full_stage": False},
        {"iteration": 2, "problem_id": GLOBAL_KEY, "stage_before": 0, "stage_after": 1, "full_stage": False},
        {"iteration": 3, "problem_id": "b", "stage_before": 0, "stage_after": 1, "full_stage": False},
    ]
    assert stage_counts(rows) == [
        {"iteration": 1, "problems": 2, "advanced": 1, "stages": {0: 1, 1: 1}},
        {"iteration": 2, "problems": 2, "advanced": 1, "stages": {0: 1, 2: 1}},
        {"iteration": 3, "problems": 2, "advanced": 1, "stages": {1: 1, 2: 1}},
    ]
    assert stage_counts(list(reversed(rows))) == stage_counts(rows)  # order of rows does not matter
