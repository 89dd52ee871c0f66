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


_WORLD_SEEN = None  # the torch.distributed WORLD group DeepSpeed was last initialised against


def _forget_stale_groups(deepspeed) -> None:
    """Drop DeepSpeed's cached backend and process groups when the WORLD group they were built on is gone.

    vLLM's in-process engine creates a torch.distributed world of its own and destroys it on shutdown; a later
    engine creates a new one. DeepSpeed caches its backend (``deepspeed.comm.comm.cdb``) and its groups
    (module globals of ``deepspeed.utils.groups``) for the life of the process, and its next ``initialize``
    then fails with "Group ... is not registered". Resetting the caches makes DeepSpeed rebuild them.
    """
    global _WORLD_SEEN
    import torch.distributed as dist
    from deepspeed.comm import comm as ds_comm
    from deepspeed.utils import groups as ds_groups

    world = dist.group.WORLD if dist.is_initialized() else None
    if _WORLD_SEEN is not None and world is _WORLD_SEEN:
        return
    if ds_comm.cdb is not None and (world is None or _WORLD_SEEN is not None):
        ds_comm.cdb = None
        for name, value in list(vars(ds_groups).items()):
            if name.startswith("_") and name.endswith(("_GROUP", "_GROUP_RANKS")):
                setattr(ds_groups, name, {} if isinstance(value, dict) else None)
    _WORLD_SEEN = world


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

    if not on_gpu:
        # DeepSpeed compiles a shared-memory all-reduce op at start-up (15-60 s of g++ in every fresh process),
        # useless for one process and not worth it for the few CPU ranks we run (tests, CPU development);
        # marking it incompatible makes DeepSpeed fall back to plain torch.distributed on gloo.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    _forget_stale_groups(deepspeed)
    # Idempotent; also wraps a process group that vLLM's in-process engine may have created already.
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    global _WORLD_SEEN
    import torch.distributed as dist

    _WORLD_SEEN = dist.group.WORLD
    if on_gpu:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"
