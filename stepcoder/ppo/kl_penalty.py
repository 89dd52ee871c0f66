"""Per-token KL penalty: the sequence score plus a KL penalty towards the reference policy, spread over tokens.

Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", eq. 2): R(x, y) = r(x, y) − β·KL,
with the KL spread over tokens as log π(a_t) − log π_ref(a_t) and the task score paid at the final token
(OpenRLHF ``compute_reward``, TRL ``PPOTrainer.compute_rewards``). Call under ``torch.no_grad()``.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k3")


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples a_t ~ π.   (B, T), (B, T) → (B, T).

    Schulman, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html), with log r = ref − lp:
    - ``"k1"``: lp − ref = −log r  (unbiased, high variance, can be negative);
    - ``"k3"``: r − 1 − log r = exp(ref − lp) − (ref − lp) − 1  (unbiased, always ≥ 0).
    """
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.exp(log_ratio) - log_ratio - 1
    raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {', '.join(KL_ESTIMATORS)}")


def last_valid_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the last mask=1 token of each row, and whether the row has one.   (B, T) → (B,) long, (B,) bool."""
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)  # 1-based so 0 means "none"
    last = torch.where(mask.bool(), positions, 0).amax(dim=-1)  # (B,)
    return (last - 1).clamp(min=0), last > 0


def kl_penalized_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """r_t = −β·(log π(a_t) − log π_ref(a_t)) + [t = last valid token]·score.

    score (B,) sequence-level reward; logprobs, ref_logprobs, mask (B, T); kl_coef β.
    Returns ``(rewards, kl)``, both (B, T): ``kl`` is the k1 estimate on mask=1 tokens, and both are 0 at mask=0.
    The score goes to the LAST mask=1 token of each row; a row with no valid token gets nothing.
    """
    valid = mask.bool()
    kl = torch.where(valid, kl_estimate(logprobs, ref_logprobs, "k1"), torch.zeros_like(logprobs))  # (B, T)
    rewards = -kl_coef * kl
    last, has_valid = last_valid_index(mask)  # (B,), (B,)
    terminal = torch.where(has_valid, score.to(rewards.dtype), torch.zeros_like(score, dtype=rewards.dtype))
    rewards = rewards.scatter_add(-1, last.unsqueeze(-1), terminal.unsqueeze(-1))
    return rewards, kl
