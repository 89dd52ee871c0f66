"""The embedded sandbox against real programs: MBPP solutions, broken programs, and escape attempts. No mocks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from pathlib import Path

import pytest

from stepcoder.execution import OUTCOMES, ExecResult, TestResult, make_executor
from stepcoder.execution.results import decide_outcome
from stepcoder.execution.sandbox import call_matches, stdio_matches
from stepcoder.problems import TestSpec

MBPP = Path(__file__).resolve().parents[1] / "data" / "mbpp" / "mbpp.jsonl"
IS_ROOT = os.geteuid() == 0


def mbpp_jobs(first: int = 601, last: int = 630) -> dict[int, tuple[str, TestSpec]]:
    """task_id → (canonical solution with LF line endings, its assert tests)."""
    jobs = {}
    with MBPP.open() as f:
        for line in f:
            d = json.loads(line)
            if first <= d["task_id"] <= last:
                spec = TestSpec(kind="assert", asserts=tuple(d["test_list"]), setup=d["test_setup_code"])
                jobs[d["task_id"]] = (d["code"].replace("\r\n", "\n"), spec)
    return jobs


@pytest.fixture(scope="module")
def ex():
    with make_executor(timeout_s=1.0, budget_s=4.0, workers=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def fast_ex():
    """Short limits, for programs that are meant to run out of time."""
    with make_executor(timeout_s=0.3, budget_s=1.0, workers=2) as executor:
        yield executor


def run1(executor, program: str, spec: TestSpec) -> ExecResult:
    (result,) = executor.run([(program, spec)])
    assert result.outcome in OUTCOMES
    return result


def marker_processes(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (a /proc scan, no psutil)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


ASSERT_SIGN = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "assert sign(5) == 1"))
SIGN = """def sign(x):
    if x > 0:
        return 1
    else:
        return -1
"""


# ---------------------------------------------------------------- MBPP


def test_mbpp_canonical_solutions_pass(ex):
    jobs = mbpp_jobs()
    assert len(jobs) == 30
    for task_id, result in zip(jobs, ex.run(list(jobs.values()))):
        assert result.outcome == "pass", (task_id, result)
        assert [t.status for t in result.tests] == ["pass"] * len(jobs[task_id][1].asserts)
        assert result.executed_lines, task_id
        assert result.tests_passed == len(result.tests)


def test_off_by_one_mutant_fails(ex):
    program, spec = mbpp_jobs(610, 610)[610]
    mutant = program.replace("list1[:L-1]", "list1[:L]")
    assert mutant != program
    result = run1(ex, mutant, spec)
    assert result.outcome == "fail"
    assert {t.status for t in result.tests} == {"fail"}
    assert result.tests[0].detail.startswith("AssertionError")


# ---------------------------------------------------------------- outcomes


def test_syntax_error_is_compile_error(ex):
    result = run1(ex, "def sign(x:\n    return 1\n", ASSERT_SIGN)
    assert result.outcome == "compile_error"
    assert result.tests == [] and result.executed_lines == []
    assert "SyntaxError" in result.error


def test_module_level_exception_is_runtime_error(ex):
    result = run1(ex, SIGN + "raise ValueError('boom')\n", ASSERT_SIGN)
    assert result.outcome == "runtime_error"
    assert [t.status for t in result.tests] == ["runtime_error"] * 2
    assert "ValueError: boom (line 6)" in result.error
    assert result.executed_lines == [1, 6]


def test_exception_inside_function_is_runtime_error(ex):
    result = run1(ex, "def sign(x):\n    raise ValueError('no')\n", ASSERT_SIGN)
    assert result.outcome == "runtime_error"
    assert result.tests[0].status == "runtime_error"
    assert result.tests[0].detail == "ValueError: no (line 2)"


def test_first_non_pass_test_decides_outcome(ex):
    spec = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "assert sign(0) == 0", "assert sign(None)"))
    result = run1(ex, SIGN, spec)
    assert [t.status for t in result.tests] == ["pass", "fail", "runtime_error"]
    assert result.outcome == "runtime_error"


def test_infinite_loops_time_out(fast_ex):
    in_function = run1(fast_ex, "def sign(x):\n    while True:\n        pass\n", ASSERT_SIGN)
    assert in_function.outcome == "timeout"
    assert [t.status for t in in_function.tests] == ["timeout", "timeout"]
    at_load = run1(fast_ex, "while True:\n    pass\n", ASSERT_SIGN)
    assert at_load.outcome == "timeout" and at_load.time_ms < 3000
    # A bare `except:` swallows each alarm; the child's supervisor kills it at budget_s + 1.
    swallowing = "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass\n"
    stubborn = run1(fast_ex, swallowing, ASSERT_SIGN)
    assert stubborn.outcome == "timeout"
    assert stubborn.time_ms < 4000


def test_stop_on_first_failure():
    spec = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "assert sign(0) == 0", "assert sign(2) == 1"))
    with make_executor(stop_on_first_failure=True, workers=1) as executor:
        result = run1(executor, SIGN, spec)
    assert [t.status for t in result.tests] == ["pass", "fail", "fail"]
    assert result.tests[2].detail.startswith("not run")
    assert result.outcome == "fail"


# ---------------------------------------------------------------- coverage


def test_executed_lines_exact(ex):
    result = run1(ex, SIGN + "\nUNUSED = 0\n", ASSERT_SIGN)
    assert result.outcome == "pass"
    assert result.executed_lines == [1, 2, 3, 7]  # never line 5 (else branch) nor 4 (no code)
    assert result.runner["coverage"] in ("settrace", "sys.monitoring")


def test_executed_lines_are_a_union_over_tests(ex):
    spec = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "assert sign(-1) == -1"))
    assert run1(ex, SIGN, spec).executed_lines == [1, 2, 3, 5]


def test_runner_under_a_private_home_is_readable_in_the_view(ex):
    """The runner interpreter may live where uid 65534 cannot read (pyenv under /root, mode 700): the worker's
    filesystem view binds its prefix read-only at the same path, so programs still import its stdlib."""
    spec = TestSpec(kind="stdio", inputs=("",), outputs=("65534 True",))
    program = "import os, json, decimal\nprint(os.getuid(), os.path.exists(os.__file__))\n"
    assert run1(ex, program, spec).outcome == "pass"


def test_coverage_off(ex):
    with make_executor(coverage=False, workers=1) as executor:
        result = run1(executor, SIGN, ASSERT_SIGN)
    assert result.outcome == "pass" and result.executed_lines == []
    assert result.runner["coverage"] == "off"


# ---------------------------------------------------------------- stdio and call tests


ECHO_SUM = "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n"


def test_stdio_tests(ex):
    spec = TestSpec(kind="stdio", inputs=("1 2\n", "10 20 30\n"), outputs=("3\n", "60\n"))
    wrong = "import sys\nprint(sum(map(int, sys.stdin.read().split())) + 1)\n"
    ragged = "a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()\nprint()\n"
    exits = "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))\nexit(3)\n"
    results = ex.run([(ECHO_SUM, spec), (wrong, spec), (ragged, spec), (exits, spec)])
    assert [r.outcome for r in results] == ["pass", "fail", "runtime_error", "pass"]
    assert results[1].tests[0].detail == "wrong answer"
    assert results[2].tests[0].status == "pass"  # "3  \n\n\n" matches "3\n" once whitespace is normalised
    assert results[2].tests[1].status == "runtime_error"  # three numbers, two names
    assert results[0].executed_lines == [1, 2]


def test_stdio_float_tolerance_but_exact_integers(ex):
    floats = TestSpec(kind="stdio", inputs=("",), outputs=("0.3 YES\n",))
    big = TestSpec(kind="stdio", inputs=("",), outputs=("1000000\n",))
    results = ex.run([("print(0.1 + 0.2, 'YES')", floats), ("print(1000001)", big)])
    assert [r.outcome for r in results] == ["pass", "fail"]


def test_call_tests(ex):
    spec = TestSpec(kind="call", fn_name="twoSum", inputs=([[2, 7, 11], 9], [[3, 3], 6]), outputs=([0, 1], [[0, 1]]))
    solution = """class Solution:
    def twoSum(self, nums, target):
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)  # a tuple: equal to the expected list
            seen[x] = i
"""
    function = "def twoSum(nums, target):\n    return [0, 1]\n"
    wrong = "def twoSum(nums, target):\n    return [1, 0]\n"
    missing = "def other():\n    pass\n"
    results = ex.run([(solution, spec), (function, spec), (wrong, spec), (missing, spec)])
    assert [r.outcome for r in results] == ["pass", "pass", "fail", "runtime_error"]
    assert "twoSum" in results[3].tests[0].detail
    unserialisable = TestSpec(kind="call", fn_name="f", inputs=([],), outputs=({1, 2},))
    assert run1(ex, "def f():\n    return {1, 2}\n", unserialisable).outcome == "pass"


def test_expected_outputs_never_reach_the_child(ex):
    spec = TestSpec(kind="stdio", inputs=("",), outputs=("SECRET-EXPECTED",))
    peek = "import sys\nprint(sys.stdin.read() or 'nothing')\n"  # the job JSON is on the harness's stdin
    result = run1(ex, peek, spec)
    assert result.outcome == "fail"


def test_comparison_rules():
    assert stdio_matches("1 2\n", "1 2")
    assert stdio_matches("1 2  \r\n\n", "1 2\n")
    assert stdio_matches("0.30000000000000004\n", "0.3")
    assert not stdio_matches("1000001", "1000000")
    assert not stdio_matches("YES", "NO")
    assert stdio_matches("a\nb\n", ["a", "b"])
    assert call_matches((1, [2, (3,)]), [1, [2, [3]]])
    assert call_matches(5, [5])  # APPS wraps call outputs in a list
    assert not call_matches([5, 6], [5])
    assert not call_matches(1, 2)


# ---------------------------------------------------------------- containment


def test_network_is_unreachable(ex):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n" + SIGN
        result = run1(ex, program, ASSERT_SIGN)
        with pytest.raises(socket.timeout):
            listener.accept()
    assert result.outcome == "runtime_error"
    assert "unreachable" in result.error.lower() or "OSError" in result.error
    assert "network" not in result.runner["missing"]


@pytest.mark.skipif(not IS_ROOT, reason="the uid drop needs root")
def test_program_runs_as_non_root(ex):
    # the probes are the program's own code: test code runs in the driver, outside the sandbox
    spec = TestSpec(kind="assert", asserts=("assert ids() == (65534, 65534)",))
    assert run1(ex, "import os\nassert os.getuid() != 0\ndef ids():\n    return os.getuid(), os.getgid()\n",
                spec).outcome == "pass"
    writes_home = TestSpec(kind="assert", asserts=("write()",))
    program = "def write():\n    open('/root/stepcoder-sandbox-probe', 'w')\n"
    assert run1(ex, program, writes_home).outcome == "runtime_error"


def test_forked_daemons_do_not_survive(ex):
    marker = f"4242.{uuid.uuid4().int % 10**8}"  # `sleep` takes fractional seconds: a unique command line
    program = f"""import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["/bin/sleep", "{marker}"])
    os._exit(0)
def daemon_started():
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if {marker!r}.encode() in open(f"/proc/{{p}}/cmdline", "rb").read():
                return True
        except OSError:
            pass
for _ in range(100):
    if daemon_started():
        break
    time.sleep(0.01)
assert daemon_started()
def sign(x):
    return 1
"""
    assert shutil.which("sleep")
    result = run1(ex, program, ASSERT_SIGN)
    assert result.outcome == "pass", result
    assert marker_processes(marker) == []


def test_fork_bomb_is_contained(ex):
    marker = f"4343.{uuid.uuid4().int % 10**8}"
    program = f"""import os
for _ in range(200):
    if os.fork() == 0:
        os.execv("/bin/sleep", ["/bin/sleep", "{marker}"])
"""
    result = run1(ex, program, ASSERT_SIGN)
    if IS_ROOT:  # RLIMIT_NPROC binds only a non-root uid
        assert result.outcome == "runtime_error" and "BlockingIOError" in result.error
    assert marker_processes(marker) == []


def test_memory_limit(ex):
    result = run1(ex, "x = bytearray(4 << 30)\n", ASSERT_SIGN)
    assert result.outcome == "runtime_error" and "MemoryError" in result.error


def test_output_flood_is_contained(ex):
    stdio = TestSpec(kind="stdio", inputs=("",), outputs=("x",))
    floods = [
        ("print('x' * 100_000_000)\n", stdio),
        ("while True:\n    print('y' * 1000)\n", stdio),
        ("import os\nos.write(1, b'z' * 100_000_000)\nos.write(2, b'z' * 1_000_000)\nprint('x')\n", stdio),
        ("print('x' * 100_000_000)\n" + SIGN, ASSERT_SIGN),
    ]
    results = ex.run(floods)
    assert [r.outcome for r in results] == ["fail", "fail", "pass", "pass"]
    assert results[0].tests[0].detail == "output limit exceeded"
    assert run1(ex, ECHO_SUM, TestSpec(kind="stdio", inputs=("1 1",), outputs=("2",))).outcome == "pass"


def test_results_keep_input_order(ex):
    # Later jobs finish first; job k passes exactly when k is even.
    jobs = [(f"import time\ntime.sleep({0.02 * (8 - k)})\nprint({k})\n",
             TestSpec(kind="stdio", inputs=("",), outputs=(str(k if k % 2 == 0 else -1),))) for k in range(8)]
    results = ex.run(jobs)
    assert [r.outcome for r in results] == ["pass", "fail"] * 4


# ---------------------------------------------------------------- API


def test_unknown_backend():
    with pytest.raises(ValueError, match="embedded"):
        make_executor("kubernetes")


def test_result_round_trip_and_outcome_rule():
    result = ExecResult("fail", [TestResult("pass", 1.0), TestResult("fail", 2.0, "AssertionError")], [1, 2], 3.0,
                        runner={"python": "3.11"})
    assert ExecResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert result.tests_passed == 1
    statuses = lambda *s: [TestResult(x, 0.0) for x in s]  # noqa: E731
    assert decide_outcome(statuses("pass", "pass")) == "pass"
    assert decide_outcome(statuses("fail", "timeout", "runtime_error")) == "timeout"
    assert decide_outcome(statuses("pass", "fail")) == "fail"
    assert decide_outcome(statuses("pass"), load_status="runtime_error") == "runtime_error"


def test_bad_specs_are_rejected_before_running(ex):
    with pytest.raises(ValueError, match="one output per input"):
        ex.run([("print(1)", TestSpec(kind="stdio", inputs=("", ""), outputs=("1",)))])
    with pytest.raises(ValueError, match="fn_name"):
        ex.run([("def f(): pass", TestSpec(kind="call", inputs=([],), outputs=(1,)))])


def test_crash_keeps_records_so_far(ex):
    spec = TestSpec(kind="assert", asserts=("assert sign(1) == 1", "crash()", "assert sign(2) == 1"))
    crash = SIGN + "def crash():\n    import ctypes\n    ctypes.string_at(0)\n"
    result = run1(ex, crash, spec)
    assert [t.status for t in result.tests] == ["pass", "runtime_error", "runtime_error"]
    assert result.outcome == "runtime_error" and "SIGSEGV" in result.error
    assert result.executed_lines == [1, 2, 3, 6]  # what the first test and the load reported


def test_stdio_idioms_fast_exit_and_threads(ex):
    spec = TestSpec(kind="stdio", inputs=("2 3",), outputs=("5",))
    fast_exit = "import os, sys\nprint(sum(map(int, input().split())))\nsys.stdout.flush()\nos._exit(0)\n"
    threaded = """import threading
def main():
    print(sum(map(int, input().split())))
t = threading.Thread(target=main)
t.start()
t.join()
"""
    results = ex.run([(fast_exit, spec), (threaded, spec)])
    assert [r.outcome for r in results] == ["pass", "pass"]
    assert results[1].executed_lines == [1, 2, 3, 4, 5, 6]  # line 3 ran in the thread
