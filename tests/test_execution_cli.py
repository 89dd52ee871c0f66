"""`stepcoder exec`: candidates JSONL in, results JSONL out (input order), through the real sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows.cli_exec import exec_command
from stepcoder.rewards import DEFAULT_REWARDS

HERE = Path(__file__).resolve().parent
MBPP = HERE.parent / "data" / "mbpp" / "mbpp.jsonl"

app = typer.Typer()
app.command("exec")(exec_command)


@app.callback()
def _group() -> None:  # a group, so the command is invoked by name as in `stepcoder exec`
    pass


def mbpp_code(task_id: int) -> str:
    for line in MBPP.open():
        d = json.loads(line)
        if d["task_id"] == task_id:
            return d["code"].replace("\r\n", "\n")
    raise KeyError(task_id)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, ["exec", *args], catch_exceptions=False)


def test_exec_mbpp(tmp_path):
    rows = [
        {"problem_id": "mbpp/610", "code": mbpp_code(610)},
        {"problem_id": 610, "code": mbpp_code(610).replace("L-1", "L")},  # off by one
        {"problem_id": "611", "code": "def max_of_nth(:\n"},
        {"problem_id": "mbpp/612", "code": "def merge(lst):\n    while True:\n        pass\n"},
        {"problem_id": "mbpp/610", "code": mbpp_code(610)},  # a repeat: cached
        {"problem_id": "mbpp/613", "code": "def maximum_value(x):\n    raise KeyError(x)\n"},
    ]
    out = tmp_path / "out" / "results.jsonl"
    res = invoke("--dataset", "mbpp", "--candidates", str(write_jsonl(tmp_path / "c.jsonl", rows)),
                 "--out", str(out), "--workers", "2", "--timeout", "0.5", "--budget", "2")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["problem_id"] for x in lines] == [r["problem_id"] for r in rows]  # input order
    assert [x["outcome"] for x in lines] == ["pass", "fail", "compile_error", "timeout", "pass", "runtime_error"]
    assert [x["reward"] for x in lines] == [DEFAULT_REWARDS[x["outcome"]] for x in lines]
    assert [x["reward"] for x in lines[:4]] == [1.0, -0.3, -1.0, -0.6]
    first = lines[0]
    assert {"problem_id", "outcome", "reward", "tests", "executed_lines", "runner"} <= set(first)
    assert [set(t) >= {"status", "time_ms"} for t in first["tests"]] == [True] * 3
    assert first["executed_lines"] == [1, 2] and first["runner"]["backend"] == "embedded"
    assert lines[4]["cache_hit"] and not lines[0]["cache_hit"]
    assert "6 programs" in res.output and "missing protections" in res.output


def test_exec_reward_override_and_unknown_ids(tmp_path):
    cands = write_jsonl(tmp_path / "c.jsonl", [{"problem_id": 610, "code": "x = ("}])
    out = tmp_path / "r.jsonl"
    assert invoke("--dataset", "mbpp", "--candidates", str(cands), "--out", str(out),
                  "--reward", "compile_error=-2").exit_code == 0
    assert json.loads(out.read_text())["reward"] == -2.0
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"problem_id": "mbpp/999999", "code": "pass"}])
    res = invoke("--dataset", "mbpp", "--candidates", str(bad), "--out", str(tmp_path / "x.jsonl"))
    assert res.exit_code == 2 and "999999" in res.output and not (tmp_path / "x.jsonl").exists()


def test_exec_apps_folders(tmp_path):
    from stepcoder.datasets import load_problems

    apps = HERE.parent / "data" / "apps-samples"
    problems = load_problems("apps", str(apps), split=None)
    solutions = {p: json.loads((apps / p / "solutions.json").read_text())[0] for p in ("0001", "2404", "4184")}
    rows = [{"problem_id": f"apps/{p}", "code": code} for p, code in solutions.items()]
    out = tmp_path / "r.jsonl"
    res = invoke("--dataset", f"apps:{apps}", "--candidates", str(write_jsonl(tmp_path / "c.jsonl", rows)),
                 "--out", str(out))
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["outcome"] for x in out.read_text().splitlines()] == ["pass"] * 3  # 2404 needs the header
    assert len(problems) == 5
