"""Completion → program: the executed program is the stage prefix followed by the cleaned completion.

Cleaning only ever *keeps a contiguous slice* ``completion[start:end]``, so every kept character still maps
to one completion token (FGO needs that). Rules, in order:

1. A leading markdown fence line (```` ``` ```` or ```` ```python ````) is dropped.
2. The completion is cut at the next fence line (the end of a markdown code block).
3. If the program does not parse, it is cut before the first top-level line that reads like prose
   (starts with a letter, does not parse on its own) *if* the program up to that line parses.
   Otherwise it is left as is and will be a compile_error: a syntax error in the code itself is the model's.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$")


@dataclass(frozen=True)
class Program:
    text: str  # prefix + completion[start:end]
    prefix_len: int  # characters of text that came from the prompt's prefix
    start: int  # kept slice of the completion
    end: int

    def completion_char_to_program(self, index: int) -> int | None:
        """Position in ``text`` of completion character ``index``; None if cleaning dropped it."""
        if self.start <= index < self.end:
            return self.prefix_len + index - self.start
        return None


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def _line_offsets(text: str) -> list[int]:
    offsets, pos = [], 0
    for line in text.splitlines(keepends=True):
        offsets.append(pos)
        pos += len(line)
    return offsets


def to_program(prefix: str, completion: str) -> Program:
    start, end = 0, len(completion)
    lines = completion.splitlines(keepends=True)
    offsets = _line_offsets(completion)
    if lines and _FENCE.match(lines[0]):
        start = offsets[1] if len(lines) > 1 else end
    for line, offset in zip(lines, offsets):
        if offset >= start and offset > 0 and _FENCE.match(line):
            end = offset
            break
    if not _parses(prefix + completion[start:end]):
        end = _cut_trailing_prose(prefix, completion, start, end)
    return Program(prefix + completion[start:end], len(prefix), start, end)


def _cut_trailing_prose(prefix: str, completion: str, start: int, end: int) -> int:
    body = completion[start:end]
    offset = start
    for line in body.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        top_level = stripped[:1].isalpha()
        if offset > start and top_level and not _parses(stripped) and _parses(prefix + completion[start:offset]):
            return offset
        offset += len(line)
    return end
