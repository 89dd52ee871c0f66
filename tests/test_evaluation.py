"""pass@k against hand-computed values and the exact formula; metric rows; evaluation end to end: canonical
solutions as samples score pass@1 = 1.0 on the validated subset; a real tiny-model eval lands in the store."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import pytest

from stepcoder.datasets import load_problems
from stepcoder.datasets.apps import SAMPLES_PATH
from stepcoder.datasets.splits import by_ids, random_subset
from stepcoder.datasets.validate import validate_problems
from stepcoder.evaluation import (
    ProblemScore,
    evaluate,
    evaluate_programs,
    mean_pass_at_k,
    metric_rows,
    pass_at_k,
)
from stepcoder.evaluation.evaluate import eval_mode, eval_prompts
from stepcoder.execution import make_executor
from stepcoder.generation.types import Completion

# ---------------------------------------------------------------- pass@k


@pytest.mark.parametrize("n, c, k, expected", [
    (5, 2, 1, 0.4),  # k = 1 is c / n
    (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (10, 1, 10, 1.0),  # n = k: all samples drawn, one is correct
    (3, 0, 3, 0.0),  # n = k and c = 0
    (10, 0, 1, 0.0),  # c = 0
    (4, 4, 2, 1.0),  # c = n
    (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct sample
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
    (200, 2, 100, 1 - (100 * 99) / (200 * 199)),  # C(198,100)/C(200,100) = (100*99)/(200*199)
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_binomial_formula_exactly():
    for n in range(1, 16):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_is_monotone_in_k_and_c():
    for n in (5, 12):
        for c in range(n + 1):
            values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert values == sorted(values)
        for k in range(1, n + 1):
            values = [pass_at_k(n, c, k) for c in range(n + 1)]
            assert values == sorted(values)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="need 1 <= k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="need 0 <= c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="need 1 <= k <= n"):
        pass_at_k(3, 1, 0)
    with pytest.raises(TypeError):
        pass_at_k(3.0, 1, 1)
    assert mean_pass_at_k([(5, 2), (5, 0), (5, 5)], 1) == pytest.approx((0.4 + 0 + 1) / 3)
    assert math.isnan(mean_pass_at_k([], 1))


# ---------------------------------------------------------------- metric rows


def test_metric_rows_with_difficulty_breakdown():
    scores = [
        ProblemScore("a/1", "interview", 4, 1, {"pass": 1, "fail": 3}),
        ProblemScore("a/2", "introductory", 4, 4, {"pass": 4}),
        ProblemScore("a/3", "interview", 4, 0, {"timeout": 2, "compile_error": 2}),
    ]
    rows = metric_rows(scores, (1, 2), "sampled", "apps-x", "apps", "ckpt/iter-3")
    assert all(set(r) == {"eval_name", "dataset", "metric", "value", "checkpoint_uri"} for r in rows)
    assert {r["eval_name"] for r in rows} == {"apps-x"} and {r["checkpoint_uri"] for r in rows} == {"ckpt/iter-3"}
    got = {r["metric"]: r["value"] for r in rows}
    p2 = {0: 0.0, 1: 0.5, 4: 1.0}  # pass@2 with n = 4: 1 - C(4-c, 2)/6
    assert got == pytest.approx({
        "sampled/problems": 3, "sampled/samples": 12,
        "sampled/pass@1": (0.25 + 1 + 0) / 3,
        "sampled/pass@1/introductory": 1.0, "sampled/pass@1/interview": 0.125,
        "sampled/pass@2": (p2[1] + p2[4] + p2[0]) / 3,
        "sampled/pass@2/introductory": 1.0, "sampled/pass@2/interview": 0.25,
        "sampled/problems/introductory": 1, "sampled/problems/interview": 2,
        "sampled/outcome/compile_error": 2 / 12, "sampled/outcome/fail": 3 / 12, "sampled/outcome/pass": 5 / 12,
        "sampled/outcome/timeout": 2 / 12,
    })
    # APPS order, not alphabetical: introductory, interview, competition.
    assert [r["metric"] for r in rows if r["metric"].startswith("sampled/pass@1/")] == [
        "sampled/pass@1/introductory", "sampled/pass@1/interview"]
    plain = metric_rows([ProblemScore("m/1", None, 1, 1, {"pass": 1})], (1,), "greedy", "mbpp", "mbpp")
    assert [r["metric"] for r in plain] == ["greedy/problems", "greedy/samples", "greedy/pass@1",
                                           "greedy/outcome/pass"]


def test_rows_fit_the_evals_table(tmp_path):
    from storage import open_store

    rows = metric_rows([ProblemScore("m/1", "easy", 2, 1, {"pass": 1, "fail": 1})], (1, 2), "sampled", "e", "d")
    store = open_store(str(tmp_path / "store"))
    store.stage("eval", 1, "evals", rows)
    store.commit("eval", 1)
    back = store.read("evals", run="eval").to_pylist()
    assert sorted((r["metric"], r["value"]) for r in back) == sorted((r["metric"], r["value"]) for r in rows)


def test_eval_modes():
    assert eval_mode(1, 0.0) == "greedy" and eval_mode(5, 0.8) == "sampled"
    with pytest.raises(ValueError, match="use n=1"):
        eval_mode(4, 0.0)


# ---------------------------------------------------------------- canonical solutions as samples


@pytest.fixture(scope="module")
def ex():
    with make_executor("embedded", timeout_s=4.0, budget_s=20.0, workers=2, coverage=False) as executor:
        yield executor


@pytest.fixture(scope="module")
def validated(ex):
    """A validated mixed subset: APPS samples (with difficulties), MBPP, HumanEval and LeetCode, plus one MBPP
    problem whose assert expects a wrong value, which validation must drop. (It used to be MBPP 123, whose
    canonical solution is correct but slow: a fast machine accepted it. A wrong answer is rejected everywhere.)"""
    (good,) = by_ids(load_problems("mbpp", split="test"), ["11"])
    wrong = dataclasses.replace(good, problem_id="mbpp/wrong-expected",
                                tests=dataclasses.replace(good.tests, asserts=good.tests.asserts[:1] + (
                                    good.tests.asserts[1].replace("==", "!="),)))
    problems = (load_problems("apps", str(SAMPLES_PATH))
                + [wrong]
                + random_subset(load_problems("mbpp", split="test"), 30, seed=1)
                + random_subset(load_problems("humaneval"), 20, seed=1)
                + random_subset(load_problems("leetcode", split="test"), 20, seed=1))
    report = validate_problems(problems, ex)
    assert report.rejected_ids() == ["mbpp/wrong-expected"]
    return report.clean


def test_canonical_solutions_as_samples_score_pass_at_1_of_one(ex, validated):
    result = evaluate_programs(ex, validated, [[p.solution] for p in validated], eval_name="canonical")
    m = result.metrics()
    assert m["sampled/pass@1"] == 1.0 and m["sampled/problems"] == len(validated) == 75
    assert m["sampled/pass@1/introductory"] == m["sampled/pass@1/interview"] == m["sampled/pass@1/competition"] == 1
    assert m["sampled/pass@1/easy"] == 1.0 and m["sampled/outcome/pass"] == 1.0
    assert result.dataset == "apps,humaneval,leetcode,mbpp"


def test_one_good_one_bad_sample_per_problem(ex, validated):
    few = validated[:6]
    programs = [[p.solution, "raise SystemExit(3)\n"] for p in few]
    m = evaluate_programs(ex, few, programs, eval_name="half", ks=(1, 2)).metrics()
    assert m["sampled/pass@1"] == pytest.approx(0.5) and m["sampled/pass@2"] == 1.0
    assert m["sampled/outcome/pass"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"every k must be in \[1, n=2\]"):
        evaluate_programs(ex, few, programs, eval_name="x", ks=(3,))


class CanonicalGenerator:
    """Test double for the vLLM generator: sample 0 of each prompt continues it with the canonical solution (later
    samples are broken when ``break_extra``). With ``max_model_len`` it also has a tokenizer that counts
    characters, so long prompts do not fit."""

    def __init__(self, problems, chat_template=None, break_extra=False, max_model_len=None):
        prefixes, prompts = eval_prompts(problems, chat_template)
        self.continuation = {}
        for p, prefix, prompt in zip(problems, prefixes, prompts):
            assert p.solution.startswith(prefix), p.problem_id
            self.continuation[prompt] = p.solution[len(prefix):]
        self.prompts, self.break_extra, self.calls = prompts, break_extra, []
        if max_model_len is not None:
            self.max_model_len = max_model_len
            self.tokenizer = lambda text, add_special_tokens=False: {"input_ids": list(text)}

    def generate(self, prompts, n, temperature, top_p, max_new_tokens, seed, stop=None):
        self.calls.append(dict(n=n, temperature=temperature, stop=stop, prompts=len(prompts)))
        return [Completion(i, j, [], [], [], self.continuation[prompt] if j == 0 or not self.break_extra
                           else "    return None\n", "stop")
                for i, prompt in enumerate(prompts) for j in range(n)]


def test_evaluate_through_prompts_and_programs(ex, validated):
    """MBPP (no starter code) and HumanEval (the prompt is the starter code): the full prompt → completion →
    program path with a generator that writes the canonical continuation."""
    problems = [p for p in validated if p.dataset in ("mbpp", "humaneval")]
    gen = CanonicalGenerator(problems)
    assert all(prompt.endswith(p.starter_code.rstrip()) for prompt, p in zip(gen.prompts, problems))
    result = evaluate(gen, ex, problems, eval_name="greedy-canonical", checkpoint_uri="base")
    assert result.mode == "greedy" and result.metrics()["greedy/pass@1"] == 1.0
    assert gen.calls == [dict(n=1, temperature=0.0, stop=None, prompts=len(problems))]
    assert {r["checkpoint_uri"] for r in result.rows} == {"base"}

    chat = lambda text: f"<user>{text}</user>"  # noqa: E731
    gen = CanonicalGenerator(problems, chat, break_extra=True)
    m = evaluate(gen, ex, problems, eval_name="sampled", n=4, ks=(1, 4), temperature=0.8,
                 chat_template=chat).metrics()
    assert m["sampled/pass@1"] == pytest.approx(0.25) and m["sampled/pass@4"] == 1.0
    assert gen.calls[0]["stop"] == ["```"]  # chat prompts end at the closing code fence


def test_prompts_that_do_not_fit_count_as_failures(ex, validated):
    problems = [p for p in validated if p.dataset in ("mbpp", "humaneval")][:10]
    lengths = [len(prompt) for prompt in eval_prompts(problems, None)[1]]
    limit = sorted(lengths)[4] + 64
    fit = sum(n + 64 <= limit for n in lengths)
    gen = CanonicalGenerator(problems, max_model_len=limit)
    m = evaluate(gen, ex, problems, eval_name="ctx", max_new_tokens=64).metrics()
    assert m["greedy/problems"] == 10 and m["greedy/pass@1"] == pytest.approx(fit / 10)
    assert m["greedy/outcome/prompt_too_long"] == pytest.approx(1 - fit / 10)
    assert gen.calls[0]["prompts"] == fit >= 5


# ---------------------------------------------------------------- the real thing: tiny model, vLLM, CLI, store


@pytest.mark.slow
def test_eval_command_with_the_tiny_model_writes_the_evals_table(tiny_model, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from flows import cli_data
    from storage import open_store

    monkeypatch.setattr(cli_data.console, "width", 200)
    app = typer.Typer()
    app.command("eval")(cli_data.eval_command)
    app.command("other")(lambda: None)  # two commands: typer keeps "eval" as a subcommand name
    store = tmp_path / "store"
    args = ["eval", "--checkpoint", str(tiny_model), "--dataset", f"apps:{SAMPLES_PATH}", "--n", "2", "--k", "1",
            "--k", "2", "--temperature", "1.0", "--max-new-tokens", "48", "--dtype", "float32",
            "--max-model-len", "768", "--store", str(store), "--run", "evals", "--workers", "2", "--timeout", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = open_store(str(store)).read("evals", run="evals").to_pylist()
    metrics = {r["metric"]: r["value"] for r in rows}
    assert metrics["sampled/problems"] == 5 and metrics["sampled/samples"] == 10
    assert {"sampled/pass@1", "sampled/pass@2", "sampled/pass@1/introductory", "sampled/pass@2/competition"} \
        <= set(metrics)
    assert 0.0 <= metrics["sampled/pass@1"] <= metrics["sampled/pass@2"] <= 1.0
    assert {r["checkpoint_uri"] for r in rows} == {str(tiny_model.resolve())}
    assert {r["eval_name"] for r in rows} == {f"apps:{SAMPLES_PATH}"}
    # Another eval goes to the next free iteration of the run; a committed iteration is never overwritten.
    rows = [{k: r[k] for k in ("eval_name", "dataset", "metric", "value", "checkpoint_uri")} for r in rows]
    assert cli_data.write_eval_rows(str(store), "evals", None, rows) == 2
    assert open_store(str(store)).committed_iterations("evals") == [1, 2]
    with pytest.raises(typer.Exit):
        cli_data.write_eval_rows(str(store), "evals", 1, rows)
