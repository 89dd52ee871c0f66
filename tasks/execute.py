"""Execute: run one chunk of programs in the sandbox (the flow fans chunks out over its task runner)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from stepcoder.execution import ExecResult, make_executor
from stepcoder.problems import TestSpec


@task(name="execute-chunk", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def execute_chunk(jobs: list[tuple[str, TestSpec]], backend: str, options: dict) -> list[ExecResult]:
    with make_executor(backend, **options) as executor:
        return executor.run(jobs)
