"""Bounded retries of store operations across an object-store outage.

A store operation that fails because the server cannot be reached (connection refused or reset, a timeout,
the server restarting) is retried with exponential backoff for up to ``retry_s`` seconds; past that it raises
``StoreUnavailable`` naming the endpoint and the operation. Other errors (a missing key, a permission error, a
lost lock) are not retried. Every retried operation is idempotent: a stage writes a new file and then its
pointer, a commit finishes a marker an earlier attempt already wrote (see ``Store.commit``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

logger = logging.getLogger("stepcoder.storage")
T = TypeVar("T")

# Exception type names of the clients we use (botocore/aiobotocore under s3fs, aiohttp, urllib3) that mean
# "could not talk to the server", matched by name so that this module imports none of them.
_TRANSIENT_TYPES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "NewConnectionError",
    "ProtocolError", "IncompleteReadError", "ResponseStreamingError",
})
# pyarrow's S3 client reports them as OSError with the AWS SDK's text
_TRANSIENT_TEXT = ("couldn't connect", "connection refused", "connection reset", "network_connection",
                   "curlcode: 7", "curlcode: 28", "timed out", "could not connect", "server disconnected",
                   "broken pipe", "cannot connect")


class StoreUnavailable(ConnectionError):
    """The object store could not be reached for longer than the retry budget."""


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the server could not be reached."""
    seen = 0
    while exc is not None and seen < 8:
        if type(exc).__name__ in _TRANSIENT_TYPES or isinstance(exc, (ConnectionError, TimeoutError)):
            return not isinstance(exc, StoreUnavailable)
        if isinstance(exc, OSError) and any(t in str(exc).lower() for t in _TRANSIENT_TEXT):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def retrying(fn: Callable[[], T], what: str, endpoint: str, retry_s: float, first_wait_s: float = 0.5,
             max_wait_s: float = 8.0) -> T:
    """``fn()``, retried on transient errors for up to ``retry_s`` seconds."""
    deadline = time.monotonic() + retry_s
    wait, attempt = first_wait_s, 0
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - filtered by transient()
            attempt += 1
            left = deadline - time.monotonic()
            if not transient(e):
                raise
            if left <= 0:
                raise StoreUnavailable(f"object store at {endpoint} unreachable for {retry_s:g} s "
                                       f"({attempt} attempts) during {what}: {type(e).__name__}: "
                                       f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
            logger.warning("store %s at %s failed (%s: %s); retrying in %.1f s", what, endpoint,
                           type(e).__name__, str(e).splitlines()[0][:120] if str(e) else "", min(wait, left))
            time.sleep(min(wait, left))
            wait = min(wait * 2, max_wait_s)
