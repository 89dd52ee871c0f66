"""The result cache: identical jobs run once.

With n samples per prompt, and most of the solution given at early CCCS stages, many sampled programs are
byte-identical. A job is keyed by a hash of the program, its full test spec (expected outputs included), the
harness version (the sources the sandbox runs) and every option that changes a result (limits, coverage, the
comparison rule, the program header, the runner interpreter). A hit returns a copy marked ``cache_hit=True``.

Caveat: a program whose outcome is not deterministic (it uses ``random`` or timing, or sits at the edge of its
time limit) keeps its first outcome while cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any

from stepcoder.execution.results import ExecResult
from stepcoder.problems import TestSpec


def job_key(program: str, spec: TestSpec, fingerprint: str) -> str:
    """sha256 over (program, tests, fingerprint); ``fingerprint`` holds the harness version and the options."""
    tests = [spec.kind, list(spec.asserts), spec.setup, list(spec.inputs), list(spec.outputs), spec.fn_name,
             spec.context]
    h = hashlib.sha256()
    for part in (program, json.dumps(tests, sort_keys=True, default=repr), fingerprint):
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def options_fingerprint(harness_version: str, options: dict[str, Any]) -> str:
    return harness_version + ":" + json.dumps(options, sort_keys=True, default=repr)


class ResultCache:
    """A thread-safe LRU map from job key to ExecResult, holding at most ``max_entries``."""

    def __init__(self, max_entries: int = 50_000):
        self.max_entries = max_entries
        self._data: OrderedDict[str, ExecResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> ExecResult | None:
        with self._lock:
            result = self._data.get(key)
            if result is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
        return hit_copy(result)

    def put(self, key: str, result: ExecResult) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._data[key] = result
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def hit_copy(result: ExecResult) -> ExecResult:
    out = copy.deepcopy(result)
    out.cache_hit = True
    return out
