"""How a program's output is judged against the expected one (parent side only: the sandbox never sees
expected outputs).

Standard input/output tests (APPS, CodeContests), the rules tried in order, as the APPS/CodeRL harness does:

1. **exact**: the captured stdout equals the expected text.
2. **lines**: equal after normalising whitespace and lines: ``\\r\\n`` is ``\\n``, each line is stripped of
   surrounding whitespace, and blank lines are dropped (``"3 \\n\\n"`` matches ``"3"``).
3. **tokens**: the whitespace-separated tokens are equal, whatever the line breaks between them.
4. **floats**: same number of tokens, each equal, or both numbers with at least one not an integer literal and
   within ``FLOAT_TOL`` (absolute or relative). Integers must match exactly: a tolerance would accept
   ``1000001`` for ``1000000`` (where APPS's ``np.allclose`` does).
5. **token sets** (``lenient=True`` only; off by default): the set of per-line token sets is equal, ignoring
   order and repetition. APPS accepts this last; it passes wrong answers (``"2 1 1"`` for ``"1 2"``), so it is
   behind a flag (``execution.lenient_stdio`` in the config).

Function-call tests (APPS call-based, LeetCode-style): the returned value equals the expected one with tuples and
lists equal (recursively), dict keys compared as JSON writes them; or, the APPS quirk, expected ``[x]`` accepts
``x``; or both are numbers/structures equal up to ``FLOAT_TOL`` on floats.
"""

from __future__ import annotations

import json
import math
from typing import Any

FLOAT_TOL = 1e-6


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]


def _is_int(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def _tokens_close(a: str, b: str) -> bool:
    if a == b:
        return True
    if _is_int(a) and _is_int(b):
        return False  # equal integers are equal strings up to signs/zeros; see rule 4
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    if math.isnan(x) or math.isnan(y):
        return False
    return math.isclose(x, y, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)


def expected_text(expected: Any) -> str:
    """APPS stores some outputs as lists of lines."""
    if isinstance(expected, list):
        return "\n".join(map(str, expected))
    return str(expected)


def stdio_rule(got: str, expected: Any, lenient: bool = False) -> str | None:
    """The first rule (``exact``, ``lines``, ``tokens``, ``floats``, ``token_sets``) under which ``got`` matches
    ``expected``, or None."""
    expected = expected_text(expected)
    if got == expected:
        return "exact"
    if _lines(got) == _lines(expected):
        return "lines"
    a, b = got.split(), expected.split()
    if a == b:
        return "tokens"
    if len(a) == len(b) and all(_tokens_close(x, y) for x, y in zip(a, b)):
        return "floats"
    if lenient:
        sets = lambda text: {frozenset(line.split()) for line in _lines(text)}  # noqa: E731
        if sets(got) == sets(expected):
            return "token_sets"
    return None


def stdio_matches(got: str, expected: Any, lenient: bool = False) -> bool:
    return stdio_rule(got, expected, lenient) is not None


def _plain(x: Any) -> Any:
    """Tuples as lists and dict keys as JSON writes them, recursively, so values compare as their JSON does."""
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k if isinstance(k, str) else json.dumps(k): _plain(v) for k, v in x.items()}
    return x


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=FLOAT_TOL, abs_tol=FLOAT_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def call_matches(got: Any, expected: Any) -> bool:
    """``got == expected`` with tuples and lists equal; expected ``[x]`` accepts ``x``; floats within FLOAT_TOL."""
    got, expected = _plain(got), _plain(expected)
    if got == expected:
        return True
    single = isinstance(expected, list) and len(expected) == 1
    if single and got == expected[0]:
        return True
    return _close(got, expected) or (single and _close(got, expected[0]))


def repr_matches(got_repr: str | None, expected: Any) -> bool:
    """For results JSON cannot carry (sets, custom objects): compare reprs, with the same ``[x]`` quirk."""
    if got_repr is None:
        return False
    if got_repr == repr(expected):
        return True
    return isinstance(expected, (list, tuple)) and len(expected) == 1 and got_repr == repr(expected[0])
