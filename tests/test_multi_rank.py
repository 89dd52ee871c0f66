"""The PPO update as a torchrun job of several DeepSpeed ranks on CPU (gloo): 2 ranks train the same model as 1
rank on the same global batch (ZeRO-0 and ZeRO-3), a failing rank fails the task with its own error, and a
flow iteration with ppo.num_processes=2 commits with train_world_size = 2."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from stepcoder.config import load_config
from storage import open_store

pytestmark = pytest.mark.slow

ROWS = 10  # not a multiple of the minibatch (4) nor of the ranks' share of it: short minibatches, padding passes
# fp32 on CPU; the 2-rank run sums the same per-row gradients in another order (all-reduce, other micro-batch
# padding), so the results agree to float rounding, not bit for bit; Adam turns rounding-level gradient
# differences of rarely used embedding rows into ~3e-6 weight differences.
ATOL_LOSS, ATOL_PARAM = 1e-5, 1e-5  # losses; weights (after 6 Adam steps of lr 1e-3, moved by ~6e-3)


def _stage(store_url: str) -> None:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(ROWS):
        prompt = torch.randint(5, 500, (4 + i % 3,), generator=g).tolist()
        comp = torch.randint(5, 500, (3 + i % 5,), generator=g).tolist()
        mask = [int(x) for x in (torch.rand(len(comp), generator=g) > 0.3).tolist()]
        rows.append({"rollout_id": f"r{i}", "problem_id": f"p{i % 4}", "prompt_ids": prompt, "completion_ids": comp,
                     "fgo_mask": mask, "old_logprobs": [-1.0] * len(comp),
                     "reward": [1.0, -0.3, -0.6, -1.0][i % 4]})
    open_store(store_url).stage("mr", 1, "rollouts", pa.Table.from_pylist(rows))


def _cfg(root, ds: str, **ppo):
    sets = [f"store={root / 'store'}", f"checkpoint_dir={root / 'ckpt'}", "model.dtype=float32",
            "ppo.minibatch_size=4", "ppo.micro_batch_size=1", "ppo.epochs=2", "ppo.lr=1e-3", "ppo.critic_lr=1e-3",
            f"ppo.deepspeed_config={ds}", *(f"ppo.{k}={v}" for k, v in ppo.items())]
    return load_config("infra/configs/tiny.yaml", sets, "mr")


def _update(root, tiny_model, name: str, ds: str, **ppo):
    from tasks.train import launch

    cfg = _cfg(root, ds, **ppo)
    return launch(cfg, 1, str(tiny_model), str(tiny_model), None, str(root / name))


@pytest.mark.parametrize("ds", ["infra/deepspeed/zero0_fp32.json", "infra/deepspeed/zero3_fp32.json"])
def test_two_ranks_train_like_one_on_the_same_global_batch(tiny_model, tmp_path, ds):
    _stage(str(tmp_path / "store"))
    one, ckpt_one, world_one = _update(tmp_path, tiny_model, "one", ds, num_processes=1, own_process=True)
    two, ckpt_two, world_two = _update(tmp_path, tiny_model, "two", ds, num_processes=2)
    assert (world_one, world_two) == (1, 2)
    assert len(one) == len(two) == 2 * 3  # 2 epochs × ceil(10 / 4) minibatches
    for a, b in zip(one, two):
        assert a["step"] == b["step"]
        for key in ("policy_loss", "value_loss", "kl_ref", "explained_variance", "masked_fraction"):
            assert a[key] == pytest.approx(b[key], abs=ATOL_LOSS), (a["step"], key)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    p1 = load_file(f"{ckpt_one}/policy/model.safetensors")
    p2 = load_file(f"{ckpt_two}/policy/model.safetensors")
    base = load_file(f"{tiny_model}/model.safetensors")
    assert p1.keys() == p2.keys()
    moved = max(float((p1[k] - base[k]).abs().max()) for k in p1 if k in base)
    assert moved > 100 * ATOL_PARAM  # the update changed the weights far more than the tolerance
    for k in p1:
        assert torch.allclose(p1[k], p2[k], atol=ATOL_PARAM, rtol=0), (k, float((p1[k] - p2[k]).abs().max()))

    # The 2-rank checkpoint resumes: on 1 rank for ZeRO-0 (the optimizer state is whole), not for ZeRO-3 (one
    # optimizer shard per rank), which must say so instead of failing inside DeepSpeed.
    from tasks.train import launch

    cfg = _cfg(tmp_path, ds, num_processes=1, own_process=True)
    args = (cfg, 1, str(tiny_model), f"{ckpt_two}/policy", ckpt_two, str(tmp_path / "resumed"))
    if "zero3" in ds:
        with pytest.raises(RuntimeError, match=r"trained on 2 rank\(s\) with ZeRO-3, this update has 1"):
            launch(*args)
    else:
        resumed, _, _ = launch(*args)
        assert [m["step"] for m in resumed] == list(range(7, 13))  # the step count went on from 6


def test_a_failing_rank_fails_the_update_with_its_own_error(tiny_model, tmp_path, monkeypatch):
    _stage(str(tmp_path / "store"))
    monkeypatch.setenv("STEPCODER_FAIL_AT", "train_rank@1")
    with pytest.raises(RuntimeError) as info:
        _update(tmp_path, tiny_model, "failed", "infra/deepspeed/zero0_fp32.json", num_processes=2)
    message = str(info.value)
    assert "2 ranks" in message and "injected failure at train_rank on rank 1" in message
    assert "rank" in message and ": 1" in message  # torchrun's root cause names the failed rank
    assert not (tmp_path / "failed").exists() and not (tmp_path / "failed.tmp").exists()


def test_a_flow_iteration_on_two_ranks_commits_its_world_size(tiny_model, prefect_server, tmp_path):
    from flows.stepcoder_flow import stepcoder
    from storage import connect, run_sql

    overrides = [f"store={tmp_path / 'store'}", f"checkpoint_dir={tmp_path / 'ckpt'}", "data.limit=4",
                 "ppo.num_processes=2"]
    [summary] = stepcoder(run_name="ranks", config_path="infra/configs/tiny.yaml", overrides=overrides)
    assert summary["iteration"] == 1
    rows = run_sql(connect(str(tmp_path / "store")),
                   "SELECT iteration, train_world_size FROM iterations WHERE run = 'ranks'").to_pylist()
    assert rows == [{"iteration": 1, "train_world_size": 2}]
