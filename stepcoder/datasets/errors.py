"""Errors raised by dataset loaders, and the record of a problem that was left out (a reject)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Why a record or problem was left out. Loaders produce the first five; validation adds the rest.
REJECT_REASONS = (
    "not_utf8",  # bytes that do not decode as UTF-8
    "unparsable",  # invalid JSON (a record, or a JSON-string field such as APPS input_output)
    "malformed",  # missing fields, wrong types
    "no_tests",  # no unit tests at all
    "no_solution",  # no canonical solution (fine for evaluation, not for training or CCCS)
    "syntax_error",  # the canonical solution does not compile
    "failing",  # the canonical solution fails its own tests in the sandbox
    "duplicate",  # same id, or same statement and tests, as an earlier problem
)


class DatasetError(ValueError):
    """A dataset record or file is malformed. The message names the file and line, or the folder."""


@dataclass(frozen=True)
class Reject:
    """A record or problem left out, and why. ``where`` is ``file:line``, ``file[index]`` or a folder."""

    problem_id: str | None  # None when the record is too broken to name
    reason: str  # one of REJECT_REASONS
    detail: str  # human-readable, starts with ``where``
    where: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def error(self) -> DatasetError:
        return DatasetError(self.detail)


def reject(where: str, reason: str, message: str, problem_id: str | None = None) -> Reject:
    """A loader-side reject whose detail reads ``where: message``."""
    assert reason in REJECT_REASONS, reason
    return Reject(problem_id, reason, f"{where}: {message}", where)
