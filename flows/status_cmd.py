"""`stepcoder status [RUN] [--store ...]`: where each run of a store stands, one table per run.

Iterations committed, the last iteration's pass rate and reward, problems per CCCS stage, the latest checkpoint
and its size on disk, whether the run is locked (and by whom), and the learning-curves PNG. Read-only; no
Prefect import, so it works with no API server.
"""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

LAST_SQL = """
SELECT iteration, pass_rate, reward_mean, num_rollouts, checkpoint_uri, finished_at
FROM iterations WHERE run = $run ORDER BY iteration DESC LIMIT 1
"""


def _size(fs, path: str) -> int | None:
    try:
        return int(fs.du(path, total=True))
    except (OSError, ValueError):
        return None


def _human(n: int | None) -> str:
    if n is None:
        return "missing"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run_status(store, run: str) -> dict[str, Any]:
    """Everything the status table shows about ``run``, as plain data (tested; the CLI only renders it)."""
    from flows.report_cmd import CURRICULUM_SQL, curves_path
    from stepcoder.curriculum import stage_counts
    from storage import run_sql
    from storage.objects import filesystem

    con = store.connect()
    try:
        last = run_sql(con, LAST_SQL, {"run": run}).to_pylist()
        stages = stage_counts(run_sql(con, CURRICULUM_SQL, {"run": run}).to_pylist())
    finally:
        con.close()
    out: dict[str, Any] = {"run": run, "iterations": store.committed_iterations(run)}
    if last:
        row = last[0]
        out.update(last_iteration=row["iteration"], pass_rate=row["pass_rate"], reward_mean=row["reward_mean"],
                   rollouts=row["num_rollouts"], finished_at=str(row["finished_at"]))
        uri = row["checkpoint_uri"]
        if uri:  # a checkpoint on S3 is reached with the store's options (endpoint, keys)
            fs, path = filesystem(uri, store.storage_options if "://" in uri else None)
            out.update(checkpoint=uri, checkpoint_bytes=_size(fs, path) if fs.exists(path) else None)
    if stages:
        out["stages"] = stages[-1]["stages"]
        out["advanced_last"] = stages[-1]["advanced"]
    holder = store.lock(run).holder()
    out["locked_by"] = None if holder is None else {k: holder.get(k) for k in ("owner", "host", "pid", "expires")}
    png = curves_path(store, run)
    out["learning_curves"] = store._uri(png) if store.fs.exists(png) else None
    return out


def status_command(
    run: Optional[str] = typer.Argument(None, help="a run name (default: every run in the store)"),
    store_url: Optional[str] = typer.Option(None, "--store", help="store URL (default: the run config's store)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="run YAML whose store to read"),
) -> None:
    """Where each run stands: iterations, last pass rate and reward, curriculum stages, checkpoint, lock."""
    from stepcoder.config import load_config
    from storage import open_store

    cfg = load_config(config, [], None)
    url = store_url or cfg.store
    store = open_store(url, cfg.store_options if not store_url else None)
    runs = [run] if run else store.runs()
    console = Console()
    if not runs:
        console.print(f"no committed run in {url}")
        raise typer.Exit(0)
    for name in runs:
        s = run_status(store, name)
        table = Table(title=f"run {name}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        its = s["iterations"]
        table.add_row("iterations committed", f"{len(its)} (last {its[-1]})" if its else "none")
        if "pass_rate" in s:
            table.add_row("last pass rate", f"{s['pass_rate']:.3f} ({s['rollouts']} rollouts)")
            table.add_row("last mean reward", f"{s['reward_mean']:+.3f}")
            table.add_row("finished at", s["finished_at"])
        if "stages" in s:
            stages = ", ".join(f"stage {k}: {v}" for k, v in s["stages"].items())
            table.add_row("problems per CCCS stage", f"{stages} ({s['advanced_last']} advanced last iteration)")
        if "checkpoint" in s:
            table.add_row("latest checkpoint", f"{s['checkpoint']} ({_human(s['checkpoint_bytes'])})")
        lock = s["locked_by"]
        table.add_row("locked", "no" if lock is None else
                      f"by {lock['owner']} (host {lock['host']}, pid {lock['pid']}, expires {lock['expires']})")
        table.add_row("learning curves", s["learning_curves"] or "not drawn yet (stepcoder report RUN)")
        console.print(table)
