"""Train: one PPO update on DeepSpeed over this iteration's staged rollouts; saves the next checkpoint.

One rank runs in the flow's process by default. ``ppo.num_processes: N`` (or ``ppo.own_process``) runs the
update as a torchrun job instead: N ranks of ``python -m tasks.train_rank``, each reading the staged rollouts from
the store and training its share of every minibatch (stepcoder/training/data_parallel.py), rank 0 writing the
checkpoint and the metrics. A rank that fails fails the task with that rank's error; nothing is committed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.config import RunConfig, resolve_repo_path
from storage import open_store

_COLUMNS = ["prompt_ids", "completion_ids", "fgo_mask", "old_logprobs", "reward"]
log = logging.getLogger("tasks.train")


def update(cfg: RunConfig, iteration: int, base_dir: str, policy_dir: str, resume_dir: str | None,
           checkpoint_dir: str) -> tuple[list[dict], str, int]:
    """One PPO update on this process's rank; returns (metrics, checkpoint dir, world size)."""
    import torch
    from transformers import AutoTokenizer

    from stepcoder.training.batch import batch_from_arrow
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    table = open_store(cfg.store, cfg.store_options).read_staged(cfg.run_name, iteration, "rollouts",
                                                                  columns=_COLUMNS)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = batch_from_arrow(table, pad)
    ds_config = json.loads(resolve_repo_path(cfg.ppo.deepspeed_config).read_text())
    trainer = PPOTrainer(Path(policy_dir), Path(base_dir), ds_config, PPOHyper.from_config(cfg),
                         resume_dir=Path(resume_dir) if resume_dir else None)
    try:
        metrics = trainer.step(batch)
        out = trainer.save(Path(checkpoint_dir), tokenizer_dir=Path(policy_dir),
                           policy_dtype=getattr(torch, cfg.model.dtype))  # what vLLM serves it in
        world = trainer.world
    finally:
        trainer.close()
    return metrics, str(out), world


@task(name="train", cache_policy=NO_CACHE)
def train(cfg: RunConfig, iteration: int, base_dir: str, policy_dir: str, resume_dir: str | None,
          checkpoint_dir: str) -> tuple[list[dict], str, int]:
    """(metrics per optimizer step, the new checkpoint's local dir, the number of ranks that trained)."""
    if cfg.ppo.num_processes == 1 and not cfg.ppo.own_process:
        return update(cfg, iteration, base_dir, policy_dir, resume_dir, checkpoint_dir)
    return launch(cfg, iteration, base_dir, policy_dir, resume_dir, checkpoint_dir)


def launch(cfg: RunConfig, iteration: int, base_dir: str, policy_dir: str, resume_dir: str | None,
           checkpoint_dir: str) -> tuple[list[dict], str, int]:
    """The update as a torchrun job of ``ppo.num_processes`` ranks per node; returns rank 0's results."""
    with tempfile.TemporaryDirectory(prefix="stepcoder-train-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"config": cfg.to_json(), "iteration": iteration, "base_dir": base_dir,
                                    "policy_dir": policy_dir, "resume_dir": resume_dir,
                                    "checkpoint_dir": checkpoint_dir, "result": str(result)}))
        cmd = torchrun_command(cfg.ppo.num_processes, cfg.ppo.launcher_args, spec)
        env = {k: v for k, v in os.environ.items() if k not in _INHERITED_RANK_VARS}
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.ppo.num_processes)))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        for line in (proc.stdout + proc.stderr).splitlines():
            log.info("%s", line)  # the ranks' own output: to the run's log file
        if proc.returncode != 0:
            raise RuntimeError(f"PPO update ({cfg.ppo.num_processes} ranks, torchrun exit {proc.returncode}) "
                               f"failed:\n{failure_of(proc.stdout + proc.stderr)}")
        out = json.loads(result.read_text())
    return out["metrics"], out["checkpoint"], out["world_size"]


# A flow that itself runs under a launcher must not hand its own rank and world to the job it starts.
_INHERITED_RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")


def torchrun_command(nproc: int, launcher_args: list[str], spec: Path) -> list[str]:
    """``python -m torch.distributed.run`` (torchrun) with ``nproc`` ranks per node, on a free local port unless
    ``launcher_args`` set up a rendezvous of their own (several nodes)."""
    args = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if not any(a.startswith(("--rdzv", "--master")) for a in launcher_args):
        args += ["--master-addr=127.0.0.1", f"--master-port={_free_port()}"]
    return [*args, *launcher_args, "-m", "tasks.train_rank", str(spec)]


def failure_of(output: str, keep: int = 40) -> str:
    """What names the failed rank and its error: torchrun's root-cause report if present, else the tail."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "Root Cause" in line:
            return "\n".join(lines[i : i + keep])
    return "\n".join(lines[-keep:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
