"""`stepcoder report RUN`: the learning curves of a run, read from the store with DuckDB, drawn as a PNG.

The PNG lives with the run's data, at ``<store>/runs/<run>/learning_curves.png``, for a local directory and for
an object store (``s3://...``) alike. The flow rewrites it after each committed iteration (``publish-report``
in ``flows/artifacts.py``); this command regenerates it from the committed history at any time.

No Prefect import here: the command works with no API server.
"""

from __future__ import annotations

import os
import uuid
from typing import Optional

import typer

from stepcoder.report import plot_learning_curves

# pass_rate and reward_mean are the headline numbers stored per iteration; kl_ref is the mean over the
# iteration's optimizer steps (train_metrics has one row per step).
CURVES_SQL = """
SELECT i.iteration, i.pass_rate, i.reward_mean, m.kl_ref, m.policy_loss, m.value_loss
FROM iterations i
LEFT JOIN (
    SELECT iteration, avg(kl_ref) AS kl_ref, avg(policy_loss) AS policy_loss, avg(value_loss) AS value_loss
    FROM train_metrics WHERE run = $run GROUP BY iteration
) m USING (iteration)
WHERE i.run = $run
ORDER BY i.iteration
"""

# One curve per evaluation metric, named "<eval_name>/<metric>" (e.g. "humaneval/pass@1") as in the summary.
EVALS_SQL = """
SELECT iteration, eval_name || '/' || metric AS name, avg(value) AS value
FROM evals WHERE run = $run
GROUP BY ALL ORDER BY ALL
"""


# Each problem's stage after each iteration: the curriculum panel counts problems per stage.
CURRICULUM_SQL = """
SELECT iteration, problem_id, stage_before, stage_after, full_stage
FROM curriculum WHERE run = $run ORDER BY iteration
"""


def learning_curve_rows(con, run: str) -> list[dict]:
    """Per-iteration rows for :func:`stepcoder.report.plot_learning_curves` from a store connection."""
    from stepcoder.curriculum import stage_counts
    from storage import run_sql

    rows = run_sql(con, CURVES_SQL, {"run": run}).to_pylist()
    by_iteration = {r["iteration"]: r for r in rows}
    for e in run_sql(con, EVALS_SQL, {"run": run}).to_pylist():
        if e["iteration"] in by_iteration:
            by_iteration[e["iteration"]].setdefault("evals", {})[e["name"]] = e["value"]
    for c in stage_counts(run_sql(con, CURRICULUM_SQL, {"run": run}).to_pylist()):
        if c["iteration"] in by_iteration:
            by_iteration[c["iteration"]].update(stages=c["stages"], advanced=c["advanced"])
    return rows


def curriculum_progress(store_url: str, run: str) -> list[dict]:
    """Problems per CCCS stage after each committed iteration of ``run`` (see ``stage_counts``)."""
    from stepcoder.curriculum import stage_counts
    from storage import open_store, run_sql

    con = open_store(store_url).connect()
    try:
        return stage_counts(run_sql(con, CURRICULUM_SQL, {"run": run}).to_pylist())
    finally:
        con.close()


def curves_path(store, run: str) -> str:
    """Where a run's PNG lives inside the store (an fsspec path, without the protocol)."""
    return f"{store.root}/runs/{run}/learning_curves.png"


def write_learning_curves(store_url: str, run: str) -> str:
    """Query ``run``'s committed iterations and (re)write its PNG in the store; returns its path or URL.

    Raises ``LookupError`` when the run has no committed iteration.
    """
    from storage import open_store

    store = open_store(store_url)
    con = store.connect()
    try:
        rows = learning_curve_rows(con, run)
    finally:
        con.close()
    if not rows:
        known = ", ".join(store.runs()) or "none"
        raise LookupError(f"run {run!r} has no committed iteration in {store_url} (runs: {known})")
    path = curves_path(store, run)
    title = f"StepCoder run {run}"
    if store.local:
        # Temp name + rename: a reader (or the UI) never sees a half-written PNG.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            plot_learning_curves(rows, tmp, title=title)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path
    # Object stores: one PUT when the file closes, and a single object is atomic.
    with store.fs.open(path, "wb") as fh:
        plot_learning_curves(rows, fh, title=title)
    return store.fs.unstrip_protocol(path)


def report_command(
    run: str = typer.Argument(..., help="run name"),
    store: Optional[str] = typer.Option(None, "--store", help="store dir or URL (default: from the run config)"),
) -> None:
    """Regenerate a run's learning-curves PNG (pass rate, reward, KL per iteration) in its store."""
    from stepcoder.config import load_config

    store_url = store or load_config().store
    try:
        out = write_learning_curves(store_url, run)
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1)
    typer.echo(f"learning curves of run {run} → {out}")
