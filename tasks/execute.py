"""Execute: run one chunk of programs in the sandbox (the flow fans chunks out over its task runner)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.execution import ExecResult
from stepcoder.execution.factory import shared_executor
from stepcoder.problems import TestSpec


@task(name="execute-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def execute_chunk(jobs: list[tuple[str, TestSpec]], backend: str, options: dict) -> list[ExecResult]:
    # One warm worker pool per process and options, shared by all chunk tasks (its run() is thread-safe).
    return shared_executor(backend, **options).run(jobs)
