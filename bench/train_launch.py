"""What running the PPO update outside the flow's process costs: the `train` task's wall time for one iteration,
1 rank in the flow's process vs 1 rank launched by torchrun (`ppo.own_process`) vs 2 ranks (`ppo.num_processes=2`),
side by side on the same staged rollouts.

    .venv/bin/python bench/train_launch.py [--model smollm2-135m] [--rows 64] [--repeats 1] [--set k=v ...]

The rollouts are real ones when ``--from-store DIR --from-run RUN`` names a store with a committed iteration
(its first iteration's rollouts are staged again here); otherwise random token rows of SmolLM2-like lengths.
Each mode builds its trainer from the checkpoint dir, trains, and saves, exactly as the task does each
iteration (after one untimed in-process warm-up, as a flow's later iterations are warm); the difference between the rows is the launch: interpreter start, imports, torchrun's agent and
rendezvous, and (2 ranks) the all-gathers and all-reduces. On this 2-core machine 2 ranks share the cores, so
they cannot be faster; the row says what the machinery costs, not what 2 GPUs would gain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from stepcoder.config import load_config  # noqa: E402
from stepcoder.models import resolve_model  # noqa: E402
from storage import open_store  # noqa: E402

MODES = [
    ("1 rank, in the flow's process", {"ppo.num_processes": 1, "ppo.own_process": False}),
    ("1 rank, own process (torchrun)", {"ppo.num_processes": 1, "ppo.own_process": True}),
    ("2 ranks (torchrun)", {"ppo.num_processes": 2, "ppo.own_process": False}),
]
COLUMNS = ["rollout_id", "problem_id", "prompt_ids", "completion_ids", "fgo_mask", "old_logprobs", "reward"]


def rollouts(args, vocab: int) -> pa.Table:
    if args.from_store:
        table = open_store(args.from_store).read("rollouts", run=args.from_run, iteration=1, columns=COLUMNS)
        return table.select(COLUMNS)  # the read adds run/iteration, which staging takes from the path
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(args.rows):
        comp = torch.randint(5, vocab, (int(torch.randint(20, 200, (1,), generator=g)),), generator=g).tolist()
        rows.append({"rollout_id": f"r{i}", "problem_id": f"p{i}", "prompt_ids": torch.randint(
            5, vocab, (160,), generator=g).tolist(), "completion_ids": comp, "fgo_mask": [1] * len(comp),
            "old_logprobs": [-1.0] * len(comp), "reward": [1.0, -0.3, -0.6, -1.0][i % 4]})
    return pa.Table.from_pylist(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--from-store")
    ap.add_argument("--from-run", default="default")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    from tasks.train import launch, update

    model = str(resolve_model(args.model))
    table = rollouts(args, json.loads((Path(model) / "config.json").read_text())["vocab_size"])
    work = Path(tempfile.mkdtemp(prefix="bench-train-launch-"))
    open_store(str(work / "store")).stage("bench", 1, "rollouts", table)
    print(f"{len(table)} rollouts, model {args.model}, {args.repeats} repeat(s) per mode; work dir {work}")
    results = []
    # A flow pays for importing DeepSpeed and building its ops once, in its first iteration; every later
    # iteration starts warm. Warm this process up the same way, so the in-process row is a later iteration's.
    warm = load_config(None, [f"store={work / 'store'}", f"model.path={args.model}", *args.set], "bench")
    update(warm, 1, model, model, None, str(work / "warm-up"))
    for name, sets in MODES:
        cfg = load_config(None, [f"store={work / 'store'}", f"checkpoint_dir={work / 'ckpt'}",
                                 f"model.path={args.model}", *args.set, *(f"{k}={v}" for k, v in sets.items())],
                          "bench")
        times = []
        for r in range(args.repeats):
            out = str(work / f"{len(results)}-{r}")
            t = time.perf_counter()
            if cfg.ppo.num_processes == 1 and not cfg.ppo.own_process:
                update(cfg, 1, model, model, None, out)
            else:
                launch(cfg, 1, model, model, None, out)
            times.append(time.perf_counter() - t)
        results.append((name, statistics.median(times)))
        print(f"  {name}: {results[-1][1]:.1f} s", flush=True)
    base = results[0][1]
    print(f"\n| mode | train task, s | vs in-process | launch overhead, s |\n|---|---:|---:|---:|")
    for name, sec in results:
        print(f"| {name} | {sec:.1f} | {sec / base:.2f}x | {sec - base:+.1f} |")


if __name__ == "__main__":
    main()
