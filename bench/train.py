"""Seconds per PPO step: DeepSpeed fp32 vs a plain torch loop vs DeepSpeed bf16, side by side in one run.

    .venv/bin/python bench/train.py [--models tiny,smollm2-135m] [--batch 16] [--prompt-len 160] [--completion-len 96]

A "step" is one PPO update on a batch (experience pass + one epoch of minibatches). Each configuration runs a
warm-up step, then ``--repeats`` timed steps; the table shows the median and the ratios the targets name:
DeepSpeed ≤ 1.1× plain torch (fp32), bf16 ≥ 1.8× faster than fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from stepcoder.config import resolve_repo_path  # noqa: E402
from stepcoder.models import resolve_model  # noqa: E402
from stepcoder.training.batch import batch_from_arrow  # noqa: E402
from stepcoder.training.trainer import PPOHyper, PPOTrainer  # noqa: E402

CONFIGS = [
    ("deepspeed fp32", "deepspeed", "infra/deepspeed/zero0_fp32.json"),
    ("plain torch fp32", "torch", "infra/deepspeed/zero0_fp32.json"),
    ("deepspeed bf16", "deepspeed", "infra/deepspeed/zero0_bf16.json"),
]


def make_batch(vocab: int, b: int, p: int, c: str, seed: int = 0):
    """``c`` is a completion length ("96") or a range ("16:256": each row's drawn uniformly, as real rollouts
    vary, which makes every micro-batch a new shape)."""
    g = torch.Generator().manual_seed(seed)
    lo, _, hi = c.partition(":")
    lens = [int(lo) if not hi else int(torch.randint(int(lo), int(hi) + 1, (1,), generator=g)) for _ in range(b)]
    table = pa.table({
        "prompt_ids": pa.array([torch.randint(5, vocab, (p,), generator=g).tolist() for _ in range(b)],
                               pa.list_(pa.int32())),
        "completion_ids": pa.array([torch.randint(5, vocab, (n,), generator=g).tolist() for n in lens],
                                   pa.list_(pa.int32())),
        "fgo_mask": pa.array([[1] * n for n in lens], pa.list_(pa.uint8())),
        "old_logprobs": pa.array([[-2.0] * n for n in lens], pa.list_(pa.float32())),
        "reward": pa.array([1.0 if i % 2 else -0.3 for i in range(b)], pa.float32()),
    })
    return batch_from_arrow(table, pad_token_id=0)


def time_config(model_dir: Path, engine: str, ds_file: str, batch, repeats: int, micro: int, mb: int) -> float:
    ds = json.loads(resolve_repo_path(ds_file).read_text())
    hp = PPOHyper.of(lr=1e-6, epochs=1, minibatch_size=mb or len(batch), micro_batch_size=micro, engine=engine)
    trainer = PPOTrainer(model_dir, model_dir, ds, hp)
    trainer.step(batch)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        trainer.step(batch)
        times.append(time.perf_counter() - t)
    trainer.close()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny,smollm2-135m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--minibatch", type=int, default=0, help="rows per optimizer step (default: the batch)")
    ap.add_argument("--configs", default=",".join(c[0] for c in CONFIGS))
    ap.add_argument("--prompt-len", type=int, default=160)
    ap.add_argument("--completion-len", default="96", help="a length, or lo:hi for lengths drawn per row")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        model_dir = resolve_model(name)
        vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
        batch = make_batch(vocab, args.batch, args.prompt_len, args.completion_len)
        secs = {label: time_config(model_dir, engine, ds, batch, args.repeats, args.micro, args.minibatch)
                if label in args.configs.split(",") else float("nan") for label, engine, ds in CONFIGS}
        rows.append((name, secs))
    print(f"\nPPO step, batch {args.batch} × ({args.prompt_len} prompt + {args.completion_len} completion) tokens, "
          f"micro-batch {args.micro}, median of {args.repeats}")
    print(f"{'model':<14} {'ds fp32 s':>10} {'torch fp32 s':>13} {'ds bf16 s':>10} {'ds/torch':>9} {'fp32/bf16':>10}")
    for name, s in rows:
        ds32, pt32, bf16 = s["deepspeed fp32"], s["plain torch fp32"], s["deepspeed bf16"]
        print(f"{name:<14} {ds32:>10.2f} {pt32:>13.2f} {bf16:>10.2f} {ds32 / pt32:>8.2f}× {ds32 / bf16:>9.2f}×")
    print("targets: ds/torch ≤ 1.10×, fp32/bf16 ≥ 1.80×")


if __name__ == "__main__":
    main()
