"""FGO: a program whose tests run only one branch of an if/else, executed for real in the sandbox."""

import pytest

from stepcoder.completion import to_program
from stepcoder.execution import make_executor
from stepcoder.fgo import executed_program_lines, fgo_mask
from stepcoder.problems import TestSpec
from stepcoder.tokens import token_char_spans

PROGRAM = (
    "def sign(x):\n"          # 1  runs at load
    "    if x > 0:\n"         # 2  runs
    "        return 'pos'\n"  # 3  runs
    "    else:\n"             # 4  header of the branch that never runs
    "        return 'neg'\n"  # 5  never runs
    "\n"                      # 6  blank
    "# done\n"                # 7  comment
)
TESTS = TestSpec(kind="assert", asserts=("assert sign(1) == 'pos'", "assert sign(5) == 'pos'"))


@pytest.fixture(scope="module")
def executed():
    with make_executor("embedded", timeout_s=2, budget_s=5) as ex:
        (result,) = ex.run([(PROGRAM, TESTS)])
    assert result.outcome == "pass"
    return result.executed_lines


def test_sandbox_reports_only_the_lines_that_ran(executed):
    assert sorted(executed) == [1, 2, 3]
    assert executed_program_lines(PROGRAM, executed) == {1, 2, 3}


def test_statement_mapping_of_continuations_and_headers():
    src = "x = [1,\n     2]\ntry:\n    y = 1\nexcept ValueError:\n    y = 2\nfinally:\n    z = 3\n"
    # Ran: 1 (the list, spanning 2 lines), 3, 4, 8 — not the except handler.
    assert executed_program_lines(src, [1, 3, 4, 8]) == {1, 2, 3, 4, 7, 8}


TRY_ELSE = (
    "try:\n"                 # 1
    "    x = int(s)\n"        # 2
    "except ValueError:\n"   # 3
    "    x = 0\n"             # 4
    "else:\n"                # 5
    "    x += 1\n"            # 6
    "finally:\n"             # 7
    "    done = True\n"       # 8
)


def test_try_else_header_does_not_swallow_the_except_handlers():
    # The try succeeded: the handler's lines did not run, the else branch did.
    assert executed_program_lines(TRY_ELSE, [1, 2, 6, 8]) == {1, 2, 5, 6, 7, 8}
    # It raised: the handler ran (its header line and body), the else branch did not.
    assert executed_program_lines(TRY_ELSE, [1, 2, 3, 4, 8]) == {1, 2, 3, 4, 7, 8}


def test_try_else_lines_from_the_real_sandbox():
    program = "def f(s):\n" + "".join("    " + line + "\n" for line in TRY_ELSE.splitlines()) + "    return x\n"
    ok = TestSpec(kind="assert", asserts=("assert f('4') == 5",))
    bad = TestSpec(kind="assert", asserts=("assert f('z') == 0",))
    with make_executor("embedded", timeout_s=2, budget_s=5) as ex:
        r_ok, r_bad = ex.run([(program, ok), (program, bad)])
    assert r_ok.outcome == r_bad.outcome == "pass"
    shift = lambda lines: {n + 1 for n in lines} | {1, 10}  # noqa: E731  (def line and return line)
    assert executed_program_lines(program, r_ok.executed_lines) == shift({1, 2, 5, 6, 7, 8})
    assert executed_program_lines(program, r_bad.executed_lines) == shift({1, 2, 3, 4, 7, 8})


def _expected(program, spans, lines_ran):
    """Independent reference: a token counts if any character of it lies on a line that ran."""
    starts = [0] + [i + 1 for i, ch in enumerate(program) if ch == "\n"]

    def line_of(pos):
        return max(i for i, s in enumerate(starts) if s <= pos) + 1

    return [int(any(line_of(c) in lines_ran for c in range(a, max(b, a + 1)))) for a, b in spans]


def _check_token_by_token(tokenizer, executed):
    prefix = "def sign(x):\n"
    completion = PROGRAM[len(prefix):]
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    spans, n_special = token_char_spans(tokenizer, ids)
    assert n_special == 1
    program = to_program(prefix, completion)
    mask = fgo_mask(program, spans, executed, compile_error=False, eos_tokens=n_special)
    assert len(mask) == len(ids) and mask[-1] == 1  # EOS is kept
    shifted = [(a + len(prefix), b + len(prefix)) for a, b in spans]
    assert mask[:-1] == _expected(program.text, shifted, {1, 2, 3})
    for (a, b), m in zip(spans, mask):
        text = completion[a:b]
        if "neg" in text or "else" in text:
            assert m == 0, text
        if "pos" in text or "return" in text and a < completion.index("else"):
            assert m == 1, text
    assert 0 < sum(mask) < len(mask)


def test_fgo_mask_token_by_token_tiny_tokenizer(tiny_tokenizer, executed):
    _check_token_by_token(tiny_tokenizer, executed)


def test_compile_error_and_missing_coverage_mask_everything():
    program = to_program("", "def f(:\n")
    assert fgo_mask(program, [(0, 3), (3, 8)], [], compile_error=True) == [1, 1]
    assert fgo_mask(program, [(0, 3), (3, 8)], None, compile_error=False, eos_tokens=1) == [1, 1, 1]


def test_tokens_dropped_by_cleaning_are_kept_and_the_stop_fence_is_trained():
    # The closing fence is the model's decision to stop; prose after the code is its choice too. Neither is
    # code that failed to run, so FGO keeps them (they used to get 0).
    completion = "    return 1\n```\nsome prose\n"
    program = to_program("def f():", "\n" + completion)
    spans = [(0, 5), (5, 11), (11, 14), (14, 18), (18, len(completion) + 1)]
    assert fgo_mask(program, spans, [1, 2], compile_error=False) == [1, 1, 1, 1, 1]
    # An unexecuted line stays 0 even when dropped text follows it.
    branch = "\n    if x:\n        return 1\n    return 0\n```"
    program = to_program("def f(x):", branch)
    spans = [(0, 5), (5, 11), (11, 28), (28, 41), (41, 44)]
    assert fgo_mask(program, spans, [1, 2, 4], compile_error=False) == [1, 1, 0, 1, 1]


def test_a_completion_that_is_only_a_closing_fence_has_a_gradient():
    """Regression: 3 of 32 rollouts of a default run were just the fence, scored -0.3 with an all-zero mask."""
    program = to_program("def f(x):\n    return x", "\n```")
    assert program.text == "def f(x):\n    return x\n"
    assert fgo_mask(program, [(0, 1), (1, 4)], [1, 2], compile_error=False) == [1, 1]
    assert fgo_mask(program, [(0, 1), (1, 4)], [1], compile_error=False) == [0, 1]  # the fence, at least


def test_the_last_token_always_carries_the_reward():
    # Cut by the length limit inside a branch that never ran: the last token is still trained.
    completion = "\n    if x:\n        return 1"
    program = to_program("def f(x):", completion)
    spans = [(0, 5), (5, 11), (11, len(completion))]
    assert fgo_mask(program, spans, [1, 2], compile_error=False) == [1, 1, 1]
    assert fgo_mask(program, spans[:2], [1, 2], compile_error=False) == [1, 1]
    # With EOS after it, the EOS token is the last one.
    assert fgo_mask(program, spans, [1, 2], compile_error=False, eos_tokens=1) == [1, 1, 0, 1]


def test_fgo_mask_token_by_token_default_tokenizer(smollm2_tokenizer, executed):
    _check_token_by_token(smollm2_tokenizer, executed)


def test_a_program_killed_mid_test_keeps_every_token():
    """The test a program dies in never reports its lines. Masking by the lines that did report would zero
    exactly the code that killed it; FGO keeps every token instead."""
    from stepcoder.generation.types import Completion
    from stepcoder.problems import Problem
    from stepcoder.rewards import DEFAULT_REWARDS
    from stepcoder.rollouts import PromptPlan, rollout_rows

    completion = "\n    if x > 0:\n        return 1\n    import os\n    os.kill(os.getpid(), 9)\n"
    tests = TestSpec(kind="assert", asserts=("assert f(1) == 1", "assert f(-1) == 1"))
    program = to_program("def f(x):", completion)
    with make_executor("embedded", timeout_s=2, budget_s=5) as ex:
        killed, clean = ex.run([(program.text, tests),
                                (program.text, TestSpec(kind="assert", asserts=tests.asserts[:1]))])
    assert killed.outcome == "runtime_error" and not killed.coverage_complete
    assert clean.outcome == "pass" and clean.coverage_complete
    cuts = [0, completion.index("if"), completion.index("return"), completion.index("import"), completion.index("os.kill")]
    spans = list(zip(cuts, cuts[1:] + [len(completion)]))  # a "token" per line: the last two never ran
    assert fgo_mask(program, spans, clean.executed_lines, compile_error=False) == [1, 1, 1, 0, 1]  # last: stop
    problem = Problem("t/1", "t", "f", "def f(x):\n    return 1\n", tests)
    plan = PromptPlan(problem, 0, 1, None, "def f(x):", "prompt", 0)
    comp = Completion(0, 0, [1], list(range(5)), [0.0] * 5, completion, "stop", tuple(spans), 0)
    rows, _ = rollout_rows("r", 1, [plan], [comp], [program], [killed], dict(DEFAULT_REWARDS), True, "base")
    assert rows[0]["fgo_mask"] == [1, 1, 1, 1, 1] and rows[0]["reward"] == -0.6
    rows, _ = rollout_rows("r", 1, [plan], [comp], [program], [clean], dict(DEFAULT_REWARDS), True, "base")
    assert rows[0]["fgo_mask"] == [1, 1, 1, 0, 1]
