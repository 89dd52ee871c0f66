"""Train: one PPO update on DeepSpeed over this iteration's staged rollouts; saves the next checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.config import RunConfig, resolve_repo_path
from storage import open_store

_COLUMNS = ["prompt_ids", "completion_ids", "fgo_mask", "old_logprobs", "reward"]


@task(name="train", cache_policy=NO_CACHE)
def train(cfg: RunConfig, iteration: int, base_dir: str, policy_dir: str, resume_dir: str | None,
          checkpoint_dir: str) -> tuple[list[dict], str]:
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
    finally:
        trainer.close()
    return metrics, str(out)
