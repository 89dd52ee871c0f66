"""The engine around the sandbox: result cache, limits, coverage across interpreters, worker recovery, threads,
protections when not root, and the seccomp filter itself."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stepcoder.execution import make_executor
from stepcoder.execution.cache import ResultCache, job_key
from stepcoder.execution.engine import warn_missing
from stepcoder.execution.pool import HARNESS_VERSION
from stepcoder.execution.results import ExecResult
from stepcoder.execution.interpreters import runner_candidates
from stepcoder.execution.seccomp import RET_ALLOW, filter_bytes
from stepcoder.problems import TestSpec

REPO = Path(__file__).resolve().parents[1]
MBPP = REPO / "data" / "mbpp" / "mbpp.jsonl"
SIGN = "def sign(x):\n    if x > 0:\n        return 1\n    else:\n        return -1\n"
ASSERT_SIGN = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "assert sign(-2) == -1"))


@pytest.fixture(scope="module")
def ex():
    with make_executor(timeout_s=1.0, budget_s=4.0, workers=2) as executor:
        yield executor


def running(pool, future) -> list:
    """The pool's worker slots running ``future``'s job, once it has started (a moment after assignment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slots = [s for s in list(pool._slots.values()) if s.task is not None and s.task.future is future]
        if slots:
            time.sleep(0.1)
            return slots
        time.sleep(0.01)
    raise AssertionError("the job never started")


def mbpp_sample(n: int = 40) -> list[tuple[str, TestSpec]]:
    jobs = []
    for line in MBPP.open():
        d = json.loads(line)
        if d["task_id"] >= 601 and len(jobs) < n:
            jobs.append((d["code"].replace("\r\n", "\n"),
                         TestSpec(kind="assert", asserts=tuple(d["test_list"]), setup=d["test_setup_code"])))
    return jobs


# ---------------------------------------------------------------- result cache


def test_identical_jobs_run_once(ex):
    done = ex._pool.jobs_done
    program = SIGN + "# cache probe 1\n"
    results = ex.run([(program, ASSERT_SIGN)] * 10)
    assert ex._pool.jobs_done == done + 1
    assert [r.cache_hit for r in results] == [False] + [True] * 9
    assert all(r.outcome == "pass" and r.executed_lines == results[0].executed_lines for r in results)
    again = ex.run([(program, ASSERT_SIGN)])
    assert again[0].cache_hit and ex._pool.jobs_done == done + 1  # across calls too
    other_tests = TestSpec(kind="assert", asserts=("assert sign(1) == 1",))
    assert not ex.run([(program, other_tests)])[0].cache_hit


def test_cache_key_covers_program_tests_and_harness():
    a = job_key(SIGN, ASSERT_SIGN, HARNESS_VERSION + ":{}")
    assert a == job_key(SIGN, ASSERT_SIGN, HARNESS_VERSION + ":{}")
    assert a != job_key(SIGN + " ", ASSERT_SIGN, HARNESS_VERSION + ":{}")
    assert a != job_key(SIGN, TestSpec(kind="assert", asserts=("assert sign(1) == 1",)), HARNESS_VERSION + ":{}")
    assert a != job_key(SIGN, ASSERT_SIGN, "another-harness:{}")
    stdio = [TestSpec(kind="stdio", inputs=("1",), outputs=(o,)) for o in ("1", "2")]
    assert job_key("print(1)", stdio[0], "v") != job_key("print(1)", stdio[1], "v")  # expected outputs count


def test_cache_is_an_lru_of_copies():
    cache = ResultCache(max_entries=2)
    for key in "abc":
        cache.put(key, ExecResult("pass", [], [1], 1.0))
    assert cache.get("a") is None and len(cache) == 2
    hit = cache.get("b")
    hit.executed_lines.append(99)
    assert cache.get("b").executed_lines == [1] and hit.cache_hit


def test_cache_off():
    with make_executor(workers=1, cache=False) as executor:
        results = executor.run([(SIGN, ASSERT_SIGN)] * 3)
        assert executor._pool.jobs_done == 3 and not any(r.cache_hit for r in results)


# ---------------------------------------------------------------- limits


def test_per_test_timeout_and_program_budget():
    spec = TestSpec(kind="assert", asserts=tuple(f"nap({i})" for i in range(6)))
    program = "import time\ndef nap(i):\n    time.sleep(0.4)\n"
    with make_executor(timeout_s=1.0, budget_s=1.5, workers=1) as executor:
        result = executor.run([(program, spec)])[0]
    statuses = [t.status for t in result.tests]
    assert statuses[:3] == ["pass"] * 3 and set(statuses[4:]) == {"timeout"}, result.tests
    assert result.tests[-1].detail == "time budget exhausted"
    assert result.outcome == "timeout" and result.time_ms < 3000


def test_run_all_tests_by_default_for_the_union_of_lines(ex):
    spec = TestSpec(kind="assert", asserts=("assert sign(5) == 2", "assert sign(-5) == -1"))
    result = ex.run([(SIGN, spec)])[0]
    assert [t.status for t in result.tests] == ["fail", "pass"]
    assert result.executed_lines == [1, 2, 3, 5]  # line 5 ran only in the second test


def test_stop_on_first_failure_for_stdio():
    spec = TestSpec(kind="stdio", inputs=("1", "2", "3"), outputs=("1", "0", "3"))
    with make_executor(workers=1, stop_on_first_failure=True) as executor:
        result = executor.run([("print(input())", spec)])[0]
    assert [t.status for t in result.tests] == ["pass", "fail", "fail"]
    assert result.tests[2].detail.startswith("not run")


# ---------------------------------------------------------------- coverage


def test_executed_lines_are_the_programs_only(ex):
    program = "import json\nx = json.dumps([1])\n\ndef f():\n    return 2\n"
    spec = TestSpec(kind="assert", setup="import textwrap\ny = textwrap.dedent(' a')",
                    asserts=("assert f() == 2",))
    assert ex.run([(program, spec)])[0].executed_lines == [1, 2, 4, 5]  # no json, textwrap, setup or test lines


PY312 = next((p for p in runner_candidates() if Path(p).name.startswith(("python3.12", "python3.13"))), None)
SYSTEM_311 = "/usr/bin/python3"


@pytest.mark.skipif(PY312 is None or not Path(SYSTEM_311).exists(), reason="needs Python >= 3.12 and /usr/bin/python3")
def test_sys_monitoring_and_settrace_lines_agree():
    """Equivalence: the two coverage mechanisms report the same lines on real programs and every test kind."""
    jobs = mbpp_sample(40) + [
        ("x = int(input())\nif x:\n    print(x)\nelse:\n    print(0)\n", TestSpec(kind="stdio", inputs=("5", "0"),
                                                                               outputs=("5", "0"))),
        ("class Solution:\n    def f(self, a):\n        return [v * 2 for v in a]\n",
         TestSpec(kind="call", fn_name="f", inputs=([[1, 2]],), outputs=([2, 4],))),
        ("import threading\ndef work(out):\n    out.append(1)\nout = []\nt = threading.Thread(target=work, args=(out,))"
         "\nt.start()\nt.join()\nprint(len(out))\n", TestSpec(kind="stdio", inputs=("",), outputs=("1",))),
    ]
    with make_executor(python=PY312, workers=2, cache=False) as new, \
            make_executor(python=SYSTEM_311, workers=2, cache=False) as old:
        a, b = new.run(jobs), old.run(jobs)
    assert a[0].runner["coverage"] == "sys.monitoring" and b[0].runner["coverage"] == "settrace"
    assert [r.outcome for r in a] == [r.outcome for r in b]
    for (program, _), ra, rb in zip(jobs, a, b):
        assert ra.executed_lines == rb.executed_lines, program


def test_default_runner_is_the_cheapest_available(ex):
    info = ex.runner_info
    assert info["interpreter"] == runner_candidates()[0]
    if PY312 is not None:
        assert info["coverage"] == "sys.monitoring" and tuple(map(int, info["python"].split(".")[:2])) >= (3, 12)


def test_coverage_off():
    with make_executor(coverage=False, workers=1) as executor:
        result = executor.run([(SIGN, ASSERT_SIGN)])[0]
    assert result.outcome == "pass" and result.executed_lines == [] and result.runner["coverage"] == "off"


# ---------------------------------------------------------------- robustness of the pool


def test_a_killed_worker_is_replaced(ex):
    restarts = ex._pool.restarts
    future = ex.submit("import time\ntime.sleep(30)\n", ASSERT_SIGN)
    for s in running(ex._pool, future):  # kill the worker running it
        os.killpg(s.transport.proc.pid, signal.SIGKILL)
    result = future.result(timeout=30)
    assert result.outcome == "runtime_error" and "sandbox worker died" in result.error
    deadline = time.monotonic() + 30
    while ex._pool.restarts == restarts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ex._pool.restarts == restarts + 1
    assert [r.outcome for r in ex.run([(SIGN + f"# {i}\n", ASSERT_SIGN) for i in range(6)])] == ["pass"] * 6


def test_concurrent_runs_from_threads(ex):
    outcomes: dict[int, list[str]] = {}

    def batch(k: int) -> None:
        jobs = [(f"print({k * 100 + i})", TestSpec(kind="stdio", inputs=("",), outputs=(str(k * 100 + i),)))
                for i in range(15)]
        outcomes[k] = [r.outcome for r in ex.run(jobs)]

    threads = [threading.Thread(target=batch, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == {k: ["pass"] * 15 for k in range(4)}


def test_large_inputs_and_outputs(ex):
    """Jobs and results far larger than a pipe's buffer, many at once: nothing deadlocks, nothing is cut."""
    big = "\n".join(str(i) for i in range(60_000)) + "\n"  # ~350 KB in, the same out
    spec = TestSpec(kind="stdio", inputs=(big, big), outputs=(big, big))
    jobs = [(f"import sys\nsys.stdout.write(sys.stdin.read())  # {i}\n", spec) for i in range(8)]
    results = ex.run(jobs)
    assert [r.outcome for r in results] == ["pass"] * 8


def test_progress_callback(ex):
    seen = []
    ex.run([(SIGN + f"# progress {i}\n", ASSERT_SIGN) for i in range(5)], progress=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (5, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_shared_executor_is_one_per_options():
    from stepcoder.execution import shared_executor
    from stepcoder.execution.factory import close_shared_executors

    a = shared_executor("embedded", workers=1, timeout_s=2.0)
    assert shared_executor("embedded", timeout_s=2.0, workers=1) is a
    assert a.run([(SIGN, ASSERT_SIGN)])[0].outcome == "pass"
    close_shared_executors()
    with pytest.raises(RuntimeError, match="closed"):
        a.run([(SIGN + "# after close\n", ASSERT_SIGN)])
    b = shared_executor("embedded", workers=1, timeout_s=2.0)
    assert b is not a
    close_shared_executors()


def test_close_leaves_nothing_behind():
    executor = make_executor(workers=2)
    pids = [s.transport.proc.pid for s in executor._pool._slots.values()]
    views = [s.transport._view_root for s in executor._pool._slots.values()]
    executor.close()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not any(Path(v).exists() for v in views)
    assert not list(Path("/sys/fs/cgroup/memory/stepcoder").glob(f"{executor._pool_id}-*"))


# ---------------------------------------------------------------- protections when not root


def test_missing_protections_are_logged_once(caplog):
    with caplog.at_level(logging.WARNING, logger="stepcoder.execution"):
        warn_missing("test-backend", ["uid", "cgroup_memory"], "hint")
        warn_missing("test-backend", ["cgroup_memory", "uid"], "hint")
    lines = [r.getMessage() for r in caplog.records if "test-backend" in r.getMessage()]
    assert len(lines) == 1 and "WITHOUT these protections: cgroup_memory, uid" in lines[0]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not Path(SYSTEM_311).exists(),
                    reason="needs root (to become an unprivileged user), setpriv and /usr/bin/python3")
def test_unprivileged_host_degrades_loudly_but_stays_isolated():
    """As an ordinary user: a user namespace still gives the network, PID and mount isolation and seccomp; the
    uid drop and cgroups are missing, and the start-up warning says so."""
    # The checkout may sit in a directory the unprivileged user cannot enter (mktemp -d is 0700): give it a
    # world-readable copy of the package.
    shared = Path(tempfile.mkdtemp(prefix="stepcoder-unpriv-"))
    os.chmod(shared, 0o755)
    shutil.copytree(REPO / "stepcoder", shared / "stepcoder", ignore=shutil.ignore_patterns("__pycache__"))
    for d, _, files in os.walk(shared):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    script = f"""
import logging, sys
sys.path.insert(0, {str(shared)!r})
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from stepcoder.execution import make_executor
from stepcoder.problems import TestSpec
with make_executor(workers=1, python={SYSTEM_311!r}) as ex:
    r = ex.run([("import socket\\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\\n",
                 TestSpec(kind="stdio", inputs=("",), outputs=("",)))])[0]
    print("RESULT", r.outcome, r.tests[0].detail, sorted(ex.runner_info["applied"]), sorted(ex.runner_info["missing"]))
"""
    # A clean environment: vLLM (started by earlier tests in this process) sets LD_PRELOAD to a venv library.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp"}
    try:
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_311, "-c",
                               script], capture_output=True, text=True, timeout=120, cwd="/", env=env)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    out = proc.stdout + proc.stderr
    if "Operation not permitted" in out and "RESULT" not in out:
        pytest.skip("unprivileged user namespaces are disabled on this host")
    assert "WITHOUT these protections: cgroup_memory, cgroup_pids, uid" in out, out
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    assert "runtime_error" in line and "unreachable" in line.lower()
    for name in ("network", "pid_namespace", "mount_view", "seccomp"):
        assert f"'{name}'" in line.split("] [")[0], line


# ---------------------------------------------------------------- the seccomp filter


def test_seccomp_filter_shape():
    prog = filter_bytes("x86_64")
    assert prog is not None and len(prog) % 8 == 0 and len(prog) // 8 < 4096
    code, jt, jf, k = struct.unpack("=HBBI", prog[:8])
    assert (code, k) == (0x20, 4)  # first: load the architecture
    assert struct.unpack("=HBBI", prog[-8:])[3] == RET_ALLOW  # default: allow
    assert filter_bytes("aarch64") is not None and filter_bytes("sparc") is None


def test_worker_sources_are_stdlib_only():
    """The worker runs with -S (no site-packages) and in the Docker image: it may import only the stdlib."""
    from stepcoder.execution.pool import WORKER_MODULES, WORKER_SOURCES

    stdlib = set(sys.stdlib_module_names) | set(WORKER_MODULES)
    for name, source in WORKER_SOURCES:
        for line in source.splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and not line.startswith(" "):
                assert words[1].split(".")[0].lstrip("_") in stdlib or words[1].split(".")[0] in stdlib, (name, line)


def test_sandbox_options_are_one_object_and_unknown_names_are_refused():
    from stepcoder.config import load_config
    from stepcoder.execution.options import SandboxOptions

    o = SandboxOptions.of(timeout_s=2.0, preload=["re"])
    assert (o.timeout_s, o.preload, o.split_tests) == (2.0, ("re",), True)
    assert SandboxOptions.of(o, split_tests=False).timeout_s == 2.0
    with pytest.raises(TypeError, match="unknown sandbox option.*timeout;.*valid: .*timeout_s"):
        SandboxOptions.of(timeout=2)
    cfg = load_config(None, ["execution.timeout_s=3.5", "execution.split_tests=false"])
    from_cfg = SandboxOptions.from_config(cfg.execution)
    assert (from_cfg.timeout_s, from_cfg.split_tests, from_cfg.guard_comparisons) == (3.5, False, True)
    assert SandboxOptions.of(**from_cfg.as_dict()) == from_cfg  # survives a trip as plain keywords
    with pytest.raises(TypeError, match="unknown sandbox option"):
        make_executor("embedded", timeuot_s=1)
