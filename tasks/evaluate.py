"""Evaluate: pass@k of the new checkpoint on the held-out splits, every N iterations."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.config import RunConfig
from stepcoder.datasets.splits import load_eval_split
from stepcoder.execution import make_executor
from stepcoder.prompts import chat_renderer
from tasks.generate import engine_for


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_checkpoint(cfg: RunConfig, base_dir: str, policy_dir: str, checkpoint_uri: str,
                        exec_options: dict) -> list[dict]:
    from stepcoder.evaluation import evaluate

    e = cfg.eval
    engine = engine_for(cfg, base_dir, policy_dir)
    chat = chat_renderer(engine.tokenizer, cfg.model.prompt_format)
    rows: list[dict] = []
    with make_executor(cfg.execution.backend, **exec_options) as executor:
        for name in e.splits:
            problems = load_eval_split(name, e.paths.get(name))[: e.limit]
            result = evaluate(engine, executor, problems, eval_name=name, n=e.n, ks=e.k,
                              temperature=e.temperature, max_new_tokens=e.max_new_tokens,
                              seed=cfg.generation.seed, chat_template=chat, checkpoint_uri=checkpoint_uri)
            rows += result.rows
    return rows
