"""Experience: what the PPO update needs from one batch of rollouts, computed once before the update.

    1. no-grad scores: log π_old(a_t) and V_old(s_t) from the policy, log π_ref(a_t) from the frozen reference
    2. per-token rewards r_t = −β·(log π_old − log π_ref) on completion tokens, + R on the last one
    3. GAE(γ, λ) over completion tokens; returns = advantages + values
    4. advantages whitened over the tokens the policy loss counts (completion × FGO)

This is the part researchers change (reward shaping, advantage estimators), so it is apart from the update
loop (:mod:`stepcoder.training.trainer`), as OpenRLHF's ``experience_maker`` and verl's ``compute_advantage``
are. :func:`advantages_for` is pure; :func:`make_experience` only adds the model calls around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from stepcoder import ppo
from stepcoder.training.batch import PPOBatch, by_length

OLD_LOGPROB_SOURCES = ("recompute", "generator")


@dataclass
class Experience:
    old_logprobs: torch.Tensor  # (B, T-1) log π_old(a_t): recomputed by the trainer, or vLLM's
    old_values: torch.Tensor  # (B, T-1) V_old(s_t)
    ref_logprobs: torch.Tensor  # (B, T-1) log π_ref(a_t)
    rewards: torch.Tensor  # (B, T-1) r_t: KL penalty on completion tokens, + R on the last one
    advantages: torch.Tensor  # (B, T-1) A_t, whitened over the FGO tokens; 0 off them
    returns: torch.Tensor  # (B, T-1) A_t + V_t (before whitening) on completion tokens
    kl_ref: float  # mean k1 KL(π_old ‖ π_ref) per completion token
    logprob_gap: float  # mean |log π_vLLM − log π_trainer| per completion token (bf16, kernels, sampling)

    def rows(self, idx: torch.Tensor | slice, width: int) -> dict[str, torch.Tensor]:
        """The per-token tensors of rows ``idx``, trimmed to ``width`` action columns (a micro-batch's)."""
        names = ("old_logprobs", "old_values", "advantages", "returns")
        return {k: getattr(self, k)[idx][:, :width] for k in names}


def advantages_for(
    scores: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    old_values: torch.Tensor,
    action_mask: torch.Tensor,
    fgo_mask: torch.Tensor,
    kl_coef: float,
    gamma: float,
    gae_lambda: float,
    whiten: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """KL-shaped rewards, GAE advantages and returns over the completion tokens. Pure.

    scores (B,) sequence reward R; old_logprobs, ref_logprobs, old_values, action_mask, fgo_mask (B, T).
    Returns ``(rewards, advantages, returns, kl)``, each (B, T). The KL penalty and the recursion run over every
    completion token (FGO decides which tokens the policy gradient trains, not what the return is); whitening
    uses the FGO tokens' statistics, the ones the policy loss averages over.
    """
    rewards, kl = ppo.kl_penalized_rewards(scores, old_logprobs, ref_logprobs, action_mask, kl_coef)
    advantages, returns = ppo.compute_gae(rewards, old_values * action_mask, action_mask, gamma, gae_lambda)
    if whiten:
        advantages = ppo.masked_whiten(advantages, fgo_mask)
    return rewards, advantages, returns, kl


@torch.no_grad()
def score_batch(
    batch: PPOBatch,
    score_policy: Callable[[PPOBatch], tuple[torch.Tensor, torch.Tensor]],
    score_reference: Callable[[PPOBatch], torch.Tensor],
    micro_batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log π_old, V_old, log π_ref), each (B, T-1) on CPU: ``batch`` scored in micro-batches
    (``score_policy(mb)`` → (log π, V), ``score_reference(mb)`` → log π_ref, each (b, t-1) for a micro-batch
    trimmed to its own length)."""
    width = batch.action_mask.shape[1]
    # Scored longest first, so each micro-batch pads to a length close to its rows' own; put back in order.
    order = torch.arange(len(batch))
    if len(batch) > micro_batch_size:
        order = by_length(order, batch.attention_mask.sum(dim=1))
    lp, v, ref = [], [], []
    for start in range(0, len(batch), micro_batch_size):
        mb = batch.select(order[start : start + micro_batch_size])
        mb_lp, mb_v = score_policy(mb)
        lp.append(mb_lp.cpu())
        v.append(mb_v.cpu())
        ref.append(score_reference(mb).cpu())
    restore = torch.argsort(order)
    return tuple(_pad_cat(x, width)[restore] for x in (lp, v, ref))


def experience_from_scores(
    batch: PPOBatch,
    scores: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    kl_coef: float,
    gamma: float,
    gae_lambda: float,
    whiten: bool = True,
    old_logprobs: str = "recompute",
) -> Experience:
    """The :class:`Experience` of ``batch`` from its :func:`score_batch` scores (of every row, in row order)."""
    if old_logprobs not in OLD_LOGPROB_SOURCES:
        raise ValueError(f"unknown old_logprobs source {old_logprobs!r}; valid: {', '.join(OLD_LOGPROB_SOURCES)}")
    recomputed, values, ref_logprobs = scores
    mask = batch.action_mask
    old = batch.gen_logprobs * mask if old_logprobs == "generator" else recomputed
    rewards, advantages, returns, kl = advantages_for(batch.scores, old, ref_logprobs, values, mask,
                                                      batch.fgo_mask, kl_coef, gamma, gae_lambda, whiten)
    return Experience(old, values, ref_logprobs, rewards, advantages, returns,
                      kl_ref=float(ppo.masked_mean(kl, mask)),
                      logprob_gap=float(ppo.masked_mean((batch.gen_logprobs - recomputed).abs(), mask)))


@torch.no_grad()
def make_experience(
    batch: PPOBatch,
    score_policy: Callable[[PPOBatch], tuple[torch.Tensor, torch.Tensor]],
    score_reference: Callable[[PPOBatch], torch.Tensor],
    micro_batch_size: int,
    *,
    kl_coef: float,
    gamma: float,
    gae_lambda: float,
    whiten: bool = True,
    old_logprobs: str = "recompute",
) -> Experience:
    """:func:`score_batch`, then :func:`experience_from_scores` (one process scoring every row)."""
    if old_logprobs not in OLD_LOGPROB_SOURCES:
        raise ValueError(f"unknown old_logprobs source {old_logprobs!r}; valid: {', '.join(OLD_LOGPROB_SOURCES)}")
    scores = score_batch(batch, score_policy, score_reference, micro_batch_size)
    return experience_from_scores(batch, scores, kl_coef=kl_coef, gamma=gamma, gae_lambda=gae_lambda,
                                  whiten=whiten, old_logprobs=old_logprobs)


def _pad_cat(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
