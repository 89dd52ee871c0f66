"""Rollout store bench: commit time, GROUP BY time over a long history, and bytes on disk, local and S3.

    .venv/bin/python bench/store.py [--rollouts 10000] [--tokens 512] [--history 1000000]

One run measures both backends: a local directory, and S3 on a SeaweedFS server this script starts on
loopback (random ports) and stops. The history is built through the store's own API (stage + commit, one
iteration of ``--rollouts`` rows at a time), so its files are exactly what training writes.

Targets (issue 6): commit < 2 s for 10k rollouts x 512 tokens; the GROUP BY over 1M rollouts < 1 s locally
and < 3x that on S3. "commit" is stage (validate + encode + write) plus commit (marker + cleanup) of one
rollouts table given as Arrow. "query" is a fresh connection (list markers, build views) plus the query,
i.e. what one `stepcoder sql` call pays; "query, warm" reruns it on the same connection.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make `storage` and `tests.s3_server` importable

import storage  # noqa: E402
from storage import TABLES, open_store, run_sql  # noqa: E402

QUERY = """
SELECT iteration, stage, count(*) AS samples, avg((outcome = 'pass')::INT) AS pass_rate,
       avg(reward) AS reward_mean, avg(exec_time_ms) AS exec_ms
FROM rollouts
WHERE run = 'bench'
GROUP BY iteration, stage
ORDER BY iteration, stage
"""

_LINES = [f"    {v} = {f}({a}, {b})" for v, f, a, b in zip(
    [f"x{i}" for i in range(400)], [f"helper_{i % 37}" for i in range(400)],
    [f"arr[{i % 11}]" for i in range(400)], [f"n - {i % 7}" for i in range(400)])]
_LINES += ["    for i in range(len(arr)):", "        if arr[i] > best:", "            best = arr[i]",
           "    return best", "    while lo < hi:", "        mid = (lo + hi) // 2"] * 20


def make_rollouts(n: int, tokens: int, seed: int = 0) -> pa.Table:
    """``n`` realistic rollout rows: 20 samples per problem, ``tokens`` completion tokens each."""
    rng = np.random.default_rng(seed)
    n_problems = max(n // 20, 1)
    problem = np.arange(n) // 20 % n_problems
    vocab = 49152

    def code(k: int, lines_per: int) -> list[str]:
        picks = rng.integers(0, len(_LINES), size=(k, lines_per))
        return ["\n".join(_LINES[j] for j in row) for row in picks]

    prompts = code(n_problems, 12)
    completions = code(n, 40)  # ~512 tokens of code-like text
    prompt_len = 160
    prompt_ids_by_problem = np.minimum(rng.zipf(1.3, size=(n_problems, prompt_len)), vocab - 1).astype(np.int32)
    completion_ids = np.minimum(rng.zipf(1.3, size=n * tokens), vocab - 1).astype(np.int32)
    logprobs = (-rng.exponential(0.7, size=n * tokens)).astype(np.float32)
    # FGO masks come in runs (a line's tokens share a mask bit): blocks of 16 tokens, 80% executed.
    mask = np.repeat(rng.random(n * tokens // 16 + 1) < 0.8, 16)[: n * tokens].astype(np.uint8)
    outcomes = np.array(["pass", "fail", "runtime_error", "timeout", "compile_error"])
    outcome = outcomes[rng.choice(5, size=n, p=[0.3, 0.4, 0.2, 0.05, 0.05])]
    reward = np.select([outcome == "pass", outcome == "fail"], [1.0, -0.3], -0.6).astype(np.float32)
    stage = rng.integers(0, 4, size=n).astype(np.int32)
    executed = rng.integers(1, 60, size=n * 20).astype(np.int32)

    def lists(values: np.ndarray, per: int) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(np.arange(0, n * per + 1, per, dtype=np.int32)), pa.array(values))

    cols = {
        "rollout_id": pa.array([f"bench/0/p{p}/{i % 20}" for i, p in enumerate(problem)]),
        "problem_id": pa.array([f"p{p}" for p in problem]),
        "sample_index": pa.array(np.arange(n) % 20, pa.int32()),
        "stage": pa.array(stage),
        "num_stages": pa.array(np.full(n, 4, np.int32)),
        "split_line": pa.array(rng.integers(2, 30, size=n).astype(np.int32)),
        "prompt": pa.array([prompts[p] for p in problem]),
        "completion": pa.array(completions),
        "program": pa.array([prompts[p] + "\n" + c for p, c in zip(problem, completions)]),
        "prompt_ids": lists(prompt_ids_by_problem[problem].ravel(), prompt_len),
        "completion_ids": lists(completion_ids, tokens),
        "old_logprobs": lists(logprobs, tokens),
        "fgo_mask": lists(mask, tokens),
        "outcome": pa.array(outcome),
        "reward": pa.array(reward),
        "tests_passed": pa.array(np.where(outcome == "pass", 3, rng.integers(0, 3, size=n)).astype(np.int32)),
        "tests_total": pa.array(np.full(n, 3, np.int32)),
        "executed_lines": lists(executed, 20),
        "exec_time_ms": pa.array(rng.gamma(2.0, 15.0, size=n).astype(np.float32)),
        "checkpoint_id": pa.array(["ckpt-0001"] * n),
        "cache_hit": pa.array(rng.random(n) < 0.1),
        "finish_reason": pa.array(np.where(rng.random(n) < 0.9, "stop", "length")),
    }
    known = set(TABLES["rollouts"].names)
    return pa.table({k: v for k, v in cols.items() if k in known})


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_backend(name: str, url: str, options: dict, table: pa.Table, iterations: int, log) -> dict:
    store = open_store(url, options)
    commits = []
    for it in range(iterations):
        def commit_one(it=it):
            store.stage("bench", it, "rollouts", table)
            store.commit("bench", it)
        commits.append(timed(commit_one))
        if it % 10 == 9 or it == iterations - 1:
            log(f"  {name}: committed {it + 1}/{iterations} iterations ({(it + 1) * table.num_rows:,} rollouts)")

    def query_fresh():
        con = storage.connect(url, options)
        out = run_sql(con, QUERY)
        assert out["samples"].to_numpy().sum() == iterations * table.num_rows, out
        return con

    query_fresh()  # first run warms the OS page cache / server caches; the table reports the next runs
    cold = [timed(query_fresh) for _ in range(3)]
    con = storage.connect(url, options)
    run_sql(con, QUERY)
    warm = [timed(lambda: run_sql(con, QUERY)) for _ in range(3)]
    t = time.perf_counter()
    storage.connect(url, options)
    connect_s = time.perf_counter() - t

    files = store.fs.glob(f"{store.root}/rollouts/run=bench/iteration=*/*.parquet")
    size = sum(store.fs.size(f) for f in files)
    return {
        "commit_first": commits[0],
        "commit_median": statistics.median(commits),
        "commit_max": max(commits),
        "query": statistics.median(cold),
        "query_warm": statistics.median(warm),
        "connect": connect_s,
        "bytes_per_rollout": size / (iterations * table.num_rows),
        "files": len(files),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rollouts", type=int, default=10_000, help="rollouts per iteration (one commit)")
    ap.add_argument("--tokens", type=int, default=512, help="completion tokens per rollout")
    ap.add_argument("--history", type=int, default=1_000_000, help="rollouts of history to query")
    ap.add_argument("--backends", default="local,s3")
    ap.add_argument("--weed-arg", action="append", default=[],
                    help="extra `weed mini` flag, e.g. --weed-arg=-s3.cacheCapacityMB=256 (repeatable)")
    args = ap.parse_args()
    iterations = max(args.history // args.rollouts, 1)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t = time.perf_counter()
    table = make_rollouts(args.rollouts, args.tokens)
    log(f"generated {args.rollouts:,} rollouts x {args.tokens} tokens in {time.perf_counter() - t:.1f} s "
        f"({table.nbytes / 2**20:.0f} MiB in memory)")
    # What the flow passes today: a list of dicts, converted and validated by stage().
    rows = table.slice(0, 1000).to_pylist()
    dict_s = timed(lambda: storage.store.conform("rollouts", rows)) * args.rollouts / 1000

    results = {}
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        for backend in args.backends.split(","):
            if backend == "local":
                results["local"] = bench_backend("local", str(work / "store"), {}, table, iterations, log)
                shutil.rmtree(work / "store", ignore_errors=True)
            elif backend == "s3":
                from tests.s3_server import seaweedfs

                with seaweedfs(work / "seaweedfs", extra_args=tuple(args.weed_arg)) as server:
                    results["s3"] = bench_backend("s3", server.url("store"), server.storage_options, table,
                                                  iterations, log)
            else:
                raise SystemExit(f"unknown backend {backend!r}; valid: local, s3")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n = iterations * args.rollouts
    print(f"\nrollout store bench: {args.rollouts:,} rollouts x {args.tokens} tokens per commit, "
          f"history {n:,} rollouts in {iterations} iterations, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}" + (f", weed {' '.join(args.weed_arg)}" if args.weed_arg else ""))
    names = list(results)
    rows_out = [
        ("commit 10k rollouts (first)", "commit_first", "{:.2f} s", "< 2 s"),
        ("commit (median of all)", "commit_median", "{:.2f} s", "< 2 s"),
        ("commit (max)", "commit_max", "{:.2f} s", ""),
        (f"GROUP BY over {n:,} (connect+query)", "query", "{:.2f} s", "< 1 s local, < 3x on s3"),
        ("  same query, warm connection", "query_warm", "{:.2f} s", ""),
        ("  connect alone (markers + views)", "connect", "{:.2f} s", ""),
        ("bytes on disk per rollout", "bytes_per_rollout", "{:,.0f} B", ""),
    ]
    header = f"{'metric':<40}" + "".join(f"{b:>12}" for b in names) + "   target"
    print(header)
    print("-" * len(header))
    for label, key, fmt, target in rows_out:
        print(f"{label:<40}" + "".join(f"{fmt.format(results[b][key]):>12}" for b in names) + f"   {target}")
    if "local" in results and "s3" in results:
        ratio = results["s3"]["query"] / results["local"]["query"]
        print(f"{'s3 / local query time':<40}{ratio:>12.1f}x   < 3x")
    print(f"{'stage from list[dict] (conversion only)':<40}{dict_s:>12.2f} s   (what the flow passes today)")


if __name__ == "__main__":
    main()
