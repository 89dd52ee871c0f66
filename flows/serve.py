"""Serve deployment ``stepcoder/iterate``: a long-lived process that runs the flow whenever a run is asked for.

    python -m flows.serve                                    # on demand only
    python -m flows.serve --cron "0 * * * *" --timezone UTC  # plus one iteration every hour
    python -m flows.serve --interval 3600 --param run_name=nightly --param config_path=infra/configs/tiny.yaml

Then, from any shell that points at the same API (``PREFECT_API_URL``):

    prefect deployment run stepcoder/iterate --param run_name=nightly --watch

Each run executes in a fresh process (Prefect's runner starts one per flow run) and does ``iterations``
iterations, by default one, continuing the run from its store: a schedule is "one more iteration each
tick". ``--limit 1`` (the default) makes this process run one flow run at a time, so two runs it picks up
never train at once; runs across several processes or machines are kept apart by the store's run lock.

The work-pool form of the same deployment (a worker instead of this process) is ``infra/prefect.yaml``.
Don't serve and ``prefect deploy`` the same deployment name at once: they overwrite each other.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

import flows  # noqa: F401  (Prefect env defaults, before prefect is imported)

DEPLOYMENT = "iterate"

app = typer.Typer(add_completion=False)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["iterations=2", 'overrides=["ppo.lr=1e-5"]', "run_name=a"]`` → ``{"iterations": 2, ...}``.

    Values are JSON when they parse as JSON (numbers, lists, booleans, quoted strings), else plain strings,
    the same rule as ``prefect deployment run --param``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} must look like name=value", param_hint="--param")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def default_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Validate the deployment's default parameters once, now, and pin ``config_path`` to an absolute path.

    A bad default then fails here, at ``make serve``, rather than in every scheduled run. The path is pinned
    because runs may start in another working directory.
    """
    from flows.stepcoder_flow import stepcoder
    from stepcoder.config import load_config

    known = set(stepcoder.parameters.properties)
    unknown = set(params) - known
    if unknown:
        raise typer.BadParameter(
            f"unknown flow parameter(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}",
            param_hint="--param",
        )
    params = dict(params)
    if params.get("config_path"):
        params["config_path"] = str(Path(params["config_path"]).expanduser().resolve())
    load_config(params.get("config_path"), params.get("overrides"), params.get("run_name"))  # raises ConfigError
    return params


def build_schedules(
    cron: list[str], interval: Optional[float], timezone: str, anchor_date: Optional[datetime] = None
) -> list:
    """Prefect schedules for ``--cron`` (each) and ``--interval`` (seconds), all in ``timezone`` (IANA name).

    The timezone is explicit so "0 3 * * *" means 03:00 where the operator is, DST included, not the
    server's local time. An interval counts from ``anchor_date`` (default: now).
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.schedules import Cron, Interval

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"unknown timezone {timezone!r} (use an IANA name, e.g. UTC, Europe/Paris)",
                                 param_hint="--timezone") from None
    schedules = [Cron(c, timezone=timezone) for c in cron]
    if interval is not None:
        if interval <= 0:
            raise typer.BadParameter("must be > 0 seconds", param_hint="--interval")
        schedules.append(Interval(interval, anchor_date=anchor_date, timezone=timezone))
    return schedules


@app.command()
def main(
    cron: list[str] = typer.Option([], "--cron", help='cron schedule, e.g. "0 * * * *" (repeatable)'),
    interval: Optional[float] = typer.Option(None, "--interval", help="interval schedule, in seconds"),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA timezone of the schedules"),
    anchor_date: Optional[datetime] = typer.Option(None, "--anchor-date", help="interval start (default now)"),
    param: list[str] = typer.Option([], "--param", "-p", help="default flow parameter name=value (JSON value)"),
    limit: int = typer.Option(1, "--limit", min=1, help="flow runs this process runs at once"),
    name: str = typer.Option(DEPLOYMENT, "--name", help="deployment name"),
) -> None:
    """Register deployment stepcoder/<name> (with optional schedules) and run its flow runs until stopped."""
    from flows.stepcoder_flow import stepcoder
    from stepcoder.config import ConfigError

    try:
        params = default_parameters(parse_params(param))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2)
    schedules = build_schedules(cron, interval, timezone, anchor_date)
    stepcoder.serve(
        name=name,
        parameters=params,
        schedules=schedules or None,
        limit=limit,
        tags=["stepcoder"],
        description="One StepCoder iteration (generate → execute → store → train → advance) per run by default, "
                    "continuing the run from its store.",
        pause_on_shutdown=True,  # a stopped server leaves no schedule piling up runs nobody executes
    )


if __name__ == "__main__":
    app()
