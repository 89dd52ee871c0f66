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
    table = pa.table({
        "prompt_ids": pa.array([c.prompt_ids for c in comps], pa.list_(pa.int32())),
        "completion_ids": pa.array([c.completion_ids for c in comps], pa.list_(pa.int32())),
        "fgo_mask": pa.array([[1] * len(c.completion_ids) for c in comps], pa.list_(pa.uint8())),
        "old_logprobs": pa.array([c.logprobs for c in comps], pa.list_(pa.float32())),
        "reward": pa.array([0.0] * len(comps), pa.float32()),
    })
    ds = json.loads(resolve_repo_path("infra/deepspeed/zero0_fp32.json").read_text())
    trainer = PPOTrainer(tiny_model, tiny_model, ds, PPOHyper.of(temperature=temperature, micro_batch_size=4,
                                                               minibatch_size=4))
    exp = trainer._experience(batch_from_arrow(table, generator.tokenizer.pad_token_id))
    trainer.close()
    # float32 on both sides: the generator's "processed" log-probs are log softmax(logits / T) as recomputed.
    assert exp.logprob_gap < 1e-3
