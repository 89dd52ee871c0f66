"""The sandbox worker: a long-lived process that forks one confined child per program.

Process layout (host mode, started as root by ``sandbox.py``; in a container the worker is already PID 1)::

    parent (pipeline, pool.py) ──pipes── waiter ── zygote = PID 1 of a fresh PID namespace  (this loop)
                                                     └─ child per program: confined, runs harness.run_program
                                                          └─ whatever the program forks (dies with it)

Messages from the parent are ``4-byte length + marshal`` dicts: ``{"op": "run", "id", "program", "tests", ...}``,
``{"op": "kill", "id"}`` (stop that program: the parent saw it fail), ``{"op": "exit"}``. Frames to the parent are
``1-byte kind + 4-byte length + payload``: ``H`` hello (JSON: interpreter, protections), ``R`` raw record bytes of
the running program (JSON lines from the child, relayed as they come, never parsed here), ``D`` done (JSON:
``id``, ``why``, ``exit``, ``oom``, ``ms``).

The worker never sees expected outputs (jobs carry none), and it never runs program code itself: each child is a
fork, so it starts with a copy of this process's memory, which holds only the current job.

The worker enforces two wall-clock limits from outside the child, on top of the in-process alarm of the harness:
the per-program budget (``budget_s`` + grace) and a stall limit (no record for ``timeout_s`` + grace: a test stuck
in C code that never checks for signals). After each program it kills everything left in its namespace and wipes
its private /tmp.

This module runs inside the sandbox worker: it imports only the stdlib (and its sibling worker modules, which the
bootstrap in ``pool.py`` loads from source).
"""

import marshal
import os
import resource
import select
import signal
import sys
import time

import harness
import isolation

GRACE_S = 1.0  # past the harness's own alarms, for reporting and interpreter slowness


class _Channel:
    """Framed messages with the parent over fds 0 (in) and 1 (out)."""

    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd, self.buf = rfd, wfd, bytearray()
        self.pending = []  # run messages that arrived while a program ran (the parent pipelines jobs)

    def send(self, kind: bytes, payload: bytes) -> None:
        self.send_raw(kind + len(payload).to_bytes(4, "big") + payload)

    def send_raw(self, frames: bytes) -> None:
        data = memoryview(frames)
        while data:
            data = data[os.write(self.wfd, data):]

    def pop(self):
        """The next complete message in the buffer, or None."""
        if len(self.buf) < 4:
            return None
        n = int.from_bytes(self.buf[:4], "big")
        if len(self.buf) < 4 + n:
            return None
        msg = marshal.loads(bytes(self.buf[4:4 + n]))
        del self.buf[:4 + n]
        return msg

    def fill(self) -> bool:
        chunk = os.read(self.rfd, 1 << 16)
        self.buf += chunk
        return bool(chunk)

    def recv(self):
        """Block for the next message; None once the parent is gone."""
        if self.pending:
            return self.pending.pop(0)
        while (msg := self.pop()) is None:
            if not self.fill():
                return None
        return msg


def _json(obj) -> bytes:
    return harness.to_json(obj).encode()


def _oom_state(st) -> bytes:
    """memory.oom_control (v1) or memory.events (v2) of the worker's cgroup, raw: it changes when the OOM killer
    acts there."""
    return os.pread(st.oom_fd, 4096, 0) if st.oom_fd >= 0 else b""


def _oom_kills(state: bytes) -> int:
    for line in state.decode().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Python < 3.9 or kernel < 5.3: poll waitid instead
        return -1


def _exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _relay(chan: _Channel, cfg: dict, job: dict, pid: int, rfd: int, t0: float, marks: dict) -> str:
    """Forward the child's records until it exits or a limit hits. Returns why it stopped. ``marks`` gets the
    time of the first record (the child's start-up cost)."""
    hard = t0 + job["budget_s"] + GRACE_S
    stall_s = job["timeout_s"] + GRACE_S
    last = t0
    line_cap, total_cap = cfg["line_cap"], cfg["total_cap"]
    line, total = 0, 0
    stream = job.get("stream", False)  # relay each chunk at once (the parent may stop us); else one frame at the end
    held = bytearray()
    pidfd = _pidfd(pid)
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    poller.register(chan.rfd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    try:
        while True:
            now = time.monotonic()
            deadline = min(hard, last + stall_s)
            if now >= deadline:
                return "deadline" if hard <= last + stall_s else "stalled"
            wait_ms = (deadline - now) * 1000 + 1
            events = poller.poll(wait_ms if pidfd >= 0 else min(wait_ms, 20))
            for fd, _ in events:
                if fd == rfd:
                    chunk = os.read(rfd, 1 << 16)
                    if not chunk:  # every writer closed it; the child may still run: wait for its exit
                        poller.unregister(rfd)
                        continue
                    total += len(chunk)
                    nl = chunk.rfind(b"\n")
                    line = line + len(chunk) if nl < 0 else len(chunk) - nl - 1
                    if total > total_cap or line > line_cap:
                        held.clear()  # flooded: none of it is worth parsing
                        return "output_cap"
                    if nl >= 0:
                        last = time.monotonic()
                        marks.setdefault("first", last)
                    if stream:
                        chan.send(b"R", chunk)
                    else:
                        held += chunk
                elif fd == chan.rfd:
                    if not chan.fill():
                        return "parent_gone"
                    while (msg := chan.pop()) is not None:
                        op = msg.get("op")
                        if op == "exit":
                            return "parent_gone"
                        if op == "kill" and msg.get("id") == job["id"]:
                            return "stopped"
                        if op == "call" and msg.get("id") == job["id"]:
                            # a request of the test driver, for the child (a split test): on the socket
                            _send_all(rfd, msg["req"])
                            last = time.monotonic()  # the child waited for it: that was not a stall
                        if op == "run":
                            chan.pending.append(msg)
                elif fd == pidfd:
                    _drain(held, rfd)
                    return "exit"
            if pidfd < 0 and _exited(pid):
                _drain(held, rfd)
                return "exit"
    finally:
        if pidfd >= 0:
            os.close(pidfd)
        marks["held"] = held


def _send_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:  # the child is gone: its exit ends the job
        pass


def _drain(held: bytearray, rfd: int) -> None:
    """What the child wrote before exiting (its forks may keep the pipe open: never wait for EOF)."""
    os.set_blocking(rfd, False)
    while True:
        try:
            chunk = os.read(rfd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            return
        held += chunk


def _cleanup(st, pid: int, marks: dict) -> int:
    """Kill everything the program left and reap it. Returns the child's wait status; ``marks["cpu"]`` gets the
    child's own CPU seconds."""
    status = 0
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if st.pid1 and os.getpid() == 1:  # init of a namespace holding only the program: take all of it
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                reaped, s, usage = os.wait3(0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if reaped == pid:
                status = s
                marks["cpu"], marks["faults"] = usage.ru_utime + usage.ru_stime, usage.ru_minflt
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, status, usage = os.wait4(pid, 0)
        marks["cpu"], marks["faults"] = usage.ru_utime + usage.ru_stime, usage.ru_minflt
    return status


def _run(chan: _Channel, cfg: dict, st, job: dict) -> None:
    if job["tests"]["kind"] == "serve":  # the child also reads the driver's requests on its fd 3
        import socket

        a, b = socket.socketpair()
        rfd, wfd = a.detach(), b.detach()
    else:
        rfd, wfd = os.pipe()
    if st.private_tmp:
        workdir = "/tmp"
    else:  # no private /tmp (fallback): a scratch directory per program, removed after
        import tempfile

        workdir = tempfile.mkdtemp(prefix="run-", dir=cfg["scratch_dir"])
        if st.root and cfg.get("uid") is not None:
            os.chown(workdir, cfg["uid"], cfg["uid"])
    oom_before = _oom_state(st)
    marks = {}
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.monotonic()
    if st.oom_adj_fd >= 0:
        os.pwrite(st.oom_adj_fd, b"1000", 0)  # inherited by the child...
    pid = os.fork()
    if pid == 0:
        if job.get("bare"):  # bench/exec.py's floor: a child that exits at once (no confinement, no harness)
            os._exit(0)
        try:
            os.close(rfd)
            missing = isolation.confine_child(cfg, st, wfd, workdir)
            harness.run_program(job, 3, missing)
        finally:
            os._exit(70)
    if st.oom_adj_fd >= 0:
        os.pwrite(st.oom_adj_fd, b"-1000", 0)  # ...while the zygote goes back to never being chosen
    t_fork = time.monotonic()
    os.close(wfd)
    try:
        why = _relay(chan, cfg, job, pid, rfd, t0, marks)
    finally:
        os.close(rfd)
        t_exit = time.monotonic()
        status = _cleanup(st, pid, marks)
    t_reaped = time.monotonic()
    ms = (t_reaped - t0) * 1000
    oom_after = _oom_state(st)
    oom = oom_after != oom_before and _oom_kills(oom_after) > _oom_kills(oom_before)
    isolation.reset_writable(st, workdir)  # /tmp, /dev/shm (or the scratch dir), SysV IPC
    first = marks.get("first", t_exit)  # the child's first record: start-up (confinement, compile, load) is over
    phases = {"fork": t_fork - t0, "start": first - t_fork, "run": t_exit - first, "reap": t_reaped - t_exit,
              "wipe": time.monotonic() - t_reaped, "child_cpu": marks.get("cpu", 0.0)}
    # page faults: the main cost of a fork per program (every page either side writes after fork is copied)
    faults = {"child": marks.get("faults", 0), "worker": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0}
    done = {"id": job["id"], "why": why, "exit": os.waitstatus_to_exitcode(status), "oom": oom, "ms": ms,
            "phases": {k: round(v * 1000, 3) for k, v in phases.items()}, "faults": faults}
    if why == "parent_gone":
        os._exit(0)
    held = marks["held"]
    body = _json(done)
    frames = (b"R" + len(held).to_bytes(4, "big") + held if held else b"") + b"D" + len(body).to_bytes(4, "big")
    chan.send_raw(frames + body)  # one write, one wake-up of the parent


def _preload(names) -> None:
    """Import ``names`` once here, so they are free in every fork. ``random`` would register an at-fork hook
    that reseeds it in each child from the OS (dozens of page copies per program); with ``os.fork`` hidden while
    it loads, it registers none, and is seeded with 0 instead: every program starts from the same random state,
    so its outcome does not depend on the run (a program can still reseed)."""
    fork = os.fork
    del os.fork
    try:
        for name in names:
            try:
                __import__(name)
            except Exception:  # noqa: BLE001 - a module this interpreter lacks: programs import it themselves
                pass
    finally:
        os.fork = fork
    if "random" in sys.modules:
        sys.modules["random"].seed(0)


def main(cfg: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1 with default dispositions, programs cannot signal us
    st = isolation.setup_worker(cfg)  # host mode: we are the zygote from here on
    _preload(cfg.get("preload", ()))
    harness.prepare()
    isolation.lock_worker(cfg, st)
    import gc

    gc.freeze()  # a collection in a child must not touch (and so copy) every page it shares with us
    chan = _Channel(0, 1)
    hello = {"python": sys.version.split()[0], "executable": sys.executable, "pid": os.getpid(),
             "coverage": "sys.monitoring" if hasattr(sys, "monitoring") else "settrace",
             "applied": sorted(set(st.applied)), "missing": sorted(set(st.missing)), "machine": os.uname().machine}
    chan.send(b"H", _json(hello))
    while True:
        msg = chan.recv()
        if msg is None or msg.get("op") == "exit":
            break
        if msg.get("op") == "run":
            _run(chan, cfg, st, msg)
    os._exit(0)
