"""The learning benchmark's machinery end to end on the tiny model: two arms, resumable, paired statistics.

It proves the bookkeeping (arms, evaluations with per-problem outcomes, one summary per budget, figures, resume),
not that anything learns: `make bench-learn` is where SmolLM2 is measured.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _bench(tmp_path, model_cache, iterations, *extra, arms="stepcoder,vanilla"):
    cmd = [sys.executable, str(REPO / "bench" / "learn.py"), "--arms", arms, *extra,
           "--iterations", str(iterations), "--eval-every", "1", "--eval-limit", "12",
           "--config", str(REPO / "infra" / "configs" / "tiny.yaml"), "--set", "data.subset=6",
           "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    env = {**__import__("os").environ, "STEPCODER_CACHE": str(model_cache)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout, json.loads((tmp_path / "results" / f"{iterations}-iterations" / "summary.json").read_text())


def test_two_arms_resume_and_compare(tmp_path, tiny_model, model_cache, monkeypatch):
    first, s1 = _bench(tmp_path, model_cache, 1)
    assert set(s1["arms"]) == {"stepcoder", "vanilla"}
    assert "[bench-learn] arm stepcoder: iteration 1/1" in first and "ETA" in first
    # a longer budget continues both arms from iteration 1 instead of starting over
    second, s2 = _bench(tmp_path, model_cache, 2)
    assert "iteration 2/2" in second and "iteration 1/2" not in second
    for arm in ("stepcoder", "vanilla"):
        a = s2["arms"][arm]
        assert a["iterations"] == 2 and [r["iteration"] for r in a["curves"]] == [1, 2]
        assert a["samples"] == 2 * 4 * 2  # iterations × problems × samples (tiny.yaml)
        assert set(a["evals"]) == {"1", "2"} and a["final"]["mbpp-test"]["problems"] == 12
        assert len(a["final"]["mbpp-test"]["passed"]) == 12 and "humaneval" in a["final"]
        assert [r["iteration"] for r in a["curriculum_stages"]] == [1, 2]
    assert s2["arms"]["vanilla"]["overrides"] == ["fgo.enabled=false", "curriculum.enabled=false"]
    splits = set(s2["arms"]["stepcoder"]["final"])
    assert {"mbpp-test", "humaneval"} <= splits
    pairs = {(c["a"], c["b"], c["split"]) for c in s2["comparisons"]}
    assert pairs == {(a, b, split) for split in splits
                     for a, b in [("stepcoder", "base"), ("vanilla", "base"), ("stepcoder", "vanilla")]}
    assert all(0.0 <= c["mcnemar_p"] <= 1.0 for c in s2["comparisons"])
    assert "Between arms" in second and "stepcoder − vanilla" in second
    # each iteration's own checkpoint is found (a finished budget's missing split is evaluated on its weights)
    sys.path.insert(0, str(REPO / "bench"))
    import learn

    monkeypatch.setattr(learn, "CONFIG", REPO / "infra" / "configs" / "tiny.yaml")
    monkeypatch.setattr(learn, "EXTRA", ["data.subset=6"])
    cfg = learn._config("vanilla", tmp_path / "work")
    assert learn.policy_at(cfg, 1).endswith("iter-000001/policy")
    assert learn.policy_at(cfg, 2).endswith("iter-000002/policy") and learn.policy_at(cfg, 3) is None
    assert (tmp_path / "results" / "2-iterations" / "curves.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "2-iterations" / "curriculum.png").exists()
    # each budget keeps its own results: the longer one did not overwrite the shorter one's
    kept = json.loads((tmp_path / "results" / "1-iterations" / "summary.json").read_text())
    assert kept == s1 and kept["arms"]["stepcoder"]["iterations"] == 1
    # a finished budget is not re-run
    third, _ = _bench(tmp_path, model_cache, 2)
    assert "[bench-learn] arm " not in third
    # a second replicate of one arm: only the new seed runs, beside the finished arms, with its own seed
    fourth, s4 = _bench(tmp_path, model_cache, 2, "--seeds", "2", arms="vanilla")
    assert "arm vanilla-seed1: iteration 2/2" in fourth and "arm vanilla: iteration" not in fourth
    assert set(s4["arms"]) == {"stepcoder", "vanilla", "vanilla-seed1"}
    rep = s4["arms"]["vanilla-seed1"]
    assert (rep["arm"], rep["seed"], rep["config"]["generation"]["seed"]) == ("vanilla", 1, 1)
    assert s4["arms"]["vanilla"]["config"]["generation"]["seed"] == 0
    assert s4["replicates"]["vanilla"]["runs"] == ["vanilla", "vanilla-seed1"]
    assert "2 replicates (seeds)" in fourth
