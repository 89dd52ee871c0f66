"""MBPP+ (EvalPlus): rebuilding JSON inputs to the base asserts' types, the shipped expected outputs, the loader,
and the tests on the real sandbox (canonical solutions pass; a solution right on the base tests but wrong on an
edge case fails, as MBPP+ intends)."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil

import pytest

from stepcoder.datasets import load_problems
from stepcoder.datasets.errors import DatasetError
from stepcoder.datasets.mbppplus import (DEFAULT_PATH, EXPECTED_PATH, MIXED, NO_VALUE, Unconformable, agrees,
                                         arg_templates, base_calls, conform, same, template)
from stepcoder.datasets.splits import load_eval_split
from stepcoder.execution import make_executor
from stepcoder.execution.driver import plan_for
from stepcoder.prompts import build_prompt


# ---------------------------------------------------------------- argument types (pure)


def test_template_describes_containers():
    assert template(3) is None and template("s") is None
    assert template((1, 2)) == ("tuple", None)
    assert template(([1], [2, 3])) == ("tuple", ("list", None))
    assert template([(1, "a"), (2, "b")]) == ("list", ("tuple", None))
    assert template([(1,), [2]]) == ("list", MIXED)  # elements of two shapes
    assert template({"a": (1, 2)}) == ("dict", ("tuple", None))
    assert template({1: 2}) == MIXED  # JSON made its keys strings: nothing to rebuild them from


def test_conform_rebuilds_json_along_the_template():
    assert same(conform([[1, 2], [3]], ("tuple", ("list", None))), ([1, 2], [3]))
    assert same(conform([1, 2, 2], ("set", None)), {1, 2})
    assert same(conform([[1, [2]]], ("list", ("tuple", None))), [(1, [2])])  # deeper: JSON's own lists stay
    assert same(conform({"k": [1]}, ("dict", ("tuple", None))), {"k": (1,)})
    with pytest.raises(Unconformable):
        conform(5, ("tuple", None))
    with pytest.raises(Unconformable):
        conform([[1], [2]], ("set", ("list", None)))  # a list cannot be a set's element


def test_same_is_strict_about_types():
    assert same((1, [2.0]), (1, [2.0]))
    assert not same((1, 2), [1, 2])
    assert not same([1], [True])
    assert not same([1.0], [1])


def test_base_calls_take_literal_arguments_the_comparison_and_the_expected_value():
    text = ("import math\n"
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
            "assert set(f2(x)) == set((1,))\n"
            "assert math.isclose(area(2.0), 12.56, rel_tol=0.001)\n")
    assert base_calls(text, "similar_elements") == [(((3, 4, 5, 6), (5, 7, 4, 10)), "eq", (4, 5))]
    assert base_calls(text, "area") == [((2.0,), "eq", 12.56)]
    assert base_calls("assert set(f([1, 2])) == set([2, 1])", "f") == [(([1, 2],), "set", {1, 2})]
    assert base_calls("assert not f('a')", "f") == [(("a",), "eq", NO_VALUE)]
    assert base_calls("assert f(x) == 1", "f") == []  # not a literal: no type information


def test_agrees_with_the_base_asserts():
    assert agrees([12, 18], {18, 12}, "set") and agrees((5, 4), [4, 5], "set")
    assert agrees(12.5663, 12.56, "eq") and not agrees(15.0, 7, "eq")  # isclose(rel_tol=0.001) and task 295
    assert agrees(False, NO_VALUE, "eq") and not agrees(False, True, "eq")  # task 164


def test_arg_templates_must_rebuild_the_base_inputs_exactly():
    calls = base_calls("assert f((1, 2), [3]) == 1\nassert f((4,), []) == 2", "f")
    assert arg_templates(calls, [[[1, 2], [3]], [[4], []]]) == [("tuple", None), ("list", None)]
    assert arg_templates(calls, [[[1, 2], [3]], [[4], [9]]]) is None  # JSON base input differs from the assert
    assert arg_templates(calls, [[[1, 2]], [[4]]]) is None  # wrong number of arguments


def test_plan_for_finds_a_shadowed_builtin_behind_a_test_helper():
    """MBPP+ task 126 defines `sum(a, b)`; its tests call it inside the comparison helper of the setup."""
    plan = plan_for("def __eq_helper__(a, b):\n    return a == b\n", ("assert __eq_helper__(sum(10, 15), 6.0)",))
    assert plan is not None and plan.remote_names == ("sum",)
    assert plan_for("", ("assert sum(10, 15) == 6",)).remote_names == ("sum",)


# ---------------------------------------------------------------- the shipped data


def test_expected_outputs_belong_to_the_shipped_data():
    with gzip.open(EXPECTED_PATH, "rt") as f:
        expected = json.load(f)
    assert expected["source_sha256"] == hashlib.sha256(DEFAULT_PATH.read_bytes()).hexdigest(), \
        "MbppPlus.jsonl changed: python -m stepcoder.datasets.mbppplus_expected"
    tasks = expected["tasks"]
    assert len(tasks) == 399 and expected["totals"]["inputs"] == 42082
    for task_id, t in tasks.items():  # every plus input is kept, dropped with a reason, or its task left out
        accounted = len(t["plus"]) + sum(t["dropped"].values())
        assert accounted == t["inputs"] or (t.get("unusable") and accounted == 0), task_id
    kept = sum(len(t["plus"]) for t in tasks.values())
    assert kept == expected["totals"]["kept"] and kept / 42082 > 0.95
    assert sorted(k for k, t in tasks.items() if t.get("unusable")) == [
        "Mbpp/164", "Mbpp/295", "Mbpp/737", "Mbpp/787", "Mbpp/794"]


def test_eval_splits_and_records():
    held_out = load_eval_split("mbpp-plus-test")
    assert len(held_out) == 236 and all(11 <= p.meta["task_id"] <= 510 for p in held_out)
    every = load_eval_split("mbpp-plus")
    # left out: canonical solutions returning re.Match objects (737, 787, 794) or contradicting their own base
    # asserts (164: `are_equivalent(23, 47) == True`, canonical False; 295: `sum_div(8) == 7`, canonical 15.0)
    assert len(every) == 394
    assert {f"mbpp-plus/{n}" for n in (164, 295, 737, 787, 794)}.isdisjoint(p.problem_id for p in every)
    p = next(q for q in held_out if q.problem_id == "mbpp-plus/11")
    assert p.dataset == "mbpp-plus" and p.entry_point == "remove_Occ"
    assert p.statement.startswith("Write a python function to remove first and last occurrence")
    assert p.meta["base_tests"] == 3 and p.meta["plus_tests"] > 90
    assert len(p.tests.asserts) == p.meta["base_tests"] + p.meta["plus_tests"]
    assert p.meta["examples"][0] == 'assert remove_Occ("hello","l") == "heo"'
    prompt = build_prompt(p, "")
    assert 'assert remove_Occ("hello","l") == "heo"' in prompt and "__mbpp_plus_eq__" not in prompt


def test_a_malformed_record_is_named_and_the_rest_loads(tmp_path, caplog):
    lines = DEFAULT_PATH.read_text().splitlines()[:3]
    bad = json.loads(lines[1])
    bad["entry_point"] = "not a name"
    (tmp_path / "MbppPlus.jsonl").write_text("\n".join([lines[0], json.dumps(bad), lines[2], "{oops"]) + "\n")
    shutil.copy(EXPECTED_PATH, tmp_path / "expected.json.gz")
    problems = load_problems("mbpp-plus", str(tmp_path / "MbppPlus.jsonl"))
    assert [p.problem_id for p in problems] == ["mbpp-plus/2", "mbpp-plus/4"]
    assert f"{bad['task_id']}: entry_point 'not a name' is not a Python name" in caplog.text
    assert "MbppPlus.jsonl:4" in caplog.text  # the broken JSON line, by file and line
    (tmp_path / "expected.json.gz").unlink()
    with pytest.raises(DatasetError, match="expected outputs missing"):
        load_problems("mbpp-plus", str(tmp_path / "MbppPlus.jsonl"))


# ---------------------------------------------------------------- on the real sandbox

SPECIAL = {"mbpp-plus/2",  # a set's order: compared as sets
           "mbpp-plus/126",  # defines `sum`, called inside the comparison helper
           "mbpp-plus/117", "mbpp-plus/82"}  # float outputs, compared with a tolerance


@pytest.fixture(scope="module")
def sandbox():
    # limits far above what any of these programs needs: nothing here may depend on the machine's speed
    with make_executor("embedded", workers=2, cache=False, timeout_s=60.0, budget_s=600.0) as ex:
        yield ex


def test_canonical_solutions_pass_every_test(sandbox):
    problems = [p for i, p in enumerate(load_eval_split("mbpp-plus")) if i % 8 == 0 or p.problem_id in SPECIAL]
    assert SPECIAL <= {p.problem_id for p in problems}
    results = sandbox.run([(p.solution, p.tests) for p in problems])
    failed = [(p.problem_id, r.outcome, r.error, [t.detail for t in r.tests if t.status != "pass"][:2])
              for p, r in zip(problems, results) if r.outcome != "pass"]
    assert not failed
    assert {t.isolation for r in results for t in r.tests} == {"split"}
    assert sum(len(r.tests) for r in results) > 50 * 90


def test_plus_tests_catch_what_the_base_tests_miss(sandbox):
    p = next(q for q in load_eval_split("mbpp-plus-test") if q.problem_id == "mbpp-plus/11")
    naive = ("def remove_Occ(s, ch):\n"  # right on the base tests; raises where `ch` does not occur
             "    i, j = s.index(ch), s.rindex(ch)\n"
             "    return s[:i] + s[i + 1:j] + s[j + 1:]\n")
    result = sandbox.run([(naive, p.tests)])[0]
    base, plus = result.tests[:p.meta["base_tests"]], result.tests[p.meta["base_tests"]:]
    assert all(t.status == "pass" for t in base)
    assert result.outcome != "pass" and any(t.status != "pass" for t in plus)


def test_outputs_the_base_asserts_compare_as_sets_pass_in_any_order(sandbox):
    p = next(q for q in load_eval_split("mbpp-plus-test") if q.problem_id == "mbpp-plus/111")
    ordered = ("def common_in_nested_lists(nested):\n"  # sorted, where the canonical solution returns a set's order
               "    return sorted(set.intersection(*map(set, nested)))\n")
    result = sandbox.run([(ordered, p.tests)])[0]
    assert result.outcome == "pass", [t.detail for t in result.tests if t.status != "pass"][:3]


def test_set_outputs_pass_in_any_order(sandbox):
    p = next(q for q in load_eval_split("mbpp-plus") if q.problem_id == "mbpp-plus/2")
    reordered = "def similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b), key=repr, reverse=True))\n"
    wrong = "def similar_elements(a, b):\n    return tuple(set(a) | set(b))\n"
    ok, bad = sandbox.run([(reordered, p.tests), (wrong, p.tests)])
    assert ok.outcome == "pass", [t.detail for t in ok.tests if t.status != "pass"][:3]
    assert bad.outcome == "fail"
