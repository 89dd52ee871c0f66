"""Which assert tests run split (test driver outside the program's process), and do canonical solutions still pass?

    .venv/bin/python bench/split_tests.py [--datasets mbpp,humaneval,leetcode] [--limit N]

For each dataset: the share of tests that run split (the rest run in the program's process under the guard,
``TestResult.isolation``), and each canonical solution's outcome both ways, with the problems whose outcome
differs. Also the wall time of the whole set each way (one run, side by side).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stepcoder.datasets import load_problems  # noqa: E402
from stepcoder.execution import make_executor  # noqa: E402

SOURCES = {"mbpp": ("mbpp", None), "humaneval": ("humaneval", None), "leetcode": ("leetcode", None)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="mbpp,humaneval,leetcode")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows = []
    opts = {"timeout_s": 10.0, "budget_s": 60.0, "workers": args.workers, "cache": False}
    with make_executor(split_tests=False, **opts) as inproc, make_executor(**opts) as split:
        for name in args.datasets.split(","):
            dataset, split_name = SOURCES[name]
            problems = [p for p in load_problems(dataset, split=split_name) if p.tests.kind == "assert"]
            problems = problems[: args.limit]
            jobs = [(p.solution, p.tests) for p in problems]
            t = time.perf_counter()
            a = inproc.run(jobs, progress=True)
            t_in = time.perf_counter() - t
            t = time.perf_counter()
            b = split.run(jobs, progress=True)
            t_split = time.perf_counter() - t
            tests = Counter(x.isolation for r in b for x in r.tests)
            differ = [(p.problem_id, ra.outcome, rb.outcome, next((x.detail for x in rb.tests if x.status != "pass"), ""))
                      for p, ra, rb in zip(problems, a, b) if ra.outcome != rb.outcome]
            rows.append((name, len(problems), sum(tests.values()), tests["split"],
                         sum(r.outcome == "pass" for r in a), sum(r.outcome == "pass" for r in b), t_in, t_split))
            for pid, oa, ob, detail in differ[:40]:
                print(f"  {pid}: in-process {oa}, split {ob}: {detail[:120]}")
    print(f"\n{'dataset':<10} {'problems':>8} {'tests':>6} {'split':>7} {'canonical pass in-process':>26} "
          f"{'split':>6} {'wall in-process s':>18} {'split s':>8}")
    for name, n, total, n_split, pass_in, pass_split, t_in, t_split in rows:
        print(f"{name:<10} {n:>8} {total:>6} {n_split / max(total, 1):>6.1%} {pass_in:>26} {pass_split:>6} "
              f"{t_in:>18.1f} {t_split:>8.1f}")


if __name__ == "__main__":
    main()
