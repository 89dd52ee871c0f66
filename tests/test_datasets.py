"""Loaders on the real files (APPS folder + JSONL, APPS+-shaped, MBPP full + sanitized, HumanEval, LeetCodeDataset,
MapCoder's APPS-150), the source registry, splits and filters, and a fuzz set of malformed records."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from stepcoder.datasets import DATASETS, DatasetError, load_problems, parse_source, require_problems, scan
from stepcoder.datasets.apps import APPS_HEADER, SAMPLES_PATH, folder_to_record, with_header
from stepcoder.datasets.leetcode import split_prompt
from stepcoder.datasets.splits import (
    EVAL_SPLITS,
    by_difficulty,
    by_hash_split,
    by_ids,
    check_held_out,
    excluding,
    hash_split,
    load_eval_split,
    overlaps,
    random_subset,
    select,
    without_held_out,
)

SAMPLE_IDS = ["apps/0001", "apps/0111", "apps/2287", "apps/2404", "apps/4184"]


def apps_jsonl(tmp_path: Path) -> Path:
    """The 5 APPS sample folders as a codeparrot-style JSONL file (JSON fields as strings)."""
    path = tmp_path / "apps.jsonl"
    with path.open("w") as fh:
        for folder in sorted(SAMPLES_PATH.iterdir()):
            if folder.is_dir():
                fh.write(json.dumps(folder_to_record(folder)) + "\n")
    return path


# ---------------------------------------------------------------- APPS


def test_apps_folders_load_all_five_samples():
    loaded = scan("apps", str(SAMPLES_PATH))
    assert loaded.rejects == []
    by_id = {p.problem_id: p for p in loaded.problems}
    assert list(by_id) == SAMPLE_IDS
    assert {i: p.tests.kind for i, p in by_id.items()} == {
        "apps/0001": "stdio", "apps/0111": "stdio", "apps/2287": "stdio", "apps/2404": "call", "apps/4184": "call"}
    assert Counter(p.difficulty for p in loaded.problems) == {"interview": 2, "competition": 1, "introductory": 2}
    p = by_id["apps/2404"]
    assert p.tests.fn_name == p.entry_point == "findKthPositive"
    assert p.tests.inputs == ([[2, 3, 4, 7, 11], 5],) and p.tests.outputs == (9,)
    # The APPS harness header: 2404 annotates with List, which only the header imports.
    assert p.solution.startswith(APPS_HEADER) and "class Solution:" in p.solution
    assert p.starter_code == (APPS_HEADER + "class Solution:\n"
                              "    def findKthPositive(self, arr: List[int], k: int) -> int:\n")
    assert by_id["apps/2287"].tests.count == 3 and by_id["apps/4184"].tests.count == 8
    assert by_id["apps/0001"].statement.startswith("Mikhail walks on a Cartesian plane.")
    assert by_id["apps/0001"].starter_code == APPS_HEADER  # stdio: the final CCCS stage shows just the header


def test_apps_jsonl_form_gives_the_same_problems(tmp_path):
    folders = scan("apps", str(SAMPLES_PATH)).problems
    lines = scan("apps", str(apps_jsonl(tmp_path)))
    assert lines.rejects == []
    assert lines.problems == folders  # every field but meta
    assert [p.meta["source"] for p in lines.problems] == ["jsonl"] * 5


def test_apps_root_with_train_and_test_folders(tmp_path):
    for split, names in (("train", ["0001", "2404"]), ("test", ["0001"])):
        for name in names:
            shutil.copytree(SAMPLES_PATH / name, tmp_path / split / name)
    assert [p.problem_id for p in load_problems("apps", str(tmp_path))] == [
        "apps/train/0001", "apps/train/2404", "apps/test/0001"]
    assert [p.problem_id for p in load_problems("apps", str(tmp_path), "test")] == ["apps/test/0001"]
    assert load_problems("apps", str(tmp_path), "test")[0].meta["split"] == "test"


def test_header_goes_after_future_imports_and_docstring():
    code = '"""doc"""\nfrom __future__ import division\nprint(1)\n'
    out = with_header("import sys\n", code)
    assert out == '"""doc"""\nfrom __future__ import division\nimport sys\nprint(1)\n'
    compile(out, "<t>", "exec")
    assert with_header("import sys\n", "print(1)\n") == "import sys\nprint(1)\n"
    assert with_header("", "x") == "x" and with_header("import sys\n", "") == ""


# ---------------------------------------------------------------- APPS+


def appsplus_records() -> list[dict]:
    """APPS+-shaped records built from the APPS samples, each spelling the fields a different way."""
    out = []
    for i, p in enumerate(scan("apps", str(SAMPLES_PATH), ).problems):
        raw = folder_to_record(SAMPLES_PATH / p.problem_id.split("/")[1])
        io = json.loads(raw["input_output"])
        solution = min((s for s in json.loads(raw["solutions"]) if s.strip()), key=len)  # the canonical one
        if i == 0:  # the public description: prompt, canonical_solution, fn_name, inputs/outputs, starter_code
            rec = {"id": 1, "prompt": raw["question"], "canonical_solution": solution, "fn_name": "",
                   "inputs": io["inputs"], "outputs": io["outputs"], "starter_code": "", "difficulty": "interview"}
        elif i == 1:  # APPS-like names, JSON-encoded strings
            rec = {"problem_id": "111", "question": raw["question"], "solutions": raw["solutions"],
                   "input_output": raw["input_output"], "difficulty": "interview"}
        elif i == 2:  # a list of {input, output} pairs
            rec = {"task_id": "2287", "description": raw["question"], "solution": solution,
                   "test_cases": [{"input": a, "output": b} for a, b in zip(io["inputs"], io["outputs"])],
                   "level": "competition"}
        elif i == 3:  # function name outside the tests
            rec = {"idx": 2404, "problem": raw["question"], "code": solution, "function_name": io["fn_name"],
                   "unit_tests": {"inputs": io["inputs"], "outputs": io["outputs"]},
                   "starter_code": raw["starter_code"], "difficulty": "Introductory"}
        else:
            rec = {"id": 4184, "prompt": raw["question"], "canonical_solution": solution, "fn_name": io["fn_name"],
                   "inputs": json.dumps(io["inputs"]), "outputs": json.dumps(io["outputs"]),
                   "starter_code": raw["starter_code"], "difficulty": "introductory"}
        out.append(rec)
    return out


@pytest.mark.parametrize("layout", ["array", "data-key", "by-id", "jsonl"])
def test_appsplus_shaped_file_from_the_apps_samples(tmp_path, layout):
    records = appsplus_records()
    path = tmp_path / ("data.jsonl" if layout == "jsonl" else "data.json")
    if layout == "array":
        path.write_text(json.dumps(records, indent=2))
    elif layout == "data-key":
        path.write_text(json.dumps({"version": 1, "data": records}))
    elif layout == "by-id":
        ids = ("id", "problem_id", "task_id", "idx")
        path.write_text(json.dumps({str(i): {k: v for k, v in r.items() if k not in ids}
                                    for i, r in enumerate(records)}))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = scan("appsplus", str(path))
    assert loaded.rejects == []
    apps = scan("apps", str(SAMPLES_PATH)).problems
    assert len(loaded.problems) == 5
    for plus, orig in zip(loaded.problems, apps):
        assert plus.dataset == "appsplus" and plus.problem_id.startswith("appsplus/")
        assert (plus.statement, plus.solution, plus.tests, plus.difficulty) == (
            orig.statement, orig.solution, orig.tests, orig.difficulty)
    if layout == "array":
        assert [p.problem_id for p in loaded.problems] == [
            "appsplus/1", "appsplus/111", "appsplus/2287", "appsplus/2404", "appsplus/4184"]


def test_appsplus_needs_a_path_and_has_no_split():
    with pytest.raises(DatasetError, match="appsplus:PATH"):
        load_problems("appsplus")
    with pytest.raises(DatasetError, match="no official split"):
        load_problems("appsplus", "x.json", "train")


# ---------------------------------------------------------------- MBPP


def test_mbpp_full_and_sanitized():
    full = scan("mbpp")
    assert (len(full.problems), full.rejects) == (974, [])
    assert Counter(p.meta["split"] for p in full.problems) == {"prompt": 10, "test": 500, "validation": 90,
                                                               "train": 374}
    sanitized = scan("mbpp-sanitized")
    assert (len(sanitized.problems), sanitized.rejects) == (427, [])
    assert {s: len(load_problems("mbpp-sanitized", split=s)) for s in ("prompt", "test", "validation", "train")} \
        == {"prompt": 7, "test": 257, "validation": 43, "train": 120}
    p = sanitized.problems[0]
    assert (p.problem_id, p.entry_point) == ("mbpp-sanitized/2", "similar_elements")
    assert p.statement == "Write a function to find the shared elements from the given two lists."
    with_imports = [p for p in sanitized.problems if p.tests.setup]
    assert len(with_imports) == 13 and all(p.tests.setup.startswith("import") for p in with_imports)
    # The two test_setup_code tasks of full MBPP build their trees in the setup (see test_validation).
    assert {p.problem_id for p in full.problems if p.tests.setup} == {"mbpp/367", "mbpp/927"}


# ---------------------------------------------------------------- HumanEval


def test_humaneval_from_the_wheel():
    loaded = scan("humaneval")
    assert (len(loaded.problems), loaded.rejects) == (164, [])
    p = loaded.problems[0]
    assert (p.problem_id, p.entry_point) == ("humaneval/0", "has_close_elements")
    assert p.tests.kind == "assert" and p.tests.asserts == ("check(has_close_elements)",)
    assert "def check(candidate)" in p.tests.setup
    assert p.solution.startswith(p.starter_code) and p.starter_code.startswith("from typing import List")
    assert p.statement.startswith("Check if in given list of numbers")
    assert len({p.problem_id for p in loaded.problems}) == 164


# ---------------------------------------------------------------- LeetCodeDataset


def test_leetcode_files_and_fields():
    sizes = {s: len(load_problems("leetcode", split=s)) for s in ("train", "test", "test-v0.3.1")}
    assert sizes == {"train": 1890, "test": 200, "test-v0.3.1": 228}
    loaded = scan("leetcode")
    assert loaded.rejects == [] and len(loaded.problems) == 2318
    assert {p.difficulty for p in loaded.problems} == {"easy", "medium", "hard"}  # "Meidum" read as medium
    p = next(p for p in loaded.problems if p.problem_id == "leetcode/two-sum")
    assert p.entry_point == "Solution().twoSum" and p.tests.asserts == ("check(Solution().twoSum)",)
    assert p.solution.startswith("from typing import *") and "class Solution:" in p.solution
    assert p.starter_code.endswith(
        "class Solution:\n    def twoSum(self, nums: List[int], target: int) -> List[int]:\n")
    assert p.solution.startswith(p.starter_code.split("class Solution")[0])  # the same header
    assert p.statement.startswith("Given an array of integers nums and an integer target")
    assert "Example 1:" in p.statement and "Please complete" not in p.statement
    assert "ListNode" not in p.starter_code  # helpers nothing uses are pruned


def test_leetcode_prompt_split_between_program_and_tests():
    prompt = ("from typing import *\nfrom sortedcontainers import SortedList\n\nclass TreeNode:\n    pass\n\n"
              "class ListNode:\n    pass\n\ndef tree_node(values):\n    return TreeNode()\n\n"
              "def list_node(values):\n    return ListNode()\n")
    header, helpers = split_prompt(prompt, uses="def f(root: TreeNode): ...\nassert candidate(tree_node([1]))")
    assert header == "from typing import *\n\nclass TreeNode:\n    pass\n"  # unused sortedcontainers dropped
    assert helpers == "def tree_node(values):\n    return TreeNode()"
    header, _ = split_prompt(prompt, uses="SortedList")
    assert "sortedcontainers" in header and "TreeNode" not in header
    tree = next(p for p in load_problems("leetcode", split="train") if "TreeNode" in p.starter_code
                and "tree_node(" in p.tests.setup)
    assert "def tree_node" in tree.tests.setup and "def tree_node" not in tree.solution
    assert "class TreeNode" in tree.solution


# ---------------------------------------------------------------- MapCoder's APPS-150


def test_apps_eval150_semantics_and_its_defects():
    loaded = scan("apps-eval150")
    assert len(loaded.problems) == 127
    assert Counter(r.reason for r in loaded.rejects) == {"duplicate": 21, "malformed": 2}
    assert all("apps_selected150.jsonl:" in r.detail for r in loaded.rejects)
    kinds = Counter((p.tests.kind, p.difficulty) for p in loaded.problems)
    assert kinds == {("call", "introductory"): 49, ("call", "interview"): 29, ("stdio", "competition"): 47,
                     ("stdio", "interview"): 2}
    assert all(p.solution == "" for p in loaded.problems)  # evaluation only
    p = next(p for p in loaded.problems if p.tests.fn_name == "get_score")
    assert p.tests.inputs[:2] == ([[1]], [[5]]) and p.tests.outputs[:2] == (100, 50)
    cipher = next(p for p in loaded.problems if p.tests.fn_name == "is_substitution_cipher")
    assert cipher.tests.inputs[0] == ["aacb", "aabc"] and cipher.tests.outputs[0] is True


# ---------------------------------------------------------------- registry


def test_sources_and_registry():
    assert parse_source("mbpp") == ("mbpp", None)
    assert parse_source("apps:/data/apps/train") == ("apps", "/data/apps/train")
    with pytest.raises(DatasetError, match="valid: mbpp, mbpp-sanitized, humaneval, leetcode, apps"):
        parse_source("codeforces:x")
    with pytest.raises(DatasetError, match=r"give its path as apps:PATH.*valid: mbpp"):
        load_problems("apps")
    assert set(DATASETS) >= {"mbpp", "mbpp-sanitized", "humaneval", "leetcode", "apps", "appsplus", "apps-eval150"}


def test_require_problems_refuses_zero_valid_problems_and_says_why(tmp_path):
    bad = tmp_path / "apps.jsonl"
    bad.write_text('{"problem_id": 1, "question": "q", "input_output": "{\\"inputs\\": [], "}\n'
                   '{"problem_id": 2, "question": "q", "input_output": "{\\"inputs\\": [], \\"outputs\\": []}"}\n')
    loaded = scan("apps", str(bad))
    with pytest.raises(DatasetError, match=r"no valid problems: all 2 records were rejected "
                                           r"\(1 unparsable, 1 no_tests\); first: .*apps.jsonl:1"):
        require_problems(loaded.problems, loaded.source, loaded.rejects)
    with pytest.raises(DatasetError, match="the source is empty, or the split and filters selected none"):
        require_problems([], "mbpp (split train)")
    assert require_problems(loaded.problems + load_problems("mbpp", split="prompt"), "x")


# ---------------------------------------------------------------- splits and filters


def test_filters():
    apps = load_problems("apps", str(SAMPLES_PATH))
    assert [p.problem_id for p in by_difficulty(apps, ["Introductory"])] == ["apps/2404", "apps/4184"]
    assert [p.problem_id for p in by_ids(apps, ["2404", "apps/0001"])] == ["apps/0001", "apps/2404"]
    with pytest.raises(DatasetError, match="1 id\\(s\\) match no problem: 9999"):
        by_ids(apps, ["2404", "9999"])
    assert [p.problem_id for p in excluding(apps, ["0001", "0111"])] == ["apps/2287", "apps/2404", "apps/4184"]
    assert select(apps, difficulty=["interview", "competition"], exclude=["0111"], limit=1)[0].problem_id == "apps/0001"


def test_random_subset_is_seeded_and_order_independent():
    mbpp = load_problems("mbpp", split="train")
    a = random_subset(mbpp, 20, seed=3)
    assert len(a) == 20 and a == random_subset(mbpp, 20, seed=3)
    assert {p.problem_id for p in random_subset(list(reversed(mbpp)), 20, seed=3)} == {p.problem_id for p in a}
    assert {p.problem_id for p in random_subset(mbpp, 20, seed=4)} != {p.problem_id for p in a}
    assert [p.problem_id for p in a] == sorted((p.problem_id for p in a), key=lambda i: int(i.split("/")[1]))
    assert random_subset(mbpp, 10_000) == mbpp


def test_hash_split_is_fixed_per_id():
    ids = [f"appsplus/{i}" for i in range(5000)]
    test = [i for i in ids if hash_split(i, 0.1) == "test"]
    assert len(test) == 520  # about 10%
    # Pinned: a change here would move problems between a run's training and held-out sides.
    assert test[:6] == ["appsplus/37", "appsplus/59", "appsplus/61", "appsplus/63", "appsplus/65", "appsplus/69"]
    apps = load_problems("apps", str(SAMPLES_PATH))
    assert len(by_hash_split(apps, "train", 0.5)) + len(by_hash_split(apps, "test", 0.5)) == 5


def test_fixed_eval_splits_are_held_out():
    sizes = {n: len(load_eval_split(n)) for n, e in EVAL_SPLITS.items() if not e.needs_path}
    assert sizes == {"mbpp-test": 500, "mbpp-validation": 90, "mbpp-sanitized-test": 257, "humaneval": 164,
                     "leetcode-test": 200, "leetcode-test-v0.3.1": 228, "apps-eval150": 127,
                     "mbpp-plus-test": 236, "mbpp-plus": 394}
    leet_train = load_problems("leetcode", split="train")
    check_held_out(leet_train, load_eval_split("leetcode-test") + load_eval_split("leetcode-test-v0.3.1"))
    # MBPP itself repeats three statements across its train and test splits: they must not be trained on.
    train, test = load_problems("mbpp", split="train"), load_eval_split("mbpp-test")
    assert overlaps(train, test) == [("mbpp/872", "mbpp/216", "same statement"),
                                     ("mbpp/602", "mbpp/217", "same statement"),
                                     ("mbpp/704", "mbpp/248", "same statement")]
    with pytest.raises(DatasetError, match="3 evaluation problem"):
        check_held_out(train, test)
    kept = without_held_out(train, test)
    assert len(kept) == 371 and not overlaps(kept, test)
    # MBPP+'s held-out tasks are MBPP-test's, less 427: MBPP+ gave it the statement of train task 928
    assert not overlaps(train, load_eval_split("mbpp-plus-test"))
    assert overlaps(train, load_problems("mbpp-plus", split="test")) == [("mbpp/928", "mbpp-plus/427", "same statement")]
    with pytest.raises(DatasetError, match="valid: mbpp-test"):
        load_eval_split("mbpp-dev")


# ---------------------------------------------------------------- fuzz: malformed records

# Valid records of each format; each fuzz case puts a bad record between two of them.
APPS_OK = {"problem_id": 10, "question": "Print 1.", "solutions": json.dumps(["print(1)"]),
           "input_output": json.dumps({"inputs": [""], "outputs": ["1\n"]}), "difficulty": "introductory"}
MBPP_OK = {"task_id": 601, "text": "t", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"]}
LEET_OK = {"task_id": "t", "prompt": "from typing import *\n",
           "completion": "class Solution:\n    def f(self):\n        return 1\n", "entry_point": "Solution().f",
           "test": "def check(candidate):\n    assert candidate() == 1\n", "query": "Return 1."}
HE_OK = {"task_id": "HumanEval/0", "prompt": "def f():\n    \"\"\"Return 1.\"\"\"\n",
         "canonical_solution": "    return 1\n", "test": "def check(candidate):\n    assert candidate() == 1\n",
         "entry_point": "f"}


def _apps(**changes):
    return json.dumps({k: v for k, v in {**APPS_OK, **changes}.items() if v is not ...})


def _mbpp(**changes):
    return json.dumps({k: v for k, v in {**MBPP_OK, **changes}.items() if v is not ...})


def _leet(**changes):
    return json.dumps({k: v for k, v in {**LEET_OK, **changes}.items() if v is not ...})


def _he(**changes):
    return json.dumps({k: v for k, v in {**HE_OK, **changes}.items() if v is not ...})


JSONL_CASES = [  # (format, bad line (str or bytes), reason, message)
    ("apps", "{not json", "unparsable", r"invalid JSON \(Expecting property name"),
    ("apps", "[1, 2]", "malformed", "record must be a JSON object, got an array"),
    ("apps", b'{"problem_id": 11, "question": "caf\xe9"}', "not_utf8", r"not valid UTF-8 \(byte 0xe9 at column"),
    ("apps", _apps(question=...), "malformed", "record lacks field question"),
    ("apps", _apps(question=7), "malformed", "question must be a string, got a number"),
    ("apps", _apps(problem_id=...), "malformed", "record lacks field problem_id / id"),
    ("apps", _apps(problem_id=True), "malformed", "problem_id must be an integer or a string"),
    ("apps", _apps(input_output='{"inputs": ["1"'), "unparsable", "input_output is not valid JSON"),
    ("apps", _apps(input_output=json.dumps({"inputs": [], "outputs": []})), "no_tests", "empty inputs"),
    ("apps", _apps(input_output=...), "no_tests", "no input_output"),
    ("apps", _apps(input_output=json.dumps({"inputs": ["1", "2"], "outputs": ["1"]})), "malformed",
     "2 inputs but 1 outputs"),
    ("apps", _apps(input_output=json.dumps([1, 2])), "malformed", "input_output must be an object"),
    ("apps", _apps(input_output=json.dumps({"inputs": [{"a": 1}], "outputs": ["1"]})), "malformed",
     "stdio inputs and outputs must be strings"),
    ("apps", _apps(input_output=json.dumps({"fn_name": "not a name", "inputs": [[1]], "outputs": [1]})),
     "malformed", "fn_name 'not a name' is not a Python name"),
    ("apps", _apps(solutions="[\"print(1)\""), "unparsable", "solutions is not valid JSON"),
    ("apps", _apps(solutions=json.dumps([1, 2])), "malformed", "solutions must be a list of program strings"),
    ("mbpp", _mbpp(test_list=[]), "no_tests", "test_list must be a non-empty list"),
    ("mbpp", _mbpp(test_list="assert f() == 1"), "malformed", "test_list must be a non-empty list"),
    ("mbpp", _mbpp(code=...), "malformed", r"lacks field\(s\) code"),
    ("mbpp", _mbpp(task_id="six"), "malformed", "task_id must be an integer"),
    ("mbpp", _mbpp(text=["t"]), "malformed", "text and code must be strings"),
    ("leetcode", _leet(entry_point=...), "malformed", "record lacks field entry_point"),
    ("leetcode", _leet(test="assert True\n"), "no_tests", r"test defines no check\(candidate\) function"),
    ("leetcode", _leet(prompt="from typing import (\n"), "malformed", "prompt does not parse"),
    ("leetcode", _leet(entry_point="Solution()."), "malformed", "does not end in a method name"),
    ("humaneval", _he(entry_point="f()"), "malformed", "entry_point 'f\\(\\)' is not a Python name"),
    ("humaneval", _he(test=None), "malformed", "record lacks field test"),
]


@pytest.mark.parametrize("fmt, bad, reason, message", JSONL_CASES,
                         ids=[f"{c[0]}-{i}-{c[2]}" for i, c in enumerate(JSONL_CASES)])
def test_fuzz_jsonl_record_is_named_and_the_rest_loads(tmp_path, fmt, bad, reason, message):
    good = {"apps": [_apps(), _apps(problem_id=12)], "mbpp": [_mbpp(), _mbpp(task_id=602)],
            "leetcode": [_leet(), _leet(task_id="u")], "humaneval": [_he(), _he(task_id="HumanEval/1")]}[fmt]
    path = tmp_path / "records.jsonl"
    bad = bad if isinstance(bad, bytes) else bad.encode()
    path.write_bytes(good[0].encode() + b"\n" + bad + b"\n" + good[1].encode() + b"\n")
    loaded = scan(fmt, str(path))
    assert len(loaded.problems) == 2, loaded.rejects
    (r,) = loaded.rejects
    assert r.reason == reason
    assert r.detail.startswith(f"{path}:2: ") and r.where == f"{path}:2"
    assert re.search(message, r.detail), r.detail
    with pytest.raises(DatasetError, match=f"records.jsonl:2: "):
        load_problems(fmt, str(path), strict=True)


def _apps_folder(root: Path, name: str, **files: str | bytes) -> None:
    d = root / name
    d.mkdir()
    base = {"question.txt": "Print 1.", "solutions.json": '["print(1)"]',
            "input_output.json": '{"inputs": [""], "outputs": ["1\\n"]}',
            "metadata.json": '{"difficulty": "interview"}'}
    for fname, content in {**base, **files}.items():
        if content is None:
            continue
        (d / fname).write_bytes(content if isinstance(content, bytes) else content.encode())


FOLDER_CASES = [  # (files of the bad folder, reason, message)
    ({"question.txt": None}, "malformed", "no question.txt"),
    ({"input_output.json": '{"inputs": ['}, "unparsable", "input_output.json is not valid JSON"),
    ({"question.txt": b"caf\xe9 au lait"}, "not_utf8", r"question.txt line 1 is not valid UTF-8 \(byte 0xe9"),
    ({"solutions.json": '{"a": 1}'}, "malformed", "solutions must be a list of program strings"),
    ({"input_output.json": None}, "no_tests", "no input_output"),
    ({"metadata.json": "[1]"}, "malformed", "metadata.json must be an object"),
    ({"question.txt": "   \n"}, "malformed", "empty problem statement"),
]


@pytest.mark.parametrize("files, reason, message", FOLDER_CASES, ids=[c[1] + "-" + str(i) for i, c in
                                                                      enumerate(FOLDER_CASES)])
def test_fuzz_apps_folder_is_named_and_the_rest_loads(tmp_path, files, reason, message):
    _apps_folder(tmp_path, "0001")
    _apps_folder(tmp_path, "0002", **files)
    _apps_folder(tmp_path, "0003")
    loaded = scan("apps", str(tmp_path))
    assert [p.problem_id for p in loaded.problems] == ["apps/0001", "apps/0003"]
    (r,) = loaded.rejects
    assert (r.reason, r.problem_id, r.where) == (reason, "apps/0002", f"{tmp_path / '0002'}/")
    assert r.detail.startswith(f"{tmp_path / '0002'}/: ") and re.search(message, r.detail), r.detail


def test_fuzz_json_array_records_are_named_by_line(tmp_path):
    good = appsplus_records()[:2]
    path = tmp_path / "data.json"
    path.write_bytes(
        b"[\n" + json.dumps(good[0]).encode() + b",\n"
        + b'"just a string",\n'  # line 3: not an object
        + json.dumps({"id": 7, "prompt": "caf\udce9", "canonical_solution": "print(1)", "inputs": ["1"],
                      "outputs": ["1"]}).encode().replace(b"\\udce9", b"\xe9") + b",\n"  # line 4: raw 0xe9
        + json.dumps({"id": 8, "canonical_solution": "print(1)", "inputs": ["1"], "outputs": ["1"]}).encode()
        + b",\n"  # line 5: no statement
        + json.dumps(good[1]).encode() + b"\n]\n")
    loaded = scan("appsplus", str(path))
    assert [p.problem_id for p in loaded.problems] == ["appsplus/1", "appsplus/111"]
    assert [(r.reason, r.where, r.problem_id) for r in loaded.rejects] == [
        ("malformed", f"{path}:3", None), ("not_utf8", f"{path}:4", None), ("malformed", f"{path}:5", "appsplus/8")]
    assert "lacks field prompt / question" in loaded.rejects[2].detail
    # A syntax error in the array itself is fatal: nothing after it can be located.
    path.write_text('[{"id": 1},\n{"id": 2,,}]')
    with pytest.raises(DatasetError, match=r"data.json:2: invalid JSON .*records after line 2 cannot be located"):
        scan("appsplus", str(path))


def test_fuzz_solutions_that_do_not_parse_are_rejected_by_validation(tmp_path):
    from stepcoder.datasets.validate import static_reject

    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join([_mbpp(), _mbpp(task_id=602, code="def f(:\n    return 1"),
                               _mbpp(task_id=603, test_list=["assert f() =="])]) + "\n")
    problems = load_problems("mbpp", str(path))
    assert [static_reject(p) for p in problems][0] is None
    r602, r603 = static_reject(problems[1]), static_reject(problems[2])
    assert (r602.reason, r602.problem_id) == ("syntax_error", "mbpp/602")
    assert "canonical solution does not compile (line 1" in r602.detail
    assert (r603.reason, r603.detail) == ("malformed", "mbpp/603: test 0 does not compile (line 1: invalid syntax)")


def test_gzip_jsonl_is_read(tmp_path):
    path = tmp_path / "lc.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(_leet() + "\n")
    (p,) = load_problems("leetcode", str(path))
    assert p.problem_id == "leetcode/t" and p.meta["split"] is None


def test_canonical_solution_is_the_shortest_that_passes(tmp_path):
    """APPS lists many solutions: the loader picks the shortest; validation falls back to the next-shortest
    when it fails the tests, so a validated problem carries the shortest *passing* solution."""
    import shutil

    from stepcoder.datasets.validate import validate_problems
    from stepcoder.execution import make_executor

    folder = tmp_path / "apps" / "0001"
    shutil.copytree(SAMPLES_PATH / "0001", folder)
    sols = json.loads((folder / "solutions.json").read_text())
    shortest = min(sols, key=len)
    broken = "print(0)\n"  # shorter than any real solution, and wrong
    (folder / "solutions.json").write_text(json.dumps(sols + [broken]))
    (problem,) = scan("apps", str(tmp_path / "apps")).problems
    assert problem.solution.endswith(broken)  # loader: the shortest, whatever it does
    with make_executor("embedded", timeout_s=4, budget_s=20, coverage=False) as ex:
        report = validate_problems([problem], ex)
    (clean,) = report.clean
    assert clean.solution.endswith(shortest.replace("\r\n", "\n")) and not report.rejects
