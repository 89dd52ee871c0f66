"""The DeepSpeed PPO step on the tiny model: batch layout, a real update, checkpoint save and exact resume."""

import json

import pyarrow as pa
import pytest
import torch
from safetensors import safe_open

from stepcoder.config import resolve_repo_path

DS_CONFIG = json.loads(resolve_repo_path("infra/deepspeed/zero0_fp32.json").read_text())


def _table(rows):
    return pa.table({
        "prompt_ids": pa.array([r[0] for r in rows], pa.list_(pa.int32())),
        "completion_ids": pa.array([r[1] for r in rows], pa.list_(pa.int32())),
        "fgo_mask": pa.array([r[2] for r in rows], pa.list_(pa.uint8())),
        "old_logprobs": pa.array([[-1.0] * len(r[1]) for r in rows], pa.list_(pa.float32())),
        "reward": pa.array([r[3] for r in rows], pa.float32()),
    })


def test_batch_layout_puts_completion_tokens_on_the_action_axis():
    from stepcoder.training.batch import batch_from_arrow

    b = batch_from_arrow(_table([([5, 6], [7, 8, 9], [1, 0, 1], 1.0), ([5], [7], [1], -0.3)]), pad_token_id=0)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 7, 0, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    # action t scores token t+1: completion of row 0 = tokens at positions 2..4 → actions 1..3
    assert b.action_mask.tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]]
    assert b.fgo_mask.tolist() == [[0, 1, 0, 1], [1, 0, 0, 0]]
    assert b.gen_logprobs.tolist() == [[0, -1, -1, -1], [-1, 0, 0, 0]]
    assert b.scores.tolist() == pytest.approx([1.0, -0.3])
    short = b.select(slice(1, 2))
    assert short.input_ids.tolist() == [[5, 7]] and short.action_mask.tolist() == [[1]]


def test_batch_rejects_misaligned_masks():
    from stepcoder.training.batch import batch_from_arrow

    with pytest.raises(ValueError, match="one entry per completion token"):
        batch_from_arrow(_table([([5], [7, 8], [1], 1.0)]), pad_token_id=0)


@pytest.fixture(scope="module")
def batch(tiny_model):
    from stepcoder.training.batch import batch_from_arrow

    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(4):
        prompt = torch.randint(5, 500, (6 + i,), generator=g).tolist()
        comp = torch.randint(5, 500, (5 + 2 * i,), generator=g).tolist()
        rows.append((prompt, comp, [1] * (len(comp) - 1) + [1], 1.0 if i % 2 else -0.6))
    return batch_from_arrow(_table(rows), pad_token_id=1)


def test_ppo_step_updates_policy_and_resumes_exactly(tiny_model, batch, tmp_path):
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    hp = PPOHyper.of(lr=1e-3, epochs=2, minibatch_size=2, micro_batch_size=1)
    trainer = PPOTrainer(tiny_model, tiny_model, DS_CONFIG, hp)
    before = {k: v.clone() for k, v in trainer.engine.module.lm.state_dict().items()}
    metrics = trainer.step(batch)
    assert len(metrics) == 4  # 2 epochs × 2 minibatches
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    for m in metrics:
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm", "kl_ref"):
            assert torch.isfinite(torch.tensor(m[key])), key
    assert metrics[0]["grad_norm"] > 0
    after = trainer.engine.module.lm.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # The policy is saved in the serving dtype (bf16: what vLLM loads); resuming takes DeepSpeed's fp32 weights.
    ckpt = trainer.save(tmp_path / "iter-1", tokenizer_dir=tiny_model, policy_dtype=torch.bfloat16)
    assert (ckpt / "policy" / "model.safetensors").exists() and (ckpt / "policy" / "tokenizer.json").exists()
    assert not (tmp_path / "iter-1.tmp").exists()
    with safe_open(ckpt / "policy" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
        saved = {k: f.get_tensor(k) for k in f.keys()}
    assert json.loads((ckpt / "policy" / "config.json").read_text())["dtype"] == "bfloat16"
    live = trainer.engine.module.lm.state_dict()
    assert all(torch.equal(saved[k], live[k].to(torch.bfloat16)) for k in saved)
    assert all(live[k].dtype == torch.float32 for k in saved)  # saving did not cast the module being trained
    next_metrics = trainer.step(batch) + trainer.step(batch)  # steps k+1.. and k+2.. uninterrupted
    trainer.close()

    # Resume from the checkpoint: the same next step gives the same numbers.
    resumed = PPOTrainer(ckpt / "policy", tiny_model, DS_CONFIG, hp, resume_dir=ckpt)
    assert resumed.global_step == 4
    again = resumed.step(batch) + resumed.step(batch)
    resumed.close()
    assert len(again) == len(next_metrics) == 8
    for a, b in zip(next_metrics, again):
        assert a["step"] == b["step"]
        assert a["policy_loss"] == pytest.approx(b["policy_loss"], abs=1e-6)
        assert a["value_loss"] == pytest.approx(b["value_loss"], abs=1e-6)


def _run(tiny_model, batch, engine, ds_file, steps=2, **kw):
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    ds = json.loads(resolve_repo_path(ds_file).read_text())
    hp = PPOHyper.of(lr=1e-3, epochs=1, minibatch_size=2, micro_batch_size=1, engine=engine, **kw)
    trainer = PPOTrainer(tiny_model, tiny_model, ds, hp)
    losses = []
    for _ in range(steps):
        losses += [(m["policy_loss"], m["value_loss"]) for m in trainer.step(batch)]
    params = {k: v.detach().clone() for k, v in trainer.engine.module.state_dict().items()}
    trainer.close()
    return losses, params


@pytest.mark.parametrize("ds_file", ["infra/deepspeed/zero0_fp32.json", "infra/deepspeed/zero2_fp32.json"])
def test_deepspeed_matches_a_plain_torch_loop(tiny_model, batch, ds_file):
    ds_losses, ds_params = _run(tiny_model, batch, "deepspeed", ds_file)
    pt_losses, pt_params = _run(tiny_model, batch, "torch", ds_file)
    assert len(ds_losses) == len(pt_losses) == 4
    for (a, b), (c, d) in zip(ds_losses, pt_losses):
        assert a == pytest.approx(c, abs=1e-5) and b == pytest.approx(d, abs=1e-5)
    for name, value in pt_params.items():
        torch.testing.assert_close(ds_params[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_adaptive_kl_and_separate_critic_survive_a_checkpoint(tiny_model, batch, tmp_path):
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    hp = PPOHyper.of(lr=1e-3, minibatch_size=2, micro_batch_size=2, kl_controller="adaptive", kl_target=0.01,
                  kl_horizon=100, critic="separate")
    trainer = PPOTrainer(tiny_model, tiny_model, DS_CONFIG, hp)
    trainer.step(batch)
    first = trainer.step(batch)  # the second step sees a KL ≠ 0, so β moves
    beta = trainer.kl_ctl.value
    assert beta != pytest.approx(0.05) and first[0]["kl_coef"] == pytest.approx(trainer.kl_ctl.value, rel=0.5)
    ckpt = trainer.save(tmp_path / "c", tokenizer_dir=tiny_model)
    assert (ckpt / "critic" / "model.safetensors").exists()
    trainer.close()
    resumed = PPOTrainer(ckpt / "policy", tiny_model, DS_CONFIG, hp, resume_dir=ckpt)
    assert resumed.kl_ctl.value == pytest.approx(beta)
    assert resumed.engine.module.critic_lm is not None
    resumed.close()


def test_unknown_options_are_named():
    from pydantic import ValidationError

    from stepcoder.training.trainer import PPOHyper

    with pytest.raises(ValidationError, match="old_logprobs"):
        PPOHyper.of(old_logprobs="vllm")
    with pytest.raises(ValidationError, match="engine"):
        PPOHyper.of(engine="jax")


def test_bf16_step_matches_fp32_before_the_first_update(tiny_model, batch):
    """The bf16 config computes the model in bf16 (log-softmax and losses in fp32): on a fixed batch, its
    log-probs and the first minibatch's losses and gradient norm stay close to the fp32 run's."""
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    runs = {}
    for name in ("zero0_fp32", "zero0_bf16"):
        ds = json.loads(resolve_repo_path(f"infra/deepspeed/{name}.json").read_text())
        trainer = PPOTrainer(tiny_model, tiny_model, ds, PPOHyper.of(lr=1e-3, minibatch_size=2, micro_batch_size=1))
        exp = trainer._experience(batch)
        runs[name] = exp, trainer.step(batch)[0]
        trainer.close()
    (exp32, m32), (exp16, m16) = runs["zero0_fp32"], runs["zero0_bf16"]
    mask = batch.action_mask.bool()
    assert (exp32.old_logprobs - exp16.old_logprobs)[mask].abs().max() < 0.02  # |log p| ≈ 7.6 here
    assert m16["policy_loss"] == pytest.approx(m32["policy_loss"], abs=1e-3)
    assert m16["value_loss"] == pytest.approx(m32["value_loss"], rel=1e-2)
    assert m16["entropy"] == pytest.approx(m32["entropy"], rel=1e-3)
    assert m16["grad_norm"] == pytest.approx(m32["grad_norm"], rel=2e-2)


@pytest.fixture(scope="module")
def uneven_batch(tiny_model):
    """Rows whose counted-token numbers differ a lot (1 to 24 FGO tokens), so a per-micro-batch mean would
    weigh a 1-token row as much as a 24-token one."""
    from stepcoder.training.batch import batch_from_arrow

    g = torch.Generator().manual_seed(1)
    rows = []
    for i, (n_comp, n_fgo) in enumerate([(3, 1), (24, 24), (10, 4), (16, 12)]):
        prompt = torch.randint(5, 500, (5 + i,), generator=g).tolist()
        comp = torch.randint(5, 500, (n_comp,), generator=g).tolist()
        rows.append((prompt, comp, [0] * (n_comp - n_fgo) + [1] * n_fgo, [1.0, -0.3, -0.6, 1.0][i]))
    return batch_from_arrow(_table(rows), pad_token_id=1)


def _minibatch_gradient(tiny_model, batch, micro, agg, engine="torch"):
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    hp = PPOHyper.of(lr=1e-3, critic_lr=1e-3, epochs=1, minibatch_size=4, micro_batch_size=micro, loss_agg=agg,
                     engine=engine, vf_coef=0.5, ent_coef=0.01)
    trainer = PPOTrainer(tiny_model, tiny_model, DS_CONFIG, hp)
    grads = {}
    optimizer = trainer.engine.optimizer
    original = optimizer.step

    def record(*a, **k):  # the accumulated gradient at the optimizer step, before it is applied
        for name, p in trainer.engine.module.named_parameters():
            if p.grad is not None:
                grads[name] = p.grad.detach().clone()
        return original(*a, **k)

    optimizer.step = record
    (metrics,) = trainer.step(batch)
    trainer.close()
    return grads, metrics


@pytest.mark.parametrize("agg", ["token", "sequence"])
def test_minibatch_gradient_does_not_depend_on_the_micro_batch_split(tiny_model, uneven_batch, agg):
    """Regression: the token mean used to be taken per micro-batch and then averaged, so splitting the same
    minibatch differently changed the gradient."""
    whole, m4 = _minibatch_gradient(tiny_model, uneven_batch, 4, agg)
    for micro in (1, 2):
        split, m = _minibatch_gradient(tiny_model, uneven_batch, micro, agg)
        assert set(split) == set(whole)
        for name in whole:
            torch.testing.assert_close(split[name], whole[name], atol=1e-6, rtol=1e-4, msg=name)
        assert m["policy_loss"] == pytest.approx(m4["policy_loss"], abs=1e-6)
        assert m["value_loss"] == pytest.approx(m4["value_loss"], abs=1e-6)


def test_critic_has_its_own_learning_rate(tiny_model, batch):
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    hp = PPOHyper.of(lr=1e-6, critic_lr=1e-2, minibatch_size=2, micro_batch_size=2)
    trainer = PPOTrainer(tiny_model, tiny_model, DS_CONFIG, hp)
    groups = trainer.engine.optimizer.param_groups
    head = {id(p) for p in trainer.engine.module.value_head.parameters()}
    assert [g["lr"] for g in groups] == [1e-6, 1e-2]
    assert {id(p) for p in groups[1]["params"]} == head and not head & {id(p) for p in groups[0]["params"]}
    head_before = trainer.engine.module.value_head.weight.detach().clone()
    lm_before = trainer.engine.module.lm.get_input_embeddings().weight.detach().clone()
    metrics = trainer.step(batch)
    head_moved = (trainer.engine.module.value_head.weight - head_before).abs().max().item()
    lm_moved = (trainer.engine.module.lm.get_input_embeddings().weight - lm_before).abs().max().item()
    trainer.close()
    assert head_moved > 100 * lm_moved > 0  # Adam's first steps move each weight by about its lr
    assert metrics[0]["critic_lr"] == 1e-2 and metrics[0]["lr"] == 1e-6


def test_rows_are_ordered_longest_first_and_ties_keep_their_order():
    from stepcoder.training.batch import by_length

    lengths = torch.tensor([3, 9, 5, 9, 1])
    assert by_length(torch.tensor([0, 1, 2, 3, 4]), lengths).tolist() == [1, 3, 2, 0, 4]
    assert by_length(torch.tensor([4, 2, 0]), lengths).tolist() == [2, 0, 4]


def test_experience_scored_in_length_sorted_micro_batches_comes_back_in_row_order(tiny_model, uneven_batch):
    """Scoring sorts rows by length to pad less; every per-token tensor must still line up with its own row."""
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    exps = {}
    for micro in (1, 2):
        trainer = PPOTrainer(tiny_model, tiny_model, DS_CONFIG,
                             PPOHyper.of(minibatch_size=4, micro_batch_size=micro, engine="torch"))
        exps[micro] = trainer._experience(uneven_batch)
        trainer.close()
    mask = uneven_batch.action_mask.bool()
    for name in ("old_logprobs", "old_values", "ref_logprobs", "advantages", "returns"):
        one, two = getattr(exps[1], name), getattr(exps[2], name)
        torch.testing.assert_close(one[mask], two[mask], atol=1e-5, rtol=1e-4, msg=name)
    # and row order was really changed by the sort (row 1 is the longest)
    from stepcoder.training.batch import by_length
    assert by_length(torch.arange(4), uneven_batch.attention_mask.sum(dim=1)).tolist()[0] == 1
