"""Crashes at every point of an iteration, then a re-run: exactly-once iterations (issue 16).

Each crash is a real `stepcoder run` subprocess (tiny model, its own process group) that kills its whole group
with SIGKILL at one point (``STEPCODER_CRASH_AT``, ``stepcoder/faults.py``), as ``kill -9`` of a run would. The
next run must take over the dead run's lock at once, and in the end the store must hold iterations 1 and 2, each
committed once, with no duplicate rollout, nothing staged visible, iteration 2 trained from iteration 1's
checkpoint (never from a torn one), and no process of any crashed run left alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from storage import open_store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "stepcoder")
RUN = "faults"
# (crash point, the iteration it hits, iterations committed after the crash)
SCHEDULE = [
    ("generate", 1, []),
    ("execute", 1, []),
    ("staged", 1, []),
    ("checkpoint", 1, []),
    ("before_commit", 1, []),
    ("after_commit", 1, [1]),
    ("checkpoint", 2, [1]),
    ("staged", 2, [1]),
]


def _run(root: Path, tag: str, crash: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEPCODER_TEST_TAG": tag}
    env.pop("PREFECT_API_URL", None)  # each run starts its own ephemeral API, as a user's first run does
    if crash:
        env["STEPCODER_CRASH_AT"] = crash
    args = [CLI, "run", "-c", "infra/configs/tiny.yaml", "-r", RUN, "-n", "1",
            "--set", f"store={root / 'store'}", "--set", f"checkpoint_dir={root / 'ckpt'}",
            "--set", "data.limit=4", "--set", "ppo.keep_checkpoints=1", "--set", "orchestration.lock_wait_s=0"]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)


def _tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``tag`` (every process a run started, whatever its group)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"STEPCODER_TEST_TAG={tag}".encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def crashed_then_resumed(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    tag = uuid.uuid4().hex
    store = open_store(str(root / "store"))
    outcomes = []
    for point, iteration, committed in SCHEDULE:
        res = _run(root, tag, f"{point}@{iteration}" if point != "checkpoint" else point)
        outcomes.append((point, iteration, res.returncode, store.committed_iterations(RUN), res.stderr[-3000:]))
        assert res.returncode == -signal.SIGKILL, (point, res.returncode, res.stderr[-3000:])
        assert store.committed_iterations(RUN) == committed, (point, iteration)
    final = _run(root, tag, None)
    assert final.returncode == 0, final.stderr[-4000:]
    deadline = time.monotonic() + 30
    while _tagged(tag) and time.monotonic() < deadline:  # orphans notice their parent is gone
        time.sleep(0.5)
    return root, store, _tagged(tag)


def test_every_iteration_is_committed_exactly_once(crashed_then_resumed):
    root, store, _ = crashed_then_resumed
    assert store.committed_iterations(RUN) == [1, 2]
    con = store.connect()
    rows = con.sql("SELECT iteration, count(*), count(DISTINCT rollout_id) FROM rollouts GROUP BY iteration "
                   "ORDER BY iteration").fetchall()
    expected = con.sql("SELECT iteration, num_rollouts, num_rollouts FROM iterations ORDER BY iteration").fetchall()
    assert rows == expected and rows[0][1] > 0, rows  # each iteration's rollouts once: none from a crashed attempt
    ((dups,),) = con.sql("SELECT count(*) - count(DISTINCT rollout_id) FROM rollouts").fetchall()
    assert dups == 0
    tests = con.sql("SELECT count(*) FROM test_results t JOIN rollouts r USING (rollout_id)").fetchall()[0][0]
    assert tests == con.sql("SELECT count(*) FROM test_results").fetchall()[0][0]  # no orphan staged test rows
    assert con.sql("SELECT count(*) FROM iterations").fetchall()[0][0] == 2


def test_iteration_two_trained_from_iteration_one_never_a_torn_checkpoint(crashed_then_resumed):
    root, store, _ = crashed_then_resumed
    con = store.connect()
    assert {r[0] for r in con.sql("SELECT DISTINCT checkpoint_id FROM rollouts WHERE iteration = 2").fetchall()} \
        == {"iter-000001"}
    last_1 = con.sql("SELECT max(step) FROM train_metrics WHERE iteration = 1").fetchall()[0][0]
    first_2 = con.sql("SELECT min(step) FROM train_metrics WHERE iteration = 2").fetchall()[0][0]
    assert first_2 == last_1 + 1  # the optimizer state of iteration 1's checkpoint was loaded
    ckpts = sorted(p.name for p in (root / "ckpt" / RUN).iterdir())
    assert ckpts == ["iter-000002"], ckpts  # pruned to keep_checkpoints=1; no torn .tmp left in place


def test_no_process_of_a_crashed_run_is_left(crashed_then_resumed):
    _, _, left = crashed_then_resumed
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:200] for p in left if Path(f"/proc/{p}").exists()]
