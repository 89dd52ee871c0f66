"""Rollout store: real Parquet files and DuckDB, no mocks.

The store fixture is parametrized over backends; "local" writes under tmp_path. An "s3" param (a SeaweedFS
server started by a fixture) can be added to ``store_location`` without touching the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from storage import IterationAlreadyCommitted, Store, open_store, run_sql

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local"])
def store_location(request, tmp_path) -> tuple[str, dict]:
    """(url, storage_options) of an empty store on the backend named by the param."""
    if request.param == "local":
        return str(tmp_path / "store"), {}
    raise NotImplementedError(request.param)


@pytest.fixture
def store(store_location) -> Store:
    url, options = store_location
    return open_store(url, options)


def rollouts(n: int, tag: str = "a") -> list[dict]:
    return [
        {
            "rollout_id": f"{tag}-{i}",
            "problem_id": f"p{i % 2}",
            "sample_index": i,
            "stage": 1,
            "prompt_ids": [1, 2, 3],
            "completion_ids": list(range(i + 1)),
            "old_logprobs": [-0.5] * (i + 1),
            "fgo_mask": [1] * i + [0],
            "reward": 1.0 if i % 2 == 0 else -1.0,
            "cache_hit": False,
        }
        for i in range(n)
    ]


def count(con, table: str) -> int:
    return run_sql(con, f"SELECT count(*) AS n FROM {table}")["n"][0].as_py()


def put(store: Store, path: str, data: pa.Table | bytes) -> None:
    """Write a file by hand, bypassing the store (relative to its root)."""
    path = f"{store.root}/{path}"
    store.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)  # local fs doesn't create parents
    with store.fs.open(path, "wb") as f:
        pq.write_table(data, f) if isinstance(data, pa.Table) else f.write(data)


def write_leftover(store: Store, table: str, run: str, iteration: int, rows: list[dict]) -> None:
    """A published file with no commit marker: what an interrupted commit leaves behind."""
    put(store, f"{table}/run={run}/iteration={iteration}/part-0.parquet", storage.store.conform(table, rows))


def test_stage_commit_query_sql(store):
    store.stage("run1", 0, "rollouts", rollouts(4))
    store.stage("run1", 0, "test_results", [{"rollout_id": "a-0", "test_index": 0, "status": "pass"}])
    store.stage("run1", 0, "iterations", [{"config_hash": "abc", "num_rollouts": 4, "pass_rate": 0.5}])
    store.commit("run1", 0)
    store.stage("run1", 1, "rollouts", rollouts(2, tag="b"))
    store.commit("run1", 1)

    assert store.runs() == ["run1"]
    assert store.committed_iterations("run1") == [0, 1]
    assert store.latest_iteration("run1") == 1
    assert store.latest_iteration("other") is None

    con = store.connect()
    got = run_sql(
        con,
        "SELECT iteration, count(*) AS n, sum(reward) AS r FROM rollouts WHERE run = ? GROUP BY iteration "
        "ORDER BY iteration",
        ["run1"],
    )
    assert got.to_pydict() == {"iteration": [0, 1], "n": [4, 2], "r": [0.0, 0.0]}
    assert got.schema.field("iteration").type == pa.int32()  # hive_types, not DuckDB's BIGINT guess
    assert run_sql(con, "SELECT run, iteration FROM commits ORDER BY iteration").to_pylist() == [
        {"run": "run1", "iteration": 0},
        {"run": "run1", "iteration": 1},
    ]
    assert count(con, "test_results") == 1
    assert run_sql(con, "SELECT config_hash FROM iterations")["config_hash"].to_pylist() == ["abc"]

    t = store.read("rollouts", run="run1", iteration=1)
    assert t.column_names[-2:] == ["run", "iteration"]
    assert t["rollout_id"].to_pylist() == ["b-0", "b-1"]
    assert set(t["schema_version"].to_pylist()) == {storage.SCHEMA_VERSION}
    # Module-level connect gives the same view from a URL.
    assert count(storage.connect(store.url), "rollouts") == 6


def test_empty_store_has_typed_views(store):
    con = store.connect()
    for name, schema in storage.TABLES.items():
        t = run_sql(con, f"SELECT * FROM {name}")
        assert t.num_rows == 0
        assert t.column_names == schema.names + ["run", "iteration"]
    assert store.read("rollouts").num_rows == 0
    assert store.runs() == []


def test_uncommitted_iteration_is_invisible(store):
    store.stage("run1", 0, "rollouts", rollouts(3))
    store.commit("run1", 0)
    store.stage("run1", 1, "rollouts", rollouts(5, tag="b"))  # staged only
    store.stage("run2", 0, "rollouts", rollouts(5, tag="c"))

    assert store.read("rollouts").num_rows == 3
    assert store.read("rollouts", iteration=1).num_rows == 0
    assert store.committed_iterations("run1") == [0]
    assert store.runs() == ["run1"]
    con = store.connect()
    assert count(con, "rollouts") == 3
    assert run_sql(con, "SELECT DISTINCT iteration FROM rollouts")["iteration"].to_pylist() == [0]
    assert store.read_staged("run1", 1, "rollouts").num_rows == 5


def test_interrupted_commit_then_recommit_has_no_duplicates(store):
    # The interrupted commit published rollouts and test_results but died before the marker.
    write_leftover(store, "rollouts", "run1", 0, rollouts(3))
    write_leftover(store, "test_results", "run1", 0, [{"rollout_id": "a-0", "test_index": 0}])
    assert store.read("rollouts").num_rows == 0
    assert count(store.connect(), "rollouts") == 0

    # The re-run stages its own output again (only rollouts this time) and commits.
    store.stage("run1", 0, "rollouts", rollouts(3))
    store.commit("run1", 0)
    con = store.connect()
    assert count(con, "rollouts") == 3
    assert count(con, "test_results") == 0  # the leftover of a table not re-staged is gone too
    assert store.read("rollouts")["rollout_id"].to_pylist() == ["a-0", "a-1", "a-2"]


def test_commit_twice_raises_and_overwrite_replaces(store):
    store.stage("run1", 0, "rollouts", rollouts(3))
    store.stage("run1", 0, "test_results", [{"rollout_id": "a-0", "test_index": 0}])
    store.commit("run1", 0)

    store.stage("run1", 0, "rollouts", rollouts(2, tag="new"))
    with pytest.raises(IterationAlreadyCommitted, match="overwrite=True"):
        store.commit("run1", 0)
    assert store.read("rollouts").num_rows == 3  # the refused commit changed nothing

    store.commit("run1", 0, overwrite=True)
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 0, overwrite=True)  # must not un-commit the iteration
    assert store.committed_iterations("run1") == [0]
    assert store.read("rollouts")["rollout_id"].to_pylist() == ["new-0", "new-1"]
    assert store.read("test_results").num_rows == 0  # the iteration is replaced as a whole
    assert store.committed_iterations("run1") == [0]


def test_commit_needs_staged_data_and_cleans_staging(store):
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 0)
    store.stage("run1", 0, "rollouts", rollouts(1))
    store.stage("run1", 0, "rollouts", rollouts(2))  # staging again replaces
    assert store.read_staged("run1", 0, "rollouts").num_rows == 2
    store.commit("run1", 0)
    assert not store.fs.exists(f"{store.root}/_staging/run=run1/iteration=0")
    assert store.read("rollouts").num_rows == 2

    store.stage("run1", 1, "rollouts", rollouts(1))
    store.discard_staged("run1", 1)
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 1)


def test_marker_is_create_only(store):
    marker = f"{store.root}/_commits/run=run1/iteration=0.json"
    store._create_marker(marker, b"{}", "run1", 0)
    with pytest.raises(IterationAlreadyCommitted):
        store._create_marker(marker, b"{}", "run1", 0)


def test_old_partition_with_fewer_columns_reads_nulls(store):
    # An iteration written before "finish_reason" existed: a hand-made file lacking it, plus a marker.
    old = pa.table({"schema_version": pa.array([0, 0], pa.int32()), "rollout_id": ["o-0", "o-1"],
                    "problem_id": ["p0", "p1"], "reward": pa.array([1.0, 0.0], pa.float32())})
    put(store, "rollouts/run=run1/iteration=0/part-0.parquet", old)
    put(store, "_commits/run=run1/iteration=0.json", b'{"run": "run1"}')

    # Only old files: the view still has every current column, NULL where the file has none.
    con = store.connect()
    assert run_sql(con, "SELECT finish_reason FROM rollouts")["finish_reason"].to_pylist() == [None, None]

    new = rollouts(1, tag="n")
    new[0]["finish_reason"] = "stop"
    store.stage("run1", 1, "rollouts", new)
    store.commit("run1", 1)
    con = store.connect()
    got = run_sql(con, "SELECT rollout_id, finish_reason, schema_version FROM rollouts ORDER BY rollout_id")
    assert got.to_pylist() == [
        {"rollout_id": "n-0", "finish_reason": "stop", "schema_version": 1},
        {"rollout_id": "o-0", "finish_reason": None, "schema_version": 0},
        {"rollout_id": "o-1", "finish_reason": None, "schema_version": 0},
    ]
    t = store.read("rollouts")
    assert t.schema.field("finish_reason").type == pa.string()
    assert t["finish_reason"].to_pylist() == [None, None, "stop"]
    # A marker without committed_at still counts: its existence is the commit.
    assert run_sql(con, "SELECT committed_at FROM commits WHERE iteration = 0").to_pylist() == [
        {"committed_at": None}
    ]


def test_list_columns_round_trip(store):
    rows = rollouts(3)
    store.stage("run1", 0, "rollouts", rows)
    store.commit("run1", 0)

    t = store.read("rollouts")
    assert t.schema.field("prompt_ids").type == pa.list_(pa.int32())
    assert t.schema.field("fgo_mask").type == pa.list_(pa.uint8())
    assert t.schema.field("old_logprobs").type == pa.list_(pa.float32())
    for col in ("prompt_ids", "completion_ids", "fgo_mask", "old_logprobs"):
        assert t[col].to_pylist() == [r[col] for r in rows]
    # Flat values convert to numpy without a copy (what the trainer relies on).
    mask = t["fgo_mask"].combine_chunks()
    assert mask.values.to_numpy(zero_copy_only=True).tolist() == [0, 1, 0, 1, 1, 0]

    sql = run_sql(store.connect(), "SELECT fgo_mask, completion_ids FROM rollouts ORDER BY sample_index")
    assert sql.schema.field("fgo_mask").type.value_type == pa.uint8()
    assert sql.schema.field("completion_ids").type.value_type == pa.int32()
    assert sql["fgo_mask"].to_pylist() == [r["fgo_mask"] for r in rows]


READER = """
import json, sys
import storage
url, opts, n_iters = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
seen = set()
while True:
    con = storage.connect(url, opts)
    got = storage.run_sql(con, "SELECT iteration, count(*) AS n FROM rollouts GROUP BY iteration").to_pylist()
    committed = storage.run_sql(con, "SELECT count(*) AS n FROM commits")["n"][0].as_py()
    # Every visible iteration is complete (5 rows), and only committed ones are visible.
    assert all(r["n"] == 5 for r in got), got
    assert len(got) == committed, (got, committed)
    if not seen:
        print("ready", flush=True)  # the writer goes on only once this process is reading
    seen.add(len(got))
    if len(got) == n_iters:
        break
print(json.dumps(sorted(seen)))
"""


def test_second_process_reads_while_writing(store, store_location):
    url, options = store_location
    n_iters = 8
    store.stage("run1", 0, "rollouts", rollouts(5))
    store.commit("run1", 0)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, url, json.dumps(options), str(n_iters)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout.readline() == "ready\n", reader.communicate(timeout=30)[1]
        for it in range(1, n_iters):
            store.stage("run1", it, "rollouts", rollouts(5, tag=f"i{it}"))
            store.stage("run1", it + 1, "rollouts", rollouts(2, tag="next"))  # staged, never committed
            time.sleep(0.05)  # give the reader time to query between commits
            store.commit("run1", it)
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen[-1] == n_iters and len(seen) > 1, seen  # it read committed states in between


def test_unknown_table_names_valid_ones(store):
    with pytest.raises(ValueError, match=r"unknown table 'rollout'.*'rollouts'"):
        store.stage("run1", 0, "rollout", rollouts(1))
    with pytest.raises(ValueError, match="unknown table"):
        store.read("nope")


@pytest.mark.parametrize(
    "data, column",
    [
        ([{"rollout_id": "a", "problem_id": "p", "sample_index": "x"}], "sample_index"),
        ([{"rollout_id": "a", "problem_id": "p", "fgo_mask": [1, 300]}], "fgo_mask"),
        (pa.table({"rollout_id": ["a"], "problem_id": ["p"], "tests_total": [2**40]}), "tests_total"),
        (pa.table({"rollout_id": ["a"], "problem_id": ["p"], "reward": ["high"]}), "reward"),
        ([{"rollout_id": "a", "problem_id": "p", "rewrad": 1.0}], "rewrad"),
        ([{"problem_id": "p"}], "rollout_id"),
        ([{"rollout_id": None, "problem_id": "p"}], "rollout_id"),
    ],
    ids=["str-for-int", "uint8-overflow", "int32-overflow", "str-for-float", "unknown", "missing",
         "null-key"],
)
def test_bad_column_names_the_field(store, data, column):
    with pytest.raises(ValueError, match=rf"rollouts: .*{column}"):
        store.stage("run1", 0, "rollouts", data)
    assert not store.fs.exists(f"{store.root}/_staging/run=run1/iteration=0/rollouts.parquet")


@pytest.mark.parametrize("run, iteration", [("a/b", 0), ("", 0), ("x=1", 0), ("ok", -1), ("ok", True)])
def test_bad_partition_key(store, run, iteration):
    with pytest.raises(ValueError, match="run must|iteration must"):
        store.stage(run, iteration, "rollouts", rollouts(1))
