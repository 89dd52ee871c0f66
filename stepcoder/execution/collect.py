"""Turning the records a sandboxed child reports (see ``harness.py``) into an ``ExecResult``, in the parent.

Outputs are compared as their records arrive and never kept; the expected outputs exist only here.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from typing import Any

from stepcoder.execution.compare import call_matches, repr_matches, stdio_matches
from stepcoder.execution.driver import REPLY_GRACE_S, Driver, SplitPlan
from stepcoder.execution.results import ExecResult, TestResult, decide_outcome
from stepcoder.problems import TestSpec

TIME_KILLS = ("deadline", "stalled")


class Collector:
    """Feed it the child's raw record bytes (``feed``), then ask for the ``result``."""

    def __init__(self, spec: TestSpec, lenient_stdio: bool = False, stop_on_failure: bool = False):
        self.spec, self.n, self.lenient, self.stop_on_failure = spec, spec.count, lenient_stdio, stop_on_failure
        self.tests: dict[int, TestResult] = {}
        self.lines: set[int] = set()
        self.runner: dict[str, Any] = {}
        self.load_status = "ok" if spec.kind == "stdio" else None  # stdio programs load inside each test
        self.load_detail = ""
        self.compile_error: str | None = None
        self.ended, self.error, self.failed, self.broken = False, "", False, False
        # assert tests whose code the child runs (the driver's collector says "split")
        self.isolation = "in_process" if spec.kind == "assert" else "split"
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Raw bytes from the child; complete lines are parsed as records. A malformed record ends the intake."""
        if self.broken:
            return
        self._buf += data
        start = 0
        while (nl := self._buf.find(b"\n", start)) >= 0:
            line = bytes(self._buf[start:nl])
            start = nl + 1
            try:
                self.add(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                self.error = f"bad record from runner: {e}"
                self.broken = True
                break
        del self._buf[:start]

    def add(self, rec: dict[str, Any]) -> None:
        kind = rec["t"]
        if kind == "test" and self.failed and self.stop_on_failure:
            return  # stopped at the first failure: what ran after it (before the kill landed) does not count
        self.lines.update(int(x) for x in rec.get("lines", ()))
        if kind == "start":
            self.runner.update(python=str(rec["python"]), coverage=str(rec["coverage"]),
                               child_missing=[str(m) for m in rec["missing"]])
        elif kind == "compile_error":
            self.compile_error = str(rec["error"])
        elif kind == "load":
            self.load_status, self.load_detail = str(rec["status"]), str(rec["detail"])
        elif kind == "test":
            i, status, detail = int(rec["i"]), str(rec["status"]), str(rec["detail"])
            if not 0 <= i < self.n or i in self.tests:
                raise ValueError(f"test index {i} out of range or repeated")
            if status == "ok":
                status, detail = self._judge(i, rec)
            self.tests[i] = TestResult(status, float(rec["time_ms"]), detail, self.isolation)
            self.failed = self.failed or status != "pass"
        elif kind == "end":
            self.ended, self.error = True, str(rec["error"])

    def _judge(self, i: int, rec: dict[str, Any]) -> tuple[str, str]:
        expected = self.spec.outputs[i]
        if self.spec.kind == "stdio":
            ok = stdio_matches(str(rec.get("out", "")), expected, self.lenient)
        elif "ret" in rec:
            ok = call_matches(rec["ret"], expected)
        else:  # not JSON-serialisable: compare reprs
            ok = repr_matches(rec.get("ret_repr"), expected)
        return ("pass", "") if ok else ("fail", "wrong answer")

    def result(self, time_ms: float, exit_code: int | None, why: str, oom: bool = False,
               runner: dict[str, Any] | None = None) -> ExecResult:
        """``why`` the worker stopped: exit, deadline, stalled, output_cap, stopped (first failure), worker_died."""
        runner = {**(runner or {}), **self.runner, "exit_code": exit_code}
        killed_for_time = why in TIME_KILLS or (exit_code == -signal.SIGXCPU and not self.ended)
        if self.compile_error is not None:
            return ExecResult("compile_error", [], [], time_ms, self.compile_error, runner)
        error = self.error
        if not self.ended and why != "stopped":
            if killed_for_time:
                error = error or "killed at the time limit"
            elif why == "output_cap":
                error = error or "runner output over the byte cap"
            elif oom:
                error = error or "killed: out of memory (cgroup limit)"
            else:
                error = error or f"runner {describe_exit(exit_code)} before reporting"
        load = self.load_status or ("timeout" if killed_for_time else "runtime_error")
        # Every line record the child started was delivered: it ended normally, was stopped on purpose after a
        # reported failure, or had reported every test before it died.
        complete = self.ended or why == "stopped" or (self.load_status == "ok" and len(self.tests) == self.n)
        if load != "ok":
            tests = [TestResult(load, 0.0, self.load_detail or error, self.isolation) for _ in range(self.n)]
            return ExecResult(load, tests, sorted(self.lines), time_ms, self.load_detail or error, runner,
                              coverage_complete=complete or self.load_status is not None)
        if why == "stopped":
            fill = TestResult("fail", 0.0, "not run: stopped at the first failure", self.isolation)
        elif killed_for_time:
            fill = TestResult("timeout", 0.0, "not run: killed at the time limit", self.isolation)
        else:
            fill = TestResult("runtime_error", 0.0, f"not run: {error}", self.isolation)
        tests = [self.tests.get(i) or fill for i in range(self.n)]
        return ExecResult(decide_outcome(tests), tests, sorted(self.lines), time_ms, error, runner,
                          coverage_complete=complete)


class DriverCollector(Collector):
    """A split assert job: the child only loads the program and serves calls; a :class:`Driver` runs the tests
    here and decides each one. Test records from the child are ignored: only the driver reports tests."""

    def __init__(self, spec: TestSpec, plan: SplitPlan, *, timeout_s: float, budget_s: float,
                 stop_on_failure: bool = False):
        super().__init__(spec, False, stop_on_failure)
        self.isolation = "split"
        self.plan, self.timeout_s, self.budget_s = plan, timeout_s, budget_s
        self.driver: Driver | None = None
        self._send: Callable[[bytes], None] | None = None
        self._lock = threading.Lock()

    def bind(self, send: Callable[[bytes], None]) -> None:
        """``send(request_line)`` reaches this job's child (the pool routes it through the worker)."""
        self._send = send

    def add(self, rec: dict[str, Any]) -> None:
        kind = rec["t"]
        if kind == "reply":
            self.lines.update(int(x) for x in rec.get("lines", ()))
            if self.driver is not None:
                self.driver.deliver(rec)
        elif kind != "test":  # the child reports no tests here: a forged one is ignored
            super().add(rec)
            if kind == "load" and self.load_status == "ok" and self.driver is None and self._send is not None:
                self.driver = Driver(self.plan, self._send, timeout_s=self.timeout_s, budget_s=self.budget_s,
                                     stop_on_failure=self.stop_on_failure, on_result=self._on_result)
                self.driver.start()

    def _on_result(self, i: int, result: TestResult) -> None:
        with self._lock:
            if i < 0:
                self.error = result.detail
                return
            self.tests[i] = result
            self.failed = self.failed or result.status != "pass"

    def result(self, time_ms: float, exit_code: int | None, why: str, oom: bool = False,
               runner: dict[str, Any] | None = None) -> ExecResult:
        if self.driver is not None:
            self.driver.stop()
            self.driver.thread.join(timeout=REPLY_GRACE_S)
        with self._lock:
            # every test the driver reported counts as "ended" for the base class's bookkeeping
            if self.load_status == "ok" and len(self.tests) == self.n and why == "exit":
                self.ended = True
            return super().result(time_ms, exit_code, why, oom, runner)


def describe_exit(code: int | None) -> str:
    """``exited with code N`` or ``was killed by SIGNAME`` (negative codes are signals, as in subprocess)."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exited with code {code}"
