"""How N DeepSpeed ranks split one PPO update so that it equals the 1-rank update on the same global batch.

- Every rank holds the iteration's whole batch of token ids and masks (kilobytes to a few MB), so statistics
  over the batch (advantage whitening, the mean KL, the loss normalisers of each minibatch) are computed from
  the same numbers on every rank, with no extra collective.
- The expensive part is sharded: rank r scores rows r, r+N, r+2N, ... (old log-probs, values, reference
  log-probs) and the scores are all-gathered back into row order; in the update, rank r trains rows
  r, r+N, ... of each minibatch.
- Each micro-step's loss is its share of the minibatch mean (the normaliser counts the whole minibatch), times
  N because DeepSpeed averages gradients over ranks: the sum over ranks of the shares is the 1-rank gradient.
- Every rank runs the same number of forward/backward passes per optimizer step (ZeRO-3 gathers parameters
  collectively in each forward): a rank with fewer rows runs zero-weighted passes on a padding row.
"""

from __future__ import annotations

import math

import torch


def rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(rows: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``rows``: every ``world``-th, from position ``rank``."""
    return rows[rank::world]


def micro_steps(rows: int, micro_batch_size: int, world: int) -> int:
    """Forward/backward passes each rank runs for ``rows`` rows split over ``world`` ranks."""
    return max(1, math.ceil(math.ceil(rows / world) / micro_batch_size))


def gather_rows(local: torch.Tensor, n: int, rank: int, world: int, device: str = "cpu") -> torch.Tensor:
    """Rows scored by each rank (rank r holds rows r, r+N, ... of ``n``), all-gathered back into row order.
    ``device``: where the collective runs (NCCL needs CUDA tensors); the result is on the CPU."""
    if world == 1:
        return local
    import torch.distributed as dist

    per_rank = math.ceil(n / world)
    padded = torch.zeros((per_rank, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    parts = [p.cpu() for p in parts]
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        count = len(range(r, n, world))
        out[r::world] = part[:count]
    return out


def all_reduce_sum(values: dict[str, float], device: str = "cpu") -> dict[str, float]:
    """Element-wise sum of the same-keyed dict over every rank (identity on one rank)."""
    _, world = rank_and_world()
    if world == 1 or not values:
        return dict(values)
    import torch.distributed as dist

    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))


def barrier() -> None:
    _, world = rank_and_world()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
