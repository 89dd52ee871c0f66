"""Generate: CCCS prompts for the sampled problems, n samples each from vLLM."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.config import RunConfig
from stepcoder.curriculum import full_stage_problems
from stepcoder.problems import Problem
from stepcoder.prompts import chat_renderer
from stepcoder.rollouts import plan_prompts, prompt_seeds

# One engine per process, reused across iterations: new policy weights are swapped in place.
_ENGINES: dict[tuple, object] = {}


def engine_for(cfg: RunConfig, base_dir: str, policy_dir: str):
    """The process's generator for this model, holding ``policy_dir``'s weights."""
    from stepcoder.generation import make_generator

    g = cfg.generation
    options = {"tensor_parallel_size": g.tensor_parallel_size, "gpu_memory_utilization": g.gpu_memory_utilization,
               "sleep_mode": g.sleep_mode, "enforce_eager": g.enforce_eager}
    key = (g.backend, base_dir, cfg.model.dtype, cfg.model.max_model_len, tuple(options.items()))
    engine = _ENGINES.get(key)
    if engine is not None and not engine.healthy():
        _ENGINES.clear()  # another engine in this process shut vLLM's shared state down: start afresh
        engine = None
    if engine is None:
        _ENGINES.clear()  # a different model: drop the old engine before loading another
        engine = make_generator(g.backend, policy_dir, dtype=cfg.model.dtype,
                                max_model_len=cfg.model.max_model_len, seed=g.seed, **options)
        _ENGINES[key] = engine
    else:
        if getattr(engine, "asleep", False):
            engine.wake_up()
        if engine.weights != policy_dir:
            engine.reload_weights(policy_dir)
    return engine


def sleep_engines() -> None:
    """GPU sleep mode: the process's engines give their GPU memory to the trainer until the next generate."""
    for engine in _ENGINES.values():
        engine.sleep()


@task(name="generate", cache_policy=NO_CACHE)
def generate(cfg: RunConfig, problems: list[Problem], stages: dict[str, int], base_dir: str, policy_dir: str,
             iteration: int):
    engine = engine_for(cfg, base_dir, policy_dir)
    chat = chat_renderer(engine.tokenizer, cfg.model.prompt_format)
    c = cfg.curriculum
    practice = full_stage_problems([p.problem_id for p in problems], c.full_stage_fraction,
                                   f"{cfg.data.seed}:{iteration}")
    plans = plan_prompts(problems, stages, c.enabled, c.split_nodes, chat, c.mode, practice)
    g = cfg.generation
    completions = engine.generate(
        [p.prompt for p in plans], n=g.n_samples, temperature=g.temperature, top_p=g.top_p,
        max_new_tokens=g.max_new_tokens, seed=prompt_seeds(g.seed, iteration, [p.problem.problem_id for p in plans]),
        stop=["```"] if chat else None,  # chat prompts open a code fence; its closing fence ends the program
    )
    return plans, completions
