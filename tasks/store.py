"""Store: stage an iteration's tables, and commit them atomically at the end."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from storage import open_store


@task(name="stage-tables", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def stage_tables(store_url: str, run: str, iteration: int, tables: dict[str, list[dict]],
                 store_options: dict | None = None) -> dict[str, int]:
    store = open_store(store_url, store_options)
    for name, rows in tables.items():
        store.stage(run, iteration, name, rows)
    return {name: len(rows) for name, rows in tables.items()}


@task(name="discard-staged", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def discard_staged(store_url: str, run: str, iteration: int, store_options: dict | None = None) -> None:
    """Drop what a crashed earlier attempt of this iteration staged, so it can never be committed now."""
    open_store(store_url, store_options).discard_staged(run, iteration)


@task(name="commit-iteration", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def commit_iteration(store_url: str, run: str, iteration: int, lock=None, store_options: dict | None = None) -> None:
    # Only the commit itself, so a retry after the marker was written is a no-op rather than a double commit.
    open_store(store_url, store_options).commit(run, iteration, lock=lock)
