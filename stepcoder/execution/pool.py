"""A pool of pre-started sandbox workers and the thread that feeds them jobs.

Each worker (``worker.py``) is a long-lived process that forks one confined child per program, so the per-program
cost is a fork, not an interpreter start. The worker is started as ``python -S -c BOOTSTRAP`` and receives its
sources and configuration on stdin: the same bytes run in a host process (``sandbox.py``) or inside a container
(``docker_sandbox.py``); only the ``Transport`` differs. ``HARNESS_VERSION`` hashes those sources (it keys the
result cache).

One dispatcher thread serves all workers: it hands a queued job to each idle worker, relays the records it sends
into the job's ``Collector``, and completes the job's future when the worker reports it done. A worker that dies
or stops answering is replaced; its job ends as a ``runtime_error`` that says so.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import marshal
import os
import select
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from stepcoder.execution.collect import Collector
from stepcoder.execution.results import ExecResult

logger = logging.getLogger("stepcoder.execution")

WORKER_MODULES = ("seccomp", "isolation", "harness", "worker")  # dependency order
_HERE = Path(__file__).resolve().parent
WORKER_SOURCES = tuple((name, (_HERE / f"{name}.py").read_text()) for name in WORKER_MODULES)
HARNESS_VERSION = hashlib.sha256(repr(WORKER_SOURCES).encode()).hexdigest()[:12]

# The worker's environment on both backends, besides the basics. LD_BIND_NOW: the dynamic linker resolves every
# symbol when the worker starts, not lazily at first call: a child calling a libc function the zygote never called
# (setsid, setresuid, setrlimit) would otherwise write the resolved address into the shared GOT and copy that page
# (measured: 10-14 page faults of ~300 per program; bench/exec.py).
WORKER_ENV = {"LD_BIND_NOW": "1"}

# Run by `python -B -s -S -c`: read the worker's sources and config from stdin (a 10-digit length, then marshal),
# load them as modules and start the worker loop. Reads go straight to fd 0, unbuffered: the rest of stdin is the
# job stream.
BOOTSTRAP = r"""
import os, sys, marshal
def _read(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            os._exit(3)
        b += c
    return b
_m = marshal.loads(_read(int(_read(10))))
sys.path[:] = [p for p in sys.path if p]
for _name, _src in _m["sources"]:
    _mod = type(sys)(_name)
    _mod.__file__ = "<stepcoder-" + _name + ">"
    sys.modules[_name] = _mod
    exec(compile(_src, _mod.__file__, "exec"), _mod.__dict__)
sys.modules["worker"].main(_m["config"])
"""

MAX_FRAME = 1 << 28  # a worker caps one program's records far below this (total_cap)
START_TIMEOUT_S = 60.0
WATCHDOG_SLACK_S = 15.0  # past a job's budget before a silent worker is declared hung
PIPELINE = 2  # jobs sent to a worker at once: it starts the next as soon as one ends, without a round trip
# Only a job this small waits in a busy worker's pipe: our write must never block while that worker is blocked
# writing its results to us (both pipes full). A worker with nothing to do reads any size.
PIPELINE_MAX_BYTES = 16 << 10


class WorkerStartError(RuntimeError):
    pass


class Transport(ABC):
    """A byte pipe to one worker process."""

    @abstractmethod
    def fileno(self) -> int:
        """An fd that polls readable when ``read`` has something (or EOF)."""

    @abstractmethod
    def read(self) -> bytes | None:
        """Bytes the worker wrote; b"" at EOF; None when nothing is for us yet (e.g. a partial frame of the
        container runtime's own stream format)."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def kill(self, grace_s: float = 0.0) -> None:
        """Stop the worker for good, after up to ``grace_s`` for a clean exit (idempotent)."""

    def describe(self) -> str:
        """A short account of the worker's end (exit status, last stderr lines), for error messages."""
        return ""


class FrameParser:
    """Frames from the worker: 1-byte kind + 4-byte big-endian length + payload."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        frames = []
        while len(self.buf) >= 5:
            n = int.from_bytes(self.buf[1:5], "big")
            if n > MAX_FRAME:
                raise ValueError(f"frame of {n} bytes")
            if len(self.buf) < 5 + n:
                break
            frames.append((bytes(self.buf[:1]), bytes(self.buf[5:5 + n])))
            del self.buf[:5 + n]
        return frames


def encode_message(msg: dict[str, Any]) -> bytes:
    data = marshal.dumps(msg, 4)
    return len(data).to_bytes(4, "big") + data


def handshake(transport: Transport, config: dict[str, Any], timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Send the worker its sources and config; wait for its hello (interpreter, protections)."""
    config = {**config, **getattr(transport, "config_overrides", {})}
    payload = marshal.dumps({"sources": WORKER_SOURCES, "config": config}, 4)
    transport.write(b"%010d" % len(payload) + payload)
    parser, end = FrameParser(), time.monotonic() + timeout_s
    poller = select.poll()
    poller.register(transport.fileno(), select.POLLIN)
    while time.monotonic() < end:
        if not poller.poll(max(1, (end - time.monotonic()) * 1000)):
            continue
        data = transport.read()
        if data == b"":
            transport.kill()
            raise WorkerStartError(f"sandbox worker exited during start-up{_why(transport)}")
        for kind, body in parser.feed(data or b""):
            if kind == b"H":
                hello = json.loads(body)
                hello["_parser"] = parser
                return hello
    transport.kill()
    raise WorkerStartError(f"sandbox worker did not start within {timeout_s:.0f}s{_why(transport)}")


def _why(transport: Transport) -> str:
    text = transport.describe()
    return f": {text}" if text else ""


class _Task:
    __slots__ = ("msg", "collector", "future", "deadline", "stop_sent", "t0")

    def __init__(self, msg: dict[str, Any], collector: Collector):
        self.msg, self.collector, self.future = msg, collector, Future()
        self.deadline, self.stop_sent, self.t0 = 0.0, False, 0.0


class _Slot:
    """A live worker and the jobs sent to it: the first is running, the rest wait in its pipe (see PIPELINE)."""

    __slots__ = ("transport", "parser", "hello", "tasks")

    def __init__(self, transport: Transport, hello: dict[str, Any]):
        self.transport, self.parser, self.hello = transport, hello.pop("_parser"), hello
        self.tasks: collections.deque[_Task] = collections.deque()

    @property
    def task(self) -> _Task | None:
        """The job running now."""
        return self.tasks[0] if self.tasks else None


def _start(task: _Task) -> None:
    """``task`` becomes its worker's running job: its clocks start."""
    task.t0 = time.monotonic()
    task.deadline = task.t0 + float(task.msg["budget_s"]) + WATCHDOG_SLACK_S


class WorkerPool:
    """``size`` workers made by ``spawn()`` (a started Transport) and configured with ``config``.

    ``submit(msg, collector)`` queues one job (``msg`` is the worker's run message, without ``id``) and returns a
    Future of its ExecResult. Thread-safe. ``runner`` is merged into every result's ``runner`` dict.
    """

    def __init__(self, spawn: Callable[[], Transport], size: int, config: dict[str, Any], runner: dict[str, Any],
                 name: str = "sandbox"):
        self._spawn, self._config, self.size, self.name = spawn, config, size, name
        self.runner = runner
        self._queue: collections.deque[_Task] = collections.deque()
        self._outbox: collections.deque[tuple[_Task, bytes]] = collections.deque()
        self._incoming: collections.deque[_Slot] = collections.deque()
        self._slots: dict[int, _Slot] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._next_id = 0
        self._spawning = 0
        self._failures = 0
        self._deaths = 0  # workers lost since the last job completed: a crash loop stops respawning
        self.restarts = 0
        # Worker-side accounting, summed over jobs: wall ms per phase of a job (fork, start, run, reap, wipe) and
        # the child's CPU ms; page faults of the child and of the worker (see bench/exec.py)
        self.phase_ms: dict[str, float] = collections.defaultdict(float)
        self.faults: dict[str, int] = collections.defaultdict(int)
        self.jobs_done = 0
        slots = self._start_many(size)
        self.hello = slots[0].hello
        self._incoming.extend(slots)
        self._thread = threading.Thread(target=self._loop, name=f"stepcoder-{name}-dispatch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------- public

    def submit(self, msg: dict[str, Any], collector: Collector) -> Future:
        task = _Task(msg, collector)
        with self._lock:
            if self._closed:
                raise RuntimeError("executor is closed")
            self._next_id += 1
            task.msg = {**msg, "op": "run", "id": self._next_id}
            self._queue.append(task)
        bind = getattr(collector, "bind", None)
        if bind is not None:  # a test driver (driver.py): its requests go to this job's child
            bind(lambda req: self._post(task, req))
        self._wake()
        return task.future

    def _post(self, task: _Task, req: bytes) -> None:
        """From a driver thread: the dispatcher writes ``req`` to the worker running ``task`` (one writer per
        worker pipe)."""
        with self._lock:
            self._outbox.append((task, req))
        self._wake()

    def _flush_outbox(self) -> None:
        with self._lock:
            out, self._outbox = self._outbox, collections.deque()
        for task, req in out:
            for slot in self._slots.values():
                if slot.task is task:
                    try:
                        slot.transport.write(encode_message({"op": "call", "id": task.msg["id"], "req": req}))
                    except OSError:
                        pass  # a dead worker: its EOF ends the job
                    break

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        self._thread.join(timeout=30)
        end = time.monotonic() + 60
        while self._spawning and time.monotonic() < end:  # a respawn in flight still wakes us once
            time.sleep(0.02)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ------------------------------------------------------------------------------------------- start-up

    def _start_one(self) -> _Slot:
        transport = self._spawn()
        try:
            return _Slot(transport, handshake(transport, self._config))
        except BaseException:
            transport.kill()
            raise

    def _start_many(self, n: int) -> list[_Slot]:
        slots: list[_Slot] = []
        errors: list[BaseException] = []

        def one():
            try:
                slot = self._start_one()
                with self._lock:
                    slots.append(slot)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for slot in slots:
                slot.transport.kill()
            raise errors[0]
        return slots

    def _respawn(self) -> None:
        """Replace a dead worker, in the background (a container takes a while to start)."""
        with self._lock:
            self._spawning += 1
            self.restarts += 1

        def run():
            try:
                slot = self._start_one()
                with self._lock:
                    closed = self._closed
                    if not closed:
                        self._incoming.append(slot)
                        self._failures = 0
                if closed:
                    slot.transport.kill()
            except Exception as e:  # noqa: BLE001
                logger.error("could not restart a %s worker: %s", self.name, e)
                with self._lock:
                    self._failures += 1
            finally:
                self._wake()
                with self._lock:
                    self._spawning -= 1

        threading.Thread(target=run, name=f"stepcoder-{self.name}-respawn", daemon=True).start()

    # ------------------------------------------------------------------------------------------- the loop

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        try:
            while True:
                with self._lock:
                    closed = self._closed
                    while self._incoming:
                        slot = self._incoming.popleft()
                        self._slots[slot.transport.fileno()] = slot
                        poller.register(slot.transport.fileno(), select.POLLIN)
                if closed:
                    break
                self._assign()
                self._flush_outbox()
                self._fail_if_hopeless()
                for fd, _ in poller.poll(self._poll_timeout_ms()):
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                    elif fd in self._slots:
                        self._on_readable(fd, poller)
                self._watchdog(poller)
        finally:
            self._shutdown(poller)

    def _poll_timeout_ms(self) -> int:
        deadlines = [s.task.deadline for s in self._slots.values() if s.task is not None]
        if not deadlines:
            return 1000
        return max(1, int((min(deadlines) - time.monotonic()) * 1000) + 1)

    def _assign(self) -> None:
        for busy in (False, True):  # idle workers first, then a second job for busy ones
            for slot in self._slots.values():
                while len(slot.tasks) < (PIPELINE if busy else 1):
                    with self._lock:
                        if not self._queue:
                            return
                        task = self._queue.popleft()
                    if task.future.cancelled():
                        continue
                    data = encode_message(task.msg)
                    if slot.tasks and len(data) > PIPELINE_MAX_BYTES:
                        with self._lock:
                            self._queue.appendleft(task)  # it waits for an idle worker
                        break
                    slot.tasks.append(task)
                    if len(slot.tasks) == 1:
                        _start(task)
                    else:
                        task.deadline = float("inf")  # its clocks start when the one before it ends
                    try:
                        slot.transport.write(data)
                    except OSError:
                        break  # a dead worker: its EOF is handled by the loop

    def _on_readable(self, fd: int, poller: select.poll) -> None:
        slot = self._slots[fd]
        try:
            data = slot.transport.read()
        except OSError:
            data = b""
        if data is None:
            return
        if data == b"":
            self._lose(fd, poller, "sandbox worker died")
            return
        try:
            frames = slot.parser.feed(data)
        except ValueError as e:
            self._lose(fd, poller, f"sandbox worker protocol error: {e}")
            return
        for kind, body in frames:
            task = slot.task
            if task is None:
                continue
            if kind == b"R":
                task.collector.feed(body)
                if task.collector.stop_on_failure and task.collector.failed and not task.stop_sent:
                    task.stop_sent = True
                    try:
                        slot.transport.write(encode_message({"op": "kill", "id": task.msg["id"]}))
                    except OSError:
                        pass
            elif kind == b"D":
                done = json.loads(body)
                if done.get("id") != task.msg["id"]:
                    continue
                slot.tasks.popleft()
                if slot.tasks:
                    _start(slot.tasks[0])
                self.jobs_done += 1
                self._deaths = 0
                for k, v in done.get("phases", {}).items():
                    self.phase_ms[k] += v
                for k, v in done.get("faults", {}).items():
                    self.faults[k] += v
                why = "stopped" if task.stop_sent and done["why"] in ("stopped", "exit") else done["why"]
                self._finish(task, task.collector.result(float(done["ms"]), done["exit"], why, bool(done["oom"]),
                                                         self._runner(slot)))

    def _runner(self, slot: _Slot) -> dict[str, Any]:
        h = slot.hello
        return {**self.runner, "python": h["python"], "interpreter": h["executable"], "missing": h["missing"],
                "harness": HARNESS_VERSION}

    def _finish(self, task: _Task, result: ExecResult) -> None:
        missing = sorted(set(result.runner.get("missing", [])) | set(result.runner.pop("child_missing", [])))
        result.runner["missing"] = missing
        if not task.future.cancelled():
            task.future.set_result(result)

    def _lose(self, fd: int, poller: select.poll, reason: str) -> None:
        """A worker died or misbehaved: end its job, drop it, start another."""
        slot = self._slots.pop(fd)
        try:
            poller.unregister(fd)
        except (KeyError, ValueError):
            pass
        slot.transport.kill()
        detail = _why(slot.transport)
        if slot.tasks:
            task = slot.tasks.popleft()
            task.collector.error = task.collector.error or reason + detail
            ms = (time.monotonic() - task.t0) * 1000
            self._finish(task, task.collector.result(ms, None, "worker_died", False, self._runner(slot)))
            with self._lock:  # the ones waiting behind it never started: back to the front of the queue
                self._queue.extendleft(reversed(slot.tasks))
            slot.tasks.clear()
        self._deaths += 1
        if self._deaths > 2 * self.size + 2:  # every worker dies and none completes a job: do not loop
            logger.error("%s workers keep dying (%s%s); giving up on them", self.name, reason, detail)
            with self._lock:
                self._failures += 1
            return
        logger.warning("%s worker lost (%s%s); starting another", self.name, reason, detail)
        self._respawn()

    def _watchdog(self, poller: select.poll) -> None:
        now = time.monotonic()
        for fd, slot in list(self._slots.items()):
            if slot.task is not None and now > slot.task.deadline:
                self._lose(fd, poller, "sandbox worker stopped answering")

    def _fail_if_hopeless(self) -> None:
        """No worker left and none starting: fail what is queued instead of waiting forever."""
        with self._lock:
            hopeless = not self._slots and not self._incoming and self._spawning == 0 and self._failures > 0
            if not hopeless:
                return
            tasks, self._queue = list(self._queue), collections.deque()
        for task in tasks:
            task.future.set_exception(WorkerStartError(f"no {self.name} worker could be started or kept alive"))

    def _shutdown(self, poller: select.poll) -> None:
        for slot in self._slots.values():
            try:
                slot.transport.write(encode_message({"op": "exit"}))
            except OSError:
                pass
        for slot in self._slots.values():
            slot.transport.kill(grace_s=2.0)
            for task in slot.tasks:
                if not task.future.done():
                    task.future.set_exception(RuntimeError("executor closed"))
        with self._lock:
            tasks, self._queue = list(self._queue), collections.deque()
            incoming, self._incoming = list(self._incoming), collections.deque()
        for slot in incoming:
            slot.transport.kill()
        for task in tasks:
            task.future.set_exception(RuntimeError("executor closed"))
        self._slots.clear()
