"""FGO: Fine-Grained Optimization (StepCoder, Dou et al. 2024, section 3.2).

Only completion tokens on code that actually ran in the unit tests take part in the policy loss; code that
never ran cannot have caused the reward, so it gets no credit or blame:

    fgo_mask[t] = 0  if token t lies only on program lines that did not execute in any test, or only on
                     blank/comment lines
                  1  otherwise

Rules:
- Line → statement: each program line belongs to its innermost enclosing ``ast`` statement; it counts as
  executed when that statement's first line ran. That settles continuation lines of multi-line statements
  and closing brackets. Block headers with no statement of their own (``else:``, ``finally:``,
  ``except ...:``) belong to the first statement of their block, so an ``else:`` whose branch never ran is 0.
- Blank and comment-only lines carry no learning signal → 0.
- A token spanning several lines counts if any of them ran.
- Text that cleaning dropped (a repeated opening fence, the closing fence, prose after the code) → 1: it is
  not code that failed to run, it is what the model chose to write, and the closing fence is its decision to
  stop. Dropping it would leave a completion that is only a closing fence with no gradient at all.
- The last completion token (the stop fence, EOS, or the token where the length limit cut) → 1: the sequence
  reward is paid there, and the decision to end the program is always trained.
- compile_error → all ones: the whole completion is to blame.
- No coverage (executed_lines is None: coverage off, or a run killed before it reported every test, see
  ``ExecResult.coverage_complete``) → all ones, i.e. FGO degrades to the plain completion mask rather than mask
  the code that was running when the program was killed.
"""

from __future__ import annotations

import ast
import bisect
from collections.abc import Iterable, Sequence

from stepcoder.completion import Program


def executed_program_lines(program: str, executed_lines: Iterable[int]) -> set[int]:
    """Program lines (1-based) that count as executed, after the line → statement mapping."""
    ran = set(executed_lines)
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return ran
    lines = program.splitlines()
    owner: dict[int, int] = {}  # line → first line of its innermost statement
    # ast.walk is breadth-first, so inner statements overwrite outer ones.
    nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.stmt):
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                owner[line] = node.lineno
    for node in nodes:
        for header_start, block in _headed_blocks(node):
            for line in range(header_start, block[0].lineno):
                owner[line] = block[0].lineno
    out = set()
    for line in range(1, len(lines) + 1):
        text = lines[line - 1].strip()
        if not text or text.startswith("#"):
            continue
        if owner.get(line, line) in ran:
            out.add(line)
    return out


def _headed_blocks(node: ast.AST) -> list[tuple[int, list[ast.stmt]]]:
    """(first header line, block) for blocks introduced by a header line that is not a statement."""
    out = []
    body = getattr(node, "body", None)
    if not isinstance(body, list) or not body:
        return out
    handlers = list(getattr(node, "handlers", None) or ())
    orelse = list(getattr(node, "orelse", None) or ())
    finalbody = list(getattr(node, "finalbody", None) or ())
    # Each header starts after the block that precedes it in the source: try body, except handlers, else, finally.
    # (An `else:` of a try comes after its handlers, not after the try body.)
    if orelse:  # for an `elif` the range is empty: the nested If starts right after the body
        prev = handlers[-1] if handlers else body[-1]
        out.append(((prev.end_lineno or prev.lineno) + 1, orelse))
    if finalbody:
        prev = orelse[-1] if orelse else handlers[-1] if handlers else body[-1]
        out.append(((prev.end_lineno or prev.lineno) + 1, finalbody))
    if isinstance(node, ast.ExceptHandler) and node.body:
        out.append((node.lineno, node.body))
    return out


def fgo_mask(
    program: Program,
    token_spans: Sequence[tuple[int, int]],
    executed_lines: Iterable[int] | None,
    compile_error: bool,
    eos_tokens: int = 0,
) -> list[int]:
    """Per-completion-token mask. ``token_spans[t]`` = (start, end) character span of token t in the completion
    text; ``eos_tokens`` trailing special tokens (EOS) with no text are always kept."""
    n = len(token_spans) + eos_tokens
    if compile_error or executed_lines is None:
        return [1] * n
    executed = executed_program_lines(program.text, executed_lines)
    line_starts = [0]
    for i, ch in enumerate(program.text):
        if ch == "\n":
            line_starts.append(i + 1)
    mask = []
    for start, end in token_spans:
        hit = 0
        for c in range(start, max(end, start + 1)):
            pos = program.completion_char_to_program(c)
            if pos is None or bisect.bisect_right(line_starts, pos) in executed:
                hit = 1  # dropped by cleaning, or on a line that ran
                break
        mask.append(hit)
    mask += [1] * eos_tokens
    if mask:
        mask[-1] = 1  # the token that ends the completion carries the reward
    return mask

