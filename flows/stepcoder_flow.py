"""The Prefect flow `stepcoder`: one StepCoder iteration per loop, generate → execute → store → train → advance.

Nothing of an iteration is visible until its final commit; a failed iteration leaves only staged leftovers,
which the next run of the same iteration replaces.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import publish_report
from flows.lock_holder import OWNER_PREFIX, flow_run_finished
from flows.task_runners import fan_out, make_task_runner
from stepcoder.config import RunConfig, load_config
from stepcoder.curriculum import GLOBAL_KEY
from stepcoder.execution.options import SandboxOptions
from stepcoder.faults import crash_point
from stepcoder.models import resolve_model
from stepcoder.rewards import reward_table
from stepcoder.rollouts import programs_for, rollout_rows, sample_problems
from stepcoder.summary import iteration_summary
from stepcoder.training.layout import RESUME_ONLY
from storage import open_store
from storage.checkpoints import Checkpoints
from storage.run_state import RunState, load_run_state
from tasks.advance import advance_curriculum
from tasks.data import load_training_problems
from tasks.evaluate import evaluate_checkpoint
from tasks.execute import execute_chunk
from tasks.generate import generate, sleep_engines
from tasks.store import commit_iteration, discard_staged, stage_tables
from tasks.train import train


@task(name="load-run-state", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def load_state(store_url: str, run: str, store_options: dict | None = None) -> RunState:
    return load_run_state(open_store(store_url, store_options), run)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def checkpoints_of(cfg: RunConfig) -> Checkpoints:
    return Checkpoints(cfg.checkpoint_dir, cfg.run_name, cfg.store_options, cfg.checkpoint_cache)


def _phase(log, name: str, seconds: float, detail: str) -> None:
    """One line per phase: what the terminal shows by default (flows/console_log.py), and the flow run's log."""
    log.info("%-8s %s · %.1f s", name, detail, seconds, extra={"progress": True})


def run_iteration(cfg: RunConfig, lock=None) -> dict:
    log = get_run_logger()
    started = datetime.now(timezone.utc)
    timings: dict[str, float] = {}
    problems = load_training_problems(cfg)
    so = cfg.store_options
    state = load_state(cfg.store, cfg.run_name, so)
    it = state.iteration
    discard_staged(cfg.store, cfg.run_name, it, so)
    base_dir = str(resolve_model(cfg.model.path))
    ckpts = checkpoints_of(cfg)
    # The last committed checkpoint, on this machine: a remote one is downloaded once into the cache.
    resume = ckpts.local_path(state.checkpoint_uri) if state.checkpoint_uri else None
    policy_dir = str(resume / "policy") if resume else base_dir
    batch_problems = sample_problems(problems, cfg.data.problems_per_iteration, cfg.data.seed, it)
    log.info("run %s iteration %d: %d problems, policy %s", cfg.run_name, it, len(batch_problems),
             Path(state.checkpoint_uri).name if state.checkpoint_uri else f"{cfg.model.path} (base)",
             extra={"progress": True})

    t = time.perf_counter()
    plans, completions = generate(cfg, batch_problems, state.stages, base_dir, policy_dir, it)
    timings["generate"] = time.perf_counter() - t
    _phase(log, "generate", timings["generate"], f"{len(completions)} completions, "
           f"{sum(len(c.completion_ids) for c in completions):,} tokens")
    crash_point("generate", it)
    if cfg.generation.sleep_mode:  # GPUs shared with DeepSpeed: vLLM's memory is the trainer's until next time
        sleep_engines()

    t = time.perf_counter()
    programs = programs_for(plans, completions)
    jobs = [(prog.text, plans[c.prompt_index].problem.tests) for prog, c in zip(programs, completions)]
    e = cfg.execution
    options = SandboxOptions.from_config(e).as_dict()  # plain keywords: the tasks may run on Dask workers
    if e.backend == "docker":
        options["image"] = e.docker_image
    o = cfg.orchestration
    calls = [{"jobs": chunk, "backend": e.backend, "options": options} for chunk in _chunks(jobs, e.chunk_size)]
    runner = make_task_runner(o.task_runner, o.max_workers, o.dask_address)
    results = [r for chunk in fan_out(execute_chunk, calls, runner) for r in chunk]
    timings["execute"] = time.perf_counter() - t
    outcomes = Counter(r.outcome for r in results)
    _phase(log, "execute", timings["execute"], f"{len(results)} programs: "
           + ", ".join(f"{o} {n}" for o, n in outcomes.most_common()))
    crash_point("execute", it)

    t = time.perf_counter()
    r = cfg.reward
    rewards = reward_table(r.pass_reward, r.fail, r.runtime_error, r.timeout, r.compile_error)
    checkpoint_id = Path(state.checkpoint_uri).name if state.checkpoint_uri else "base"
    rollouts, test_rows = rollout_rows(cfg.run_name, it, plans, completions, programs, results, rewards,
                                       cfg.fgo.enabled, checkpoint_id, r.mode,
                                       (r.exec_weight, r.ast_weight, r.dfg_weight))
    stage_tables(cfg.store, cfg.run_name, it, {"rollouts": rollouts, "test_results": test_rows}, so)
    timings["store"] = time.perf_counter() - t
    _phase(log, "store", timings["store"], f"{len(rollouts)} rollouts, {len(test_rows)} test results staged")
    crash_point("staged", it)

    t = time.perf_counter()
    metrics, local_checkpoint, world = train(cfg, it, base_dir, policy_dir, str(resume) if resume else None,
                                      str(ckpts.staging_dir(it)))
    checkpoint = ckpts.publish(Path(local_checkpoint), it)  # before the commit that records its URI
    timings["train"] = time.perf_counter() - t
    last = metrics[-1] if metrics else {}
    _phase(log, "train", timings["train"], f"{len(metrics)} PPO steps on {world} rank{'s' * (world > 1)}, "
           f"KL to reference {last.get('kl_ref', float('nan')):.4f}, checkpoint {Path(checkpoint).name}")

    t = time.perf_counter()
    c = cfg.curriculum
    curriculum = advance_curriculum(plans, rollouts, c.advance_threshold, c.min_samples, c.mode,
                                    state.stages.get(GLOBAL_KEY, 0))
    tables = {"curriculum": curriculum, "train_metrics": metrics}
    _phase(log, "advance", time.perf_counter() - t, f"{sum(1 for c in curriculum if c['advanced'])} of {len(curriculum)} problems "
           "moved to a later curriculum stage")
    if cfg.eval.every and it % cfg.eval.every == 0:
        t = time.perf_counter()
        tables["evals"] = evaluate_checkpoint(cfg, base_dir, str(Path(local_checkpoint) / "policy"), checkpoint,
                                              options)
        timings["eval"] = time.perf_counter() - t
    stage_tables(cfg.store, cfg.run_name, it, tables, so)

    summary = iteration_summary(cfg.run_name, it, rollouts, metrics, curriculum, tables.get("evals", []))
    stage_tables(cfg.store, cfg.run_name, it, {"iterations": [{
        "config_hash": cfg.config_hash(),
        "config_json": cfg.to_json(),
        "checkpoint_uri": checkpoint,
        "started_at": started,
        "finished_at": datetime.now(timezone.utc),
        **{f"time_{k}_s": v for k, v in timings.items()},
        "num_problems": len(plans),
        "num_rollouts": len(rollouts),
        "pass_rate": summary["pass_rate"],
        "reward_mean": summary["reward_mean"],
        "train_world_size": world,
    }]}, so)
    crash_point("before_commit", it)
    t = time.perf_counter()
    commit_iteration(cfg.store, cfg.run_name, it, lock, so)
    _phase(log, "commit", time.perf_counter() - t, f"iteration {it} committed: pass rate {summary['pass_rate']:.3f}, "
           f"mean reward {summary['reward_mean']:+.3f}")
    crash_point("after_commit", it)
    ckpts.prune(cfg.ppo.keep_checkpoints, resume_only=RESUME_ONLY)
    summary.update(store=cfg.store, checkpoint=checkpoint, timings=timings)
    publish_report(summary)  # markdown artifact + <store>/runs/<run>/learning_curves.png
    return summary


@flow(name="stepcoder", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def stepcoder(
    run_name: str | None = None,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    iterations: int = 1,
) -> list[dict]:
    """Run ``iterations`` StepCoder iterations of a run, continuing from its stored state."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    cfg = load_config(config_path, overrides, run_name)
    # One writer per run: a second flow run of this run name fails here (or waits lock_wait_s), naming the holder.
    # A holder that provably crashed (a dead process on this machine, or a flow run Prefect calls finished) is
    # taken over at once instead of after its TTL.
    lock = open_store(cfg.store, cfg.store_options).lock(
        cfg.run_name, owner=f"{OWNER_PREFIX}{flow_run.id}", wait_s=cfg.orchestration.lock_wait_s,
        holder_gone=lambda holder: flow_run_finished(holder, flow_run.id))
    with lock:
        if lock.took_over:
            get_run_logger().warning(lock.took_over)
        return [run_iteration(cfg, lock) for _ in range(iterations)]
