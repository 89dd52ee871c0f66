"""PPOCoder reward: CodeBLEU AST and data-flow matches on hand-checked pairs, compile-only fallback, weighted sum."""

import pytest
from codebleu import calc_codebleu

from stepcoder.rewards.ppocoder import (
    PPOCoderWeights,
    compile_only_reward,
    dataflow_match,
    ppocoder_reward,
    syntax_match,
)

RECURSIVE = (
    "def factorial(n):\n"
    "    if n <= 1:\n"
    "        return 1\n"
    "    return n * factorial(n - 1)\n"
)
RENAMED = (
    "def fact(k):\n"
    "    if k <= 1:\n"
    "        return 1\n"
    "    return k * fact(k - 1)\n"
)
WRONG_OPERATORS = (  # same shape, different operators and literals: a wrong program
    "def factorial(n):\n"
    "    if n >= 1:\n"
    "        return 0\n"
    "    return n + factorial(n + 1)\n"
)
ITERATIVE = (
    "def factorial(n):\n"
    "    result = 1\n"
    "    for i in range(2, n + 1):\n"
    "        result *= i\n"
    "    return result\n"
)
COMMENTED = (
    "def factorial(n):\n"
    '    """Product 1..n."""\n'
    "    # base case\n"
    "    if n <= 1:\n"
    "        return 1\n"
    "    return n * factorial(n - 1)  # recurse\n"
)
UNPARSABLE = "def factorial(n)\n    return 1\n"


def test_identical_programs_match_fully():
    assert syntax_match(RECURSIVE, RECURSIVE) == 1.0
    assert dataflow_match(RECURSIVE, RECURSIVE) == 1.0
    assert ppocoder_reward("pass", RECURSIVE, RECURSIVE) == {"r_exec": 1.0, "r_ast": 1.0, "r_dfg": 1.0, "reward": 3.0}


def test_renamed_variables_match_fully():
    # AST: subtrees are compared as tree-sitter s-expressions, which hold node types and field names but no
    # identifier text. DFG: codebleu renumbers variables var_0, var_1, ... in order of first appearance.
    assert syntax_match(RENAMED, RECURSIVE) == 1.0
    assert dataflow_match(RENAMED, RECURSIVE) == 1.0


def test_operators_and_literals_are_invisible_to_both_matches():
    # Operators are anonymous nodes, absent from s-expressions; literals are compared by type, not value.
    # So a wrong program of the same shape matches fully: only r_exec tells them apart.
    assert syntax_match(WRONG_OPERATORS, RECURSIVE) == 1.0
    assert dataflow_match(WRONG_OPERATORS, RECURSIVE) == 1.0
    assert ppocoder_reward("fail", WRONG_OPERATORS, RECURSIVE)["reward"] == pytest.approx(-0.3 + 2.0)


def test_different_algorithm_matches_little():
    # RECURSIVE has 13 subtrees with children; ITERATIVE contains only two of them:
    # "(parameters (identifier))" and "(binary_operator left: (identifier) right: (integer))" (n + 1 ~ n - 1).
    assert syntax_match(ITERATIVE, RECURSIVE) == pytest.approx(2 / 13)
    # RECURSIVE's 6 normalised edges: the two definitions (factorial, n) with no parents, three `n` from n and one
    # `factorial` from factorial. ITERATIVE has 3 of them: a parameter, a parentless literal `1`, `n` from n.
    assert dataflow_match(ITERATIVE, RECURSIVE) == pytest.approx(3 / 6)
    # Swapped: 2 of ITERATIVE's 14 subtrees, 3 of its 11 edges.
    assert syntax_match(RECURSIVE, ITERATIVE) == pytest.approx(2 / 14)
    assert dataflow_match(RECURSIVE, ITERATIVE) == pytest.approx(3 / 11)


def test_unparsable_candidate_scores_zero_and_compile_error():
    assert syntax_match(UNPARSABLE, RECURSIVE) == 0.0  # codebleu alone would give 1/13 from tree-sitter's recovery
    assert dataflow_match(UNPARSABLE, RECURSIVE) == 0.0
    expected = {"r_exec": -1.0, "r_ast": 0.0, "r_dfg": 0.0, "reward": -1.0}
    assert ppocoder_reward("compile_error", UNPARSABLE, RECURSIVE) == expected
    assert ppocoder_reward(None, UNPARSABLE, RECURSIVE) == expected


def test_compile_error_outcome_zeroes_matches_even_if_this_python_compiles():
    scores = ppocoder_reward("compile_error", RECURSIVE, RECURSIVE)
    assert (scores["r_ast"], scores["r_dfg"], scores["reward"]) == (0.0, 0.0, -1.0)


def test_compile_only_fallback():
    assert compile_only_reward(RECURSIVE) == 1.0
    assert compile_only_reward(UNPARSABLE) == -1.0
    assert compile_only_reward("return 1\n") == -1.0  # ast.parse accepts it, compile does not (like the sandbox)
    assert compile_only_reward("x = 1\x00") == -1.0  # ValueError, not SyntaxError
    assert ppocoder_reward(None, ITERATIVE, RECURSIVE)["r_exec"] == 1.0


def test_weighted_sum_by_hand():
    scores = ppocoder_reward("fail", ITERATIVE, RECURSIVE, weights=(2.0, 0.5, 3.0))
    assert scores["r_exec"] == -0.3
    assert scores["reward"] == pytest.approx(2.0 * -0.3 + 0.5 * (2 / 13) + 3.0 * 0.5)  # = 0.97692...
    assert ppocoder_reward("fail", ITERATIVE, RECURSIVE)["reward"] == pytest.approx(-0.3 + 2 / 13 + 0.5)
    assert PPOCoderWeights() == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("outcome", ["pass", "fail", "runtime_error", "timeout", "compile_error", None])
def test_zero_weights_switch_components_off(outcome):
    exec_only = ppocoder_reward(outcome, ITERATIVE, RECURSIVE, weights=PPOCoderWeights(ast=0.0, dfg=0.0))
    assert exec_only["reward"] == exec_only["r_exec"]
    assert ppocoder_reward(outcome, ITERATIVE, RECURSIVE, weights=(0.0, 0.0, 0.0))["reward"] == 0.0
    ast_only = ppocoder_reward(outcome, ITERATIVE, RECURSIVE, weights=(0.0, 1.0, 0.0))
    assert ast_only["reward"] == ast_only["r_ast"]
    if outcome != "compile_error":  # switched-off parts are still computed, for the rollouts table
        assert ast_only["r_dfg"] == pytest.approx(0.5)


def test_reward_table_is_passed_through():
    table = {"pass": 2.0, "fail": -0.5, "runtime_error": -0.7, "timeout": -0.8, "compile_error": -2.0}
    assert ppocoder_reward("timeout", RECURSIVE, RECURSIVE, table=table)["r_exec"] == -0.8
    with pytest.raises(ValueError, match="valid: pass"):
        ppocoder_reward("crashed", RECURSIVE, RECURSIVE)


def test_reference_without_data_flow():
    no_flow = "def answer():\n    return 42\n"
    with_flow = "def answer():\n    x = 42\n    return x\n"
    assert dataflow_match(no_flow, no_flow) == 1.0  # codebleu alone: 0 and a warning
    assert dataflow_match(with_flow, no_flow) == 0.0
    assert syntax_match(no_flow, no_flow) == 1.0


def test_blank_reference_raises_and_empty_candidate_scores_zero():
    with pytest.raises(ValueError, match="reference"):
        syntax_match(RECURSIVE, "  \n")
    with pytest.raises(ValueError, match="reference"):
        dataflow_match(RECURSIVE, "")
    assert syntax_match("", RECURSIVE) == 0.0  # compiles, but matches nothing
    assert dataflow_match("", RECURSIVE) == 0.0


def test_extra_code_costs_little():
    helper = "def helper(a, b):\n    c = a + b\n    return c * 2\n"
    assert syntax_match(RECURSIVE + "\n\n" + helper, RECURSIVE) == pytest.approx(12 / 13)  # only the root differs
    assert dataflow_match(RECURSIVE + "\n\n" + helper, RECURSIVE) == 1.0
    assert dataflow_match(helper + "\n\n" + RECURSIVE, RECURSIVE) == pytest.approx(4 / 6)  # numbering shifts


@pytest.mark.parametrize("candidate", [RECURSIVE, RENAMED, WRONG_OPERATORS, ITERATIVE, COMMENTED])
@pytest.mark.parametrize("reference", [RECURSIVE, ITERATIVE])
def test_same_as_calc_codebleu(candidate, reference):
    scores = calc_codebleu([reference], [candidate], "python")
    assert syntax_match(candidate, reference) == pytest.approx(scores["syntax_match_score"])
    assert dataflow_match(candidate, reference) == pytest.approx(scores["dataflow_match_score"])


def test_comments_docstrings_and_outer_whitespace_do_not_change_scores():
    for reference in (RECURSIVE, ITERATIVE):
        for commented in (COMMENTED, "\n\n" + COMMENTED + "\n   \n"):
            assert syntax_match(commented, reference) == syntax_match(RECURSIVE, reference)
            assert dataflow_match(commented, reference) == dataflow_match(RECURSIVE, reference)
