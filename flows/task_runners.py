"""The task runner that carries the execute fan-out: threads on one machine, or a Dask cluster.

- ``thread``: ``ThreadPoolTaskRunner(max_workers=N)``. The threads only feed the sandbox's worker processes,
  so a few threads suffice; always explicit (Prefect's default is a large pool). ~2-4 ms per task.
- ``dask``: ``prefect_dask.DaskTaskRunner``, for a cluster of execution machines (``dask_address`` of its
  scheduler, e.g. ``tcp://10.0.0.5:8786``; each worker needs this repo installed and a working sandbox).
  Without an address, a ``LocalCluster`` on loopback with ``max_workers`` single-threaded worker processes
  and no dashboard. ~120-220 ms per task, which is why execution goes out in chunks of 50-100 programs.

Only the fanned-out tasks go through this runner; generate, train and the store tasks run in the flow's own
process (next to vLLM and DeepSpeed) whichever runner is chosen. Two ways to use it:

- inside the flow, ``fan_out(task, calls, make_task_runner(...))``: the runner comes from the run's own
  config, so it applies the same under ``stepcoder run``, ``flows.serve``, a worker (which loads the flow
  from its entrypoint, with the decorator's runner) and per-run overrides. The task runs still belong to the
  flow run;
- at an entry point that knows the config before the flow starts,
  ``stepcoder.with_options(task_runner=make_task_runner(...))``; ``.submit`` then uses it.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import Task
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

TASK_RUNNERS = ("thread", "dask")


def make_task_runner(
    kind: Literal["thread", "dask"] = "thread", max_workers: int = 2, dask_address: str | None = None
) -> TaskRunner:
    """A fresh task runner of ``kind``; use as ``stepcoder.with_options(task_runner=make_task_runner(...))``."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if kind == "thread":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": max_workers,
                "threads_per_worker": 1,
                "processes": True,  # the sandbox forks per program; keep that out of the flow's process
                "host": "127.0.0.1",  # loopback only: nothing on the network can submit work to it
                # No dashboard. The scheduler still serves its small HTTP health/metrics endpoint on loopback
                # (8787, or a free port if taken); Prefect's log line about a dashboard link is stale.
                "dashboard_address": None,
            },
        )
    raise ValueError(f"unknown task runner {kind!r}; valid: {', '.join(TASK_RUNNERS)}")


def fan_out(task: Task, calls: list[dict[str, Any]], runner: TaskRunner) -> list:
    """Run ``task`` once per parameter dict in ``calls`` on ``runner`` (started and stopped here, inside the
    current flow run) and return the results in order. The first failed call raises its exception.

    A Dask ``LocalCluster`` starts and stops with each call (seconds); a cluster at ``dask_address`` is only
    connected to.
    """
    with runner:
        futures = [runner.submit(task, parameters=params) for params in calls]
        return [f.result() for f in futures]
