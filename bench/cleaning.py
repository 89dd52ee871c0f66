"""Completion cleaning rules compared on the same generations: greedy pass@1 of a model on MBPP-test.

Cleaning decides which program is run, so it decides the measured pass@1 and the training reward. This script
generates once (greedy, the eval prompt of every problem) and scores the same completions under the current
rule (:func:`stepcoder.completion.to_program`) and under the rule before December 2026, which cut a program at
its first top-level line that "starts with a letter and does not parse on its own" (so `def`, `for`, `if`
lines and broken assignments were cut away, and broken code could pass).

    python bench/cleaning.py [--model smollm2-135m] [--limit N] [--completions FILE.jsonl]

``--completions`` reuses saved generations (JSONL with problem_id, prefix, text), or writes them if missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stepcoder.completion import _parses, fenced_slice, to_program  # noqa: E402
from stepcoder.datasets import load_problems  # noqa: E402
from stepcoder.evaluation import evaluate_programs  # noqa: E402
from stepcoder.execution import make_executor  # noqa: E402


def legacy_program(prefix: str, completion: str) -> str:
    """The cleaning rule as it was before the RL-core fixes (kept here only to measure the difference)."""
    start, end = fenced_slice(completion)  # rules 1 and 2 are unchanged
    if not _parses(prefix + completion[start:end]):
        offset = start
        for line in completion[start:end].splitlines(keepends=True):
            stripped = line.rstrip("\n")
            if offset > start and stripped[:1].isalpha() and not _parses(stripped) \
                    and _parses(prefix + completion[start:offset]):
                end = offset
                break
            offset += len(line)
    return prefix + completion[start:end]


def generate(model: str, problems, out: Path) -> None:
    from stepcoder.evaluation.evaluate import _fits, eval_prompts
    from stepcoder.generation import make_generator
    from stepcoder.models import resolve_model
    from stepcoder.prompts import chat_renderer

    gen = make_generator("vllm", str(resolve_model(model)), dtype="bfloat16", max_model_len=1024, seed=0)
    chat = chat_renderer(gen.tokenizer, "auto")
    prefixes, prompts = eval_prompts(problems, chat)
    fits = _fits(gen, prompts, 256)
    asked = [i for i, ok in enumerate(fits) if ok]
    t = time.perf_counter()
    comps = gen.generate([prompts[i] for i in asked], n=1, temperature=0.0, top_p=1.0, max_new_tokens=256, seed=0,
                         stop=["```"] if chat else None)
    tokens = sum(len(c.completion_ids) for c in comps)
    print(f"generated {len(comps)} completions, {tokens} tokens, {tokens / (time.perf_counter() - t):.0f} tok/s")
    with out.open("w") as f:
        for i, c in zip(asked, comps):
            f.write(json.dumps({"problem_id": problems[i].problem_id, "prefix": prefixes[i], "text": c.text}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--completions", type=Path, default=Path(".stepcoder/bench/mbpp_test_greedy.jsonl"))
    args = ap.parse_args()
    problems = load_problems("mbpp", split="test")[: args.limit]
    if not args.completions.exists():
        args.completions.parent.mkdir(parents=True, exist_ok=True)
        generate(args.model, problems, args.completions)
    saved = {r["problem_id"]: r for r in map(json.loads, args.completions.open())}
    rules = {"legacy (cut at any unparsable top-level line)": lambda r: legacy_program(r["prefix"], r["text"]),
             "current (cut only prose)": lambda r: to_program(r["prefix"], r["text"]).text}
    print(f"MBPP-test, {len(problems)} problems, greedy pass@1 ({len(saved)} answered; a prompt too long for "
          "the context counts as a failure)")
    print(f"{'rule':<48} {'pass@1':>7} {'pass':>5} {'fail':>5} {'runtime':>8} {'timeout':>8} {'compile':>8}")
    passed = {}
    with make_executor("embedded", timeout_s=4.0, budget_s=20.0, coverage=False) as ex:
        for name, rule in rules.items():
            programs = [[rule(saved[p.problem_id])] if p.problem_id in saved else [None] for p in problems]
            res = evaluate_programs(ex, problems, programs, eval_name=name, mode="greedy")
            m = res.metrics()
            passed[name] = {s.problem_id for s in res.scores if s.c}
            counts = {o: round(m.get(f"greedy/outcome/{o}", 0.0) * len(problems)) for o in
                      ("pass", "fail", "runtime_error", "timeout", "compile_error")}
            print(f"{name:<48} {m['greedy/pass@1']:>7.3f} {counts['pass']:>5} {counts['fail']:>5} "
                  f"{counts['runtime_error']:>8} {counts['timeout']:>8} {counts['compile_error']:>8}")
    legacy, current = passed.values()
    print(f"passed under legacy only: {sorted(legacy - current)}")
    print(f"passed under current only: {sorted(current - legacy)}")


if __name__ == "__main__":
    main()
