"""PPOCoder reward mode through the real flow: each reward component lands in the store, SQL compares them."""

import pytest

from storage import open_store

pytestmark = pytest.mark.slow

COMPONENTS_BY_OUTCOME = """
SELECT outcome, count(*) AS n, avg(r_exec) AS r_exec, avg(r_ast) AS r_ast, avg(r_dfg) AS r_dfg,
       avg(reward) AS reward
FROM rollouts WHERE run = ? GROUP BY outcome ORDER BY outcome
"""


def test_one_ppocoder_iteration_stores_each_component(tiny_model, prefect_server, tmp_path):
    from flows.stepcoder_flow import stepcoder

    overrides = [f"store={tmp_path / 'store'}", f"checkpoint_dir={tmp_path / 'ckpt'}", "reward.mode=ppocoder",
                 "reward.ast_weight=0.5", "data.limit=4"]
    (summary,) = stepcoder(run_name="ppoc", config_path="infra/configs/tiny.yaml", overrides=overrides)
    store = open_store(str(tmp_path / "store"))
    rows = store.read("rollouts", run="ppoc").to_pylist()
    # 2 samples per problem; data.limit=4 minus mbpp/602, held out because MBPP test task 217 repeats it
    assert len(rows) == 2 * len({r["problem_id"] for r in rows}) == 6
    for r in rows:
        assert r["r_ast"] is not None and r["r_dfg"] is not None
        assert 0.0 <= r["r_ast"] <= 1.0 and 0.0 <= r["r_dfg"] <= 1.0
        assert r["reward"] == pytest.approx(r["r_exec"] + 0.5 * r["r_ast"] + r["r_dfg"], abs=1e-5)
        if r["outcome"] == "compile_error":
            assert (r["r_exec"], r["r_ast"], r["r_dfg"]) == (-1.0, 0.0, 0.0)
    con = store.connect()
    table = con.execute(COMPONENTS_BY_OUTCOME, ["ppoc"]).fetchall()
    con.close()
    assert sum(n for _, n, *_ in table) == len(rows)
    for outcome, n, r_exec, r_ast, r_dfg, reward in table:
        mine = [r for r in rows if r["outcome"] == outcome]
        assert n == len(mine)
        assert r_ast == pytest.approx(sum(r["r_ast"] for r in mine) / n, abs=1e-6)
        assert reward == pytest.approx(r_exec + 0.5 * r_ast + r_dfg, abs=1e-5)
    cfg = store.read("iterations", run="ppoc").column("config_json").to_pylist()[0]
    assert '"mode": "ppocoder"' in cfg
