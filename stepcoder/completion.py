"""Completion → program: the executed program is the stage prefix followed by the cleaned completion.

Cleaning only ever *keeps a contiguous slice* ``completion[start:end]``, so every kept character still maps
to one completion token (FGO needs that). Rules, in order:

1. A leading markdown fence line (```` ``` ```` or ```` ```python ````) is dropped.
2. The completion is cut at the next fence line (the end of a markdown code block).
3. If the program does not parse, it is cut before the first top-level line of *prose* (see :func:`is_prose`),
   provided the program up to that line parses.
4. Anything else is left as is: a syntax error in the code itself is the model's, and the program scores as a
   compile_error. Cleaning never cuts code, so it can never turn broken code into a runnable program.

What cleaning drops is not lost to training: FGO keeps those tokens (see :mod:`stepcoder.fgo`).
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$")
# Words that start code lines, never sentences: keywords, soft keywords, and Python 2's print/exec statements
# (a broken `print x` is the model's compile error, not prose to cut away).
_CODE_WORDS = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | {"print", "exec"}
# "This function returns", "Here's the code", "Note: it is slow", "Explanation:", "Output:" — two words side by
# side, or a lone word before a colon. Neither is ever valid Python.
_WORD_THEN_WORD = re.compile(r"^([A-Za-z]+)(?:'[A-Za-z]+)?[ \t]+[A-Za-z]")
_WORD_COLON = re.compile(r"^([A-Za-z]+):(?:[ \t]*$|[ \t]+[A-Za-z]+[ \t]+[A-Za-z])")


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


def is_prose(line: str) -> bool:
    """A top-level line of natural language: it starts in column 0 with a word that no code line starts with,
    reads as a sentence (two words side by side, or a lone word before a colon), and does not parse as Python.

    ``def f(x)`` (a missing colon), ``result = x +`` and ``print x`` are code with an error, not prose.
    """
    text = line.rstrip("\r\n")
    match = _WORD_THEN_WORD.match(text) or _WORD_COLON.match(text)
    return bool(match) and match.group(1) not in _CODE_WORDS and not _parses(text)


def fenced_slice(completion: str) -> tuple[int, int]:
    """Rules 1 and 2: the (start, end) of the completion once a leading fence line is dropped and the text is
    cut at the next fence line."""
    start, end = 0, len(completion)
    lines = completion.splitlines(keepends=True)
    offsets = _line_offsets(completion)
    if lines and _FENCE.match(lines[0]):
        start = offsets[1] if len(lines) > 1 else end
    for line, offset in zip(lines, offsets):
        if offset >= start and offset > 0 and _FENCE.match(line):
            end = offset
            break
    return start, end


def to_program(prefix: str, completion: str) -> Program:
    start, end = fenced_slice(completion)
    if not _parses(prefix + completion[start:end]):
        end = _cut_trailing_prose(prefix, completion, start, end)
    return Program(prefix + completion[start:end], len(prefix), start, end)


def _cut_trailing_prose(prefix: str, completion: str, start: int, end: int) -> int:
    offset = start
    for line in completion[start:end].splitlines(keepends=True):
        if offset > start and is_prose(line) and _parses(prefix + completion[start:offset]):
            return offset
        offset += len(line)
    return end
