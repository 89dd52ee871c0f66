"""A per-run writer lock in the store itself, so two flow runs of one run name never train or commit at once.

The lock is one object, ``<root>/_locks/run=<run>.json``, created with create-only semantics (see
``storage.objects.create_only``), so it works the same on a local dir and on S3 without a lock server.
It names its holder and expires ``ttl_s`` after its last refresh; a background heartbeat refreshes it every
``ttl_s / 3``, so a live holder keeps it and a crashed one loses it within ``ttl_s``.

Taking over an expired lock is itself guarded by a create-only claim object named after the expired
lock's token: only one contender wins the claim, and it deletes the lock only if that token is still the
one there, so a fresh lock is never deleted by a late contender.

A holder that is provably gone does not make the next run wait for the expiry (a crashed run followed by a
scheduled run or a Prefect retry): the lock is taken over at once, and the takeover logged, when its holder ran on
this machine (same host name, boot id and PID namespace) and its process is dead (or its pid now belongs to a
process started later), or when an optional ``holder_gone(holder)`` check says so (the flow asks Prefect whether
the holder's flow run is in a terminal state). A live holder is still refused.

Limits: expiry compares wall clocks of different hosts (keep ``ttl_s`` well above clock skew), and a
refresh is read-then-write, so a holder stalled for longer than ``ttl_s`` (e.g. a frozen VM) can lose
the lock without noticing until its next refresh; ``ensure_held()`` checks before a side effect.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import fsspec

from storage.objects import create_only, read_bytes, remove, write_atomic

logger = logging.getLogger("stepcoder.storage")


class StoreLocked(RuntimeError):
    """Another writer holds the run's lock; the message names it."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


class LockLost(RuntimeError):
    """The lock this process held expired and was taken over, or was removed by hand."""


class RunLock:
    """The writer lock of one run. Use as a context manager: ``with store.lock(run, owner) as lock:``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, uri: str, run: str, owner: str | None = None,
                 ttl_s: float = 300.0, wait_s: float = 0.0, heartbeat: bool = True, poll_s: float = 0.5,
                 holder_gone: Callable[[dict[str, Any]], str | None] | None = None):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.fs, self.path, self.uri, self.run = fs, path, uri, run
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.ttl_s, self.wait_s, self.poll_s = float(ttl_s), float(wait_s), float(poll_s)
        self.heartbeat, self.holder_gone = heartbeat, holder_gone
        self.token: str | None = None  # set while held
        self.took_over: str | None = None  # what acquire() said when it took the lock from a gone holder
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RunLock(run={self.run!r}, owner={self.owner!r}, held={self.token is not None})"

    # ---- acquire / release ------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Take the lock, waiting up to ``wait_s`` for a live holder; raise StoreLocked naming the holder."""
        if self.token is not None:
            raise RuntimeError(f"{self!r} is already held")
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        while True:
            if create_only(self.fs, self.path, self._body(token)):
                self.token, self._lost = token, None
                self._start_heartbeat()
                return self
            holder = self.holder()
            if holder is None:
                continue  # released in between: try again at once
            gone = None if _expired(holder) else self._gone(holder)
            if (_expired(holder) or gone) and self._take_over(holder):
                if gone:
                    self.took_over = f"took over the lock of run {self.run!r} from {_describe(holder)}: {gone}"
                    logger.warning("%s", self.took_over)
                continue
            if time.monotonic() >= deadline:
                raise StoreLocked(self._locked_message(holder), holder)
            time.sleep(min(self.poll_s, max(deadline - time.monotonic(), 0.01)))

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        self._stop_heartbeat()
        token, self.token = self.token, None
        if token is not None:
            holder = self.holder()
            if holder is not None and holder.get("token") == token:
                remove(self.fs, self.path)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- while held --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Push the expiry ``ttl_s`` into the future; raise LockLost if the lock is no longer ours."""
        self.ensure_held()
        write_atomic(self.fs, self.path, self._body(self.token))

    def ensure_held(self) -> None:
        """Raise LockLost unless the lock object still carries our token (call it before a side effect)."""
        if self.token is None:
            raise LockLost(f"{self!r} is not held")
        holder = self.holder()
        if holder is None or holder.get("token") != self.token:
            self._lost = "taken over by " + (_describe(holder) if holder else "nobody (the lock was removed)")
        if self._lost:
            raise LockLost(f"lock of run {self.run!r} lost: {self._lost} ({self.uri})")

    def holder(self) -> dict[str, Any] | None:
        """The lock object's content, or None if the run is not locked."""
        raw = read_bytes(self.fs, self.path)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:  # written by hand, or by something else: treat as held, expiring never
            return {"owner": "unknown (unreadable lock object)", "expires_at": float("inf")}

    # ---- internals ---------------------------------------------------------------------------------
    def _body(self, token: str) -> bytes:
        now = time.time()
        return json.dumps({
            "run": self.run, "owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
            **_machine(), "pid_start": _start_ticks(os.getpid()),
            "token": token, "ttl_s": self.ttl_s, "refreshed_at": now, "expires_at": now + self.ttl_s,
            "expires": _iso(now + self.ttl_s),
        }, indent=1).encode()

    def _gone(self, holder: dict[str, Any]) -> str | None:
        """Why the holder provably cannot hold the lock any more, or None (alive, or we cannot tell)."""
        reason = holder_process_gone(holder)
        if reason is None and self.holder_gone is not None:
            try:
                reason = self.holder_gone(holder)
            except Exception as e:  # noqa: BLE001 - cannot tell: treat the holder as alive
                logger.debug("holder check failed: %s", e)
        return reason

    def _take_over(self, stale: dict[str, Any]) -> bool:
        """Delete an expired lock if we win the claim for it. True: try to create ours again now."""
        stale_token = stale.get("token")
        if not stale_token:
            return False  # unreadable lock objects are never taken over automatically
        claim = f"{self.path}.takeover-{stale_token}"
        if not create_only(self.fs, claim, json.dumps({"by": self.owner, "at": time.time()}).encode()):
            # Another contender is taking over. A claim left by a contender that died mid-way would block
            # takeover forever, so a claim older than a minute is dropped.
            raw = read_bytes(self.fs, claim)
            try:
                old = raw is not None and time.time() - json.loads(raw)["at"] > 60
            except (ValueError, KeyError, TypeError):
                old = True
            if old:
                remove(self.fs, claim)
            return raw is None or old
        try:
            current = self.holder()
            if current is not None and current.get("token") == stale_token:
                remove(self.fs, self.path)  # still the expired lock: nobody else can have replaced it
        finally:
            remove(self.fs, claim)
        return True

    def _locked_message(self, holder: dict[str, Any]) -> str:
        waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
        return (
            f"run {self.run!r} is locked by {_describe(holder)}{waited}: another flow run of this run name is "
            f"training or committing. Wait for it (wait_s=...), or if that process is gone, let the lock "
            f"expire or delete {self.uri}"
        )

    def _start_heartbeat(self) -> None:
        if not self.heartbeat:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"store-lock-{self.run}", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
            self._thread = None

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.refresh()
            except LockLost:
                return  # remembered in self._lost; ensure_held() raises it in the owner's thread
            except Exception:  # noqa: BLE001 - a transient store error: retry at the next beat
                continue


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _machine() -> dict[str, Any]:
    """What tells this machine and PID namespace apart from others with the same host name."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return {"boot_id": _read("/proc/sys/kernel/random/boot_id"), "pid_ns": pid_ns}


def _start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot), or None if there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def holder_process_gone(holder: dict[str, Any]) -> str | None:
    """Why ``holder``'s process is provably dead, or None. Only a holder on this machine, in this PID namespace,
    can be proven gone: its pid no longer exists, or belongs to a process started after the lock was taken."""
    here = {"host": socket.gethostname(), **_machine()}
    if any(holder.get(k) is None or holder.get(k) != v for k, v in here.items()) or not here["boot_id"]:
        return None
    try:
        pid = int(holder["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    started = _start_ticks(pid)
    if started is None:
        return f"its process {pid} on this host is gone"
    if holder.get("pid_start") is not None and started != holder["pid_start"]:
        return f"its process {pid} on this host is gone (the pid now belongs to a newer process)"
    return None


def _expired(holder: dict[str, Any]) -> bool:
    try:
        return time.time() > float(holder["expires_at"])
    except (KeyError, TypeError, ValueError):
        return False


def _describe(holder: dict[str, Any]) -> str:
    where = ", ".join(f"{k} {holder[k]}" for k in ("host", "pid") if holder.get(k) is not None)
    parts = [repr(holder.get("owner", "?"))]
    if where:
        parts.append(f"({where})")
    try:
        left = float(holder["expires_at"]) - time.time()
        parts.append(f"expiring in {left:.0f} s" if left >= 0 else f"expired {-left:.0f} s ago")
    except (KeyError, TypeError, ValueError):
        pass
    return " ".join(parts)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")
