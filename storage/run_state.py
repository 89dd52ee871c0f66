"""Where a run stands, read back from its committed history: next iteration, checkpoint, CCCS stages."""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.store import Store, run_sql


@dataclass(frozen=True)
class RunState:
    run: str
    iteration: int  # the iteration to run next (1-based)
    checkpoint_uri: str | None  # policy checkpoint of the last committed iteration, None = base model
    stages: dict[str, int] = field(default_factory=dict)  # problem_id → current CCCS stage


def load_run_state(store: Store, run: str) -> RunState:
    last = store.latest_iteration(run)
    if last is None:
        return RunState(run, 1, None, {})
    con = store.connect()
    try:
        ckpt = run_sql(
            con, "SELECT checkpoint_uri FROM iterations WHERE run = ? ORDER BY iteration DESC LIMIT 1", [run]
        ).column("checkpoint_uri").to_pylist()
        # The latest row per problem holds its stage after the last iteration that sampled it.
        rows = run_sql(
            con,
            "SELECT problem_id, arg_max(stage_after, iteration) AS stage FROM curriculum "
            "WHERE run = ? GROUP BY problem_id",
            [run],
        ).to_pylist()
    finally:
        con.close()
    return RunState(run, last + 1, ckpt[0] if ckpt else None, {r["problem_id"]: int(r["stage"]) for r in rows})
