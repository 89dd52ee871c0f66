"""The Prefect operations users rely on, against a real `prefect server start` (not the test harness):

serve deployment stepcoder/iterate → `prefect deployment run ... --watch` commits an iteration on the tiny model →
a run that fails mid-iteration (bad parameter) exits ≠ 0 and commits nothing → an interval schedule produces a
run, which repeats the failed iteration → the execute fan-out runs on a Dask LocalCluster on loopback.
Every process started here is stopped by pid, and the module checks none survived.

The tests share one run in one store and run in file order (each states what it expects to find first).
"""

from __future__ import annotations

import inspect
import json
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from storage import connect, open_store
from prefect_server import REPO, local_prefect_server, stop_tree, tail  # tests/prefect_server.py

pytestmark = pytest.mark.slow

RUN = "deploy"
PREFECT = str(Path(sys.executable).parent / "prefect")
RUN_TIMEOUT_S = 300  # one tiny iteration is ~30-60 s on 2 busy cores, plus a fresh process and vLLM start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import flows  # noqa: F401  (Prefect env defaults for this process, before prefect is imported)

    with local_prefect_server(tmp_path_factory.mktemp("prefect")) as srv:
        yield srv


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy-run")


def _overrides(root: Path, *extra: str) -> list[str]:
    return [
        f"store={root / 'store'}",
        f"checkpoint_dir={root / 'ckpt'}",
        "data.limit=4",
        "curriculum.advance_threshold=0",
        "ppo.keep_checkpoints=1",
        *extra,
    ]


@pytest.fixture(scope="module")
def served(server, tiny_model, run_root):
    """`python -m flows.serve` with the tiny config as default parameters, until the module ends."""
    log_path = run_root / "serve.log"
    cmd = [
        sys.executable, "-m", "flows.serve",
        "--param", f"run_name={RUN}",
        "--param", "config_path=infra/configs/tiny.yaml",
        "--param", f"overrides={json.dumps(_overrides(run_root))}",
        "--timezone", "UTC",
    ]
    env = server.env  # STEPCODER_CACHE (the tiny model) comes from os.environ, set by the model_cache fixture
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_deployment(server, proc, log_path)
        yield proc
    finally:
        # SIGINT = Ctrl-C: the runner stops its runs and pauses the deployment; then the rest by pid.
        left = stop_tree(proc, first=signal.SIGINT, grace_s=30)
        assert not left, f"serve processes survived: {left}\n{tail(log_path)}"


def _cli(server, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], cwd=REPO, env=server.env, capture_output=True, text=True,
                          timeout=timeout)


def _wait_for_deployment(server, proc, log_path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flows.serve exited with {proc.returncode}:\n{tail(log_path)}")
        if "Your flow 'stepcoder' is being served" in log_path.read_text(errors="replace"):
            with _api(server) as client:
                deployment = client.read_deployment_by_name("stepcoder/iterate")
            assert deployment.parameters["run_name"] == RUN
            return
        time.sleep(1)
    raise TimeoutError(f"deployment stepcoder/iterate not served after {timeout_s} s:\n{tail(log_path)}")


def _committed(root: Path) -> list[int]:
    return open_store(str(root / "store")).committed_iterations(RUN)


@contextmanager
def _api(server):
    """A Prefect client for this server, in this process (reading runs and artifacts)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: server.url}), get_client(sync_client=True) as client:
        yield client


def test_deployment_run_commits_an_iteration(server, served, run_root):
    assert _committed(run_root) == []
    started = time.monotonic()
    res = _cli(server, "deployment", "run", "stepcoder/iterate", "--param", f"run_name={RUN}",
               "--watch", "--watch-interval", "1", "--watch-timeout", str(RUN_TIMEOUT_S), timeout=RUN_TIMEOUT_S + 30)
    took = time.monotonic() - started
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n--- serve log ---\n{tail(run_root / 'serve.log', 80)}"
    assert "Completed" in res.stdout
    print(f"deployment run took {took:.1f} s")

    assert _committed(run_root) == [1]
    con = connect(str(run_root / "store"))
    try:
        n, problems = con.sql(
            "SELECT count(*), count(DISTINCT problem_id) FROM rollouts WHERE run = ? AND iteration = 1", params=[RUN]
        ).fetchall()[0]
        [(ckpt, num_rollouts)] = con.sql(
            "SELECT checkpoint_uri, num_rollouts FROM iterations WHERE run = ? AND iteration = 1", params=[RUN]
        ).fetchall()
        assert 0 < problems <= 4 and 0 < n == num_rollouts <= 8  # data.limit=4 problems × 2 samples at most
        assert ckpt.endswith("iter-000001") and Path(ckpt).is_dir()
        assert con.sql("SELECT count(*) FROM train_metrics WHERE iteration = 1").fetchall()[0][0] > 0
    finally:
        con.close()


def test_failing_run_exits_nonzero_and_commits_nothing(server, served, run_root):
    before = _committed(run_root)
    assert before == [1]
    # Valid config (a path is just a string) that breaks mid-iteration: rollouts are generated, executed and
    # staged, then train cannot read its DeepSpeed config. The commit never happens.
    bad = _overrides(run_root, "ppo.deepspeed_config=infra/deepspeed/missing.json")
    res = _cli(server, "deployment", "run", "stepcoder/iterate", "--param", f"overrides={json.dumps(bad)}",
               "--watch", "--watch-interval", "1", "--watch-timeout", str(RUN_TIMEOUT_S), timeout=RUN_TIMEOUT_S + 30)
    assert res.returncode != 0, res.stdout
    assert "Failed" in res.stdout
    assert _committed(run_root) == before
    with _api(server) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        failed = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED]))))
    assert [r.state.message for r in failed if "missing.json" in (r.state.message or "")], "no failure message"
    store = open_store(str(run_root / "store"))
    assert store.read("rollouts", run=RUN, iteration=2).num_rows == 0
    # The staged leftovers of iteration 2 exist but are invisible; the next run replaces them.
    assert store.read_staged(RUN, 2, "rollouts").num_rows > 0


def test_interval_schedule_produces_a_run_that_repeats_the_failed_iteration(server, served, run_root):
    before = _committed(run_root)
    assert before == [1]  # iteration 2 failed above: the scheduled run must redo it
    # Interval 10 min, anchored a few seconds ahead: exactly one run falls inside this test.
    anchor = (datetime.now(timezone.utc) + timedelta(seconds=15)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    res = _cli(server, "deployment", "schedule", "create", "stepcoder/iterate", "--interval", "600",
               "--anchor-date", anchor, "--timezone", "UTC")
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    try:
        run = _wait_for_scheduled_run(server, timeout_s=RUN_TIMEOUT_S + 60)
    finally:
        res = _cli(server, "deployment", "schedule", "clear", "stepcoder/iterate", "-y")
        assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert run.state.is_completed(), f"{run.state}\n{tail(run_root / 'serve.log', 80)}"
    assert _committed(run_root) == [1, 2]
    store = open_store(str(run_root / "store"))
    [row] = store.read("iterations", run=RUN, iteration=2).to_pylist()
    assert 0 < store.read("rollouts", run=RUN, iteration=2).num_rows == row["num_rollouts"]
    assert row["checkpoint_uri"].endswith("iter-000002")  # trained from iteration 1's checkpoint


def _wait_for_scheduled_run(server, timeout_s: float):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deadline = time.monotonic() + timeout_s
    with _api(server) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["iterate"])))
            # auto_scheduled: created by the scheduler from the deployment's schedule, not by `deployment run`.
            done = [r for r in runs if r.auto_scheduled and r.state and r.state.is_final()]
            if done:
                return done[0]
            time.sleep(2)
    raise TimeoutError(f"no scheduled run of stepcoder/iterate finished within {timeout_s} s")


def test_each_iteration_publishes_an_artifact_and_the_learning_curves(server, served, run_root):
    import flows.stepcoder_flow
    from flows.artifacts import artifact_key

    assert "publish_report" in inspect.getsource(flows.stepcoder_flow)  # the flow publishes every iteration
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with _api(server) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(RUN)])))
    assert all(a.type == "markdown" and "## Pass rate per CCCS stage" in a.data for a in arts)
    # One version of the run's key per committed iteration (the failed run published nothing).
    assert sorted(int(a.data.split("· iteration ")[1].split()[0]) for a in arts) == _committed(run_root)
    png = run_root / "store" / "runs" / RUN / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


PUBLISH_SCRIPT = textwrap.dedent("""
    import json, sys
    import flows  # noqa: F401
    from prefect import flow
    from flows.artifacts import publish_report
    from stepcoder.summary import iteration_summary
    from storage import open_store

    store_url, run = sys.argv[1:3]
    store = open_store(store_url)
    read = lambda table: store.read(table, run=run, iteration=1).to_pylist()
    curriculum = read("curriculum")
    summary = iteration_summary(run, 1, read("rollouts"), read("train_metrics"), curriculum)
    summary.update(store=store_url, checkpoint=read("iterations")[0]["checkpoint_uri"],
                   timings={"generate": 1.0, "execute": 0.5, "store": 0.1, "train": 2.0})

    @flow(name="publish-check")
    def publish_check():
        return publish_report(summary, curriculum)

    print(json.dumps(publish_check()))
""")


def test_publish_report_creates_the_artifact_and_the_png(server, run_root, tmp_path):
    """The flow's report step against the real API, on the iteration the deployment run committed."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.artifacts import artifact_key

    assert 1 in _committed(run_root)
    script = tmp_path / "publish.py"
    script.write_text(PUBLISH_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(run_root / "store"), RUN], cwd=REPO, env=server.env,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-4000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    png = run_root / "store" / "runs" / RUN / "learning_curves.png"
    assert out["learning_curves"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with _api(server) as client:
        [art] = [a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(RUN)])))
            if str(a.id) == out["artifact_id"]]
    assert art.type == "markdown" and art.flow_run_id is not None
    for section in ("Pass rate per CCCS stage", "Reward and outcomes", "PPO", "Curriculum movement", "Phase timings"):
        assert f"## {section}" in art.data
    assert "iteration 1" in art.data and str(png) in art.data


DASK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import flows  # noqa: F401
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.runtime import flow_run
    from flows.task_runners import fan_out, make_task_runner
    from stepcoder.problems import TestSpec
    from tasks.execute import execute_chunk

    @task(name="execute-chunk-pid", cache_policy=NO_CACHE)
    def execute_chunk_pid(jobs, backend, options):  # execute_chunk's body, plus where it ran
        return os.getpid(), execute_chunk.fn(jobs, backend, options)

    @flow(name="execute-fanout")  # the decorator's default task runner: fan_out brings its own
    def fanout(jobs, chunk_size):
        calls = [{"jobs": jobs[i:i + chunk_size], "backend": "embedded",
                  "options": {"timeout_s": 2.0, "budget_s": 10.0, "workers": 1}}
                 for i in range(0, len(jobs), chunk_size)]
        out = fan_out(execute_chunk_pid, calls, make_task_runner("dask", max_workers=2))
        return [r.outcome for _, rs in out for r in rs], sorted({pid for pid, _ in out}), str(flow_run.id)

    if __name__ == "__main__":  # Dask's worker processes are spawned: they re-import this module
        spec = TestSpec(kind="assert", asserts=("assert add(1, 2) == 3", "assert add(-1, 1) == 0"))
        programs = ["def add(a, b):\\n    return a + b\\n", "def add(a, b):\\n    return a - b\\n",
                    "def add(a, b):\\n    raise ValueError\\n", "def add(a, b)\\n    return a\\n"] * 3
        outcomes, pids, run_id = fanout([(p, spec) for p in programs], 3)
        print(json.dumps({"outcomes": outcomes, "worker_pids": pids, "flow_pid": os.getpid(), "flow_run": run_id}))
""")


def test_execute_fanout_on_a_dask_local_cluster(server, tmp_path):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    script = tmp_path / "dask_fanout.py"
    script.write_text(DASK_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=server.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        left = stop_tree(proc, grace_s=5)
        assert not left, f"dask processes survived: {left}"
    assert proc.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["outcomes"] == ["pass", "fail", "runtime_error", "compile_error"] * 3
    # The chunks ran in the cluster's worker processes, not in the flow's.
    assert result["worker_pids"] and result["flow_pid"] not in result["worker_pids"]
    # ...and are task runs of the flow run, as with the thread runner (what the UI shows under the run).
    from uuid import UUID

    with _api(server) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(result["flow_run"])])))
    assert len(tasks) == 4 and all(t.state.is_completed() and t.name.startswith("execute-chunk-pid") for t in tasks)


def test_finished_runs_leave_no_flow_run_process(server, served):
    """Each flow run is a child process of the runner; once runs finish, none may linger. (Teardown of the
    server and the runner themselves is checked by their fixtures.)"""
    kids = psutil.Process(served.pid).children(recursive=True)
    running = [p for p in kids if "prefect.engine" in " ".join(p.cmdline())]
    assert running == [], [p.cmdline() for p in running]


def test_a_lock_held_by_a_finished_flow_run_is_recognised(server):
    """The flow's lock takeover asks the server: a holder whose flow run is Crashed is gone, a Running one is not."""
    from prefect import flow as prefect_flow
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed, Running

    from flows.lock_holder import flow_run_finished

    @prefect_flow(name="lock-holder-probe")
    def probe() -> None:
        pass

    with _api(server) as client:
        run = client.create_flow_run(probe, state=Running())
    holder = {"owner": f"flow-run {run.id}", "host": "another-host", "pid": 1}
    with temporary_settings({PREFECT_API_URL: server.url}):
        assert flow_run_finished(holder) is None  # running: still the holder
        assert flow_run_finished(holder, current_run_id=str(run.id)) is None  # ourselves: never
        with _api(server) as client:
            client.set_flow_run_state(run.id, Crashed(), force=True)
        assert flow_run_finished(holder) == f"its flow run {run.id} is Crashed"
        assert flow_run_finished({"owner": "someone else"}) is None
