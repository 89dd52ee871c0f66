"""The sandbox settings, one object: ``SandboxOptions``. Both backends, the engine, the pipeline's config and the
CLI read them from here instead of repeating the same keywords."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Modules imported once by each worker, so a program that imports them pays nothing (its child is a fork): what
# MBPP solutions, HumanEval/LeetCode prompts and the APPS header import. Left out on purpose: modules that register
# an at-fork hook (threading, and queue/tempfile/statistics through it) or add much memory for rare use (hashlib,
# dataclasses): every fork pays for those, whether the program uses them or not.
DEFAULT_PRELOAD = (
    "re", "math", "cmath", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
    "random", "copy", "operator", "fractions", "decimal", "datetime", "array", "json", "struct", "enum", "abc",
    "numbers", "textwrap", "unicodedata",
)


@dataclass(frozen=True)
class SandboxOptions:
    """How programs run, whatever the backend.

    Args:
        timeout_s: wall-clock limit per test (and for loading the program).
        budget_s: wall-clock limit for the whole program; tests left when it runs out are ``timeout``.
        memory_mb: RLIMIT_AS of the program's processes; the worker's cgroup caps them all together at
            ``memory_mb + tmp_mb`` plus the worker's own overhead.
        max_output_bytes: cap on captured stdout per test (stdio) and on a returned value's JSON (call).
        workers: programs run at once (default: CPU count).
        python: runner interpreter. Default: the cheapest for coverage that works (``interpreters.py``; Docker: the
            image's ``stepcoder.python`` label).
        coverage: record executed program lines.
        uid: uid (and gid) programs run as when we are root; None keeps root (embedded; containers always run
            uid 65534).
        stop_on_first_failure: stop a program at its first non-passing test (the rest are ``fail``, not run).
            Default: run all tests, so executed lines are the union over all of them (what FGO needs).
        site_packages: let programs import the runner interpreter's installed packages (embedded; default: stdlib
            only).
        header: code run in the program's namespace before it (see ``APPS_HEADER``); never counted as lines.
        lenient_stdio: also accept stdout whose per-line token sets match (see ``compare.py``; passes wrong
            answers, off by default).
        cache: reuse results of identical jobs (``cache_size`` entries, LRU).
        tmp_mb: size of the private /tmp (also the largest file a program may write).
        max_processes: processes one program may have at once (pids cgroup; RLIMIT_NPROC as a backstop).
        guard_comparisons: in-process assert tests: the program's own ``__eq__``/``__bool__``/... cannot decide
            a comparison (``guard.py``). Off: they run exactly as written.
        split_tests: assert tests run in a test driver outside the program's process (``driver.py``), which
            only sends calls and receives data; off: in the program's process, under the guard.
        preload: modules each worker imports once, so programs get them for free.
    """

    timeout_s: float = 4.0
    budget_s: float = 20.0
    memory_mb: int = 1024
    max_output_bytes: int = 1 << 20
    workers: int | None = None
    python: str | None = None
    coverage: bool = True
    uid: int | None = 65534
    stop_on_first_failure: bool = False
    site_packages: bool = False
    header: str = ""
    lenient_stdio: bool = False
    cache: bool = True
    cache_size: int = 50_000
    tmp_mb: int = 64
    max_processes: int = 32
    guard_comparisons: bool = True
    split_tests: bool = True
    preload: tuple[str, ...] = DEFAULT_PRELOAD

    @classmethod
    def of(cls, options: SandboxOptions | None = None, **overrides: Any) -> SandboxOptions:
        """``options`` (or the defaults) with ``overrides``; an unknown name is refused, naming the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown sandbox option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        if "preload" in overrides:
            overrides["preload"] = tuple(overrides["preload"])
        return dataclasses.replace(options or cls(), **overrides)

    @classmethod
    def from_config(cls, execution: Any) -> SandboxOptions:
        """The options an ``ExecutionConfig`` (the run YAML's ``execution:``) sets."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.of(**{k: v for k, v in execution.model_dump().items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        """Plain keywords (for a task argument that crosses processes, e.g. to a Dask worker)."""
        return {**dataclasses.asdict(self), "preload": list(self.preload)}
