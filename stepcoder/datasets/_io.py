"""Reading dataset files so that every bad record is named by file and line (or folder), and the rest still loads.

- JSONL: one record a line; a line that is not UTF-8, not JSON or not an object is a reject naming its line.
- JSON arrays (sanitized MBPP, APPS+ ``data.json``): elements are decoded one by one, so each is named by the line
  it starts on. Bytes that are not UTF-8 are kept as surrogates while parsing and reject only the record holding
  them. A syntax error in the array itself is fatal: nothing after it can be located reliably.
- ``.gz`` files are read transparently.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stepcoder.datasets.errors import DatasetError, Reject, reject
from stepcoder.problems import Problem

_MISSING = object()
_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


class RecordError(Exception):
    """Raised inside a record parser; the caller turns it into a :class:`Reject` naming the record."""

    def __init__(self, reason: str, message: str, problem_id: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.problem_id = reason, message, problem_id


def read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None


def _utf8_error(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"


def read_text(path: Path) -> str:
    """A whole small file as text (APPS folder files); RecordError names the file on bad UTF-8."""
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecordError("not_utf8", f"{path.name} line {line} is {_utf8_error(raw, exc)}") from None


def iter_jsonl(path: Path) -> Iterator[tuple[str, int, dict | Reject]]:
    """(where, line number, record or reject) for each non-blank line of a JSONL file."""
    raw = read_bytes(path)
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield where, lineno, reject(where, "not_utf8", _utf8_error(line, exc))
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield where, lineno, reject(where, "unparsable", f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            yield where, lineno, reject(where, "malformed", f"record must be a JSON object, got {_kind(record)}")
            continue
        yield where, lineno, record


def iter_json_records(path: Path, list_keys: tuple[str, ...] = ("data", "problems", "instances")
                      ) -> Iterator[tuple[str, int, dict | Reject]]:
    """(where, index, record or reject) for each record of a JSON file.

    Accepts a top-level array, an object holding the array under one of ``list_keys``, or an object mapping
    ids to records (the id is then put under ``"id"`` when the record has none).
    """
    raw = read_bytes(path)
    text = raw.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    start = len(text) - len(text.lstrip(_WS))
    if text[start:start + 1] == "[":
        items = _array_items(text, start, path)
    else:
        try:
            top = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(top, dict):
            raise DatasetError(f"{path}: expected a JSON array or object of records, got {_kind(top)}")
        key = next((k for k in list_keys if isinstance(top.get(k), list)), None)
        if key is not None:
            items = ((f"{path}[{i}]", i, item) for i, item in enumerate(top[key]))
        else:
            items = ((f"{path}[{k!r}]", i, {"id": k, **v} if isinstance(v, dict) and "id" not in v else v)
                     for i, (k, v) in enumerate(top.items()))
    for where, index, item in items:
        if not isinstance(item, dict):
            yield where, index, reject(where, "malformed", f"record must be a JSON object, got {_kind(item)}")
        elif _has_surrogates(item):
            yield where, index, reject(where, "not_utf8", "record holds bytes that are not valid UTF-8")
        else:
            yield where, index, item


def _array_items(text: str, pos: int, path: Path) -> Iterator[tuple[str, int, Any]]:
    """Decode a JSON array element by element, naming each by the line it starts on."""
    pos += 1  # past "["
    index = 0
    while True:
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        if text[pos:pos + 1] == "]" and index == 0:
            return
        line = text.count("\n", 0, pos) + 1
        try:
            item, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno}); "
                               f"records after line {line} cannot be located") from None
        yield f"{path}:{line}", index, item
        index += 1
        while pos < len(text) and text[pos] in _WS:
            pos += 1
        if text[pos:pos + 1] == ",":
            pos += 1
        elif text[pos:pos + 1] == "]":
            return
        else:
            line = text.count("\n", 0, pos) + 1
            raise DatasetError(f"{path}:{line}: invalid JSON (expected ',' or ']' after a record)")


def _has_surrogates(x: Any) -> bool:
    if isinstance(x, str):
        return any("\udc80" <= ch <= "\udcff" for ch in x)
    if isinstance(x, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in x.items())
    if isinstance(x, list):
        return any(_has_surrogates(v) for v in x)
    return False


def _kind(x: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), "a number")


# ---------------------------------------------------------------- fields


def pick(record: dict, *names: str, default: Any = _MISSING) -> Any:
    """The value of the first of ``names`` present (and not null) in ``record``; RecordError if none is."""
    for name in names:
        if record.get(name) is not None:
            return record[name]
    if default is not _MISSING:
        return default
    raise RecordError("malformed", f"record lacks field {' / '.join(names)}")


def text_field(record: dict, *names: str, default: Any = _MISSING) -> str:
    """A string field (first present alias), with CRLF/CR line endings turned into LF."""
    value = pick(record, *names, default=default)
    if not isinstance(value, str):
        raise RecordError("malformed", f"{names[0]} must be a string, got {_kind(value)}")
    return lf(value)


def json_field(record: dict, *names: str, default: Any = _MISSING) -> Any:
    """A field that may hold JSON directly or as a JSON-encoded string (APPS ``input_output``, ``solutions``)."""
    value = pick(record, *names, default=default)
    if isinstance(value, str):
        if not value.strip():
            return default if default is not _MISSING else None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError("unparsable", f"{names[0]} is not valid JSON ({exc.msg} at column {exc.colno})"
                              ) from None
    return value


def lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def guarded(where: str, parse: Callable[[], Problem], problem_id: str | None = None) -> Problem | Reject:
    """Run one record's parser; a RecordError becomes a reject that names ``where`` (and the problem, if known)."""
    try:
        return parse()
    except RecordError as exc:
        return reject(where, exc.reason, exc.message, exc.problem_id or problem_id)
