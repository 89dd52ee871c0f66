"""The iteration artifact's markdown and the learning-curves PNG: pure functions, no Prefect server, no model
(one test writes into an S3 store on the session's SeaweedFS server)."""

from __future__ import annotations

import math
import struct

import pytest
from s3_server import s3_server  # noqa: F401  (the session fixture: a real S3 server on loopback)

from stepcoder.report import plot_learning_curves
from stepcoder.summary import iteration_summary


def _rollout(stage: int, outcome: str, reward: float, mask: list[int], pid: str = "p1") -> dict:
    return {"stage": stage, "outcome": outcome, "reward": reward, "fgo_mask": mask, "problem_id": pid}


CURRICULUM = [
    {"problem_id": "mbpp/11", "stage_before": 0, "stage_after": 1, "num_stages": 3, "split_line": 4,
     "samples": 2, "passes": 2, "pass_rate": 1.0, "advanced": True},
    {"problem_id": "mbpp/12", "stage_before": 1, "stage_after": 1, "num_stages": 2, "split_line": None,
     "samples": 2, "passes": 0, "pass_rate": 0.0, "advanced": False},
]


@pytest.fixture
def summary() -> dict:
    rollouts = [
        _rollout(0, "pass", 1.0, [1, 1, 1, 1], "mbpp/11"),
        _rollout(0, "pass", 1.0, [1, 1, 0, 0], "mbpp/11"),
        _rollout(1, "fail", -0.3, [1, 0, 0, 0], "mbpp/12"),
        _rollout(1, "compile_error", -1.0, [1, 1, 1, 1], "mbpp/12"),
    ]
    metrics = [{"policy_loss": -0.02, "value_loss": 0.5, "kl_ref": 0.001, "approx_kl": 1e-5},
               {"policy_loss": -0.04, "value_loss": 0.3, "kl_ref": 0.003, "approx_kl": 3e-5}]
    s = iteration_summary("My_Run.2", 3, rollouts, metrics, CURRICULUM,
                          [{"eval_name": "humaneval", "metric": "pass@1", "value": 0.0625}])
    s.update(store="/tmp/store", checkpoint="/tmp/ckpt/My_Run.2/iter-000003",
             timings={"generate": 6.0, "execute": 2.0, "store": 0.5, "train": 11.5})
    return s


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}")
    end = md.find("\n## ", start + 1)
    return md[start:end if end != -1 else None]


def test_artifact_key_is_lowercase_letters_digits_dashes():
    from flows.artifacts import artifact_key

    assert artifact_key("My_Run.2") == "stepcoder-my-run-2"
    assert artifact_key("default") == "stepcoder-default"
    assert artifact_key("__") == "stepcoder-run"
    for run in ("A.b_c-D", "x" * 64, "9lives"):
        key = artifact_key(run)
        assert key == key.lower() and set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_summary_markdown_has_every_section_with_the_numbers(summary):
    from flows.artifacts import summary_markdown

    md = summary_markdown(summary, CURRICULUM)
    assert md.startswith("# StepCoder · run `My_Run.2` · iteration 3")
    stages = _section(md, "Pass rate per CCCS stage")
    assert "| 0 | 2 | 2 | 1.000 |" in stages and "| 1 | 2 | 0 | 0.000 |" in stages
    outcomes = _section(md, "Reward and outcomes")
    assert "reward_mean **+0.1750**" in outcomes  # (1 + 1 - 0.3 - 1) / 4
    assert "| pass | 2 | 50.0% |" in outcomes and "| timeout | 0 | 0.0% |" in outcomes
    ppo = _section(md, "PPO")
    assert "-0.03000" in ppo and "0.40000" in ppo  # mean policy / value loss over the two steps
    assert "| kl_ref (KL(π‖π_ref) per token) | 0.00200 |" in ppo
    assert "| fgo_masked_fraction (completion tokens FGO left out) | 31.2% |" in ppo  # 5 of 16 tokens masked
    assert "| humaneval/pass@1 | 0.0625 |" in _section(md, "Evaluation")
    cur = _section(md, "Curriculum movement (CCCS)")
    assert "1 of 2 problems advanced" in cur
    assert "| 0 | 1 | 1 |" in cur and "| 1 | 1 | 1 |" in cur  # stage before → after counts
    assert cur.index("mbpp/11") < cur.index("mbpp/12")  # advanced problems first
    assert "Curriculum progress" not in md  # only when the run's progress was read from the store
    progress = summary_markdown({**summary, "curriculum_progress": [
        {"iteration": 2, "problems": 2, "advanced": 0, "stages": {0: 2}},
        {"iteration": 3, "problems": 3, "advanced": 1, "stages": {0: 2, 1: 1}}]}, CURRICULUM)
    table = _section(progress, "Curriculum progress (whole run)")
    assert "| iteration | advanced | stage 0 | stage 1 |" in table
    assert "| 2 | 0 | 2 | 0 |" in table and "| 3 | 1 | 2 | 1 |" in table
    timings = _section(md, "Phase timings")
    assert "| train | 11.5 | 57% |" in timings and "| **total** | **20.0** |" in timings
    assert "checkpoint: `/tmp/ckpt/My_Run.2/iter-000003`" in md


def test_summary_markdown_tolerates_missing_parts_and_nan():
    from flows.artifacts import summary_markdown

    s = iteration_summary("r", 1, [], [], [])  # no rollouts, no train metrics: losses are NaN
    md = summary_markdown(s)
    assert "_no rollouts_" in md and "| policy_loss | n/a |" in md
    assert "Phase timings" not in md and "Evaluation" not in md
    s.pop("curriculum")
    assert "Curriculum movement" not in summary_markdown(s)
    s["curriculum"] = []
    assert "_no curriculum rows for this iteration_" in summary_markdown(s)


def test_summary_markdown_survives_a_json_round_trip(summary):
    """Stage keys become strings when a summary comes back from the API as JSON; the table is the same."""
    import json

    from flows.artifacts import summary_markdown

    assert summary_markdown(json.loads(json.dumps(summary)), CURRICULUM) == summary_markdown(summary, CURRICULUM)


def test_summary_markdown_escapes_table_cells(summary):
    from flows.artifacts import summary_markdown

    odd = [dict(CURRICULUM[0], problem_id="a|b\nc")]
    assert "| a\\|b c |" in summary_markdown(summary, odd)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def _pixels_of(path, color: str) -> int:
    """How many pixels are (nearly) ``color``: the curves' ink, as opposed to axes, grid and text."""
    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    return int((np.abs(img - np.array(to_rgb(color))).max(axis=-1) < 0.05).sum())


ROWS = [
    {"iteration": 1, "pass_rate": 0.10, "reward_mean": -0.70, "kl_ref": 0.000},
    {"iteration": 2, "pass_rate": 0.18, "reward_mean": -0.55, "kl_ref": 0.004,
     "evals": {"humaneval/pass@1": 0.06}},
    {"iteration": 3, "pass_rate": 0.25, "reward_mean": -0.41, "kl_ref": math.nan,
     "evals": {"humaneval/pass@1": 0.09}},
]


def test_learning_curves_png_has_the_expected_size_and_content(tmp_path):
    out = plot_learning_curves(ROWS, tmp_path / "runs" / "r" / "learning_curves.png", title="run r")
    data = out.read_bytes()
    assert _png_size(data) == (2000, 450)
    assert len(data) > 20_000  # three panels with axes, lines and text, not a blank canvas
    assert _pixels_of(out, "tab:blue") > 1_000  # the three train curves
    assert _pixels_of(out, "tab:orange") > 100  # the eval curve on the pass-rate panel


def test_learning_curves_with_no_rows_or_one_row(tmp_path):
    empty = plot_learning_curves([], tmp_path / "empty.png")
    one = plot_learning_curves(ROWS[:1], tmp_path / "one.png")
    assert _png_size(empty.read_bytes()) == _png_size(one.read_bytes()) == (2000, 450)
    # One point still draws a marker per panel; no data draws none.
    assert _pixels_of(one, "tab:blue") > 3 * 50 and _pixels_of(empty, "tab:blue") == 0


def test_learning_curves_to_a_file_object():
    import io

    buf = io.BytesIO()
    plot_learning_curves(ROWS, buf)
    assert _png_size(buf.getvalue()) == (2000, 450)


def test_learning_curves_are_written_into_the_run_store_and_regenerated(tmp_path):
    """`stepcoder report RUN` path: DuckDB over committed iterations + train_metrics + evals → PNG in the store."""
    from datetime import datetime, timezone

    from flows.report_cmd import learning_curve_rows, write_learning_curves
    from storage import open_store

    store = open_store(str(tmp_path / "store"))
    now = datetime.now(timezone.utc)
    for it, (pr, rw) in enumerate([(0.1, -0.7), (0.3, -0.4)], start=1):
        store.stage("r", it, "iterations", [{"started_at": now, "finished_at": now, "pass_rate": pr,
                                              "reward_mean": rw, "checkpoint_uri": f"c{it}"}])
        store.stage("r", it, "train_metrics", [{"step": 2 * it, "kl_ref": 0.01 * it}, {"step": 2 * it + 1,
                                                                                         "kl_ref": 0.03 * it}])
        store.stage("r", it, "evals", [{"eval_name": "humaneval", "dataset": "humaneval", "metric": "pass@1",
                                        "value": 0.05 * it}])
        store.stage("r", it, "curriculum", [  # p1 advances in iteration 2; p2 is seen only in iteration 1
            {"problem_id": "p1", "stage_before": it - 1, "stage_after": it - 1 + (it == 2), "full_stage": False},
            *([{"problem_id": "p2", "stage_before": 0, "stage_after": 0, "full_stage": False}] if it == 1 else [])])
        store.commit("r", it)
    store.stage("r", 3, "iterations", [{"pass_rate": 0.9}])  # staged, never committed: not plotted

    con = store.connect()
    rows = learning_curve_rows(con, "r")
    con.close()
    assert [(r["iteration"], round(r["pass_rate"], 3), round(r["kl_ref"], 3)) for r in rows] == [
        (1, 0.1, 0.02), (2, 0.3, 0.04)]
    assert rows[1]["evals"] == {"humaneval/pass@1": pytest.approx(0.1)}
    assert [(r["stages"], r["advanced"]) for r in rows] == [({0: 2}, 0), ({0: 1, 2: 1}, 1)]

    out = write_learning_curves(str(tmp_path / "store"), "r")
    assert out == str(tmp_path / "store" / "runs" / "r" / "learning_curves.png")
    assert _png_size(open(out, "rb").read()) == (2000, 450)
    assert not list((tmp_path / "store" / "runs" / "r").glob("*.tmp"))
    with pytest.raises(LookupError, match="runs: r"):
        write_learning_curves(str(tmp_path / "store"), "nope")


def test_report_command_writes_the_png(tmp_path):
    from typer.testing import CliRunner
    import typer

    from flows.report_cmd import report_command
    from storage import open_store

    store = open_store(str(tmp_path / "store"))
    store.stage("r", 1, "iterations", [{"pass_rate": 0.5, "reward_mean": 0.0}])
    store.commit("r", 1)
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("noop")(lambda: None)  # two commands, so "report" is a subcommand as in `stepcoder report`
    res = CliRunner().invoke(app, ["report", "r", "--store", str(tmp_path / "store")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "store" / "runs" / "r" / "learning_curves.png").exists()
    res = CliRunner().invoke(app, ["report", "missing", "--store", str(tmp_path / "store")])
    assert res.exit_code == 1 and "no committed iteration" in res.output


def test_learning_curves_go_into_an_s3_store(s3_server, monkeypatch):
    """An object store gets the PNG as one object next to the run's data (`stepcoder report` works on S3)."""
    import uuid

    import s3fs

    from flows.report_cmd import write_learning_curves
    from storage import open_store

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    url = s3_server.url(f"report-{uuid.uuid4().hex[:8]}")
    store = open_store(url)
    store.stage("r", 1, "iterations", [{"pass_rate": 0.25, "reward_mean": -0.5}])
    store.commit("r", 1)
    assert write_learning_curves(url, "r") == f"{url}/runs/r/learning_curves.png"
    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    assert _png_size(fs.cat(f"{url}/runs/r/learning_curves.png")) == (2000, 450)
