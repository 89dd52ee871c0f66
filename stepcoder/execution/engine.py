"""``run()`` for every pooled backend: validation, the result cache, de-duplication, progress, input order.

A backend (``EmbeddedSandbox``, ``DockerSandbox``) only builds its ``WorkerPool``; the jobs, their results and
what is reported about them are the same whatever runs them.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from stepcoder.execution.cache import ResultCache, hit_copy, job_key, options_fingerprint
from stepcoder.execution.collect import Collector, DriverCollector
from stepcoder.execution.driver import SplitPlan, plan_for
from stepcoder.execution.guard import guard_source
from stepcoder.execution.executor import Executor
from stepcoder.execution.options import SandboxOptions
from stepcoder.execution.pool import HARNESS_VERSION, WorkerPool
from stepcoder.execution.results import ExecResult
from stepcoder.problems import TestSpec

logger = logging.getLogger("stepcoder.execution")


_warned: set[tuple[str, tuple[str, ...]]] = set()
_warn_lock = threading.Lock()


def warn_missing(backend: str, missing: Sequence[str], hint: str) -> None:
    """Say once per process, loudly, which protections this host could not give the sandbox."""
    key = (backend, tuple(sorted(missing)))
    with _warn_lock:
        if not missing or key in _warned:
            return
        _warned.add(key)
    logger.warning("!!! execution sandbox (%s) is running WITHOUT these protections: %s. %s",
                   backend, ", ".join(sorted(missing)), hint)


def check_spec(spec: TestSpec) -> None:
    if spec.kind not in ("assert", "stdio", "call"):
        raise ValueError(f"unknown test kind {spec.kind!r}; valid: assert, stdio, call")
    if spec.kind != "assert" and len(spec.outputs) != len(spec.inputs):
        raise ValueError(f"{spec.kind} tests need one output per input ({len(spec.inputs)} != {len(spec.outputs)})")
    if spec.kind == "call" and not spec.fn_name:
        raise ValueError("call tests need fn_name")


def tests_message(spec: TestSpec, guard: bool = True) -> dict[str, Any]:
    """The tests as the worker gets them: never the expected outputs (a child's memory is the program's).
    ``guard``: assert-style test code rewritten so the program's own methods cannot decide its comparisons
    (``guard.py``)."""
    inputs: list[Any] = list(spec.inputs)
    if spec.kind == "stdio":  # some APPS inputs are lists of lines
        inputs = ["\n".join(map(str, x)) if isinstance(x, list) else str(x) for x in inputs]
    asserts, setup = list(spec.asserts), spec.setup
    if guard and spec.kind == "assert":
        asserts, setup = [guard_source(a) for a in asserts], guard_source(setup)
    return {"kind": spec.kind, "asserts": asserts, "setup": setup, "inputs": inputs, "fn_name": spec.fn_name}


def split_plan(spec: TestSpec, split: bool = True) -> SplitPlan | None:
    """How an assert spec's tests run outside the child (``driver.py``), or None: in-process, under the guard."""
    if not split or spec.kind != "assert":
        return None
    return plan_for(spec.setup or "", tuple(spec.asserts), spec.context or "")


SERVE_TESTS = {"kind": "serve", "asserts": [], "setup": "", "inputs": [], "fn_name": None}


class PooledExecutor(Executor):
    """Shared by the pooled backends. Subclasses call ``_start_engine`` once their pool is up."""

    backend = "pooled"

    def _start_engine(self, pool: WorkerPool, options: SandboxOptions, fingerprint: dict[str, Any]) -> None:
        """``fingerprint``: what else decides a result on this backend (interpreter, image), for the cache key."""
        o = self.options = options
        self._pool = pool
        self.timeout_s, self.budget_s, self.max_output_bytes = o.timeout_s, o.budget_s, o.max_output_bytes
        self.coverage, self.header, self.lenient_stdio = o.coverage, o.header, o.lenient_stdio
        self.stop_on_first_failure, self.guard_comparisons = o.stop_on_first_failure, o.guard_comparisons
        self.split_tests = o.split_tests
        self.cache = ResultCache(o.cache_size) if o.cache else None
        self._fingerprint = options_fingerprint(HARNESS_VERSION, {
            **fingerprint, "timeout_s": o.timeout_s, "budget_s": o.budget_s, "max_output_bytes": o.max_output_bytes,
            "coverage": o.coverage, "header": o.header, "lenient_stdio": o.lenient_stdio,
            "stop_on_first_failure": o.stop_on_first_failure, "guard_comparisons": o.guard_comparisons,
            "split_tests": o.split_tests, "memory_mb": o.memory_mb, "tmp_mb": o.tmp_mb})

    @property
    def runner_info(self) -> dict[str, Any]:
        """Interpreter, coverage mode and protections of this executor's workers (as the first one reported)."""
        h = self._pool.hello
        return {**self._pool.runner, "python": h["python"], "interpreter": h["executable"],
                "coverage": h["coverage"] if self.coverage else "off", "applied": h["applied"],
                "missing": h["missing"]}

    @property
    def missing(self) -> list[str]:
        return list(self._pool.hello["missing"])

    def _message(self, program: str, spec: TestSpec) -> dict[str, Any]:
        split = split_plan(spec, self.split_tests) is not None
        # a split job's child gets no test code at all, only the program; its replies are relayed as they come
        return {"program": program, "tests": SERVE_TESTS if split else tests_message(spec, self.guard_comparisons),
                "timeout_s": self.timeout_s, "budget_s": self.budget_s, "max_output_bytes": self.max_output_bytes,
                "coverage": self.coverage, "header": self.header, "stream": self.stop_on_first_failure or split}

    def _collector(self, spec: TestSpec) -> Collector:
        plan = split_plan(spec, self.split_tests)
        if plan is not None:
            return DriverCollector(spec, plan, timeout_s=self.timeout_s, budget_s=self.budget_s,
                                   stop_on_failure=self.stop_on_first_failure)
        return Collector(spec, self.lenient_stdio, self.stop_on_first_failure)

    def _submit(self, program: str, spec: TestSpec) -> Future:
        return self._pool.submit(self._message(program, spec), self._collector(spec))

    def submit(self, program: str, spec: TestSpec) -> Future:
        """One job, not cached; a Future of its ExecResult."""
        check_spec(spec)
        return self._submit(program, spec)

    def run(self, jobs: Sequence[tuple[str, TestSpec]], progress: bool | Callable[[int, int], None] = False
            ) -> list[ExecResult]:
        """Run each ``(program, tests)`` job; results in input order. With the cache on (the default), identical
        jobs run once per executor lifetime: repeats come back with ``cache_hit=True``.

        ``progress``: True draws a bar on stderr; a callable gets ``(done, total)`` every 0.25 s and at the end.
        """
        for _, spec in jobs:  # fail before starting anything
            check_spec(spec)
        results: list[ExecResult | None] = [None] * len(jobs)
        pending: dict[Future, tuple[str, list[int]]] = {}
        by_key: dict[str, Future] = {}
        for i, (program, spec) in enumerate(jobs):
            key = job_key(program, spec, self._fingerprint) if self.cache is not None else str(i)
            if key in by_key:
                pending[by_key[key]][1].append(i)
                continue
            if self.cache is not None and (hit := self.cache.get(key)) is not None:
                results[i] = hit
                continue
            future = self._submit(program, spec)
            by_key[key] = future
            pending[future] = (key, [i])
        report = _progress(progress, len(jobs))
        done = len(jobs) - sum(len(idx) for _, idx in pending.values())
        left, lock, all_done = [len(pending)], threading.Lock(), threading.Event()

        def one_done(_: Future) -> None:  # on the dispatcher thread: we wake once at the end, not per program
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()

        for future in pending:
            future.add_done_callback(one_done)
        if not pending:
            all_done.set()
        report(done)
        try:
            while not all_done.wait(timeout=0.25):
                report(done + sum(len(idx) for f, (_, idx) in pending.items() if f.done()))
            for future, (key, idx) in pending.items():
                result = future.result()
                if self.cache is not None and not result.error.startswith("sandbox worker"):
                    self.cache.put(key, result)
                results[idx[0]] = result
                for i in idx[1:]:
                    results[i] = hit_copy(result)
            report(len(jobs))
        finally:
            report(None)
        return results  # type: ignore[return-value]

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


def _progress(progress: bool | Callable[[int, int], None], total: int) -> Callable[[int | None], None]:
    """``report(done)`` after each result and ``report(None)`` at the end."""
    if callable(progress):
        return lambda done: None if done is None else progress(done, total)
    if not progress:
        return lambda done: None
    try:
        from tqdm import tqdm
    except ImportError:  # no tqdm: a log line per tenth
        step = max(1, total // 10)
        return lambda done: None if done is None or done % step else logger.info("executed %d/%d", done, total)
    bar = tqdm(total=total, desc="execute", unit="prog", file=sys.stderr, dynamic_ncols=True)

    def report(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return report
