"""Prefect's cost: one tiny StepCoder iteration through the flow vs the same library calls made directly.

    .venv/bin/python bench/orchestration.py [--repeats 2] [--api server|ephemeral] [--config FILE] [--set k=v ...]

Both paths run the flow's own body (``stepcoder.fn``, i.e. ``run_iteration``) in this one process. The
direct path swaps every Prefect task in the flow module for its plain function (``task.fn``), ``.submit`` for
a ``ThreadPoolExecutor`` with the same worker count, and the run logger for a plain logger; the flow path
calls the flow. So the difference is Prefect alone: flow and task runs created and tracked over the API,
state transitions, the task runner, result handling, events and logs shipped to the server.

Order: one untimed direct warm-up iteration (imports, vLLM engine start, DeepSpeed op build are one-off
costs both paths share), then flow and direct iterations alternate ``--repeats`` times on two runs of their
own, so each pair does the same iteration number over the same problems. The first flow call also pays
Prefect's one-off start (client, and with ``--api ephemeral`` the in-process API server), reported apart.

Iterations this small are noisy on a shared machine (seconds of jitter in generate and train, identical code
on both paths), so the bench also times a "flow skeleton": one flow run with the iteration's number of task
runs and no-op bodies. That is Prefect's fixed cost per iteration; it does not grow with the work inside the
tasks, so on a realistic iteration (minutes) it is a fraction of a percent.

``--api server`` (default) starts a real local Prefect server on loopback first, as `make server` does;
``--api ephemeral`` uses Prefect's ephemeral API server, what `stepcoder run` does with no PREFECT_API_URL.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make `flows`, `tests.prefect_server` importable


class _Direct:
    """A Prefect task stand-in: calling it calls the function; ``.submit`` goes to a plain thread pool."""

    def __init__(self, task, pool: ThreadPoolExecutor):
        self.fn, self.pool = task.fn, pool

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def submit(self, *args, **kwargs):
        return self.pool.submit(self.fn, *args, **kwargs)  # concurrent Future: has .result() as Prefect's

    def map(self, *iterables):
        return [self.submit(*args) for args in zip(*iterables)]


@contextmanager
def without_prefect(max_workers: int):
    """Patch the flow's module (and the task modules it uses) so its body runs with no Prefect at all."""
    from prefect import Task

    import flows.stepcoder_flow as flow_mod

    logger = logging.getLogger("stepcoder.direct")
    modules = [m for name, m in sys.modules.items() if m and name.split(".")[0] in ("flows", "tasks")]
    saved: list[tuple[object, str, object]] = []
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        try:
            for name, value in vars(flow_mod).items():
                if isinstance(value, Task):
                    saved.append((flow_mod, name, value))
                    setattr(flow_mod, name, _Direct(value, pool))
            if hasattr(flow_mod, "fan_out"):  # flows.task_runners.fan_out: the same calls on the plain pool
                saved.append((flow_mod, "fan_out", flow_mod.fan_out))
                flow_mod.fan_out = lambda task, calls, runner: [
                    f.result() for f in [task.submit(**params) for params in calls]]
            for mod in modules:
                for name, stub in (("get_run_logger", lambda: logger),
                                   ("create_markdown_artifact", lambda **kw: None)):
                    if hasattr(mod, name):
                        saved.append((mod, name, getattr(mod, name)))
                        setattr(mod, name, stub)
            yield
        finally:
            for mod, name, value in reversed(saved):
                setattr(mod, name, value)


def skeleton_overhead(n_tasks: int, n_chunks: int, max_workers: int, repeats: int = 5) -> tuple[float, float]:
    """Prefect's bookkeeping alone: a flow with an iteration's task count and fan-out but no-op bodies.

    Returns (median seconds per flow call, median seconds for the same calls made directly). The difference is
    the fixed cost per iteration, measured without the noise of the real work around it.
    """
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.task_runners import ThreadPoolTaskRunner

    @task(name="noop", cache_policy=NO_CACHE)
    def noop(i: int) -> int:
        return i

    def body(call, submit) -> int:
        total = sum(call(i) for i in range(n_tasks - n_chunks))
        return total + sum(f.result() for f in [submit(i) for i in range(n_chunks)])

    @flow(name="skeleton", task_runner=ThreadPoolTaskRunner(max_workers=max_workers))
    def skeleton() -> int:
        return body(noop, noop.submit)

    times = {"flow": [], "direct": []}
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            skeleton()
            times["flow"].append(time.perf_counter() - t)
            t = time.perf_counter()
            body(noop.fn, lambda i: pool.submit(noop.fn, i))
            times["direct"].append(time.perf_counter() - t)
    return statistics.median(times["flow"]), statistics.median(times["direct"])


def _iteration(kind: str, run: str, args, overrides: list[str]) -> tuple[float, dict]:
    from flows.stepcoder_flow import stepcoder

    params = dict(run_name=run, config_path=args.config, overrides=overrides, iterations=1)
    t = time.perf_counter()
    if kind == "flow":
        [summary] = stepcoder(**params)
    else:
        with without_prefect(args.max_workers):
            [summary] = stepcoder.fn(**params)
    return time.perf_counter() - t, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "infra" / "configs" / "tiny.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override k=v")
    ap.add_argument("--repeats", type=int, default=2, help="flow/direct pairs after the warm-up")
    ap.add_argument("--api", choices=("server", "ephemeral"), default="server")
    ap.add_argument("--max-workers", type=int, default=2, help="execute fan-out threads (as the flow's runner)")
    args = ap.parse_args()

    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    overrides = [f"store={work / 'store'}", f"checkpoint_dir={work / 'ckpt'}", "data.limit=4",
                 "curriculum.advance_threshold=0", "ppo.keep_checkpoints=1", *args.overrides]
    with ExitStack() as stack:
        if args.api == "server":
            from tests.prefect_server import local_prefect_server

            server = stack.enter_context(local_prefect_server(work / "prefect"))
            os.environ.update(PREFECT_API_URL=server.url, PREFECT_HOME=str(server.home))
        else:
            os.environ.pop("PREFECT_API_URL", None)
            os.environ["PREFECT_HOME"] = str(work / "prefect-home")
        import flows  # noqa: F401  (Prefect env defaults, after PREFECT_HOME is chosen)
        from prefect import Task

        t = time.perf_counter()
        warm, _ = _iteration("direct", "warm", args, overrides)
        print(f"warm-up (direct, untimed in the comparison): {warm:.1f} s incl. engine start", flush=True)
        flow_s, direct_s, flow_phase, direct_phase = [], [], [], []
        for r in range(args.repeats):
            for kind, out, phases in (("flow", flow_s, flow_phase), ("direct", direct_s, direct_phase)):
                secs, summary = _iteration(kind, f"bench-{kind}", args, overrides)
                out.append(secs)
                phases.append(summary.get("timings", {}))
                print(f"  iteration {r + 1} {kind:6s} {secs:6.2f} s  "
                      + " ".join(f"{k} {v:.2f}" for k, v in summary.get("timings", {}).items()), flush=True)
        # One iteration's Prefect objects: the flow run, its task runs (stage_tables runs twice; tiny = 1 chunk).
        n_tasks = 1 + sum(isinstance(v, Task) for v in vars(sys.modules["flows.stepcoder_flow"]).values())
        sk_flow, sk_direct = skeleton_overhead(n_tasks, 1, args.max_workers)

    # Pairs are adjacent in time, so machine-load drift cancels in the per-pair difference.
    steady = list(zip(flow_s, direct_s, flow_phase, direct_phase))[1:] or list(zip(flow_s, direct_s, flow_phase,
                                                                                   direct_phase))
    deltas = [f - d for f, d, _, _ in steady]
    d = statistics.median(d for _, d, _, _ in steady)
    f = statistics.median(f for f, _, _, _ in steady)
    delta = statistics.median(deltas)
    print()
    print(f"api: {args.api}; {args.repeats} flow/direct pairs; medians over pairs 2..{args.repeats}"
          if args.repeats > 1 else f"api: {args.api}; 1 pair")
    print(f"  direct library calls : {d:7.2f} s per iteration")
    print(f"  through Prefect flow : {f:7.2f} s per iteration")
    print(f"  overhead per pair    : {delta:+7.2f} s median (min {min(deltas):+.2f}, max {max(deltas):+.2f}); "
          f"{delta / d:+.1%} of this iteration")
    print(f"  first flow call      : {flow_s[0] - direct_s[0]:+7.2f} s over its direct pair "
          "(includes one-off client / API start)")
    phases = list(steady[-1][2])
    for phase in phases + ["outside phases"]:
        def secs(total, timings):
            return total - sum(timings.values()) if phase == "outside phases" else timings[phase]
        fp = statistics.median(secs(f, fp_) for f, _, fp_, _ in steady)
        dp = statistics.median(secs(d, dp_) for _, d, _, dp_ in steady)
        print(f"    {phase:14s} flow {fp:6.2f} s   direct {dp:6.2f} s   ({fp - dp:+.2f})")
    print(f"  flow skeleton        : {sk_flow:7.2f} s for 1 flow run + {n_tasks} no-op task runs "
          f"(direct {sk_direct * 1000:.1f} ms): Prefect's fixed cost per iteration")
    print(f"(bench wall time {time.perf_counter() - t:.0f} s)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
