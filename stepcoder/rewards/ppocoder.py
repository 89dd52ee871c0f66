"""PPOCoder's sequence reward (Shojaee et al., "Execution-based Code Generation using Deep RL", TMLR 2023).

    R = w_exec·r_exec + w_ast·r_ast + w_dfg·r_dfg          (here)
    r_t = [t = last token]·R − β·(log π(a_t) − log π_ref(a_t))   (stepcoder.ppo.kl_penalty.kl_penalized_rewards)

- ``r_exec``, the compiler/execution signal: the unit-test table of ``stepcoder.rewards.outcome`` (+1 pass, −0.3 fail,
  −0.6 runtime error or timeout, −1 compile error). A problem without tests falls back to compile-only (+1 compiles,
  −1 does not), as PPOCoder does for completion and translation.
- ``r_ast``, syntactic match: CodeBLEU's AST match of the program against the reference solution, in [0, 1].
- ``r_dfg``, semantic match: CodeBLEU's data-flow-graph match against the reference solution, in [0, 1].
- Weights default to 1 each: PPOCoder's code sums the three parts unweighted (``reward + ast_match + dfg_match`` in
  ``get_binary_compilation_reward``, reddy-lab-code-research/PPOCoder ``reward.py``), and the paper's R is their plain
  sum minus β·KL.
- The KL penalty is NOT part of this score: PPO adds it per token, and the score goes to the final token.

Matching uses the maintained ``codebleu`` package (0.7.0; its parsers are the CodeXGLUE ones that PPOCoder
vendored). What the two matches see, measured on that version:
- AST match is the recall of the reference's subtrees (nodes with children, and the root) among the candidate's,
  compared as tree-sitter s-expressions. An s-expression lists named node types and field names only, so identifiers,
  literal values, operators and keywords are invisible: ``n <= 1`` matches ``n >= 1``, and renaming never matters.
- Data-flow match is the recall of the reference's data-flow edges (``comesFrom``/``computedFrom``) among the
  candidate's. Variables are renumbered in order of first appearance, so a consistent renaming scores 1.0.
- Both are recall of the reference, so extra code costs little: appending a function to the reference loses only
  the root subtree (AST 12/13 on the factorial of the tests, DFG still 1.0). Code placed before shifts the variable
  numbering, and with it the data-flow match (0.67 there).
- Comments and docstrings are removed first; leading and trailing whitespace is stripped (as ``calc_codebleu`` does).

Decisions:
- "Unparsable" means Python's ``compile`` rejects it (the sandbox's compile_error check, not tree-sitter, which
  parses anything). Such a candidate gets 0 on both matches, and a compile_error outcome zeroes them too.
  PPOCoder scored those on tree-sitter's error recovery instead (1/13 for a missing colon in the tests' factorial),
  which pays a little for broken code.
- A reference with no data-flow edges (e.g. ``def f(): return 42``): codebleu's ``corpus_dataflow_match`` returns 0
  and logs a warning; PPOCoder used that 0 as is; ``calc_codebleu`` swaps it for 1 in its weighted sum. Here it is
  1.0 when the candidate has no edges either (equal graphs, so identical programs always score 1.0) and 0.0 when
  the candidate has some. The reference is trusted: it is not compile-checked, and a blank reference raises.
- With the CCCS prefix, the full program (prefix + completion) is compared with the full reference. A completion
  alone is usually not a parsable program, and the reference's matching tail isn't well defined once the model
  strays. The cost: at early stages the prefix, copied from the reference, earns much of the match for free.
  The score then separates samples by their completions only, which is what the PPO advantage uses.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import NamedTuple

from codebleu import dataflow_match as _cb_dataflow
from codebleu import syntax_match as _cb_syntax
from codebleu.parser import DFG_python, remove_comments_and_docstrings
from codebleu.utils import get_tree_sitter_language
from tree_sitter import Parser

from stepcoder.rewards.outcome import DEFAULT_REWARDS, execution_reward

LANG = "python"
_LANGUAGE = get_tree_sitter_language(LANG)  # built once; a Parser is cheap, but it has state, hence one per thread
_local = threading.local()


class PPOCoderWeights(NamedTuple):
    """Weights of the three parts of R (PPOCoder: all 1)."""

    exec: float = 1.0
    ast: float = 1.0
    dfg: float = 1.0


def _parser() -> Parser:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = Parser()
        parser.language = _LANGUAGE
    return parser


def compiles(program: str) -> bool:
    """Whether Python compiles the program; the same check, and the same errors, as the sandbox's compile_error."""
    try:
        compile(program, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
        return False
    return True


def compile_only_reward(program: str) -> float:
    """PPOCoder's fallback signal when a problem has no tests: +1 if the program compiles, −1 if not."""
    return 1.0 if compiles(program) else -1.0


def _check_reference(reference: str) -> None:
    if not reference.strip():
        raise ValueError("PPOCoder's AST and data-flow matches need a non-blank reference solution")


def syntax_match(candidate: str, reference: str) -> float:
    """CodeBLEU AST match in [0, 1]: share of the reference's subtrees that occur in the candidate.

    codebleu ``syntax_match.corpus_syntax_match`` on one pair (what ``calc_codebleu`` reports as
    ``syntax_match_score``). A candidate that does not compile scores 0.
    """
    _check_reference(reference)
    if not compiles(candidate):
        return 0.0
    return float(
        _cb_syntax.corpus_syntax_match([[reference.strip()]], [candidate.strip()], LANG, tree_sitter_language=_LANGUAGE)
    )


def _normalized_dfg(code: str) -> list[tuple]:
    try:
        code = remove_comments_and_docstrings(code, LANG)
    except Exception:  # codebleu's own fallback: match the code as given
        pass
    return _cb_dataflow.normalize_dataflow(_cb_dataflow.get_data_flow(code, [_parser(), DFG_python]))


def dataflow_match(candidate: str, reference: str) -> float:
    """CodeBLEU data-flow match in [0, 1]: share of the reference's normalised data-flow edges found in the candidate.

    The steps of codebleu ``dataflow_match.corpus_dataflow_match`` on one pair (comment removal, ``get_data_flow``,
    ``normalize_dataflow``, matching each candidate edge at most once), with the edge case decided instead of warned
    about: a reference with no edges scores 1.0 against a candidate with none, 0.0 otherwise.
    A candidate that does not compile scores 0.
    """
    _check_reference(reference)
    if not compiles(candidate):
        return 0.0
    cand_dfg = _normalized_dfg(candidate.strip())
    ref_dfg = _normalized_dfg(reference.strip())
    if not ref_dfg:
        return 0.0 if cand_dfg else 1.0
    matched = 0
    for edge in ref_dfg:
        if edge in cand_dfg:
            matched += 1
            cand_dfg.remove(edge)
    return matched / len(ref_dfg)


def ppocoder_reward(
    outcome: str | None,
    program: str,
    reference: str,
    weights: tuple[float, float, float] = PPOCoderWeights(),
    table: Mapping[str, float] = DEFAULT_REWARDS,
) -> dict[str, float]:
    """PPOCoder's sequence score of one program, with each part kept for the rollouts table.

    outcome: the sandbox outcome (``pass``/``fail``/``runtime_error``/``timeout``/``compile_error``), or None when
    the problem has no tests (then r_exec = ``compile_only_reward``). program: the full program (CCCS prefix +
    completion); reference: the full reference solution. weights: (exec, ast, dfg); a weight of 0 leaves that part
    out of the sum, but every part is still computed and returned. table: the outcome → reward table.

    Returns ``{"r_exec", "r_ast", "r_dfg", "reward"}`` with reward = w_exec·r_exec + w_ast·r_ast + w_dfg·r_dfg.
    The per-token KL penalty is added later, in the PPO step.
    """
    w_exec, w_ast, w_dfg = weights
    r_exec = compile_only_reward(program) if outcome is None else execution_reward(outcome, table)
    if outcome == "compile_error":  # zero even where this Python compiles it: the sandbox may run another one
        r_ast = r_dfg = 0.0
    else:
        r_ast, r_dfg = syntax_match(program, reference), dataflow_match(program, reference)
    return {"r_exec": r_exec, "r_ast": r_ast, "r_dfg": r_dfg, "reward": w_exec * r_exec + w_ast * r_ast + w_dfg * r_dfg}
