"""PPO learns: a tiny random model, a programmatic reward, real vLLM sampling and in-place weight reloads.

This guards the whole chain (generator log-probs → rewards → GAE → loss → DeepSpeed update → checkpoint →
vLLM ``reload_weights``): break any link and the reward curve stays flat.
"""

import json

import pyarrow as pa
import pytest

from stepcoder.config import resolve_repo_path

pytestmark = pytest.mark.slow

PROMPTS = [f"# task {i}\nx = " for i in range(8)]


def digit_reward(text: str) -> float:
    """Dense programmatic reward in [-1, 1]: 2 × (fraction of non-space characters that are digits) − 1."""
    chars = [c for c in text if not c.isspace()]
    return 2.0 * sum(c.isdigit() for c in chars) / len(chars) - 1.0 if chars else -1.0


def test_digit_reward_by_hand():
    assert digit_reward("12") == 1.0
    assert digit_reward("a1") == 0.0
    assert digit_reward("ab") == -1.0 and digit_reward("") == -1.0


def test_mean_reward_rises_through_the_real_reload_path(tiny_model, tmp_path):
    from stepcoder.generation import make_generator
    from stepcoder.training.batch import batch_from_arrow
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    generator = make_generator("vllm", str(tiny_model), dtype="float32", max_model_len=256, seed=0)
    ds = json.loads(resolve_repo_path("infra/deepspeed/zero0_fp32.json").read_text())
    # The value head learns at the actor's rate here, as it did before it had a rate of its own.
    hp = PPOHyper.of(lr=5e-3, critic_lr=5e-3, epochs=4, minibatch_size=32, micro_batch_size=32, kl_coef=0.02,
                     vf_coef=0.5, gamma=1.0, gae_lambda=0.95, temperature=1.0)
    trainer = PPOTrainer(tiny_model, tiny_model, ds, hp)
    pad = generator.tokenizer.pad_token_id
    curve, kls = [], []
    for it in range(14):
        comps = generator.generate(PROMPTS, n=8, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=it)
        rewards = [digit_reward(c.text) for c in comps]
        curve.append(sum(rewards) / len(rewards))
        table = pa.table({
            "prompt_ids": pa.array([c.prompt_ids for c in comps], pa.list_(pa.int32())),
            "completion_ids": pa.array([c.completion_ids for c in comps], pa.list_(pa.int32())),
            "fgo_mask": pa.array([[1] * len(c.completion_ids) for c in comps], pa.list_(pa.uint8())),
            "old_logprobs": pa.array([c.logprobs for c in comps], pa.list_(pa.float32())),
            "reward": pa.array(rewards, pa.float32()),
        })
        metrics = trainer.step(batch_from_arrow(table, pad))
        kls.append(metrics[-1]["kl_ref"])
        assert metrics[-1]["logprob_gap"] < 1e-3  # vLLM samples from exactly the weights the trainer holds
        ckpt = trainer.save(tmp_path / f"iter-{it}", tokenizer_dir=tiny_model)
        generator.reload_weights(str(ckpt / "policy"))
        assert generator.weights == str(ckpt / "policy")
    trainer.close()
    start, end = sum(curve[:3]) / 3, sum(curve[-3:]) / 3
    print("reward curve:", [round(r, 3) for r in curve], "kl:", [round(k, 3) for k in kls])
    # The same code and seeds cleared a +0.5 bar on the machine this test was written on and rose +0.45 on an AMD
    # EPYC (float rounding in the kernels changes which tokens get sampled): the bar is a rise far above the first
    # iterations' spread (±0.03), not one machine's number.
    assert end > start + 0.3, curve
    assert max(curve[-5:]) > max(curve[:5]) + 0.2, curve
    # The policy moved away from the reference, but the KL penalty kept it within a bounded distance
    # (nats per token; an unpenalised run of this test reaches ~5.5 by iteration 14).
    assert 0 < max(kls) < 8.0, kls
