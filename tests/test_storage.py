"""Rollout store: real Parquet files, real DuckDB and a real S3 server (SeaweedFS), no mocks.

Every test runs on both backends through the ``store_location`` fixture: "local" writes under tmp_path,
"s3" uses a fresh prefix in a bucket of the session's SeaweedFS server (tests/s3_server.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from storage import IterationAlreadyCommitted, LockLost, Store, StoreLocked, open_store, run_sql
from storage.objects import create_only
# tests/ is on sys.path (pytest's rootdir-based import mode; tests/ is not a package), so this works from any
# working directory and with either `pytest` or `python -m pytest`.
from s3_server import S3Server, s3_server  # noqa: F401  (the session fixture)

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["local", "s3"]


@pytest.fixture(params=BACKENDS)
def store_location(request, tmp_path) -> tuple[str, dict]:
    """(url, storage_options) of an empty store on the backend named by the param."""
    if request.param == "local":
        return str(tmp_path / "store"), {}
    server: S3Server = request.getfixturevalue("s3_server")  # started only if an s3 test runs
    return server.url(f"t-{uuid.uuid4().hex[:12]}"), server.storage_options


@pytest.fixture
def store(store_location) -> Store:
    url, options = store_location
    return open_store(url, options)


@pytest.fixture
def subprocess_env(store_location, request) -> dict[str, str]:
    """Environment for a subprocess that opens the store by URL alone (the CLI): AWS variables for s3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if store_location[0].startswith("s3://"):
        env.update(request.getfixturevalue("s3_server").env)
    return env


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


def staged_files(store: Store, run: str, iteration: int) -> list[str]:
    """Staging pointers of an iteration (SeaweedFS keeps empty directories, so don't test for the dir)."""
    return [p for p in store.fs.find(f"{store.root}/_staging/run={run}/iteration={iteration}") if p.endswith(".json")]


def data_files(store: Store, table: str, run: str, iteration: int) -> list[str]:
    """Every Parquet file on disk in a partition, committed or not."""
    return sorted(store.fs.glob(f"{store.root}/{table}/run={run}/iteration={iteration}/*.parquet"))


# ---- write, commit, query ------------------------------------------------------------------------------
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
    # Each table's files carry that table's schema version.
    for name in ("rollouts", "test_results", "iterations"):
        got = run_sql(con, f"SELECT DISTINCT schema_version FROM {name}")["schema_version"].to_pylist()
        assert got == [storage.SCHEMA_VERSIONS[name]], name

    t = store.read("rollouts", run="run1", iteration=1)
    assert t.column_names[-2:] == ["run", "iteration"]
    assert t["rollout_id"].to_pylist() == ["b-0", "b-1"]
    assert set(t["schema_version"].to_pylist()) == {storage.SCHEMA_VERSIONS["rollouts"]}
    assert store.read("rollouts", columns=["reward"]).column_names == ["reward", "run", "iteration"]
    # Module-level connect gives the same view from a URL.
    assert count(storage.connect(store.url, store.storage_options), "rollouts") == 6


def test_empty_store_has_typed_views(store):
    con = store.connect()
    for name, schema in storage.TABLES.items():
        t = run_sql(con, f"SELECT * FROM {name}")
        assert t.num_rows == 0
        assert t.column_names == schema.names + ["run", "iteration"]
    assert store.read("rollouts").num_rows == 0
    assert store.runs() == []


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


# ---- commits -------------------------------------------------------------------------------------------
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
    # The staged file sits in the partition dir already: only the marker's file list makes it visible.
    assert len(data_files(store, "rollouts", "run1", 1)) == 1


def test_interrupted_commit_then_recommit_has_no_duplicates(store):
    # Attempt 1 staged two tables and died before its marker; a stray file sits there as well.
    store.stage("run1", 0, "rollouts", rollouts(3, tag="old"))
    store.stage("run1", 0, "test_results", [{"rollout_id": "old-0", "test_index": 0}])
    put(store, "rollouts/run=run1/iteration=0/part-stray.parquet", storage.store.conform("rollouts", rollouts(2)))
    assert store.read("rollouts").num_rows == 0
    assert count(store.connect(), "rollouts") == 0

    # The re-run starts by discarding what attempt 1 left, stages only rollouts, and commits.
    store.discard_staged("run1", 0)
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 0)
    store.stage("run1", 0, "rollouts", rollouts(3))
    store.commit("run1", 0)
    con = store.connect()
    assert count(con, "rollouts") == 3
    assert count(con, "test_results") == 0  # attempt 1's staged table is not committed with it
    assert store.read("rollouts")["rollout_id"].to_pylist() == ["a-0", "a-1", "a-2"]
    # Leftovers are deleted, not only hidden.
    assert len(data_files(store, "rollouts", "run1", 0)) == 1
    assert data_files(store, "test_results", "run1", 0) == []


def test_restaging_replaces_and_commit_deletes_the_old_file(store):
    store.stage("run1", 0, "rollouts", rollouts(1))
    store.stage("run1", 0, "rollouts", rollouts(2))  # staging again replaces
    assert store.read_staged("run1", 0, "rollouts").num_rows == 2
    assert len(data_files(store, "rollouts", "run1", 0)) == 2  # the first is a leftover until commit
    store.commit("run1", 0)
    assert store.read("rollouts").num_rows == 2
    assert len(data_files(store, "rollouts", "run1", 0)) == 1
    assert staged_files(store, "run1", 0) == []
    with pytest.raises(FileNotFoundError, match="nothing staged"):
        store.read_staged("run1", 0, "rollouts")


def test_commit_twice_raises_and_overwrite_replaces(store):
    store.stage("run1", 0, "rollouts", rollouts(3))
    store.stage("run1", 0, "test_results", [{"rollout_id": "a-0", "test_index": 0}])
    store.commit("run1", 0)

    store.stage("run1", 0, "rollouts", rollouts(2, tag="new"))
    with pytest.raises(IterationAlreadyCommitted, match="overwrite=True"):
        store.commit("run1", 0)
    assert store.read("rollouts").num_rows == 3  # the refused commit changed nothing
    assert count(store.connect(), "rollouts") == 3

    store.commit("run1", 0, overwrite=True)
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 0, overwrite=True)  # must not un-commit the iteration
    assert store.committed_iterations("run1") == [0]
    assert store.read("rollouts")["rollout_id"].to_pylist() == ["new-0", "new-1"]
    assert store.read("test_results").num_rows == 0  # the iteration is replaced as a whole
    assert count(store.connect(), "test_results") == 0
    assert len(data_files(store, "rollouts", "run1", 0)) == 1  # the replaced data is deleted
    assert data_files(store, "test_results", "run1", 0) == []


def test_reader_caches_are_shortcuts_never_the_truth(store):
    """Snapshots and footer caches save requests; lost, damaged or stale ones must not change answers."""
    from storage.manifest import cached_fragments, footers_path, snapshot_path

    for it in (0, 1):
        store.stage("run1", it, "rollouts", rollouts(2, tag=f"i{it}"))
        store.commit("run1", it)
    commits = store._commits()
    assert len(cached_fragments(store.arrow_fs, store.root, "rollouts", commits, storage.store._HIVE)) == 2
    snapshot = json.loads(store.fs.cat_file(snapshot_path(store.root, "run1", 0)))["commits"]
    assert sorted(snapshot) == ["_commits/run=run1/iteration=0.json", "_commits/run=run1/iteration=1.json"]

    def answer():
        return run_sql(store.connect(), "SELECT iteration, rollout_id FROM rollouts ORDER BY ALL").to_pylist()

    expected = [{"iteration": it, "rollout_id": f"i{it}-{i}"} for it in (0, 1) for i in (0, 1)]
    assert answer() == expected
    # An overwrite whose writer died before updating the caches: the snapshot still describes version 0.
    stale = store.fs.cat_file(snapshot_path(store.root, "run1", 0))
    store.stage("run1", 1, "rollouts", rollouts(3, tag="new"))
    store.commit("run1", 1, overwrite=True)
    assert store.fs.exists(f"{store.root}/_commits/run=run1/iteration=1.v1.json")  # markers are immutable
    put(store, "_commits/run=run1/_snapshot.block=0.json", stale)
    expected = expected[:2] + [{"iteration": 1, "rollout_id": f"new-{i}"} for i in range(3)]
    assert answer() == expected
    # Damaged caches are ignored; missing ones are only slower.
    put(store, "_commits/run=run1/_snapshot.block=0.json", b"{not json")
    put(store, "rollouts/_footers.run=run1.block=0", b"not parquet")
    assert answer() == expected
    store.fs.rm([snapshot_path(store.root, "run1", 0), footers_path(store.root, "rollouts", "run1", 0)])
    assert answer() == expected
    assert store.read("rollouts", iteration=1)["rollout_id"].to_pylist() == ["new-0", "new-1", "new-2"]


def test_scalar_columns_last_and_narrow_scans_read_many_files_at_once(store, monkeypatch):
    """Layout and readahead that bench/store.py chose for object stores: answers must not change."""
    for it in range(3):
        store.stage("run1", it, "rollouts", rollouts(4, tag=f"i{it}"))
        store.commit("run1", it)
    path = store._abs(store._commits()[0].files["rollouts"][0])
    with store.arrow_fs.open_input_file(path) as f:
        order = pq.ParquetFile(f).schema_arrow.names
    bulky = [n for n in order if n in storage.store._BULKY]
    assert bulky and order[:len(bulky)] == bulky  # scalar columns after the bulky ones, next to the footer

    dataset = store._dataset("rollouts", store._commits())
    assert len(dataset.footers) == 3  # footers from the cache, no file read
    assert dataset.fragment_readahead(["reward", "stage"]) == storage.store._MAX_READAHEAD  # tiny columns
    monkeypatch.setattr(storage.store, "_READAHEAD_BYTES", 1)  # as if every file were bigger than the budget
    fresh = store._dataset("rollouts", store._commits())
    assert fresh.fragment_readahead(["reward"]) == fresh.fragment_readahead() == storage.store._MIN_READAHEAD
    for budget in (1, 64 << 20):  # DuckDB scans through dataset.scanner(): same rows either way
        monkeypatch.setattr(storage.store, "_READAHEAD_BYTES", budget)
        got = run_sql(store.connect(), "SELECT iteration, count(*) AS n, sum(reward) AS r FROM rollouts "
                                       "WHERE run = 'run1' GROUP BY ALL ORDER BY ALL").to_pylist()
        assert got == [{"iteration": it, "n": 4, "r": 0.0} for it in range(3)]


def test_commit_retried_after_its_marker_is_a_no_op(store, monkeypatch):
    """A commit that died right after its marker (caches and cleanup not done) can simply be retried."""
    store.stage("run1", 0, "rollouts", rollouts(2))

    def crash(*args, **kwargs):
        raise ConnectionError("killed after the marker")

    monkeypatch.setattr(Store, "_publish", crash)
    with pytest.raises(ConnectionError):
        store.commit("run1", 0)
    monkeypatch.undo()
    assert store.committed_iterations("run1") == [0]  # the marker is the commit
    store.commit("run1", 0)  # the same staged files: no error, no duplicate
    assert store.read("rollouts").num_rows == 2
    assert staged_files(store, "run1", 0) == []
    assert store.fs.exists(storage.manifest.snapshot_path(store.root, "run1", 0))  # the retry finished the job


def test_commit_needs_staged_data(store):
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 0)
    store.stage("run1", 1, "rollouts", rollouts(1))
    store.discard_staged("run1", 1)
    with pytest.raises(ValueError, match="nothing staged"):
        store.commit("run1", 1)
    assert data_files(store, "rollouts", "run1", 1) == []


def test_create_only_is_create_only(store):
    # On SeaweedFS a failed conditional PUT is EINVAL, not FileExistsError: create_only handles both.
    marker = f"{store.root}/_commits/run=run1/iteration=0.json"
    assert create_only(store.fs, marker, b'{"a": 1}')
    assert not create_only(store.fs, marker, b'{"a": 2}')
    assert store.fs.cat_file(marker) == b'{"a": 1}'


def test_concurrent_commits_of_one_iteration_one_wins(store_location):
    """Two writers that both got past the marker check: the create-only marker lets exactly one win."""
    url, options = store_location
    a, b = open_store(url, options), open_store(url, options)
    a.stage("run1", 0, "rollouts", rollouts(2))
    real = Store._read_commit
    b_checked = threading.Event()

    def read_commit_then_wait(self, run, iteration):  # b sees "no marker", then a commits
        got = real(self, run, iteration)
        if self is b:
            b_checked.set()
            time.sleep(0.5)
        return got

    Store._read_commit = read_commit_then_wait
    try:
        errors = []
        t = threading.Thread(target=lambda: _catch(errors, b.commit, "run1", 0))
        t.start()
        b_checked.wait(30)
        a.commit("run1", 0)
        t.join(60)
    finally:
        Store._read_commit = real
    assert len(errors) == 1 and isinstance(errors[0], IterationAlreadyCommitted), errors
    assert "concurrently" in str(errors[0])
    assert a.read("rollouts").num_rows == 2


def _catch(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        errors.append(e)


# ---- schema evolution ----------------------------------------------------------------------------------
def test_old_partition_with_fewer_columns_reads_nulls(store):
    # An iteration written before "finish_reason" existed, by the first store version: a hand-made file
    # lacking the column, plus a format-1 marker (no file list).
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
        {"rollout_id": "n-0", "finish_reason": "stop", "schema_version": storage.SCHEMA_VERSIONS["rollouts"]},
        {"rollout_id": "o-0", "finish_reason": None, "schema_version": 0},
        {"rollout_id": "o-1", "finish_reason": None, "schema_version": 0},
    ]
    t = store.read("rollouts")
    assert t.schema.field("finish_reason").type == pa.string()
    assert t["finish_reason"].to_pylist() == [None, None, "stop"]
    assert store.read("rollouts", columns=["finish_reason", "reward"])["finish_reason"].to_pylist() == [
        None, None, "stop"]
    # A marker without committed_at still counts: its existence is the commit.
    assert run_sql(con, "SELECT committed_at FROM commits WHERE iteration = 0").to_pylist() == [
        {"committed_at": None}
    ]


# ---- readers in other processes ------------------------------------------------------------------------
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
    n_iters = 6
    store.stage("run1", 0, "rollouts", rollouts(5))
    store.commit("run1", 0)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, url, json.dumps(options), str(n_iters)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert reader.stdout.readline() == "ready\n", reader.communicate(timeout=60)[1]
        for it in range(1, n_iters):
            store.stage("run1", it, "rollouts", rollouts(5, tag=f"i{it}"))
            store.stage("run1", it + 1, "rollouts", rollouts(2, tag="next"))  # staged, never committed
            time.sleep(0.1)  # give the reader time to query between commits
            store.commit("run1", it)
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen[-1] == n_iters and len(seen) > 1, seen  # it read committed states in between


# ---- the SQL CLI ---------------------------------------------------------------------------------------
def test_sql_cli_returns_the_expected_rows(store, subprocess_env):
    store.stage("run1", 0, "rollouts", rollouts(4))
    store.commit("run1", 0)
    store.stage("run1", 1, "rollouts", rollouts(3, tag="b"))
    store.commit("run1", 1)
    store.stage("run1", 2, "rollouts", rollouts(9, tag="c"))  # uncommitted: not in the answer

    query = ("SELECT iteration, problem_id, count(*) AS n, sum(reward) AS reward, "
             # ::BIGINT: a sum of integers is HUGEINT, which Arrow carries as a decimal (JSON: a string)
             "sum(len(completion_ids))::BIGINT AS tokens FROM rollouts GROUP BY ALL ORDER BY ALL")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "sql", query, "--store", store.url, "--format", "json"],
        cwd=REPO, env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    expected = []
    for it, rows in ((0, rollouts(4)), (1, rollouts(3, tag="b"))):
        for pid in ("p0", "p1"):
            mine = [r for r in rows if r["problem_id"] == pid]
            expected.append({"iteration": it, "problem_id": pid, "n": len(mine),
                             "reward": sum(r["reward"] for r in mine),
                             "tokens": sum(len(r["completion_ids"]) for r in mine)})
    assert got == expected
    assert got == run_sql(store.connect(), query).to_pylist()  # the CLI and the Python API agree


# ---- the writer lock -----------------------------------------------------------------------------------
def test_lock_excludes_a_second_writer_and_names_the_holder(store):
    with store.lock("run1", owner="flow-A", ttl_s=60) as lock:
        assert lock.holder()["owner"] == "flow-A"
        with pytest.raises(StoreLocked, match=r"run 'run1' is locked by 'flow-A' \(host .*pid \d+\)") as e:
            store.lock("run1", owner="flow-B").acquire()
        assert e.value.holder["owner"] == "flow-A"
        with store.lock("run2", owner="flow-B"):  # other runs are independent
            pass
        store.stage("run1", 0, "rollouts", rollouts(1))
        store.commit("run1", 0, lock=lock)
    with store.lock("run1", owner="flow-B") as again:  # released on exit
        assert again.holder()["owner"] == "flow-B"
    assert store.lock("run1").holder() is None


def test_lock_waits_for_release(store):
    first = store.lock("run1", owner="flow-A", ttl_s=60).acquire()
    threading.Timer(0.5, first.release).start()
    t0 = time.monotonic()
    with store.lock("run1", owner="flow-B", wait_s=30) as second:
        assert second.holder()["owner"] == "flow-B"
    assert 0.3 < time.monotonic() - t0 < 20


def test_stale_lock_is_taken_over_and_the_old_holder_notices(store):
    crashed = store.lock("run1", owner="crashed", ttl_s=0.5, heartbeat=False).acquire()
    with pytest.raises(StoreLocked, match="'crashed'"):
        store.lock("run1", owner="flow-B").acquire()
    time.sleep(0.7)  # no heartbeat: the lock expires
    with store.lock("run1", owner="flow-B", ttl_s=60) as lock:
        assert lock.holder()["owner"] == "flow-B"
        with pytest.raises(LockLost, match="taken over by 'flow-B'"):
            crashed.ensure_held()
        store.stage("run1", 0, "rollouts", rollouts(1))
        with pytest.raises(LockLost):
            store.commit("run1", 0, lock=crashed)  # checked before the marker: nothing committed
        assert store.committed_iterations("run1") == []
        crashed.release()  # not ours any more: must not delete flow-B's lock
        assert lock.holder()["owner"] == "flow-B"
    assert not store.fs.glob(f"{store.root}/_locks/*")  # no claim objects left behind


def test_heartbeat_keeps_a_live_lock(store):
    with store.lock("run1", owner="flow-A", ttl_s=0.6) as lock:
        time.sleep(1.5)  # longer than ttl: only the heartbeat keeps it
        with pytest.raises(StoreLocked, match="'flow-A'"):
            store.lock("run1", owner="flow-B").acquire()
        lock.ensure_held()


def test_only_one_of_many_contenders_takes_over_a_stale_lock(store):
    store.lock("run1", owner="crashed", ttl_s=0.2, heartbeat=False).acquire()
    time.sleep(0.4)
    winners, errors = [], []

    def contend(i: int) -> None:
        try:
            lock = store.lock("run1", owner=f"c{i}", ttl_s=60, heartbeat=False).acquire()
            winners.append(lock)
        except StoreLocked as e:
            errors.append(e)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(winners) == 1 and len(errors) == 3, (winners, errors)
    assert store.lock("run1").holder()["owner"] == winners[0].owner
    winners[0].release()


# ---- docs/sql.md ---------------------------------------------------------------------------------------
def synthetic_history(store: Store) -> None:
    """Three committed iterations of run "demo" over problems mbpp/1..3, plus one uncommitted iteration.

    mbpp/1 stays at stage 0 (never passes); mbpp/2 moves 0 → 1 → 2; mbpp/3 passes everything, 1 → 2 (the last).
    Test 1 of mbpp/2 is the slow one (50 ms; the rest take 1-3 ms).
    """
    stages = {"mbpp/1": [0, 0, 0], "mbpp/2": [0, 1, 2], "mbpp/3": [1, 2, 2]}
    for it in (1, 2, 3):
        rows, tests, curriculum = [], [], []
        for pid, st in stages.items():
            passes = 0
            for s in range(4):
                ok = pid == "mbpp/3" or (pid == "mbpp/2" and s < it)
                passes += ok
                rid = f"demo/{it}/{pid}/{s}"
                rows.append({"rollout_id": rid, "problem_id": pid, "sample_index": s, "stage": st[it - 1],
                             "num_stages": 3, "outcome": "pass" if ok else "fail", "reward": 1.0 if ok else -0.3,
                             "completion_ids": [7] * 8, "fgo_mask": [1] * 8 if ok else [1] * (8 - it) + [0] * it,
                             "tests_passed": 2 if ok else 0, "tests_total": 2})
                for ti in range(2):
                    slow = pid == "mbpp/2" and ti == 1
                    tests.append({"rollout_id": rid, "problem_id": pid, "sample_index": s, "test_index": ti,
                                  "status": "pass" if ok else "fail", "time_ms": 50.0 if slow else 1.0 + ti + s % 2})
            after = st[it] if it < 3 else st[2]
            curriculum.append({"problem_id": pid, "stage_before": st[it - 1], "stage_after": after,
                               "num_stages": 3, "samples": 4, "passes": passes, "pass_rate": passes / 4,
                               "advanced": after > st[it - 1]})
        store.stage("demo", it, "rollouts", rows)
        store.stage("demo", it, "test_results", tests)
        store.stage("demo", it, "curriculum", curriculum)
        store.commit("demo", it)
    store.stage("demo", 4, "rollouts", rollouts(3))  # never committed: no query may see it


def doc_queries() -> list[str]:
    text = (REPO / "docs" / "sql.md").read_text()
    return [q.strip() for q in re.findall(r"```sql\n(.*?)```", text, flags=re.S)]


def test_docs_has_seven_queries():
    assert len(doc_queries()) == 7


def test_doc_queries_run_and_give_sane_rows(store):
    synthetic_history(store)
    con = store.connect()
    q_pass, q_stuck, q_masked, q_slow, q_reward, q_fgo, q_stages = (run_sql(con, q).to_pylist()
                                                                    for q in doc_queries())

    # 1. pass rate by iteration and stage
    by_key = {(r["iteration"], r["stage"]): r for r in q_pass}
    assert {r["run"] for r in q_pass} == {"demo"} and {k[0] for k in by_key} == {1, 2, 3}
    assert all(0.0 <= r["pass_rate"] <= 1.0 for r in q_pass)
    assert by_key[(1, 0)]["samples"] == 8 and by_key[(1, 0)]["pass_rate"] == pytest.approx(1 / 8)
    assert by_key[(1, 1)]["pass_rate"] == 1.0
    # 2. the problem stuck longest: mbpp/1 spent all 3 iterations at stage 0 without a pass
    assert (q_stuck[0]["problem_id"], q_stuck[0]["stage"], q_stuck[0]["iterations"]) == ("mbpp/1", 0, 3)
    assert q_stuck[0]["passes"] == 0
    # 3. masked-token fraction per iteration: failing samples mask `it` of their 8 tokens
    masked = {r["iteration"]: r["masked_fraction"] for r in q_masked}
    fails = {1: 7, 2: 6, 3: 5}  # mbpp/1's 4 plus mbpp/2's 4 - it
    assert masked == {it: pytest.approx(fails[it] * it / 96) for it in (1, 2, 3)}
    # 4. slowest tests: mbpp/2's test 1 first
    assert (q_slow[0]["problem_id"], q_slow[0]["test_index"], q_slow[0]["median_ms"]) == ("mbpp/2", 1, 50.0)
    assert q_slow[0]["runs"] == 12
    # 5. reward distribution of mbpp/2: counts per reward add up to its 12 samples
    assert sum(r["n"] for r in q_reward) == 12
    assert sorted({round(r["reward"], 4) for r in q_reward}) == [-0.3, 1.0]
    # 6. FGO health: no all-zero mask; the synthetic failing samples mask their last `it` tokens, last one too
    assert [(r["iteration"], r["all_zero_masks"], r["last_token_masked"]) for r in q_fgo] == [
        (it, 0, fails[it]) for it in (1, 2, 3)]
    assert [r["masked_fraction"] for r in q_fgo] == pytest.approx([fails[it] * it / 96 for it in (1, 2, 3)])
    # 7. problems per stage after each iteration (mbpp/1 stays at 0; mbpp/2 0 → 1 → 2; mbpp/3 1 → 2)
    assert [(r["iteration"], r["stage"], r["problems"]) for r in q_stages] == [
        (1, 0, 1), (1, 1, 1), (1, 2, 1), (2, 0, 1), (2, 2, 2), (3, 0, 1), (3, 2, 2)]


def test_run_state_reads_back_from_history(store):
    from storage.run_state import load_run_state

    assert load_run_state(store, "demo").iteration == 1  # a new run starts at 1 from the base model
    synthetic_history(store)
    store.stage("demo", 3, "iterations", [{"checkpoint_uri": "ckpt/3"}])
    store.commit("demo", 3, overwrite=True)  # now iteration 3 has only its iterations row
    state = load_run_state(store, "demo")
    assert (state.run, state.iteration, state.checkpoint_uri) == ("demo", 4, "ckpt/3")
    assert state.stages == {"mbpp/1": 0, "mbpp/2": 2, "mbpp/3": 2}  # stage_after of iteration 2


# ---- validation ----------------------------------------------------------------------------------------
def test_unknown_table_names_valid_ones(store):
    with pytest.raises(ValueError, match=r"unknown table 'rollout'.*'rollouts'"):
        store.stage("run1", 0, "rollout", rollouts(1))
    with pytest.raises(ValueError, match="unknown table"):
        store.read("nope")
    with pytest.raises(ValueError, match="unknown column"):
        store.read("rollouts", columns=["rewrad"])


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
def test_bad_column_names_the_field(data, column, tmp_path):
    # Validation happens before any I/O, so one backend is enough.
    store = open_store(tmp_path / "store")
    with pytest.raises(ValueError, match=rf"rollouts: .*{column}"):
        store.stage("run1", 0, "rollouts", data)
    assert staged_files(store, "run1", 0) == []
    assert data_files(store, "rollouts", "run1", 0) == []


@pytest.mark.parametrize("run, iteration", [("a/b", 0), ("", 0), ("x=1", 0), ("ok", -1), ("ok", True)])
def test_bad_partition_key(run, iteration, tmp_path):
    with pytest.raises(ValueError, match="run must|iteration must"):
        open_store(tmp_path / "store").stage(run, iteration, "rollouts", rollouts(1))


def test_s3_settings_from_the_standard_aws_variables(s3_server, monkeypatch):
    """No storage_options: endpoint and credentials come from AWS_ENDPOINT_URL_S3 / AWS_ACCESS_KEY_ID / ..."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    url = s3_server.url(f"env-{uuid.uuid4().hex[:8]}")
    store = open_store(url)
    store.stage("run1", 0, "rollouts", rollouts(2))
    store.commit("run1", 0)
    assert count(storage.connect(url), "rollouts") == 2
    # Explicit options win over the environment.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert open_store(url, {"endpoint_url": s3_server.endpoint_url}).latest_iteration("run1") == 0


def _hold_lock_in_a_subprocess(url: str, env: dict[str, str], run: str) -> subprocess.Popen:
    """A real process holding ``run``'s lock (heartbeat on, long TTL), as a flow run would."""
    code = ("import sys, time\nfrom storage import open_store\n"
            f"lock = open_store({url!r}).lock({run!r}, owner='crashed-flow', ttl_s=300).acquire()\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=str(Path(__file__).resolve().parent.parent))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_whose_holder_died_on_this_machine_is_taken_over_at_once(store, store_location, subprocess_env,
                                                                        caplog):
    """A kill -9 during a run used to block the next run for the lock's whole TTL (300 s)."""
    holder = _hold_lock_in_a_subprocess(store_location[0], subprocess_env, "run1")
    try:
        with pytest.raises(StoreLocked, match="'crashed-flow'"):  # alive: refused, however long its TTL
            store.lock("run1", owner="flow-B").acquire()
    finally:
        holder.kill()  # kill -9: no release, the lock stays with 300 s to live
        holder.wait()
    assert store.lock("run1").holder()["owner"] == "crashed-flow"
    with caplog.at_level("WARNING", logger="stepcoder.storage"):
        with store.lock("run1", owner="flow-B", ttl_s=60) as lock:
            assert lock.holder()["owner"] == "flow-B"
            assert "is gone" in lock.took_over
    assert any("took over the lock of run 'run1'" in r.message and "is gone" in r.message for r in caplog.records)


def test_a_holder_on_another_machine_is_never_presumed_dead(store):
    from storage.lock import holder_process_gone

    lock = store.lock("run1", owner="elsewhere", ttl_s=300, heartbeat=False).acquire()
    body = lock.holder()
    assert holder_process_gone(body) is None  # us, alive
    dead_pid = {**body, "pid": 2**22 + 12345}  # beyond pid_max: no such process here
    assert "is gone" in holder_process_gone(dead_pid)
    assert holder_process_gone({**dead_pid, "boot_id": "another-boot"}) is None
    assert holder_process_gone({**dead_pid, "host": "another-host"}) is None
    assert holder_process_gone({**dead_pid, "pid_ns": "pid:[1]"}) is None
    reused = {**body, "pid_start": body["pid_start"] - 1}  # our pid, but the holder started earlier
    assert "newer process" in holder_process_gone(reused)
    lock.release()


def test_a_holder_the_orchestrator_reports_finished_is_taken_over(store):
    store.lock("run1", owner="flow-run 42", ttl_s=300, heartbeat=False).acquire()  # alive, our own pid
    with pytest.raises(StoreLocked):
        store.lock("run1", owner="flow-B", holder_gone=lambda h: None).acquire()
    finished = lambda h: "its flow run is Crashed" if h["owner"] == "flow-run 42" else None  # noqa: E731
    with store.lock("run1", owner="flow-B", holder_gone=finished) as lock:
        assert lock.holder()["owner"] == "flow-B"


def test_rewards_and_rates_read_back_as_written(store):
    """DOUBLE, not REAL: a reward of -0.6 is -0.6 in SQL, not -0.6000000238418579."""
    rows = rollouts(2)
    rows[0]["reward"], rows[1]["reward"] = -0.6, -0.3
    store.stage("run1", 0, "rollouts", rows)
    store.commit("run1", 0)
    got = store.connect().sql("SELECT reward FROM rollouts ORDER BY sample_index").fetchall()
    assert got == [(-0.6,), (-0.3,)]
