"""Compute MBPP+'s expected outputs: ``python -m stepcoder.datasets.mbppplus_expected [MbppPlus.jsonl] [out]``.

EvalPlus ships inputs, not outputs: as in EvalPlus, the expected output of each input, base and plus, is what the
canonical solution returns. This runs each task's canonical solution (dataset code, in a fresh interpreter per
task with a memory limit and a per-call alarm) on every input rebuilt to the base asserts' argument types
(``mbppplus.conform``), twice, under hash seeds 0 (the sandbox's) and 1: an output whose order changes with the
seed comes from a set and is compared as a set (EvalPlus lists such tasks by hand). It writes
``data/mbpp-plus/expected.json.gz``: per task, the kept inputs as Python source with their expected outputs and
comparison, and how many plus inputs were dropped and why:

- ``unconformable``: the JSON input does not fit the argument types of the base asserts;
- ``error``: the canonical solution raised on it (EvalPlus keeps only inputs it accepts, its contracts);
- ``slow``: the canonical solution took more than ``MAX_CALL_S`` (a program's whole budget must fit its tests);
- ``not_literal``: the input or output has no exact Python literal (nan, inf, objects), so no assert can hold it;
- ``unstable``: the output changes between runs in other ways than a set's order.

A whole task is left out (``unusable``, with the reason) where its canonical solution returns objects, or
contradicts the expected values of its own base asserts.

Run once when the data changes; the result is committed beside the data.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

from stepcoder.datasets.mbppplus import (DEFAULT_PATH, EXPECTED_PATH, Unconformable, agrees, arg_templates,
                                         base_calls, comparison, conform, has_float, same)

MAX_CALL_S = 0.25
CALL_TIMEOUT_S = 2
TASK_TIMEOUT_S = 300
MEMORY_BYTES = 2 << 30
HASH_SEEDS = ("0", "1")  # "0" is the sandbox's (PYTHONHASHSEED=0); an output that changes with it is a set's order

# The canonical solution runs in a fresh interpreter per task and hash seed (so set order follows the seed);
# only the standard library is imported there. stdin: pickle of (solution, entry point, [args, ...]); stdout:
# pickle of [(status, value source or None, seconds), ...].
CHILD = r"""
import ast, copy, pickle, resource, signal, sys, time
solution, entry_point, inputs, memory, call_s = pickle.load(sys.stdin.buffer)
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
sys.setrecursionlimit(10000)
def alarm(signum, frame):
    raise TimeoutError()
signal.signal(signal.SIGALRM, alarm)
def literal(value):
    try:
        src = repr(value)
        return src if ast.literal_eval(src) == value else None
    except Exception:
        return None
out = []
ns = {"__name__": "__main__"}
try:
    exec(compile(solution, "<canonical>", "exec"), ns)
    fn = ns[entry_point]
except BaseException as e:
    out = [("error", None, 0.0)] * len(inputs)
else:
    for args in inputs:
        t0 = time.perf_counter()
        try:
            try:
                signal.alarm(call_s)
                value = fn(*copy.deepcopy(args))
            finally:
                signal.alarm(0)
            src = literal(value)
            objects = src is None and not isinstance(value, (float, complex, list, tuple, dict, set, frozenset))
            out.append(("object" if objects else "ok", src, time.perf_counter() - t0))
        except TimeoutError:
            out.append(("slow", None, float(call_s)))
        except BaseException:
            out.append(("error", None, time.perf_counter() - t0))
sys.stdout.buffer.write(pickle.dumps(out))
"""


def run_canonical(solution: str, entry_point: str, inputs: list, seed: str = "0") -> list[tuple]:
    """(status, output as Python source or None, seconds) of the canonical solution on each input."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": seed, "LC_ALL": "C.UTF-8"}
    try:
        proc = subprocess.run([sys.executable, "-S", "-c", CHILD], env=env, capture_output=True,
                              timeout=TASK_TIMEOUT_S,
                              input=pickle.dumps((solution, entry_point, inputs, MEMORY_BYTES, CALL_TIMEOUT_S)))
        return pickle.loads(proc.stdout)
    except (subprocess.TimeoutExpired, pickle.UnpicklingError, EOFError):
        return [("error", None, 0.0)] * len(inputs)


def _literal(value: Any) -> str | None:
    """Python source that evaluates back to exactly ``value``, or None."""
    try:
        src = repr(value)
        return src if same(ast.literal_eval(src), value) else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _rebuild(raw_inputs: list, templates: list, dropped: dict) -> list[tuple | None]:
    rebuilt = []
    for raw in raw_inputs:
        try:
            if not isinstance(raw, list) or len(raw) != len(templates):
                raise Unconformable("wrong number of arguments")
            rebuilt.append(tuple(conform(v, t) for v, t in zip(raw, templates)))
        except Unconformable:
            dropped["unconformable"] += 1
            rebuilt.append(None)
    return rebuilt


def task_expected(record: dict) -> dict:
    """Per task: ``base`` and ``plus`` tests as [arguments source, expected source, comparison], how many plus
    inputs there were and how many were dropped, by reason. ``base`` is empty where the base inputs do not rebuild
    into the base asserts' arguments (the loader then uses the base asserts as written)."""
    entry_point = record["entry_point"]
    base_raw = record["base_input"] if isinstance(record["base_input"], list) else []
    plus_raw = record["plus_input"] if isinstance(record["plus_input"], list) else []
    calls = base_calls(record["assertion"], entry_point)
    templates = arg_templates(calls, base_raw)
    dropped = {"unconformable": 0, "error": 0, "slow": 0, "not_literal": 0, "unstable": 0}
    how = comparison(calls)

    def nothing_kept(why: str = "") -> dict:
        empty = {"base": [], "plus": [], "dropped": dropped, "inputs": len(plus_raw)}
        return {**empty, "unusable": why} if why else empty

    if templates is None:
        dropped["unconformable"] = len(plus_raw)
        return nothing_kept()
    base_dropped = dict(dropped)  # only the plus inputs' drops are reported
    base = _rebuild(base_raw, templates, base_dropped)
    plus = _rebuild(plus_raw, templates, dropped)
    inputs = [a for a in base + plus if a is not None]
    runs = [run_canonical(record["canonical_solution"], entry_point, inputs, seed) for seed in HASH_SEEDS]
    if any(status == "object" for run in runs for status, _, _ in run):
        return nothing_kept("the canonical solution returns objects (e.g. a re.Match), which never leave the sandbox")
    for (_, call_how, want), (status, out, _) in zip(calls, runs[0]):  # base inputs come first, one per call
        if status == "ok" and out is not None and not agrees(ast.literal_eval(out), want, call_how):
            return nothing_kept(f"the canonical solution contradicts its base asserts (expects {want!r}, "
                                f"returns {out[:60]})")
    results = iter(zip(*runs))
    kept: dict[str, list] = {"base": [], "plus": []}
    sequences = []  # the kept tests whose output is a list or tuple: compared as sets if any output is a set's
    for part, args_list, counts in (("base", base, base_dropped), ("plus", plus, dropped)):
        for args in args_list:
            if args is None:
                continue
            (status, out, took), (status2, out2, _) = next(results)
            if status != "ok" or status2 != "ok":
                counts["slow" if "slow" in (status, status2) else "error"] += 1
                continue
            if took > MAX_CALL_S:
                counts["slow"] += 1
                continue
            arg_src = ", ".join(_literal(a) or "\0" for a in args)
            if out is None or out2 is None or "\0" in arg_src:
                counts["not_literal"] += 1
                continue
            value, value2 = ast.literal_eval(out), ast.literal_eval(out2)
            if not same(value, value2):
                try:  # the order of a set's elements: compare as sets
                    unordered = set(value) == set(value2)
                except TypeError:
                    unordered = False
                if not unordered:
                    counts["unstable"] += 1
                    continue
                kind = "set"
            elif how == "set":  # the base asserts compare as sets
                kind = "set" if isinstance(value, (list, tuple, set, frozenset)) else "eq"
            else:
                kind = "close" if has_float(value) else "eq"
            kept[part].append([arg_src, out, kind])
            if isinstance(value, (list, tuple)):
                sequences.append(kept[part][-1])
    if any(t[2] == "set" for part in kept.values() for t in part):  # a set's order showed: every output is one
        for t in sequences:
            t[2] = "set"
    return {**kept, "dropped": dropped, "inputs": len(plus_raw)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else DEFAULT_PATH
    out = Path(argv[1]) if len(argv) > 1 else EXPECTED_PATH
    raw = src.read_bytes()
    records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    tasks, totals = {}, {"inputs": 0, "kept": 0}
    for i, record in enumerate(records, 1):
        t = tasks[record["task_id"]] = task_expected(record)
        totals["inputs"] += t["inputs"]
        totals["unusable_tasks"] = totals.get("unusable_tasks", 0) + bool(t.get("unusable"))
        totals["base_kept"] = totals.get("base_kept", 0) + len(t["base"])
        totals["kept"] += len(t["plus"])
        for k, v in t["dropped"].items():
            totals[k] = totals.get(k, 0) + v
        if i % 50 == 0 or i == len(records):
            print(f"{i}/{len(records)} tasks: {totals}", flush=True)
    body = {"source_sha256": hashlib.sha256(raw).hexdigest(), "max_call_s": MAX_CALL_S, "totals": totals,
            "tasks": tasks}
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(out, "wb", mtime=0) as f:  # mtime 0: the same data gives the same bytes
        f.write(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    print(f"wrote {out}: {totals}")


if __name__ == "__main__":
    main()
