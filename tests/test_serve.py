"""The serve entry point's options and the task-runner factory, without a server (the real thing is in
test_deployment.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import typer

import flows  # noqa: F401  (Prefect env defaults)
from flows.serve import build_schedules, default_parameters, parse_params
from flows.task_runners import make_task_runner


def test_params_are_json_when_they_parse_else_strings():
    assert parse_params(["iterations=2", 'overrides=["ppo.lr=1e-5", "data.limit=4"]', "run_name=nightly",
                         'run_name2="x=y"']) == {
        "iterations": 2, "overrides": ["ppo.lr=1e-5", "data.limit=4"], "run_name": "nightly", "run_name2": "x=y"}
    with pytest.raises(typer.BadParameter, match="name=value"):
        parse_params(["iterations"])


def test_default_parameters_are_validated_and_the_config_path_pinned(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "c.yaml").write_text("run_name: x\n")
    params = default_parameters({"config_path": f"{tmp_path.name}/c.yaml", "iterations": 1})
    assert params["config_path"] == str(tmp_path / "c.yaml")
    from stepcoder.config import ConfigError

    with pytest.raises(ConfigError, match="ppo.clip_coef"):
        default_parameters({"overrides": ["ppo.clip_coef=-1"]})
    with pytest.raises(typer.BadParameter, match="valid: config_path, iterations, overrides, run_name"):
        default_parameters({"iteration": 1})


def test_schedules_carry_an_explicit_timezone():
    anchor = datetime(2026, 1, 1, tzinfo=timezone.utc)
    cron, every = build_schedules(["0 3 * * *"], 3600, "Europe/Paris", anchor)
    assert (cron.cron, cron.timezone) == ("0 3 * * *", "Europe/Paris")
    assert (every.interval, every.anchor_date, every.timezone) == (timedelta(hours=1), anchor, "Europe/Paris")
    assert build_schedules([], None, "UTC") == []
    with pytest.raises(typer.BadParameter, match="unknown timezone"):
        build_schedules(["0 * * * *"], None, "Mars/Olympus")
    with pytest.raises(typer.BadParameter, match="> 0"):
        build_schedules([], 0, "UTC")


def test_task_runner_factory():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    thread = make_task_runner("thread", max_workers=3)
    assert isinstance(thread, ThreadPoolTaskRunner) and thread._max_workers == 3
    local = make_task_runner("dask", max_workers=2)
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                    "host": "127.0.0.1", "dashboard_address": None}
    remote = make_task_runner("dask", max_workers=2, dask_address="tcp://10.0.0.5:8786")
    assert remote.address == "tcp://10.0.0.5:8786" and remote.cluster_kwargs == {}
    with pytest.raises(ValueError, match="valid: thread, dask"):
        make_task_runner("ray", 2)
    with pytest.raises(ValueError, match="max_workers"):
        make_task_runner("thread", 0)
