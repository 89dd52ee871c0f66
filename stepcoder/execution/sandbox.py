"""EmbeddedSandbox: every program runs in a fresh ``python harness.py`` child, isolated by the child itself.

The parent (this module) prepares the job with expected outputs stripped, starts the child in its own session,
reads its records from a dedicated pipe with a byte cap, compares outputs, and kills the child's whole process
group at the wall-clock limit and again after it exits. The child (``harness.py``) puts itself in fresh network
and PID namespaces, sets rlimits, drops to a non-root uid and only then compiles the program.
"""

from __future__ import annotations

import json
import logging
import marshal
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stepcoder.execution.factory import Executor
from stepcoder.execution.harness import STDLIB_UNREADABLE
from stepcoder.execution.results import ExecResult, TestResult, decide_outcome
from stepcoder.problems import TestSpec

logger = logging.getLogger("stepcoder.execution")

HARNESS = Path(__file__).with_name("harness.py")
GRACE_S = 5.0  # slack past budget_s for interpreter start-up and reporting before the parent kills the child
FLOAT_TOL = 1e-6
FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")


# ---------------------------------------------------------------- output comparison (parent side only)


def _norm_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tokens_close(a: str, b: str) -> bool:
    """Equal tokens, or two numbers within FLOAT_TOL (abs or rel) when at least one is not an integer."""
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if a.lstrip("+-").isdigit() and b.lstrip("+-").isdigit():
        return int(a) == int(b)  # tolerance would accept 1000001 for 1000000
    return math.isclose(x, y, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)


def stdio_matches(got: str, expected: Any) -> bool:
    """Exact match; else equal after dropping trailing whitespace on each line and trailing blank lines; else
    whitespace-separated tokens equal one by one, numbers within 1e-6."""
    if isinstance(expected, list):  # some APPS outputs are lists of lines
        expected = "\n".join(map(str, expected))
    expected = str(expected)
    if got == expected or _norm_lines(got) == _norm_lines(expected):
        return True
    a, b = got.split(), expected.split()
    return len(a) == len(b) and all(_tokens_close(x, y) for x, y in zip(a, b))


def _plain(x: Any) -> Any:
    """Tuples as lists, recursively, so (1, 2) == [1, 2] as in JSON."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def call_matches(got: Any, expected: Any) -> bool:
    """``got == expected`` with tuples and lists equal; also the APPS quirk: expected ``[x]`` accepts ``x``."""
    got, expected = _plain(got), _plain(expected)
    if got == expected:
        return True
    return isinstance(expected, list) and len(expected) == 1 and got == expected[0]


# ---------------------------------------------------------------- records → ExecResult


class _Collector:
    """Turns the child's records into an ExecResult, comparing outputs as they arrive (never kept)."""

    def __init__(self, spec: TestSpec):
        self.spec, self.n = spec, spec.count
        self.tests: dict[int, TestResult] = {}
        self.lines: set[int] = set()
        self.runner: dict[str, Any] = {}
        self.load_status = "ok" if spec.kind == "stdio" else None  # stdio programs load inside each test
        self.load_detail = ""
        self.compile_error: str | None = None
        self.ended, self.error, self.failed = False, "", False

    def add(self, rec: dict[str, Any]) -> None:
        kind = rec["t"]
        self.lines.update(int(x) for x in rec.get("lines", ()))
        if kind == "start":
            self.runner.update(python=rec["python"], coverage=rec["coverage"], missing=list(rec["missing"]))
        elif kind == "compile_error":
            self.compile_error = str(rec["error"])
        elif kind == "load":
            self.load_status, self.load_detail = str(rec["status"]), str(rec["detail"])
        elif kind == "test":
            i, status, detail = int(rec["i"]), str(rec["status"]), str(rec["detail"])
            if not 0 <= i < self.n:
                raise ValueError(f"test index {i} out of range")
            if status == "ok":
                status, detail = self._judge(i, rec)
            self.tests[i] = TestResult(status, float(rec["time_ms"]), detail)
            self.failed = self.failed or status != "pass"
        elif kind == "end":
            self.ended, self.error = True, str(rec["error"])

    def _judge(self, i: int, rec: dict[str, Any]) -> tuple[str, str]:
        expected = self.spec.outputs[i]
        if self.spec.kind == "stdio":
            ok = stdio_matches(rec.get("out", ""), expected)
        elif "ret" in rec:
            ok = call_matches(rec["ret"], expected)
        else:  # not JSON-serialisable: compare reprs
            ok = rec.get("ret_repr") in (repr(expected), repr(expected[0]) if _is_single(expected) else None)
        return ("pass", "") if ok else ("fail", "wrong answer")

    def result(self, time_ms: float, exit_code: int | None, killed_for_time: bool, stopped: bool) -> ExecResult:
        runner = {**self.runner, "exit_code": exit_code}
        if self.compile_error is not None:
            return ExecResult("compile_error", [], [], time_ms, self.compile_error, runner)
        error = self.error
        if not self.ended and not stopped:
            error = error or ("killed at the wall-clock limit" if killed_for_time
                              else f"runner {_describe_exit(exit_code)} before reporting")
        load = self.load_status or ("timeout" if killed_for_time else "runtime_error")
        if load != "ok":
            tests = [TestResult(load, 0.0, self.load_detail or error) for _ in range(self.n)]
            return ExecResult(load, tests, sorted(self.lines), time_ms, self.load_detail or error, runner)
        if stopped:
            fill = TestResult("fail", 0.0, "not run: stopped at the first failure")
        elif killed_for_time:
            fill = TestResult("timeout", 0.0, "not run: wall-clock limit")
        else:
            fill = TestResult("runtime_error", 0.0, f"not run: {error}")
        tests = [self.tests.get(i) or fill for i in range(self.n)]
        return ExecResult(decide_outcome(tests), tests, sorted(self.lines), time_ms, error, runner)


def _is_single(x: Any) -> bool:
    return isinstance(x, list) and len(x) == 1


def _describe_exit(code: int | None) -> str:
    """The harness's supervisor exits 128 + N when the program's process died of signal N."""
    signum = -code if code is not None and code < 0 else (code - 128 if code is not None and code > 128 else 0)
    if signum:
        try:
            return f"was killed by {signal.Signals(signum).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


def _check_spec(spec: TestSpec) -> None:
    if spec.kind not in ("assert", "stdio", "call"):
        raise ValueError(f"unknown test kind {spec.kind!r}; valid: assert, stdio, call")
    if spec.kind != "assert" and len(spec.outputs) != len(spec.inputs):
        raise ValueError(f"{spec.kind} tests need one output per input ({len(spec.inputs)} != {len(spec.outputs)})")
    if spec.kind == "call" and not spec.fn_name:
        raise ValueError("call tests need fn_name")


# ---------------------------------------------------------------- the executor


class EmbeddedSandbox(Executor):
    """Runs each program in its own child process on this machine, up to ``workers`` at a time.

    Protections (applied by the child, see harness.py): network namespace, PID namespace (nothing the program
    forks survives it), rlimits (address space, CPU, processes, file size, open files, no core), a non-root
    ``uid``, no-new-privileges, a private empty working directory, and a parent-side wall-clock kill. Missing
    ones (e.g. when not run as root) are logged once at construction and listed in ``ExecResult.runner``.
    Not covered yet: the filesystem is visible (read-only for the uid where permissions say so), and programs
    running concurrently share one uid; the docker backend is meant to close those.

    Args:
        timeout_s: wall-clock limit per test (and for loading the program).
        budget_s: wall-clock limit for the whole program; tests left when it runs out are ``timeout``.
        memory_mb: RLIMIT_AS of the program's process.
        max_output_bytes: cap on captured stdout per test (stdio) and on a returned value's JSON (call).
        workers: programs run at once (default: CPU count).
        python: runner interpreter (default: ours; if the sandbox uid cannot read its stdlib, /usr/bin/python3).
        coverage: record executed program lines (sys.monitoring on Python >= 3.12, else sys.settrace).
        uid: uid (and gid) the program runs as when we are root; None keeps root (logged as missing).
        stop_on_first_failure: stop a program at its first non-passing test; the rest are ``fail``, not run.
        site_packages: let programs import installed packages (runs the child without ``-S``).
    """

    def __init__(self, timeout_s: float = 4.0, budget_s: float = 20.0, memory_mb: int = 1024,
                 max_output_bytes: int = 1 << 20, workers: int | None = None, python: str | None = None,
                 coverage: bool = True, uid: int | None = 65534, stop_on_first_failure: bool = False,
                 site_packages: bool = False):
        self.timeout_s, self.budget_s, self.memory_mb = timeout_s, budget_s, memory_mb
        self.max_output_bytes, self.coverage, self.uid = max_output_bytes, coverage, uid
        self.stop_on_first_failure = stop_on_first_failure
        self.workers = workers or os.cpu_count() or 1
        self.site_packages = site_packages
        self._line_cap = 8 * max_output_bytes + (1 << 20)  # JSON escaping can grow output up to 6x
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="stepcoder-exec")
        probe = self._use_python(python or sys.executable)
        if probe.error.startswith(STDLIB_UNREADABLE) and python is None:
            # The default interpreter lives where the sandbox uid cannot read (pyenv under /root): try the system's.
            for alt in FALLBACK_PYTHONS:
                if os.path.exists(alt) and (alt_probe := self._use_python(alt)).outcome == "pass":
                    logger.warning("%s (%s); running programs with %s (Python %s) instead",
                                   probe.error, sys.executable, alt, alt_probe.runner["python"])
                    probe = alt_probe
                    break
        if probe.outcome != "pass":
            self.close()
            raise RuntimeError(f"sandbox runner {self.python} does not work: {probe.error}")
        self.runner_info = probe.runner
        self.missing = list(probe.runner.get("missing", []))
        if self.missing:
            logger.warning("execution sandbox is running WITHOUT these protections: %s (run as root on Linux "
                           "to get them all)", ", ".join(self.missing))

    def _use_python(self, python: str) -> ExecResult:
        """Switch the runner interpreter and probe it with an empty program (this also reports protections)."""
        self.python = python
        # -S: no site-packages, the program gets the stdlib only (and start-up is faster); -s: no user site.
        self._cmd = [python, "-B", "-s", *([] if self.site_packages else ["-S"]), str(HARNESS)]
        return self._run_one("pass", TestSpec(kind="assert"))

    def run(self, jobs: Sequence[tuple[str, TestSpec]], progress: bool = False) -> list[ExecResult]:
        for _, spec in jobs:  # fail before starting anything
            _check_spec(spec)
        futures = [self._pool.submit(self._run_one, program, spec) for program, spec in jobs]
        results, step = [], max(1, len(futures) // 10)
        for k, future in enumerate(futures, 1):
            results.append(future.result())
            if progress and (k % step == 0 or k == len(futures)):
                logger.info("executed %d/%d programs", k, len(futures))
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -------------------------------------------------------------------------------------------------------

    def _job(self, program: str, spec: TestSpec, workdir: str, result_fd: int) -> dict[str, Any]:
        """What the child gets. Never the expected outputs: the child's memory is the program's memory."""
        inputs = list(spec.inputs)
        if spec.kind == "stdio":  # some APPS inputs are lists of lines
            inputs = ["\n".join(map(str, x)) if isinstance(x, list) else str(x) for x in inputs]
        tests = {"kind": spec.kind, "asserts": list(spec.asserts), "setup": spec.setup, "inputs": inputs,
                 "fn_name": spec.fn_name}
        return {"program": program, "tests": tests, "timeout_s": self.timeout_s, "budget_s": self.budget_s,
                "memory_mb": self.memory_mb, "max_output_bytes": self.max_output_bytes, "coverage": self.coverage,
                "uid": self.uid, "nproc": 16 + self.workers,  # RLIMIT_NPROC counts every process of the uid
                "workdir": workdir, "result_fd": result_fd}

    def _run_one(self, program: str, spec: TestSpec) -> ExecResult:
        t0 = time.monotonic()
        collector = _Collector(spec)
        workdir = tempfile.mkdtemp(prefix="stepcoder-run-")
        read_fd, write_fd = os.pipe()
        proc = None
        try:
            if self.uid is not None and os.geteuid() == 0:
                os.chown(workdir, self.uid, self.uid)
            payload = marshal.dumps(self._job(program, spec, workdir, write_fd), 4)  # version 4: Python >= 3.4
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
                   "PYTHONHASHSEED": "0"}  # str hashes, hence set order, the same on every run
            proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, pass_fds=(write_fd,), start_new_session=True,
                                    cwd=workdir, env=env)
            os.close(write_fd)
            write_fd = -1
            try:
                proc.stdin.write(payload)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            why = self._read(read_fd, t0 + self.budget_s + GRACE_S, collector)
            exit_code = self._reap(proc, wait_s=1.0 if why in ("end", "eof") else 0.0)
            proc = None
        finally:
            if proc is not None:  # an exception on our side: leave nothing running
                self._reap(proc, wait_s=0.0)
            if write_fd >= 0:
                os.close(write_fd)
            os.close(read_fd)
            shutil.rmtree(workdir, ignore_errors=True)
        # 137: the child's own supervisor killed it at budget_s + 1 (or RLIMIT_CPU did).
        killed_for_time = why == "deadline" or (exit_code == 137 and not collector.ended)
        return collector.result((time.monotonic() - t0) * 1000, exit_code, killed_for_time, why == "stop")

    def _read(self, fd: int, deadline: float, collector: _Collector) -> str:
        """Feed records to ``collector`` until the final one. Returns why it stopped: end, eof, deadline,
        stop (first failure), or protocol (an over-long or malformed record)."""
        poller = select.poll()  # not select(): fds above 1024 are likely in a big parent process
        poller.register(fd, select.POLLIN)
        buf, start = bytearray(), 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "deadline"
            if not poller.poll(left * 1000):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return "eof"
            buf += chunk
            while (nl := buf.find(b"\n", start)) >= 0:
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                start = 0
                try:
                    collector.add(json.loads(line))
                except (ValueError, KeyError, TypeError) as e:
                    collector.error = f"bad record from runner: {e}"
                    return "protocol"
                if collector.ended:
                    return "end"
                if collector.failed and self.stop_on_first_failure:
                    return "stop"
            start = len(buf)
            if len(buf) > self._line_cap:
                collector.error = "runner output over the byte cap"
                return "protocol"

    @staticmethod
    def _reap(proc: subprocess.Popen, wait_s: float) -> int:
        """Wait up to ``wait_s`` for a clean exit, kill the whole process group, then collect the exit code.

        The group is killed before the leader is reaped, so its id cannot have been reused by then.
        """
        end = time.monotonic() + wait_s
        while True:
            try:
                exited = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if exited is not None or time.monotonic() >= end:
                break
            time.sleep(0.001)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return proc.wait()
