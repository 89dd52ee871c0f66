"""Token log-probabilities and entropies from logits.

The caller aligns logits with the action axis: ``logits[:, t]`` is the distribution that produced token
``labels[:, t]`` (i.e. already shifted by one relative to the model's input positions). Both functions compute
in float32 whatever the logits' dtype, since bf16 log-softmax loses the precision the PPO ratio needs.
"""

from __future__ import annotations

import torch


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log π(a_t | s_t) = z_{t,a_t} − logsumexp_v z_{t,v}.   logits (B, T, V), labels (B, T) int → (B, T) float32.

    Gathering first and subtracting logsumexp avoids materialising the full (B, T, V) log-softmax
    (same result as ``log_softmax(...).gather(...)``; verl ``logprobs_from_logits_naive`` does the latter).
    """
    logits = logits.float()
    picked = torch.gather(logits, dim=-1, index=labels.long().unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H_t = −Σ_v p_v log p_v = logsumexp(z) − Σ_v p_v z_v.   logits (B, T, V) → (B, T) float32.

    The second form (verl ``entropy_from_logits``) needs no log of a possibly-zero probability.
    """
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
