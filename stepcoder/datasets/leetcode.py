"""LeetCodeDataset (newfacade, MIT) → Problem. Copies of v0.2.0 train/test and v0.3.1 test ship in data/leetcode.

Each record has a canonical ``completion`` (a ``class Solution``), a ``test`` defining ``check(candidate)``, an
``entry_point`` such as ``Solution().twoSum`` and a ``prompt`` with the imports and helper code that solutions and
tests rely on. The ``input_output`` field (LeetCode notation) is not used: ``test`` is the ground truth.

The prompt is split in two (by top-level statement):
- the header, imports and classes (``ListNode``, ``TreeNode``) that solutions use in annotations and bodies, is
  prepended to the solution and to the starter code, so every program (canonical or generated) starts with it;
- functions only tests use (``list_node``, ``tree_node``, ``is_same_list``...) go into the test setup with
  ``check``, and never take up prompt tokens.

Statement: v0.3.1 ``problem_description``; v0.2.0 ``meta.question_title`` (which holds the full description with
examples), else ``query`` cut before its "Please complete..." tail. Difficulty is lower-cased (easy/medium/hard;
the v0.2.0 test file's "Meidum" is read as medium).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stepcoder.datasets._io import RecordError, guarded, iter_jsonl, text_field
from stepcoder.datasets.errors import DatasetError, Reject
from stepcoder.datasets.context import trusted_context
from stepcoder.problems import Problem, TestSpec

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "leetcode"
SPLIT_FILES = {
    "train": "LeetCodeDataset-v0.2.0-train.jsonl.gz",  # 1,890
    "test": "LeetCodeDataset-v0.2.0-test.jsonl.gz",  # 200, disjoint from train
    "test-v0.3.1": "LeetCodeDataset-v0.3.1-test.jsonl.gz",  # 228, newer problems, disjoint from both
}
SPLITS = tuple(SPLIT_FILES)
_DIFFICULTY = {"easy": "easy", "medium": "medium", "meidum": "medium", "hard": "hard"}
_QUERY_TAIL = "Please complete the following python code precisely"
_WORD = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class _Chunk:
    text: str  # the statement's source, with the comments and blank lines before it
    name: str | None  # a top-level def or class
    is_function: bool
    third_party: tuple[str, ...] | None  # names bound by an import of a module outside the standard library


@functools.lru_cache(maxsize=32)  # a few prompt texts are shared by most records
def _chunks(prompt: str) -> tuple[_Chunk, ...]:
    try:
        tree = ast.parse(prompt)
    except SyntaxError as exc:
        raise RecordError("malformed", f"prompt does not parse (line {exc.lineno}: {exc.msg})") from None
    lines = prompt.splitlines(keepends=True)
    out, last = [], 0
    for node in tree.body:
        name = node.name if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else None
        out.append(_Chunk("".join(lines[last:node.end_lineno]), name, isinstance(node, ast.FunctionDef),
                          _third_party_names(node)))
        last = node.end_lineno
    return tuple(out)


def _third_party_names(node: ast.stmt) -> tuple[str, ...] | None:
    if isinstance(node, ast.Import):
        modules, names = [a.name for a in node.names], [a.asname or a.name.split(".")[0] for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        modules, names = [node.module], [a.asname or a.name for a in node.names]
    else:
        return None
    if all(m.split(".")[0] in sys.stdlib_module_names for m in modules):
        return None
    return tuple(names)


def split_prompt(prompt: str, uses: str = "") -> tuple[str, str]:
    """(header for programs, helpers for tests). Top-level functions go to tests; everything else stays.

    With ``uses`` (solution + starter + test text), a top-level class or function that nothing there (or in
    another kept definition) names is dropped: most problems need neither ``TreeNode`` nor ``list_node``, and
    every prompt token counts. So is an unused import of a module outside the standard library (v0.3.1 prompts
    import ``sortedcontainers``, which the sandbox does not have).
    """
    chunks = _chunks(prompt)
    named = {c.name for c in chunks if c.name}
    words = set(_WORD.findall(uses)) if uses else set()
    kept = named & words if uses else named
    while uses:  # definitions the kept ones use
        more = (named - kept) & set(_WORD.findall("".join(c.text for c in chunks if c.name in kept)))
        if not more:
            break
        kept |= more
    header, helpers = [], []
    for c in chunks:
        if c.name is not None and c.name not in kept:
            continue
        if uses and c.third_party is not None and "*" not in c.third_party and not words & set(c.third_party):
            continue
        (helpers if c.is_function else header).append(c.text)
    header_text = re.sub(r"\n{3,}", "\n\n", "".join(header).strip("\n"))
    return (header_text + "\n" if header_text else ""), "".join(helpers).strip("\n")


def _statement(record: dict) -> str:
    if isinstance(record.get("problem_description"), str) and record["problem_description"].strip():
        return _tidy(text_field(record, "problem_description"))
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    if isinstance(meta.get("question_title"), str) and len(meta["question_title"]) > 80:
        return _tidy(text_field(meta, "question_title"))
    query = text_field(record, "query", "problem_description")
    return _tidy(query.split(_QUERY_TAIL)[0])


def _tidy(text: str) -> str:
    """LeetCode HTML leftovers: non-breaking spaces and runs of blank lines."""
    return re.sub(r"\n[ \t\xa0]*(\n[ \t\xa0]*)+\n", "\n\n", text.replace("\xa0", " ")).strip()


def _starter(record: dict) -> str:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    starter = record.get("starter_code") or meta.get("lang_code") or ""
    if not isinstance(starter, str):
        raise RecordError("malformed", "starter_code must be a string")
    return starter.rstrip() + "\n" if starter.strip() else ""


def _difficulty(record: dict) -> str | None:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    raw = record.get("difficulty") or meta.get("difficulty")
    return _DIFFICULTY.get(str(raw).strip().lower()) if raw else None


def _record(record: dict, version: str, split: str | None) -> Problem:
    task_id = text_field(record, "task_id")
    entry_point = text_field(record, "entry_point").strip()
    test = text_field(record, "test")
    completion = text_field(record, "completion", default="")
    fn_name = entry_point.rsplit(".", 1)[-1]
    if not fn_name.isidentifier():
        raise RecordError("malformed", f"entry_point {entry_point!r} does not end in a method name", task_id)
    if "def check(" not in test:
        raise RecordError("no_tests", "test defines no check(candidate) function", task_id)
    starter = _starter(record)
    header, helpers = split_prompt(text_field(record, "prompt", default=""), completion + starter + test)
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return Problem(
        problem_id=f"leetcode/{task_id}",
        dataset="leetcode",
        statement=_statement(record),
        solution=(header + "\n" + completion) if completion.strip() else "",
        tests=TestSpec(kind="assert", asserts=(f"check({entry_point})",),
                       setup=(helpers + "\n\n" + test) if helpers else test,
                       context=trusted_context(header, {"Solution"})),
        entry_point=entry_point,
        starter_code=(header + "\n" + starter) if starter else header,
        difficulty=_difficulty(record),
        meta={"task_id": task_id, "question_id": record.get("question_id", meta.get("question_id")),
              "fn_name": fn_name, "version": version, "split": split},
    )


def iter_leetcode(path: str | Path | None = None, split: str | None = None) -> Iterator[Problem | Reject]:
    """Problems and rejects of one LeetCodeDataset file: ``path``, or the shipped file of ``split``.

    Without a path, ``split`` picks the file (None = train + test + test-v0.3.1, in that order); with a path the
    file is the split and ``split`` is not used.
    """
    if path is None:
        if split is not None and split not in SPLIT_FILES:
            raise DatasetError(f"unknown LeetCodeDataset split {split!r}; valid: {', '.join(SPLITS)}")
        paths = [DATA_DIR / SPLIT_FILES[s] for s in ([split] if split else SPLITS)]
    else:
        paths = [Path(path)]
    for p in paths:
        version = "v0.3.1" if "v0.3" in p.name else "v0.2.0"
        split_name = next((s for s, f in SPLIT_FILES.items() if f == p.name), None)
        for where, _, record in iter_jsonl(p):
            yield record if isinstance(record, Reject) else guarded(where, lambda: _record(record, version,
                                                                                         split_name))
