"""`stepcoder` command line: run iterations, query the store with SQL, prepare models.

It lives with the flows because it is an edge: it is the one place that wires Prefect, storage and the library
together for a person at a terminal.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from flows.cli_data import data_app, eval_command  # noqa: E402
from flows.cli_exec import exec_command  # noqa: E402

app = typer.Typer(help="StepCoder: RL for code LLMs from unit-test feedback.", no_args_is_help=True)
model_app = typer.Typer(help="Prepare models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.command("eval")(eval_command)
app.command("exec")(exec_command)
console = Console(stderr=False)
err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="run YAML (default infra/configs/default.yaml)"),
    run_name: Optional[str] = typer.Option(None, "--run-name", "-r", help="run to continue or start"),
    set_: list[str] = typer.Option([], "--set", "-s", help="override, e.g. --set ppo.lr=1e-5 (repeatable)"),
    iterations: int = typer.Option(1, "--iterations", "-n", min=1),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show library logs (vLLM, Prefect, ...) live too"),
) -> None:
    """Run StepCoder iterations through the Prefect flow `stepcoder`, continuing the run from its store."""
    from stepcoder.config import ConfigError, load_config

    try:
        cfg = load_config(config, set_, run_name)  # fail fast, before Prefect starts
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    from flows import console_log

    log_file = console_log.log_file_for(cfg.log_dir, cfg.run_name)
    console_log.configure(log_file, verbose)  # before vLLM or Prefect is imported
    from flows.preflight import preflight

    problems = preflight(cfg)  # a wrong path or a store that is down: one line each, before Prefect starts
    for problem in problems:
        err.print(f"[red]{problem}[/red]", soft_wrap=True)
    if problems:
        raise typer.Exit(2)
    from flows.stepcoder_flow import stepcoder
    from storage.lock import StoreLocked

    try:
        summaries = stepcoder(run_name=cfg.run_name, config_path=str(config) if config else None,
                              overrides=list(set_), iterations=iterations)
    except StoreLocked as exc:  # another flow run is training this run: say so, no traceback
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(3)
    for summary in summaries:
        print_summary(summary)
    console.print(f"library logs: {log_file}", soft_wrap=True)  # paths are copied: never wrapped
    console.print(f"where the run stands: [bold]stepcoder status {cfg.run_name} --store {cfg.store}[/bold]",
                  soft_wrap=True)
    api = os.environ.get("PREFECT_API_URL", "")
    if api:  # a configured server (not the ephemeral one): its UI shows the flow runs and artifacts
        console.print(f"flow runs and artifacts: {api.removesuffix('/api')}/runs")


def print_summary(s: dict) -> None:
    console.rule(f"[bold]run {s['run']} · iteration {s['iteration']}")
    stages = Table(title="pass rate per curriculum stage (0 = most of the solution given)")
    for col in ("stage", "samples", "passes", "pass rate"):
        stages.add_column(col, justify="right")
    for stage, st in s["pass_rate_by_stage"].items():
        stages.add_row(str(stage), str(st["samples"]), str(st["passes"]), f"{st['pass_rate']:.3f}")
    console.print(stages)
    outcomes = ", ".join(f"{k} {v}" for k, v in s["outcomes"].items())
    console.print(f"reward mean [bold]{s['reward_mean']:+.3f}[/bold] over {s['rollouts']} rollouts · {outcomes}")
    console.print(
        f"PPO: policy loss {s['policy_loss']:+.4f} · value loss {s['value_loss']:.4f} · "
        f"KL(π‖π_ref) {s['kl_ref']:.4f} · approx KL {s['approx_kl']:.5f} · "
        f"FGO masked tokens {s['fgo_masked_fraction']:.1%} · problems advanced {s['advanced']}"
    )
    times = " · ".join(f"{k} {v:.1f}s" for k, v in s.get("timings", {}).items())
    console.print(f"timings: {times}")
    for name, value in s.get("evals", {}).items():
        console.print(f"eval {name}: {value:.4f}")
    console.print(f"rollouts → {s['store']}\ncheckpoint → {s['checkpoint']}")
    console.print(
        "next: [cyan]stepcoder sql \"SELECT iteration, stage, avg((outcome = 'pass')::INT) AS pass_rate, "
        f"count(*) AS n FROM rollouts WHERE run = '{s['run']}' GROUP BY ALL ORDER BY ALL\"[/cyan]"
    )


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the views rollouts, test_results, curriculum, train_metrics, "
                                          "evals, iterations, commits"),
    store: Optional[str] = typer.Option(None, "--store", help="store dir or URL (default: from the run config)"),
    fmt: Format = typer.Option(Format.table, "--format", "-f"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write to a file instead of stdout"),
) -> None:
    """Query the committed rollout history with DuckDB."""
    import duckdb

    from stepcoder.config import load_config
    from storage import connect, run_sql

    cfg = load_config()
    con = connect(store or cfg.store, None if store else cfg.store_options)
    try:
        result = run_sql(con, query)
    except duckdb.Error as exc:
        err.print(f"[red]SQL error:[/red] {exc}")
        raise typer.Exit(1)
    finally:
        con.close()
    write_table(result, fmt, out)


def _json_value(value):
    """DuckDB sums come back as Decimal: integral ones as int, others as float; anything else as text."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def write_table(result, fmt: Format, out: Optional[Path]) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt is Format.parquet:
        if out is None:
            err.print("[red]--format parquet needs --out FILE[/red]")
            raise typer.Exit(2)
        pq.write_table(result, out)
        return
    if fmt is Format.csv:
        sink = str(out) if out else sys.stdout.buffer
        pacsv.write_csv(result, sink)
        return
    if fmt is Format.json:
        text = "\n".join(json.dumps(row, default=_json_value) for row in result.to_pylist())
        (out.write_text(text + "\n") if out else print(text))
        return
    table = Table()
    for name in result.column_names:
        table.add_column(name)
    for row in result.to_pylist():
        table.add_row(*("" if v is None else str(v)[:80] for v in row.values()))
    if out:
        with out.open("w") as fh:
            Console(file=fh, width=200).print(table)
    else:
        console.print(table)


@model_app.command("prepare")
def model_prepare(
    name: str = typer.Argument("smollm2-135m", help="smollm2-135m (default policy) or tiny (test model)"),
    force: bool = typer.Option(False, "--force", help="rebuild even if prepared"),
) -> None:
    """Build a named model's HF directory once (cached under $STEPCODER_CACHE)."""
    from stepcoder.models import NAMED_MODELS, cache_dir, prepare_model, resolve_model

    if name not in NAMED_MODELS:
        err.print(f"[red]unknown model {name!r}; valid: {', '.join(NAMED_MODELS)}[/red]")
        raise typer.Exit(2)
    path = prepare_model(name, cache_dir() / "models" / name) if force else resolve_model(name)
    console.print(f"{name} ready at {path}")


# `stepcoder report RUN`: redraw <store>/runs/<run>/learning_curves.png from the committed history.
from flows.report_cmd import report_command  # noqa: E402  (no Prefect import: the command works offline)

app.command("report")(report_command)

# `stepcoder status [RUN]`: where each run stands (no Prefect import either).
from flows.status_cmd import status_command  # noqa: E402

app.command("status")(status_command)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
