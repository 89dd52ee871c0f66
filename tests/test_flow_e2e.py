"""Two real StepCoder iterations through the Prefect flow on the tiny model:
generate (vLLM) → execute (sandbox) → store (Parquet) → train (DeepSpeed) → advance, then resume."""

import json
import subprocess
import sys

import pytest

from stepcoder.rewards import DEFAULT_REWARDS
from storage import open_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_iterations(tiny_model, prefect_server, tmp_path_factory):
    from flows.stepcoder_flow import stepcoder

    root = tmp_path_factory.mktemp("run")
    overrides = [
        f"store={root / 'store'}",
        f"checkpoint_dir={root / 'ckpt'}",
        "data.limit=4",  # the same 4 problems every iteration, so curriculum state carries over
        "curriculum.advance_threshold=0",  # advance every iteration: the random model never passes
        "ppo.keep_checkpoints=1",
        "eval.every=2",  # held-out evaluation of the iteration-2 checkpoint, greedy pass@1
        "eval.splits=[mbpp-validation]",
        "eval.limit=3",
        "eval.max_new_tokens=16",
    ]
    first = stepcoder(run_name="e2e", config_path="infra/configs/tiny.yaml", overrides=overrides)
    second = stepcoder(run_name="e2e", config_path="infra/configs/tiny.yaml", overrides=overrides)
    return root, first[0], second[0]


def test_both_iterations_commit_every_table(two_iterations):
    root, first, second = two_iterations
    assert (first["iteration"], second["iteration"]) == (1, 2)
    store = open_store(str(root / "store"))
    assert store.committed_iterations("e2e") == [1, 2]
    rollouts = store.read("rollouts", run="e2e")
    assert rollouts.num_rows == 2 * 4 * 2  # iterations × problems × samples
    for row in rollouts.to_pylist():
        assert len(row["fgo_mask"]) == len(row["completion_ids"]) == len(row["old_logprobs"]) > 0
        assert row["reward"] == pytest.approx(DEFAULT_REWARDS[row["outcome"]])
        # program = the prompt's stage prefix + the kept slice of the completion
        program, prompt = row["program"], row["prompt"]
        k = next(k for k in range(len(program), -1, -1) if prompt.endswith(program[:k]))
        assert program[k:] in row["completion"]
        # FGO on real model output: the last token (stop / EOS / length cut) always trains, no mask is all zero
        assert row["fgo_mask"][-1] == 1 and any(row["fgo_mask"])
    tests = store.read("test_results", run="e2e")
    assert tests.num_rows == sum(r["tests_total"] for r in rollouts.to_pylist() if r["outcome"] != "compile_error")
    assert store.read("train_metrics", run="e2e").num_rows > 0
    assert store.read("iterations", run="e2e").num_rows == 2


def test_second_iteration_continues_from_the_first(two_iterations):
    root, first, second = two_iterations
    store = open_store(str(root / "store"))
    con = store.connect()
    # Curriculum: iteration 2 starts each problem where iteration 1 left it.
    carried = con.sql(
        "SELECT a.problem_id, a.stage_after, b.stage_before FROM curriculum a JOIN curriculum b "
        "USING (run, problem_id) WHERE a.iteration = 1 AND b.iteration = 2"
    ).fetchall()
    assert len(carried) == 4 and all(after == before for _, after, before in carried)
    assert any(after > 0 for _, after, _ in carried)  # at least one multi-stage problem moved on
    stages = dict(con.sql("SELECT DISTINCT problem_id, stage FROM rollouts WHERE iteration = 2").fetchall())
    assert stages == {pid: after for pid, after, _ in carried}
    # Policy: iteration 2 sampled from iteration 1's checkpoint, and the optimizer's step count continued.
    assert {r[0] for r in con.sql("SELECT DISTINCT checkpoint_id FROM rollouts WHERE iteration = 2").fetchall()} == {
        "iter-000001"
    }
    steps = dict(con.sql("SELECT iteration, min(step) FROM train_metrics GROUP BY iteration").fetchall())
    last_1 = con.sql("SELECT max(step) FROM train_metrics WHERE iteration = 1").fetchall()[0][0]
    assert steps[2] == last_1 + 1
    ckpt = con.sql("SELECT checkpoint_uri FROM iterations WHERE iteration = 2").fetchall()[0][0]
    assert ckpt == second["checkpoint"] and ckpt.endswith("iter-000002")
    # keep_checkpoints=1 pruned iteration 1's checkpoint once iteration 2 committed.
    assert sorted(p.name for p in (root / "ckpt" / "e2e").iterdir()) == ["iter-000002"]
    con.close()


def test_sql_cli_returns_the_stored_rows(two_iterations):
    root, _, _ = two_iterations
    query = "SELECT iteration, count(*) AS n FROM rollouts WHERE run = 'e2e' GROUP BY iteration ORDER BY iteration"
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", query, "--store", str(root / "store"), "--format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert [json.loads(line) for line in out.splitlines()] == [{"iteration": 1, "n": 8}, {"iteration": 2, "n": 8}]


STAGES_AND_FGO_SQL = """
SELECT c.iteration, c.stage_after AS stage, count(*) AS problems,
       any_value(f.masked_fraction) AS fgo_masked_fraction
FROM curriculum c
JOIN (SELECT run, iteration, avg(1 - list_sum(fgo_mask) / len(fgo_mask)) AS masked_fraction
      FROM rollouts GROUP BY ALL) f USING (run, iteration)
WHERE c.run = ? AND c.problem_id <> '__global__'
GROUP BY ALL ORDER BY ALL
"""


def test_sql_shows_problems_per_stage_and_fgo_masked_fraction(two_iterations):
    root, _, _ = two_iterations
    store = open_store(str(root / "store"))
    con = store.connect()
    rows = con.execute(STAGES_AND_FGO_SQL, ["e2e"]).fetchall()
    con.close()
    curriculum = store.read("curriculum", run="e2e").to_pylist()
    rollouts = store.read("rollouts", run="e2e").to_pylist()
    for iteration in (1, 2):
        expected_stages = {}
        for c in curriculum:
            if c["iteration"] == iteration:
                expected_stages[c["stage_after"]] = expected_stages.get(c["stage_after"], 0) + 1
        got = {stage: n for it, stage, n, _ in rows if it == iteration}
        assert got == expected_stages
        masks = [r["fgo_mask"] for r in rollouts if r["iteration"] == iteration]
        expected_fraction = sum(1 - sum(m) / len(m) for m in masks) / len(masks)
        fractions = {f for it, _, _, f in rows if it == iteration}
        assert len(fractions) == 1 and fractions.pop() == pytest.approx(expected_fraction)


def test_held_out_evaluation_runs_every_n_iterations(two_iterations):
    root, first, second = two_iterations
    store = open_store(str(root / "store"))
    evals = store.read("evals", run="e2e").to_pylist()
    assert {e["iteration"] for e in evals} == {2}  # every=2: iteration 1 has none
    metrics = {e["metric"]: e for e in evals}
    assert "greedy/pass@1" in metrics and 0.0 <= metrics["greedy/pass@1"]["value"] <= 1.0
    assert all(e["eval_name"] == "mbpp-validation" and e["checkpoint_uri"] == second["checkpoint"] for e in evals)
    assert second["evals"]["mbpp-validation/greedy/pass@1"] == metrics["greedy/pass@1"]["value"]
    # Held out: no evaluation problem was ever trained on.
    trained = {r["problem_id"] for r in store.read("rollouts", run="e2e").to_pylist()}
    assert not any(int(pid.split("/")[1]) in range(511, 601) for pid in trained)


def test_a_second_writer_of_the_same_run_is_refused(tiny_model, prefect_server, tmp_path):
    """Two flow runs of one run name never interleave: the second fails fast, naming the holder."""
    from flows.stepcoder_flow import stepcoder
    from storage.lock import StoreLocked

    store = open_store(str(tmp_path / "store"))
    with store.lock("busy", owner="flow-run other-writer"):
        with pytest.raises(StoreLocked, match="other-writer"):
            stepcoder(run_name="busy", config_path="infra/configs/tiny.yaml",
                      overrides=[f"store={tmp_path / 'store'}", f"checkpoint_dir={tmp_path / 'ckpt'}"])
    assert store.committed_iterations("busy") == []
