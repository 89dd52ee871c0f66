"""`stepcoder status`: one table per run, from a real store (no Prefect)."""

from __future__ import annotations

from typer.testing import CliRunner

from flows.cli import app
from flows.status_cmd import run_status
from storage import open_store


def _store_with_a_run(tmp_path):
    store = open_store(str(tmp_path / "store"))
    ckpt = tmp_path / "ckpt" / "iter-000002"
    (ckpt / "policy").mkdir(parents=True)
    (ckpt / "policy" / "model.safetensors").write_bytes(b"x" * 3000)
    for it, stages in ((1, (0, 1)), (2, (1, 2))):
        store.stage("r1", it, "curriculum", [
            {"problem_id": "p0", "stage_before": stages[0], "stage_after": stages[1], "num_stages": 3},
            {"problem_id": "p1", "stage_before": 0, "stage_after": 0, "num_stages": 3}])
        store.stage("r1", it, "iterations", [{"pass_rate": 0.25 * it, "reward_mean": -0.6 + 0.1 * it,
                                              "num_rollouts": 8, "checkpoint_uri": str(ckpt)}])
        store.commit("r1", it)
    return store, ckpt


def test_status_reports_iterations_stages_checkpoint_and_lock(tmp_path):
    store, ckpt = _store_with_a_run(tmp_path)
    s = run_status(store, "r1")
    assert s["iterations"] == [1, 2] and s["last_iteration"] == 2
    assert (s["pass_rate"], round(s["reward_mean"], 6), s["rollouts"]) == (0.5, -0.4, 8)
    assert s["stages"] == {0: 1, 2: 1} and s["advanced_last"] == 1
    assert s["checkpoint"] == str(ckpt) and s["checkpoint_bytes"] == 3000
    assert s["locked_by"] is None and s["learning_curves"] is None
    with store.lock("r1", owner="flow-run abc"):
        assert run_status(store, "r1")["locked_by"]["owner"] == "flow-run abc"


def test_status_command_prints_a_table_per_run(tmp_path):
    _store_with_a_run(tmp_path)
    res = CliRunner().invoke(app, ["status", "--store", str(tmp_path / "store")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for text in ("run r1", "2 (last 2)", "0.500 (8 rollouts)", "-0.400", "stage 0: 1, stage 2: 1",
                 "iter-000002 (2.9 KB)", "locked", "no", "stepcoder report RUN"):
        assert text in res.output, (text, res.output)
    empty = CliRunner().invoke(app, ["status", "--store", str(tmp_path / "nothing")])
    assert empty.exit_code == 0 and "no committed run" in empty.output
