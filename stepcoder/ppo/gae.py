"""Generalized Advantage Estimation over the action axis.

Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (eq. 16);
masked-token handling as in verl ``core_algos.compute_gae_advantage_return``.
"""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by the backward recursion, one completion per row.

        δ_t = r_t + γ·V_{t+1} − V_t,      A_t = δ_t + γλ·A_{t+1},      R_t = A_t + V_t

    rewards, values, mask: (B, T). Returns ``(advantages, returns)``, both (B, T).

    "t+1" means the next mask=1 token of the row; beyond the last one V = 0 and A = 0 (the episode ends).
    Masked positions (mask=0) are skipped: ``nextvalue`` and ``lastgaelam`` are carried through them
    unchanged, so their rewards and values have no influence and inserting mask=0 columns anywhere leaves the
    valid positions' results unchanged. Advantages and returns are 0 at mask=0. No whitening here — see
    :func:`stepcoder.ppo.masked.masked_whiten`.
    """
    valid = mask.bool()
    nextvalue = torch.zeros_like(values[:, 0])  # (B,) V_{t+1}; 0 past the end (terminal)
    lastgaelam = torch.zeros_like(values[:, 0])  # (B,) A_{t+1}
    advantages_reversed = []
    for t in reversed(range(rewards.shape[-1])):
        delta = rewards[:, t] + gamma * nextvalue - values[:, t]
        gaelam = delta + gamma * lam * lastgaelam
        # carry through masked positions (verl): a mask=0 token is not a step of the episode
        nextvalue = torch.where(valid[:, t], values[:, t], nextvalue)
        lastgaelam = torch.where(valid[:, t], gaelam, lastgaelam)
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], dim=-1)  # (B, T)
    zeros = torch.zeros_like(advantages)
    advantages = torch.where(valid, advantages, zeros)
    returns = torch.where(valid, advantages + values, zeros)
    return advantages, returns
