"""Store: stage an iteration's tables, and commit them atomically at the end."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage import open_store


@task(name="stage-tables", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def stage_tables(store_url: str, run: str, iteration: int, tables: dict[str, list[dict]]) -> dict[str, int]:
    store = open_store(store_url)
    for name, rows in tables.items():
        store.stage(run, iteration, name, rows)
    return {name: len(rows) for name, rows in tables.items()}


@task(name="commit-iteration", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def commit_iteration(store_url: str, run: str, iteration: int, iteration_row: dict) -> None:
    store = open_store(store_url)
    store.stage(run, iteration, "iterations", [iteration_row])
    store.commit(run, iteration)
