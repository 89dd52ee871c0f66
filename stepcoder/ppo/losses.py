"""PPO losses on the action axis: clipped policy loss, clipped value loss, entropy bonus, explained variance.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (eq. 7 and 9); value clipping and the
``clipfrac`` / ``approx_kl`` diagnostics as in OpenAI baselines PPO2 and CleanRL ``ppo.py``. Inputs are (B, T)
tensors and ``mask`` (B, T); ``agg`` picks the reduction of :func:`stepcoder.ppo.masked.aggregate_loss`, and
``normalizer`` (optional) its denominator when the tensors are one micro-batch of a larger minibatch.
Stats are detached 0-d tensors (no host sync here); log them as ``losses/clipfrac`` etc.
"""

from __future__ import annotations

import torch

from stepcoder.ppo.masked import aggregate_loss, masked_mean, masked_var


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float,
    agg: str = "token",
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate L = agg(max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))), ρ_t = exp(log π(a_t) − log π_old(a_t)).

    logprobs (B, T) with grad; old_logprobs, advantages (B, T) from the rollout; clip_coef ε.
    Returns ``(loss, stats)``: loss 0-d; stats ``clipfrac`` = masked mean of [pg_loss2 > pg_loss1] (the
    clipped branch is active) and ``approx_kl`` = masked mean of (ρ − 1) − log ρ (k3 estimate of
    KL(π_old ‖ π), as CleanRL logs it).
    """
    valid = mask.bool()
    # zero the log-ratio at padding so a -inf there cannot make exp() give inf and NaN gradients
    log_ratio = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    loss = aggregate_loss(torch.max(pg_loss1, pg_loss2), mask, agg, normalizer)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_loss2 > pg_loss1).float(), mask),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float | None,
    agg: str = "token",
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss L_V = ½·agg(max((V − R)², (V_clip − R)²)), V_clip = V_old + clamp(V − V_old, ±ε_v).

    values (B, T) with grad; old_values, returns (B, T) from the rollout; clip_coef ε_v, or None for the
    unclipped ½·agg((V − R)²). Returns ``(loss, stats)`` with ``vf_clipfrac`` = masked mean of
    [(V_clip − R)² > (V − R)²] (0 when unclipped).
    """
    vf_loss1 = (values - returns) ** 2
    if clip_coef is None:
        vf_loss_mat, vf_clipfrac = vf_loss1, torch.zeros((), device=values.device)
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_coef, clip_coef)
        vf_loss2 = (v_clipped - returns) ** 2
        vf_loss_mat = torch.max(vf_loss1, vf_loss2)
        with torch.no_grad():
            vf_clipfrac = masked_mean((vf_loss2 > vf_loss1).float(), mask)
    return 0.5 * aggregate_loss(vf_loss_mat, mask, agg, normalizer), {"vf_clipfrac": vf_clipfrac}


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor, agg: str = "token",
                  normalizer: float | torch.Tensor | None = None) -> torch.Tensor:
    """Mean policy entropy agg(H_t), (B, T) → 0-d. It is a bonus: the total loss SUBTRACTS ent_coef × this."""
    return aggregate_loss(entropy, mask, agg, normalizer)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] over the valid tokens (population variance, as CleanRL's ``np.var``).

    1 = perfect value function, 0 = no better than a constant, < 0 = worse. Returns NaN when Var[R] = 0
    (including no valid token): the ratio is undefined there, and NaN is what CleanRL logs in that case.
    """
    with torch.no_grad():
        var_returns = masked_var(returns, mask, unbiased=False)
        if var_returns.item() == 0.0:
            return float("nan")
        return (1.0 - masked_var(returns - values, mask, unbiased=False) / var_returns).item()
