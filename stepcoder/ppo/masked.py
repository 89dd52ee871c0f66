"""Masked reductions over the action axis.

Every tensor here has shape (B, T): row b is one sampled completion, column t its t-th generated token.
``mask`` (B, T) is 1 (or True) for tokens that count and 0 for padding / tokens excluded by FGO; it is treated
as boolean. Masked-out entries are selected away with ``torch.where`` rather than multiplied by 0, so a NaN or
inf in padding (e.g. a log-prob of -inf) cannot leak into a statistic.

Empty masks are safe: a mean over zero entries is 0, never NaN.
References: OpenRLHF ``models/utils.py`` (masked_mean), TRL / verl ``masked_whiten``.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token", "sequence")


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ x over entries where mask=1; over all entries (0-d result) if ``dim`` is None, else along ``dim``."""
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Σ(x·mask) / Σ mask, over everything (``dim=None``) or along ``dim``. Returns 0 where Σ mask = 0."""
    num = masked_sum(x, mask, dim)
    count = masked_sum(torch.ones_like(x), mask, dim)
    return torch.where(count > 0, num / count.clamp(min=1.0), torch.zeros_like(num))


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the mask=1 entries of the whole batch (0-d).

    var = Σ mask·(x − μ)² / (n − 1)  (``unbiased``, Bessel) or / n, with n = Σ mask.
    Returns 0 when there are no valid entries, or only one and ``unbiased`` (the correction is undefined there;
    TRL raises instead, we return 0 so whitening a 1-token batch gives 0, not NaN).
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.bool().sum()
        var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), torch.zeros_like(var))
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x − μ) / sqrt(σ² + eps) with μ, σ² (unbiased) over the mask=1 entries of the whole batch. (B, T) → (B, T).

    With ``shift_mean=False`` the mean is added back (only the scale changes). Positions with mask=0 are
    returned as 0, so they carry no advantage. Used to normalise GAE advantages (TRL/verl ``masked_whiten``).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


def aggregate_loss(
    loss_mat: torch.Tensor, mask: torch.Tensor, mode: str = "token", normalizer: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Reduce a per-token loss (B, T) to a scalar (0-d).

    - ``"token"``:    Σ_bt loss·mask / Σ_bt mask — every valid token of the batch weighs the same
      (verl ``token-mean``; long completions dominate).
    - ``"sequence"``: mean over rows with ≥1 valid token of (Σ_t loss·mask / Σ_t mask) — every completion
      weighs the same (verl ``seq-mean-token-mean``, the original PPO-for-LM reduction).

    ``normalizer`` replaces the denominator (Σ mask for ``token``, the count of rows with a valid token for
    ``sequence``) with that of a larger batch this tensor is a part of. Summing the results over micro-batches
    then gives exactly the reduction over the whole minibatch: a micro-batch with 3 counted tokens weighs 3
    tokens, not as much as one with 600 (:func:`loss_normalizer` computes it).
    Both return 0 for an all-zero mask. Unknown ``mode`` → ValueError listing the valid ones.
    """
    if mode == "token":
        if normalizer is None:
            return masked_mean(loss_mat, mask)
        return masked_sum(loss_mat, mask) / _positive(normalizer)
    if mode == "sequence":
        row_loss = masked_mean(loss_mat, mask, dim=-1)  # (B,)
        row_valid = mask.bool().any(dim=-1)  # (B,)
        if normalizer is None:
            return masked_mean(row_loss, row_valid)
        return masked_sum(row_loss, row_valid) / _positive(normalizer)
    raise ValueError(f"unknown loss aggregation mode {mode!r}; valid modes: {', '.join(AGG_MODES)}")


def loss_normalizer(mask: torch.Tensor, mode: str = "token") -> torch.Tensor:
    """The denominator :func:`aggregate_loss` uses for ``mask`` (B, T): Σ mask (``token``) or the number of rows
    with a valid token (``sequence``). 0-d float."""
    if mode == "token":
        return mask.bool().sum().float()
    if mode == "sequence":
        return mask.bool().any(dim=-1).sum().float()
    raise ValueError(f"unknown loss aggregation mode {mode!r}; valid modes: {', '.join(AGG_MODES)}")


def _positive(n: float | torch.Tensor) -> float | torch.Tensor:
    """A count of 0 means nothing is counted: divide by 1 so the (zero) sum stays 0 instead of NaN."""
    return n.clamp(min=1.0) if isinstance(n, torch.Tensor) else max(float(n), 1.0)
