"""Checkpoints on a local dir and on S3 (SeaweedFS): atomic publish, download into a cache, lean keep-last-k,
and a run that continues on a fresh machine from nothing but the object store."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from s3_server import s3_server  # noqa: F401  (session fixture)

from storage.checkpoints import COMPLETE, Checkpoints


def _fake_checkpoint(path: Path, tag: str) -> Path:
    """The layout the trainer writes (stepcoder/training/layout.py), with small files."""
    (path / "policy").mkdir(parents=True)
    (path / "policy" / "model.safetensors").write_text(f"weights {tag}")
    (path / "deepspeed" / "latest").mkdir(parents=True)
    (path / "deepspeed" / "latest" / "mp_rank_00_model_states.pt").write_text(f"optimizer {tag}")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": int(tag)}))
    return path


@pytest.fixture
def s3_env(s3_server, monkeypatch):  # noqa: F811
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


def test_local_keep_last_k_strips_resume_state_from_all_but_the_newest(tmp_path):
    ck = Checkpoints(str(tmp_path / "ckpt"), "r")
    for it in (1, 2, 3):
        local = _fake_checkpoint(ck.staging_dir(it), str(it))
        assert ck.publish(local, it) == str(tmp_path / "ckpt" / "r" / f"iter-{it:06d}")
    (tmp_path / "ckpt" / "r" / "iter-000004.tmp").mkdir()  # a save that crashed: not a checkpoint
    assert ck.published() == [1, 2, 3]
    ck.prune(2, resume_only=("deepspeed",))
    root = tmp_path / "ckpt" / "r"
    assert not (root / "iter-000001").exists()
    assert (root / "iter-000002" / "policy" / "model.safetensors").exists()
    assert not (root / "iter-000002" / "deepspeed").exists()  # an older policy: evaluable, not resumable
    assert (root / "iter-000003" / "deepspeed" / "latest").exists()  # the newest: resumable
    assert ck.local_path(ck.uri(3)) == root / "iter-000003"
    with pytest.raises(ValueError, match="not this run's checkpoint dir"):
        ck.publish(tmp_path / "elsewhere", 5)


def test_s3_publish_is_atomic_download_is_cached_and_prune_is_lean(s3_env, tmp_path):
    import s3fs

    url = s3_env.url(f"ckpt-{uuid.uuid4().hex[:8]}")
    writer = Checkpoints(url, "r", cache_dir=tmp_path / "writer-cache")
    for it in (1, 2, 3):
        local = _fake_checkpoint(writer.staging_dir(it), str(it))
        assert writer.publish(local, it) == f"{url}/r/iter-{it:06d}"
    fs = s3fs.S3FileSystem(**s3_env.storage_options, skip_instance_cache=True, use_listings_cache=False)
    bucket_path = url.removeprefix("s3://")
    # A torn upload (no COMPLETE marker) is not a checkpoint and cannot be loaded.
    fs.pipe_file(f"{bucket_path}/r/iter-000004/policy/model.safetensors", b"half")
    reader = Checkpoints(url, "r", cache_dir=tmp_path / "reader-cache")
    assert reader.published() == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="incomplete or missing"):
        reader.local_path(f"{url}/r/iter-000004")

    got = reader.local_path(f"{url}/r/iter-000003")
    assert got == tmp_path / "reader-cache" / "r" / "iter-000003"
    assert (got / "policy" / "model.safetensors").read_text() == "weights 3"
    assert json.loads((got / "trainer_state.json").read_text()) == {"global_step": 3}
    assert (got / COMPLETE).exists()
    (got / "policy" / "model.safetensors").write_text("cached")  # a second call reuses the cache
    assert (reader.local_path(f"{url}/r/iter-000003") / "policy" / "model.safetensors").read_text() == "cached"

    writer.prune(2, resume_only=("deepspeed",))
    # Objects, not listed prefixes: SeaweedFS keeps an emptied directory as an entry, real S3 does not.
    names = sorted({p.split("/r/", 1)[1].split("/")[0] for p in fs.find(f"{bucket_path}/r")})
    assert names == ["iter-000002", "iter-000003", "iter-000004"]  # iteration 4 was never published: newer
    assert not fs.exists(f"{bucket_path}/r/iter-000002/deepspeed/latest/mp_rank_00_model_states.pt")
    assert fs.exists(f"{bucket_path}/r/iter-000002/policy/model.safetensors")
    assert fs.exists(f"{bucket_path}/r/iter-000003/deepspeed/latest/mp_rank_00_model_states.pt")
    assert sorted(p.name for p in (tmp_path / "writer-cache" / "r").iterdir()) == ["iter-000003"]
    assert writer.size(f"{url}/r/iter-000003") == len("weights 3") + len("optimizer 3") + len('{"global_step": 3}')


@pytest.mark.slow
def test_a_fresh_working_directory_continues_from_the_s3_checkpoint(s3_env, tiny_model, prefect_server, tmp_path,
                                                                   monkeypatch):
    """Iteration 1 runs in one working dir; iteration 2 in another with no local files at all (the first is
    deleted): it resumes the optimizer state and the curriculum from S3 alone."""
    from flows.stepcoder_flow import stepcoder
    from storage import open_store

    prefix = s3_env.url(f"fresh-{uuid.uuid4().hex[:8]}")
    config = str(Path("infra/configs/tiny.yaml").resolve())
    overrides = [f"store={prefix}/store", f"checkpoint_dir={prefix}/ckpt", "checkpoint_cache=.cache",
                 "data.limit=4", "curriculum.advance_threshold=0", "ppo.keep_checkpoints=2", "eval.every=0"]
    first_dir, second_dir = tmp_path / "machine-1", tmp_path / "machine-2"
    first_dir.mkdir(), second_dir.mkdir()
    monkeypatch.chdir(first_dir)
    stepcoder(run_name="fresh", config_path=config, overrides=overrides)
    shutil.rmtree(first_dir)  # the first container is gone, and its cache with it
    monkeypatch.chdir(second_dir)
    [second] = stepcoder(run_name="fresh", config_path=config, overrides=overrides)
    assert second["iteration"] == 2

    store = open_store(f"{prefix}/store")
    assert store.committed_iterations("fresh") == [1, 2]
    rollouts = store.read("rollouts", run="fresh", iteration=2).to_pylist()
    assert {r["checkpoint_id"] for r in rollouts} == {"iter-000001"}  # generated by iteration 1's policy
    cur = {(r["iteration"], r["problem_id"]): r for r in store.read("curriculum", run="fresh").to_pylist()}
    for (it, pid), row in cur.items():
        if it == 2:
            assert row["stage_before"] == cur[(1, pid)]["stage_after"]  # the curriculum carried over
    [uri] = [r["checkpoint_uri"] for r in store.read("iterations", run="fresh", iteration=2).to_pylist()]
    assert uri == f"{prefix}/ckpt/fresh/iter-000002"
    ck = Checkpoints(f"{prefix}/ckpt", "fresh", cache_dir=tmp_path / "inspect")
    state = json.loads((ck.local_path(uri) / "trainer_state.json").read_text())
    metrics = store.read("train_metrics", run="fresh").to_pylist()
    steps = {it: [m["step"] for m in metrics if m["iteration"] == it] for it in (1, 2)}
    assert min(steps[2]) == max(steps[1]) + 1  # the optimizer's step count went on from iteration 1's
    assert state["global_step"] == max(steps[2])
    assert ck.published() == [1, 2]
    assert not (ck.local_path(f"{prefix}/ckpt/fresh/iter-000001") / "deepspeed").exists()  # lean history
    assert (ck.local_path(uri) / "deepspeed").exists()
