"""Load the training problems: read, report rejects, filter, drop held-out eval problems, refuse nothing."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.config import RunConfig
from stepcoder.datasets import log_rejects, require_problems, scan
from stepcoder.datasets.splits import load_eval_split, select, without_held_out
from stepcoder.problems import Problem


@task(name="load-problems", cache_policy=NO_CACHE)
def load_training_problems(cfg: RunConfig) -> list[Problem]:
    d = cfg.data
    loaded = scan(d.dataset, d.path, d.split)
    log_rejects(loaded.rejects, loaded.source)
    problems = select(loaded.problems, d.difficulty, d.ids, None, d.subset, d.seed, d.limit)
    for name in cfg.eval.splits:  # never train on evaluation data, even when no eval runs this iteration
        if name not in cfg.eval.paths and name == "appsplus-test":
            continue  # needs a user file; without it there is nothing to hold out
        problems = without_held_out(problems, load_eval_split(name, cfg.eval.paths.get(name)))
    return require_problems(problems, loaded.source, loaded.rejects)
