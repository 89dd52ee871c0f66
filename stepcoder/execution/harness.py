"""The sandboxed child: runs ONE untrusted program against its tests and reports on a dedicated pipe.

``sandbox.py`` starts it as ``python -B -s -S harness.py`` (no site-packages, so it imports only the stdlib, as a
judge would) in a new session, with the job on stdin (``marshal``: it comes from the trusted parent). Records go,
one JSON object a line, to the pipe ``job["result_fd"]``; fds 0/1/2 are /dev/null, so nothing the program prints
can land there by accident:

    {"t": "start", "python": ..., "coverage": ..., "missing": [...]}
    {"t": "compile_error", "error": ...}                                  (then nothing but "end")
    {"t": "load", "status": "ok" | "runtime_error" | "timeout", "detail": ..., "lines": [...]}  (assert, call)
    {"t": "test", "i": ..., "status": ..., "time_ms": ..., "detail": ..., "lines": [...],
     "out": captured stdout (stdio) | "ret"/"ret_repr": return value (call)}
    {"t": "end", "error": ...}

Test status here is "pass"/"fail" for asserts, and "ok" for stdio/call tests that ran to the end: the child never
sees expected outputs, the parent compares. "lines" holds the program lines first executed since the last record.
"""

import _signal as signal  # the C module: `signal` would import enum, a few ms for every program
import builtins
import io
import marshal
import os
import resource
import sys
import time
from _json import encode_basestring_ascii  # the `json` package imports `re`, ~10 ms for every program

CANDIDATE = "<candidate>"  # filename the program is compiled under; coverage counts only these frames
TEST = "<test>"
STDLIB_UNREADABLE = "stdlib not readable by the sandbox uid"
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
MB = 1 << 20

_real_exit = os._exit
_harness_pid = -1  # set once isolated: a fork of the program must never act as the harness
_result_fd = -1
_lines: set = set()  # executed program lines not yet reported
_armed = False  # the alarm handler raises only while a program runs
_fired = False


class _Timeout(BaseException):  # BaseException: the program's `except Exception` must not swallow it
    pass


class _OutputLimit(BaseException):
    pass


# ---------------------------------------------------------------- isolation (runs as root, before the program)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _isolate(job: dict) -> list:
    """Namespaces, rlimits, uid drop, private cwd. Returns the protections that could not be applied."""
    libc, missing = _libc(), []
    root = os.geteuid() == 0
    if not root:
        libc.unshare(CLONE_NEWUSER)  # unprivileged: a user namespace grants what the net/pid ones need
    if libc.unshare(CLONE_NEWNET) != 0:  # a fresh net namespace has only a loopback that is down
        missing.append("network")
    if libc.unshare(CLONE_NEWPID) == 0:
        _fork_supervisor(job["budget_s"] + 1.0)  # returns in the child, which is pid 1 of the namespace
    else:
        missing.append("pid_namespace")
    cpu = int(job["budget_s"]) + 2
    for name, value in (("AS", job["memory_mb"] * MB), ("CPU", cpu), ("NPROC", job["nproc"]),
                        ("FSIZE", 16 * MB), ("NOFILE", 64), ("CORE", 0)):
        try:  # soft == hard: the program cannot raise it back; CPU at the hard limit is SIGKILL
            resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
        except (ValueError, OSError):
            missing.append("rlimit_" + name.lower())
    uid = job["uid"]
    if uid is not None and root:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)  # after RLIMIT_NPROC, which root ignores
    else:
        missing.append("uid")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # no setuid binaries
    if "pid_namespace" not in missing:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # set after setuid, which clears it
    os.chdir(job["workdir"])
    return missing


def _fork_supervisor(seconds: float) -> None:
    """Fork the program's process as pid 1 of the new PID namespace; this process stays outside, as root.

    When pid 1 exits or is killed, the kernel kills everything left in the namespace, so daemons the program
    forked (even with setsid) cannot outlive it. The supervisor kills pid 1 at the wall-clock limit.
    """
    pid = os.fork()
    if pid == 0:
        return
    os.close(_result_fd)  # EOF for the parent once the namespace is gone
    signal.signal(signal.SIGALRM, _on_alarm)
    global _armed
    _armed = True
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        _, status = os.waitpid(pid, 0)
    except _Timeout:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    _real_exit(code if code >= 0 else 128 - code)


# ---------------------------------------------------------------- coverage


def _local_tracer(frame, event, arg):
    if event == "line":
        _lines.add(frame.f_lineno)
    return _local_tracer


def _global_tracer(frame, event, arg):
    return _local_tracer if frame.f_code.co_filename == CANDIDATE else None


def _start_coverage(enabled: bool) -> str:
    if not enabled:
        return "off"
    mon = getattr(sys, "monitoring", None)
    if mon is None:  # Python < 3.12: sys.settrace around each run of program code (see _timed)
        import threading

        threading.settrace(_global_tracer)  # threads the program starts
        return "settrace"

    def on_line(code, line):
        if code.co_filename == CANDIDATE:
            _lines.add(line)
        return mon.DISABLE  # each location reports once, so coverage costs almost nothing after

    mon.use_tool_id(mon.COVERAGE_ID, "stepcoder")
    mon.register_callback(mon.COVERAGE_ID, mon.events.LINE, on_line)
    mon.set_events(mon.COVERAGE_ID, mon.events.LINE)
    return "sys.monitoring"


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


def _set_streams(stdin: str, cap: int, strict: bool) -> _Sink:
    sink = _Sink(cap, strict)
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(stdin.encode())), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(sink), encoding="utf-8", errors="replace")
    return sink


def _timed(fn, seconds: float, trace: bool):
    """Run ``fn()`` with a wall-clock alarm. Returns (value, exception or None, timed_out, ms)."""
    global _armed, _fired
    value = exc = None
    _fired = False
    t0 = time.perf_counter()
    _armed = True
    # The alarm repeats every 50 ms, so a bare `except:` in the program cannot swallow it for good.
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), 0.05)
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


# ---------------------------------------------------------------- the three test kinds


def _to_json(x) -> str:
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
        return "[" + ",".join(map(_to_json, x)) + "]"
    if t is dict:
        return "{" + ",".join(_to_json(k if type(k) is str else _to_json(k)) + ":" + _to_json(v)
                              for k, v in x.items()) + "}"  # non-str keys become strings, as in json
    raise TypeError(f"not JSON: {t.__name__}")


def _emit(record: dict) -> None:
    if os.getpid() != _harness_pid:
        _real_exit(0)
    data = (_to_json(record) + "\n").encode("ascii")
    while data:
        data = data[os.write(_result_fd, data):]


class _Budget:
    def __init__(self, job: dict):
        self.per_test, self.end = job["timeout_s"], time.monotonic() + job["budget_s"]

    def next(self) -> float:
        """Seconds the next run may take; <= 0 once the whole-program budget is spent."""
        return min(self.per_test, self.end - time.monotonic())


def _load(code, name: str, budget: _Budget, trace: bool, setup: str = "") -> dict | None:
    """exec the program (and the test setup) once; emit the "load" record. Returns the namespace, or None."""
    ns = {"__name__": name, "__builtins__": builtins}

    def load():
        exec(code, ns)
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


def _run_assert(job, code, budget, trace):
    tests = job["tests"]
    ns = _load(code, "__candidate__", budget, trace, tests.get("setup") or "")
    if ns is None:
        return
    for i, snippet in enumerate(tests["asserts"]):
        seconds = budget.next()
        if seconds <= 0:
            _emit({"t": "test", "i": i, "status": "timeout", "time_ms": 0.0, "detail": "time budget exhausted"})
            continue
        try:
            test_code = compile(snippet, TEST, "exec")
        except (SyntaxError, ValueError) as e:
            _emit({"t": "test", "i": i, "status": "runtime_error", "time_ms": 0.0, "detail": f"test: {e}"})
            continue
        _, exc, timed_out, ms = _timed(lambda: exec(test_code, ns), seconds, trace)
        status, detail = _classify(exc, timed_out, True)
        _emit({"t": "test", "i": i, "status": status, "time_ms": ms, "detail": detail, "lines": _take_lines()})


def _run_stdio(job, code, budget, trace):
    """Each test execs the program afresh as ``__main__`` with the input on stdin (APPS/CodeRL style)."""
    for i, stdin in enumerate(job["tests"]["inputs"]):
        seconds = budget.next()
        if seconds <= 0:
            _emit({"t": "test", "i": i, "status": "timeout", "time_ms": 0.0, "detail": "time budget exhausted"})
            continue
        sink = _set_streams(stdin, job["max_output_bytes"], strict=True)

        def run():
            try:
                exec(code, {"__name__": "__main__", "__builtins__": builtins})
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
        _emit(record)


def _run_call(job, code, budget, trace):
    """Load the program once; each test calls ``fn_name`` (module-level, or on a fresh ``Solution()``)."""
    tests = job["tests"]
    ns = _load(code, "__candidate__", budget, trace)
    if ns is None:
        return
    fn_name = tests["fn_name"]

    def target():
        if callable(ns.get(fn_name)):
            return ns[fn_name]
        if isinstance(ns.get("Solution"), type):
            return getattr(ns["Solution"](), fn_name)
        raise NameError(f"no function or Solution method named {fn_name!r}")

    for i, args in enumerate(tests["inputs"]):
        seconds = budget.next()
        if seconds <= 0:
            _emit({"t": "test", "i": i, "status": "timeout", "time_ms": 0.0, "detail": "time budget exhausted"})
            continue
        args = args if isinstance(args, list) else [args]
        value, exc, timed_out, ms = _timed(lambda: target()(*args), seconds, trace)
        status, detail = _classify(exc, timed_out, False)
        record = {"t": "test", "i": i, "status": status, "time_ms": ms, "detail": detail, "lines": _take_lines()}
        if status == "ok":
            try:
                ret = _to_json(value)  # tuples become lists; the parent treats them as equal anyway
                record["ret"] = value
            except (TypeError, RecursionError):
                ret, exc, _, _ = _timed(lambda: repr(value), 0.5, False)  # __repr__ is program code
                record["ret_repr"] = ret
                if exc is not None:
                    record.update(status="runtime_error", detail="result has no repr")
            if len(ret or "") > job["max_output_bytes"]:
                record.update(status="fail", detail="output limit exceeded")
            if record["status"] != "ok":
                record.pop("ret", None), record.pop("ret_repr", None)
        _emit(record)


RUNNERS = {"assert": _run_assert, "stdio": _run_stdio, "call": _run_call}


def main() -> None:
    global _result_fd, _harness_pid
    script_dir = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == script_dir:
        del sys.path[0]  # the program must not import our sibling modules
    job = marshal.loads(sys.stdin.buffer.read())
    _result_fd = job["result_fd"]
    os.set_inheritable(_result_fd, False)  # not passed on to programs the candidate execs
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _harness_pid = os.getpid()
    try:
        missing = _isolate(job)  # may fork: from here on we are pid 1 of a new PID namespace
        _harness_pid = os.getpid()
        stdlib = os.path.dirname(os.__file__)
        if not os.access(stdlib, os.R_OK | os.X_OK):  # e.g. a pyenv Python under /root, mode 700
            _emit({"t": "end", "error": f"{STDLIB_UNREADABLE}: {stdlib}"})
            _real_exit(71)
        coverage = _start_coverage(job["coverage"])
        _emit({"t": "start", "python": sys.version.split()[0], "coverage": coverage, "missing": missing})
        signal.signal(signal.SIGALRM, _on_alarm)
        os._exit = _candidate_exit
        builtins.exit = builtins.quit = sys.exit  # `python -S` leaves these undefined
        _set_streams("", job["max_output_bytes"], strict=False)  # stdout of assert/call programs is discarded
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(_Sink(0, False)), encoding="utf-8", errors="replace")
        try:
            code = compile(job["program"], CANDIDATE, "exec")
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
            _emit({"t": "compile_error", "error": f"{type(e).__name__}: {e}"[:1000]})
        else:
            RUNNERS[job["tests"]["kind"]](job, code, _Budget(job), coverage == "settrace")
        _emit({"t": "end", "error": ""})
    except BaseException:
        import traceback

        _emit({"t": "end", "error": "harness: " + traceback.format_exc()[-2000:]})
        _real_exit(70)
    _real_exit(0)  # skip interpreter teardown: threads the program left behind must not keep us alive


if __name__ == "__main__":
    main()
