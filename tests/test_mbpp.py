import json

import pytest

from stepcoder.datasets import DatasetError, load_problems
from stepcoder.datasets.mbpp import SPLITS, load_mbpp


def test_standard_splits_have_the_paper_sizes():
    sizes = {split: len(load_mbpp(split=split)) for split in SPLITS}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    assert len(load_mbpp(split=None)) == 974


def test_records_are_normalized():
    p = load_mbpp(split="train")[0]
    assert p.problem_id == "mbpp/601" and p.dataset == "mbpp"
    assert "\r" not in p.solution
    assert p.tests.kind == "assert" and len(p.tests.asserts) == 3
    assert p.entry_point == "max_chain_length"
    assert p.statement.startswith("Write a function")


def test_unknown_split_and_dataset_are_named():
    with pytest.raises(DatasetError, match="valid: prompt, test, validation, train"):
        load_mbpp(split="dev")
    with pytest.raises(DatasetError, match="valid: mbpp"):
        load_problems("apps")


def _write(tmp_path, lines):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = {"task_id": 601, "text": "t", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"]}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", r"mbpp.jsonl:2: invalid JSON"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "code"}), r"mbpp.jsonl:2: .*lacks field\(s\) code"),
        (json.dumps(dict(GOOD, test_list=[])), r"mbpp.jsonl:2: test_list must be a non-empty list"),
        (json.dumps(dict(GOOD, task_id="x")), r"mbpp.jsonl:2: task_id must be an integer"),
        (json.dumps([1, 2]), r"mbpp.jsonl:2: record must be a JSON object"),
    ],
)
def test_malformed_records_are_named_and_the_rest_loads(tmp_path, caplog, bad, message):
    path = _write(tmp_path, [json.dumps(GOOD), bad, json.dumps(dict(GOOD, task_id=602))])
    with pytest.raises(DatasetError, match=message):
        load_mbpp(path, split=None, strict=True)
    problems = load_mbpp(path, split=None)
    assert [p.problem_id for p in problems] == ["mbpp/601", "mbpp/602"]
    assert any("mbpp.jsonl:2" in r.getMessage() for r in caplog.records)
