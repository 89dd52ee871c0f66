"""Runs ONE untrusted program against its tests, inside the already-confined child (see ``worker.py``).

The worker forks a child per program, confines it (``isolation.confine_child``) and calls ``run_program``. Records
go, one JSON object a line, to the pipe ``result_fd``; fds 0/1/2 are /dev/null, so nothing the program prints can
land there by accident:

    {"t": "start", "python": ..., "coverage": ..., "missing": [...]}
    {"t": "compile_error", "error": ...}                                  (then nothing but "end")
    {"t": "load", "status": "ok" | "runtime_error" | "timeout", "detail": ..., "lines": [...]}  (assert, call)
    {"t": "test", "i": ..., "status": ..., "time_ms": ..., "detail": ..., "lines": [...],
     "out": captured stdout (stdio) | "ret"/"ret_repr": return value (call)}
    {"t": "end", "error": ...}

Test status here is "pass"/"fail" for asserts, and "ok" for stdio/call tests that ran to the end: the child never
sees expected outputs, the parent compares. "lines" holds the program lines first executed since the last record:
only frames compiled from the program text (filename ``<candidate>``) count, never the header, the tests, the
harness or the library.

Coverage: ``sys.monitoring`` LINE events on Python >= 3.12, enabled on the program's own code objects only; each
location reports once, then is disabled, so it is nearly free. Else a ``sys.settrace`` tracer that only traces
``<candidate>`` frames (several times slower on CPU-heavy programs).

This module runs inside the sandbox worker: it imports only the stdlib and is sent to the worker as source.
"""

import _signal as signal  # the C module: `signal` would import enum
import builtins
import io
import os
import sys
import time
from _json import encode_basestring_ascii  # the `json` package imports `re`

CANDIDATE = "<candidate>"  # filename the program is compiled under; coverage counts only these frames
HEADER = "<header>"
TEST = "<test>"
ALARM_REPEAT_S = 0.05  # a bare `except:` in the program cannot swallow a repeating alarm for good

_real_exit = os._exit
_harness_pid = -1  # a fork of the program must never act as the harness
_result_fd = -1
_lines: set = set()  # executed program lines not yet reported
_pending = []  # records held back to share one write with the next (fewer wake-ups of the worker)
_armed = False  # the alarm handler raises only while program code runs
_fired = False


class _Timeout(BaseException):  # BaseException: the program's `except Exception` must not swallow it
    pass


class _OutputLimit(BaseException):
    pass


# ---------------------------------------------------------------- coverage


def _local_tracer(frame, event, arg):
    if event == "line":
        _lines.add(frame.f_lineno)
    return _local_tracer


def _global_tracer(frame, event, arg):
    return _local_tracer if frame.f_code.co_filename == CANDIDATE else None


class _Discard(io.RawIOBase):
    def writable(self):
        return True

    def write(self, b):
        return len(b)


_quiet = {}  # streams made once in the worker (prepare): a child only assigns them, it allocates nothing


def prepare() -> str:
    """Once, in the worker before it forks children: what every child can inherit (the alarm handler, the
    coverage tool, discarding output streams). Returns the coverage mechanism this interpreter offers."""
    signal.signal(signal.SIGALRM, _on_alarm)
    _quiet["out"] = io.TextIOWrapper(io.BufferedWriter(_Discard()), encoding="utf-8", errors="replace")
    _quiet["err"] = io.TextIOWrapper(io.BufferedWriter(_Discard()), encoding="utf-8", errors="replace")
    _quiet["in"] = io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"")), encoding="utf-8")
    builtins.exit = builtins.quit = sys.exit  # `python -S` leaves these undefined
    mon = getattr(sys, "monitoring", None)
    if mon is None:
        import threading  # noqa: F401  (settrace must reach the program's threads: import it once, here)

        return "settrace"

    def on_line(code, line):
        _lines.add(line)
        return mon.DISABLE  # each location reports once, so coverage costs almost nothing after

    mon.use_tool_id(mon.COVERAGE_ID, "stepcoder")
    mon.register_callback(mon.COVERAGE_ID, mon.events.LINE, on_line)  # no events yet: see _monitor
    return "sys.monitoring"


def _start_coverage(enabled: bool) -> str:
    if not enabled:
        return "off"
    if getattr(sys, "monitoring", None) is not None:
        return "sys.monitoring"  # events go on the program's code objects once compiled (_monitor)
    import threading

    threading.settrace(_global_tracer)  # Python < 3.12: threads the program starts; see _timed for the rest
    return "settrace"


def _monitor(code) -> None:
    """sys.monitoring: LINE events for the program's own code objects only (the module and, recursively, every
    function, class body, lambda and comprehension compiled from it). Nothing else is instrumented, so harness
    and library code run at full speed."""
    mon = sys.monitoring
    todo = [code]
    while todo:
        co = todo.pop()
        mon.set_local_events(mon.COVERAGE_ID, co, mon.events.LINE)
        todo.extend(c for c in co.co_consts if type(c) is type(co))


def _take_lines() -> list:
    out = sorted(_lines)
    _lines.clear()  # settrace sees a line again; the parent takes the union anyway
    return out


# ---------------------------------------------------------------- running program code under a timer


def _on_alarm(signum, frame):
    global _fired
    if _armed:
        _fired = True
        raise _Timeout()


class _Sink(io.RawIOBase):
    """Keeps up to ``cap`` bytes. ``strict``: raise once over the cap (stdio), else drop the rest silently."""

    def __init__(self, cap: int, strict: bool):
        self.data, self.cap, self.strict, self.over = bytearray(), cap, strict, False

    def writable(self):
        return True

    def write(self, b):
        if len(self.data) + len(b) > self.cap:
            self.over = True
            if self.strict:
                raise _OutputLimit()
            return len(b)
        self.data += b
        return len(b)


def _set_stdin(text: str) -> None:
    """The test input on fd 0 itself (a memfd), so ``open(0)`` and ``os.read(0)`` see it as well as ``input()``."""
    data = text.encode()
    raw = None
    try:
        fd = os.memfd_create("stdin", 0)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.lseek(fd, 0, 0)
            os.dup2(fd, 0)
            raw = io.FileIO(0, "rb", closefd=False)
        finally:
            os.close(fd)
    except (AttributeError, OSError):  # no memfd (or too big a file): the input reaches sys.stdin only
        raw = io.BytesIO(data)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8")


def _set_stdout(cap: int, strict: bool) -> _Sink:
    sink = _Sink(cap, strict)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(sink), encoding="utf-8", errors="replace")
    return sink


def _timed(fn, seconds: float, trace: bool):
    """Run ``fn()`` with a wall-clock alarm. Returns (value, exception or None, timed_out, ms)."""
    global _armed, _fired
    value = exc = None
    _fired = False
    t0 = time.perf_counter()
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), ALARM_REPEAT_S)
    if trace:
        sys.settrace(_global_tracer)
    try:
        value = fn()
    except BaseException as e:  # keep this body one statement: the alarm may still fire until disarmed
        exc = e
    _armed = False
    signal.setitimer(signal.ITIMER_REAL, 0)
    if trace:
        sys.settrace(None)
    if os.getpid() != _harness_pid:  # a forked copy of the program left through sys.exit: it is not us
        _real_exit(0)
    return value, exc, _fired or isinstance(exc, _Timeout), (time.perf_counter() - t0) * 1000


def _describe(exc: BaseException) -> str:
    """``Type: message (line N)``. str() of the program's exception runs program code, so it gets a timer too."""
    text, err, _, _ = _timed(lambda: str(exc)[:300], 0.5, False)
    msg = type(exc).__name__ if err is not None or not text else f"{type(exc).__name__}: {text}"
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == CANDIDATE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return msg if line is None else f"{msg} (line {line})"


def _classify(exc, timed_out: bool, assertion_fails: bool) -> tuple:
    """(status, detail) for a run that raised ``exc`` (None: it returned)."""
    if timed_out:
        return "timeout", "time limit exceeded"
    if exc is None:
        return ("pass" if assertion_fails else "ok"), ""
    if isinstance(exc, _OutputLimit):
        return "fail", "output limit exceeded"
    if assertion_fails and isinstance(exc, AssertionError):
        return "fail", _describe(exc)
    return "runtime_error", _describe(exc)


def _candidate_exit(code=0):
    """``os._exit`` as the program sees it: the harness must survive to report (competitive programs often
    end with ``os._exit(0)``); a forked child of the program really exits."""
    if os.getpid() != _harness_pid:
        _real_exit(code)
    raise SystemExit(code)


# ---------------------------------------------------------------- records


def to_json(x) -> str:
    """JSON for plain values (exact types only: no program code runs); TypeError otherwise."""
    t = type(x)
    if t is str:
        return encode_basestring_ascii(x)
    if x is None or t is bool:
        return "null" if x is None else ("true" if x else "false")
    if t is int:
        return int.__repr__(x)
    if t is float:
        if x != x or x in (float("inf"), float("-inf")):
            return "NaN" if x != x else ("Infinity" if x > 0 else "-Infinity")  # as Python's json writes them
        return float.__repr__(x)
    if t is list or t is tuple:
        return "[" + ",".join(map(to_json, x)) + "]"
    if t is dict:
        return "{" + ",".join(to_json(k if type(k) is str else to_json(k)) + ":" + to_json(v)
                              for k, v in x.items()) + "}"  # non-str keys become strings, as in json
    raise TypeError(f"not JSON: {t.__name__}")


def _emit(record: dict, hold: bool = False) -> None:
    """Write ``record`` (and any held ones). ``hold``: keep it for the next write instead: only for records whose
    loss in a crash costs little ("start"; the last test, written with "end")."""
    if os.getpid() != _harness_pid:
        _real_exit(0)
    _pending.append(to_json(record) + "\n")
    if hold:
        return
    data = "".join(_pending).encode("ascii")
    _pending.clear()
    while data:
        data = data[os.write(_result_fd, data):]


class _Budget:
    def __init__(self, job: dict):
        self.per_test, self.end = job["timeout_s"], time.monotonic() + job["budget_s"]

    def next(self) -> float:
        """Seconds the next run may take; <= 0 once the whole-program budget is spent."""
        return min(self.per_test, self.end - time.monotonic())


def _exhausted(i: int) -> None:
    _emit({"t": "test", "i": i, "status": "timeout", "time_ms": 0.0, "detail": "time budget exhausted"})


# ---------------------------------------------------------------- the reward-hack guard (see guard.py)

CHECKED = "__stepcoder_checked__"  # the name the parent's rewritten test code calls (guard.CHECKED)
_PLAIN = frozenset({int, float, complex, str, bytes, bool, type(None)})
_GUARDED = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__", "__contains__")
_CHECK_BUDGET = 100_000  # values inspected per operand; past it, the rest of a huge result goes unchecked
_FunctionType = type(_Discard.write)
_METHOD_WRAPPERS = (staticmethod, classmethod)
# Read a class's own __dict__ and __mro__ through `type` itself: a metaclass of the program's could override
# attribute access on its classes and run program code here.
_type_dict = type.__dict__["__dict__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_verdicts = {}  # type -> "" or "Name.__eq__", the program-written method that would decide a comparison


def _written_by_program(t) -> str:
    verdict = _verdicts.get(t)
    if verdict is None:
        verdict = ""
        for cls in _type_mro(t):
            d = _type_dict(cls)
            own = d.get("__module__") == "__candidate__"  # a class statement of the program
            for name in _GUARDED:
                f = d.get(name)
                if f is None:
                    continue
                if type(f) in _METHOD_WRAPPERS:
                    f = f.__func__
                if (own and type(f) is not _FunctionType) or (
                        type(f) is _FunctionType and f.__code__.co_filename == CANDIDATE):
                    verdict = f"{t.__name__}.{name}"
                    break
            if verdict:
                break
        _verdicts[t] = verdict
    return verdict


def _checked(value):
    """``value`` itself, after checking that no method the program wrote would decide a comparison or truth test
    on it (its type's, or an element's of the lists, tuples, sets and dicts in it). Raises AssertionError."""
    if type(value) in _PLAIN:
        return value
    todo, budget = [value], _CHECK_BUDGET
    while todo and budget > 0:
        x = todo.pop()
        budget -= 1
        t = type(x)
        if t in _PLAIN:
            continue
        bad = _written_by_program(t)
        if bad:
            raise AssertionError(f"{bad} is the program's own: a test cannot use it to compare (reward-hack guard)")
        # the elements as stored, never through the program's __iter__ or items()
        if issubclass(t, (list, tuple)):
            todo.extend((list if issubclass(t, list) else tuple).__getitem__(x, slice(0, budget)))
        elif issubclass(t, (set, frozenset)):
            it = (set if issubclass(t, set) else frozenset).__iter__(x)
            todo.extend(e for _, e in zip(range(budget), it))
        elif issubclass(t, dict):
            for _, (k, v) in zip(range(budget), dict.items(x)):
                todo += (k, v)
    return value


# ---------------------------------------------------------------- the three test kinds


def _namespace(name: str, header) -> dict:
    ns = {"__name__": name, "__builtins__": builtins}
    if header is not None:
        exec(header, ns)  # trusted (the executor's configuration); never counted as program lines
    return ns


def _load(code, header, budget: _Budget, trace: bool, setup: str = "") -> dict | None:
    """exec the program (and the test setup) once; emit the "load" record. Returns the namespace, or None."""
    ns = _namespace("__candidate__", header)

    def load():
        exec(code, ns)
        ns[CHECKED] = _checked  # after the program: it cannot have replaced it beforehand
        if setup:
            exec(compile(setup, TEST, "exec"), ns)

    seconds = budget.next()
    if seconds <= 0:
        status, detail = "timeout", "time budget exhausted"
    else:
        _, exc, timed_out, _ = _timed(load, seconds, trace)
        status, detail = _classify(exc, timed_out, False)  # SystemExit while loading is a runtime_error
    _emit({"t": "load", "status": status, "detail": detail, "lines": _take_lines()})
    return ns if status == "ok" else None


def _run_assert(job, code, header, budget, trace):
    tests = job["tests"]
    ns = _load(code, header, budget, trace, tests.get("setup") or "")
    if ns is None:
        return
    for i, snippet in enumerate(tests["asserts"]):
        seconds = budget.next()
        if seconds <= 0:
            _exhausted(i)
            continue
        try:
            test_code = compile(snippet, TEST, "exec")
        except (SyntaxError, ValueError) as e:
            _emit({"t": "test", "i": i, "status": "runtime_error", "time_ms": 0.0, "detail": f"test: {e}"})
            continue
        _, exc, timed_out, ms = _timed(lambda: exec(test_code, ns), seconds, trace)
        status, detail = _classify(exc, timed_out, True)
        _emit({"t": "test", "i": i, "status": status, "time_ms": ms, "detail": detail, "lines": _take_lines()},
              hold=i == len(tests["asserts"]) - 1)


def _run_stdio(job, code, header, budget, trace):
    """Each test execs the program afresh as ``__main__`` with the input on stdin (APPS/CodeRL style)."""
    cap = job["max_output_bytes"]
    for i, stdin in enumerate(job["tests"]["inputs"]):
        seconds = budget.next()
        if seconds <= 0:
            _exhausted(i)
            continue
        _set_stdin(stdin)
        sink = _set_stdout(cap, strict=True)

        def run():
            try:
                exec(code, _namespace("__main__", header))
            except SystemExit:  # exit() is a normal way to end a stdio program
                pass
            sys.stdout.flush()

        _, exc, timed_out, ms = _timed(run, seconds, trace)
        status, detail = _classify(exc, timed_out, False)
        if sink.over and status != "timeout":
            status, detail = "fail", "output limit exceeded"
        record = {"t": "test", "i": i, "status": status, "time_ms": ms, "detail": detail, "lines": _take_lines()}
        if status == "ok":
            record["out"] = sink.data.decode("utf-8", "replace")
        _emit(record, hold=i == len(job["tests"]["inputs"]) - 1)


def _apps_int_keys(args: list) -> list:
    """APPS call-based quirk: JSON turned the int keys of a dict argument into strings; undo it for the first
    argument when every key is an integer literal (what APPS's own harness does)."""
    if args and type(args[0]) is dict and args[0]:
        try:
            return [{int(k): v for k, v in args[0].items()}, *args[1:]]
        except (TypeError, ValueError):
            pass
    return args


def _run_call(job, code, header, budget, trace):
    """Load the program once; each test calls ``fn_name`` (module-level, or on a fresh ``Solution()``)."""
    tests = job["tests"]
    ns = _load(code, header, budget, trace)
    if ns is None:
        return
    fn_name, cap = tests["fn_name"], job["max_output_bytes"]

    def target():
        if callable(ns.get(fn_name)):
            return ns[fn_name]
        if isinstance(ns.get("Solution"), type):
            return getattr(ns["Solution"](), fn_name)
        raise NameError(f"no function or Solution method named {fn_name!r}")

    for i, args in enumerate(tests["inputs"]):
        seconds = budget.next()
        if seconds <= 0:
            _exhausted(i)
            continue
        args = _apps_int_keys(args if isinstance(args, list) else [args])
        value, exc, timed_out, ms = _timed(lambda: target()(*args), seconds, trace)
        status, detail = _classify(exc, timed_out, False)
        record = {"t": "test", "i": i, "status": status, "time_ms": ms, "detail": detail, "lines": _take_lines()}
        if status == "ok":
            try:
                ret = to_json(value)  # tuples become lists; the parent treats them as equal anyway
                record["ret"] = value
            except (TypeError, RecursionError):
                ret, exc, _, _ = _timed(lambda: repr(value), 0.5, False)  # __repr__ is program code
                record["ret_repr"] = ret
                if exc is not None:
                    record.update(status="runtime_error", detail="result has no repr")
            if len(ret or "") > cap:
                record.update(status="fail", detail="output limit exceeded")
            if record["status"] != "ok":
                record.pop("ret", None), record.pop("ret_repr", None)
        _emit(record, hold=i == len(tests["inputs"]) - 1)


# ---------------------------------------------------------------- serving a test driver (split assert tests)
#
# The test code runs in a driver outside this process (``driver.py``, in the pipeline); it asks for calls on fd 3
# (a socket: records go out on it, requests come in), one at a time, as JSON lines:
#     {"q": seq, "op": "call" | "getattr" | "getitem" | "iter" | "end", "target": name or {"r": ref}, "attr", "args",
#      "kwargs", "s": seconds}
# and gets one "reply" record each: {"t": "reply", "q", "status": "ok" | "error" | "fail" | "timeout", "detail",
# "v": value, "a": the arguments after the call, "time_ms", "lines"}. Values cross as tagged JSON (see
# ``driver.py`` for the decoder, the only side that matters for safety): JSON scalars and lists; objects are tags
# {"t": tuple} {"s": set} {"f": frozenset} {"d": [[k, v]...]} {"b": bytes as latin-1} {"c": [re, im]}
# {"L": ListNode values} {"T": TreeNode level order} {"r": id} (any other object stays here, by reference).

_MUTABLE = (list, dict, set)
_WALK_CAP = 100_000  # nodes of a linked list or tree encoded by value; past it (or on a cycle) it stays a reference


class _Node:  # ListNode/TreeNode for a program that did not define its own
    def __init__(self, val=0, next=None, left=None, right=None):
        self.val, self.next, self.left, self.right = val, next, left, right


def _encode(x, refs: list):
    """A program value as tagged JSON-able data; objects that are not data stay here as references."""
    t = type(x)
    if x is None or t in (bool, int, str) or t is float:
        return x
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int.__index__(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, list):
        return [_encode(e, refs) for e in list.__iter__(x)]
    if isinstance(x, tuple):
        return {"t": [_encode(e, refs) for e in tuple.__iter__(x)]}
    if isinstance(x, frozenset):
        return {"f": [_encode(e, refs) for e in frozenset.__iter__(x)]}
    if isinstance(x, set):
        return {"s": [_encode(e, refs) for e in set.__iter__(x)]}
    if isinstance(x, dict):
        return {"d": [[_encode(k, refs), _encode(v, refs)] for k, v in dict.items(x)]}
    if isinstance(x, (bytes, bytearray)):
        return {"b": bytes(x).decode("latin-1")}
    if isinstance(x, complex):
        return {"c": [x.real, x.imag]}
    fractions, decimal = sys.modules.get("fractions"), sys.modules.get("decimal")
    if fractions is not None and isinstance(x, fractions.Fraction):
        return {"q": [int(x.numerator), int(x.denominator)]}
    if decimal is not None and isinstance(x, decimal.Decimal):
        return {"D": str(x)}
    name = t.__name__
    if name == "ListNode":
        vals, seen, node = [], set(), x
        while node is not None and type(node).__name__ == "ListNode" and id(node) not in seen and len(vals) < _WALK_CAP:
            seen.add(id(node))
            vals.append(_encode(node.val, refs))
            node = node.next
        if node is None:
            return {"L": vals}
    if name == "TreeNode":
        out, queue, seen = [], [x], set()
        while queue and len(out) < _WALK_CAP:
            node = queue.pop(0)
            if node is None:
                out.append(None)
                continue
            if type(node).__name__ != "TreeNode" or id(node) in seen:
                break
            seen.add(id(node))
            out.append(_encode(node.val, refs))
            queue += [node.left, node.right]
        else:
            while out and out[-1] is None:
                out.pop()
            return {"T": out}
    refs.append(x)
    return {"r": len(refs) - 1}


def _global(ns: dict, name: str):
    """A name of the program's module, as its code would see it (NameError if it has none)."""
    try:
        return ns[name]
    except KeyError:
        try:
            return getattr(builtins, name)
        except AttributeError:
            raise NameError(f"name {name!r} is not defined") from None


def _decode(x, refs: list, ns: dict):
    """The driver's data (trusted) as Python values of this process."""
    if type(x) is list:
        return [_decode(e, refs, ns) for e in x]
    if type(x) is not dict:
        return x
    (tag, v), = x.items()
    if tag == "t":
        return tuple(_decode(e, refs, ns) for e in v)
    if tag == "s":
        return {_decode(e, refs, ns) for e in v}
    if tag == "f":
        return frozenset(_decode(e, refs, ns) for e in v)
    if tag == "d":
        return {_decode(k, refs, ns): _decode(val, refs, ns) for k, val in v}
    if tag == "b":
        return v.encode("latin-1")
    if tag == "c":
        return complex(v[0], v[1])
    if tag == "q":
        return sys.modules["fractions"].Fraction(v[0], v[1]) if "fractions" in sys.modules else v[0] / v[1]
    if tag == "D":
        import decimal

        return decimal.Decimal(v)
    if tag == "r":
        return refs[v]
    if tag == "n":  # a name of the program's module passed by the test (MBPP's `f(root)`)
        return _global(ns, v)
    if tag == "y":
        return getattr(builtins, v)
    if tag == "L":
        cls, head = ns.get("ListNode") or _Node, None
        for val in reversed(v):
            node = cls(_decode(val, refs, ns))
            node.next = head
            head = node
        return head
    if tag == "T":
        cls = ns.get("TreeNode") or _Node
        nodes = [None if e is None else cls(_decode(e, refs, ns)) for e in v]
        kids = iter(nodes[1:])
        for node in nodes:
            if node is not None:
                node.left, node.right = next(kids, None), next(kids, None)
        return nodes[0] if nodes else None
    raise ValueError(f"unknown tag {tag!r}")


class _Requests:
    """JSON lines from the driver on fd ``fd``."""

    def __init__(self, fd: int):
        import json

        self.fd, self.buf, self.loads = fd, b"", json.loads

    def next(self):
        while b"\n" not in self.buf:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return self.loads(line)


def _serve_one(req: dict, ns: dict, refs: list, trace: bool) -> dict:
    op, target = req["op"], req["target"]
    args = []

    def run():
        args[:] = _decode(req.get("args") or [], refs, ns)
        kwargs = {k: _decode(v, refs, ns) for k, v in (req.get("kwargs") or {}).items()}
        obj = refs[target["r"]] if type(target) is dict else _global(ns, target)
        if op == "call":
            return obj(*args, **kwargs)
        if op == "getattr":
            return getattr(obj, req["attr"])
        if op == "iter":  # list(obj), len(obj), x in obj: the driver decides on the items
            return list(obj)
        return obj[args[0]]  # getitem

    value, exc, timed_out, ms = _timed(run, max(float(req["s"]), 0.001), trace)
    rep = {"t": "reply", "q": req["q"], "time_ms": ms}
    if timed_out:
        rep.update(status="timeout", detail="time limit exceeded")
    elif exc is not None:
        # an AssertionError of the program's own (an assert in its code) fails the test, as it did in-process
        rep.update(status="fail" if isinstance(exc, AssertionError) else "error", detail=_describe(exc))
    else:
        out, exc, timed_out, _ = _timed(
            lambda: (_encode(value, refs), [_encode(a, refs) if isinstance(a, _MUTABLE) else None for a in args]),
            max(float(req["s"]) - ms / 1000, 0.5), False)  # encoding may run the program's code (node attributes)
        if exc is not None or timed_out:
            rep.update(status="error", detail="its result could not be read")
        else:
            rep.update(status="ok", detail="", v=out[0])
            if any(a is not None for a in out[1]):
                rep["a"] = out[1]
    rep["lines"] = _take_lines()
    return rep


def _run_serve(job, code, header, budget, trace):
    """Load the program, then run the calls a test driver asks for until it says "end" (or goes away)."""
    ns = _load(code, header, budget, trace)
    if ns is None:
        return
    requests, refs = _Requests(_result_fd), []
    while (req := requests.next()) is not None and req.get("op") != "end":
        _emit(_serve_one(req, ns, refs, trace))


RUNNERS = {"assert": _run_assert, "stdio": _run_stdio, "call": _run_call, "serve": _run_serve}


def _compile(program: str, kind: str):
    """Compile the program. A stdio program with a module-level ``return`` runs as the body of a function, as
    the APPS harness runs every stdio program (line numbers are kept: only its AST is wrapped)."""
    try:
        return compile(program, CANDIDATE, "exec")
    except SyntaxError as e:
        if kind != "stdio" or "'return' outside function" not in str(e.msg):
            raise
    import ast

    tree = ast.parse(program, CANDIDATE)
    if not tree.body:
        raise SyntaxError("'return' outside function")
    fields = {"type_params": []} if "type_params" in ast.FunctionDef._fields else {}
    main = ast.FunctionDef(name="__stepcoder_main__", body=tree.body, decorator_list=[], returns=None,
                           args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
                           **fields)
    call = ast.Expr(ast.Call(ast.Name("__stepcoder_main__", ast.Load()), [], []))
    ast.copy_location(main, tree.body[0])
    ast.copy_location(call, tree.body[-1])
    tree.body = [main, call]
    return compile(ast.fix_missing_locations(tree), CANDIDATE, "exec")


def run_program(job: dict, result_fd: int, missing: list) -> None:
    """Run ``job`` in this (confined) process and report on ``result_fd``. Never returns: the process exits."""
    global _result_fd, _harness_pid
    _result_fd, _harness_pid = result_fd, os.getpid()
    try:
        coverage = _start_coverage(job["coverage"])
        _emit({"t": "start", "python": sys.version.split()[0], "coverage": coverage, "missing": missing}, hold=True)
        os._exit = _candidate_exit
        # stdout of assert/call programs is discarded; stdio tests get their own streams per test
        sys.stdin, sys.stdout, sys.stderr = _quiet["in"], _quiet["out"], _quiet["err"]
        header = compile(job["header"], HEADER, "exec") if job.get("header") else None
        try:
            code = _compile(job["program"], job["tests"]["kind"])
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
            _emit({"t": "compile_error", "error": f"{type(e).__name__}: {e}"[:1000]})
        else:
            if coverage == "sys.monitoring":
                _monitor(code)
            RUNNERS[job["tests"]["kind"]](job, code, header, _Budget(job), coverage == "settrace")
        _emit({"t": "end", "error": ""})
    except BaseException:
        import traceback

        try:
            _emit({"t": "end", "error": "harness: " + traceback.format_exc()[-2000:]})
        finally:
            _real_exit(70)
    _real_exit(0)  # skip interpreter teardown: threads the program left behind must not keep us alive
