"""Single-process DeepSpeed setup without a launcher (CPU + gloo here; NCCL under `deepspeed` on GPUs).

DeepSpeed reads rank/world from the environment and, without RANK/WORLD_SIZE, looks for mpi4py and fails,
so a lone process fills in a world of one. Under the `deepspeed` launcher these are already set.
"""

from __future__ import annotations

import os
import socket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> str:
    """Initialise torch.distributed once per process; returns the device string ("cpu" or "cuda:N")."""
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    import deepspeed

    if not on_gpu and os.environ["WORLD_SIZE"] == "1":
        # DeepSpeed compiles a shared-memory all-reduce op at start-up (15-60 s of g++), useless for one
        # process; marking it incompatible makes DeepSpeed fall back to plain torch.distributed.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # Idempotent; also wraps a process group that vLLM's in-process engine may have created already.
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    if on_gpu:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"
