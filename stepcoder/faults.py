"""Fault injection for the crash tests: ``STEPCODER_CRASH_AT=<point>[@<iteration>]`` makes a run kill its whole
process group with SIGKILL at that point, as ``kill -9`` of the run would. Unset (always, outside the tests), each
hook is one environment lookup.

Points, in the order an iteration reaches them (tests/test_faults.py checks a re-run after each):

    generate        completions generated, nothing executed yet
    execute         programs executed, nothing staged
    staged          rollouts and test results staged (written, not committed)
    checkpoint      in the middle of writing the new checkpoint (policy written, optimizer state not)
    before_commit   every data file of the iteration staged, the commit marker not yet written
    after_commit    the commit marker written, old checkpoints not yet pruned
"""

from __future__ import annotations

import os
import signal

ENV = "STEPCODER_CRASH_AT"
POINTS = ("generate", "execute", "staged", "checkpoint", "before_commit", "after_commit")


def crash_point(point: str, iteration: int | None = None) -> None:
    """Die here (the whole process group, SIGKILL) if ``STEPCODER_CRASH_AT`` names this point (and iteration)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {name!r}; valid: {', '.join(POINTS)}")
    if name != point or (at and iteration is not None and int(at) != iteration):
        return
    os.killpg(os.getpgid(0), signal.SIGKILL)


FAIL_ENV = "STEPCODER_FAIL_AT"


class InjectedFault(RuntimeError):
    """Raised where ``STEPCODER_FAIL_AT`` asks for it (tests of how a failure is reported)."""


def fail_point(point: str, rank: int) -> None:
    """Raise :class:`InjectedFault` if ``STEPCODER_FAIL_AT=<point>@<rank>`` names this point and rank: one rank of
    a multi-process update fails while the others run on (tests/test_multi_rank.py)."""
    spec = os.environ.get(FAIL_ENV)
    if spec and spec == f"{point}@{rank}":
        raise InjectedFault(f"injected failure at {point} on rank {rank}")
