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


def _row_chunks(n_rows: int, vocab: int, chunk_bytes: int = 1 << 21) -> list[slice]:
    """Row blocks whose fp32 working copy is about ``chunk_bytes`` (2 MiB ≈ a core's L2): each block is read
    from memory once and then processed in cache, instead of every elementwise pass streaming (N, V) floats."""
    rows = max(1, chunk_bytes // (4 * max(vocab, 1)))
    return [slice(i, min(i + rows, n_rows)) for i in range(0, n_rows, rows)]


class _TokenLogProbs(torch.autograd.Function):
    """log π(a | s) and H(π(· | s)) of ``softmax(logits · inv_temp)`` for flat rows, fp32 math, chunked.

    Forward keeps only the (N,) results; backward recomputes the softmax block by block from the saved logits
    (which autograd holds anyway) and writes the logits' gradient directly in the logits' dtype:
        ∂ log p_a / ∂z = (onehot_a − p)·τ⁻¹,      ∂H / ∂z = −p ⊙ (log p + H)·τ⁻¹.
    """

    @staticmethod
    def forward(ctx, logits, labels, inv_temp, entropy_mode):  # noqa: D401 (autograd signature)
        n, vocab = logits.shape
        logprobs = torch.empty(n, dtype=torch.float32, device=logits.device)
        entropy = torch.zeros(n if entropy_mode else 0, dtype=torch.float32, device=logits.device)
        for sl in _row_chunks(n, vocab):
            z = logits[sl]
            # dtype= upcasts inside the kernel: no separate fp32 copy of bf16 logits when τ = 1.
            logp = torch.log_softmax(z if inv_temp == 1.0 else z.float() * inv_temp, dim=-1, dtype=torch.float32)
            logprobs[sl] = logp.gather(1, labels[sl].unsqueeze(1)).squeeze(1)
            if entropy_mode:
                entropy[sl] = -(logp.exp() * logp).sum(dim=-1)
        ctx.inv_temp = inv_temp
        ctx.entropy_grad = entropy_mode == 2
        ctx.save_for_backward(logits, labels, entropy)
        if entropy_mode != 2:
            ctx.mark_non_differentiable(entropy)
        ctx.set_materialize_grads(False)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, g_logprobs, g_entropy):
        logits, labels, entropy = ctx.saved_tensors
        inv_temp = ctx.inv_temp
        if not ctx.entropy_grad:
            g_entropy = None
        if g_logprobs is None and g_entropy is None:
            return None, None, None, None
        grad = torch.empty_like(logits)
        n, vocab = logits.shape
        for sl in _row_chunks(n, vocab):
            z = logits[sl]
            z = z if inv_temp == 1.0 else z.float() * inv_temp
            if g_entropy is None:
                g = torch.softmax(z, dim=-1, dtype=torch.float32)  # p
                g.mul_(-g_logprobs[sl].unsqueeze(1) * inv_temp)
            else:
                logp = torch.log_softmax(z, dim=-1, dtype=torch.float32)
                p = logp.exp()
                # −g_H·p·(log p + H) − g_lp·p, all times τ⁻¹
                g = logp.add_(entropy[sl].unsqueeze(1)).mul_(-g_entropy[sl].unsqueeze(1))
                if g_logprobs is not None:
                    g.sub_(g_logprobs[sl].unsqueeze(1))
                g.mul_(p).mul_(inv_temp)
            if g_logprobs is not None:
                g.scatter_add_(1, labels[sl].unsqueeze(1), (g_logprobs[sl] * inv_temp).unsqueeze(1))
            grad[sl] = g
        return grad, None, None, None


def token_logprobs_and_entropy(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, entropy_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(a_t | s_t), H_t) of softmax(logits / T) for flat rows: logits (N, V), labels (N,) → (N,), (N,) fp32.

    Same values as :func:`logprobs_from_logits` / :func:`entropy_from_logits` on ``logits / T``, but in one
    pass over the logits, in fp32 blocks that stay in cache whatever the logits' dtype (bf16 logits are never
    copied to a full fp32 (N, V) tensor, forward or backward). ``entropy_grad=False`` returns the entropy as a
    statistic without a gradient (PPO with ent_coef = 0), which skips its share of the backward.
    """
    return _apply(logits, labels, temperature, 2 if entropy_grad else 1)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(a_t | s_t) of softmax(logits / T) alone: :func:`token_logprobs_and_entropy` without the entropy."""
    return _apply(logits, labels, temperature, 0)[0]


def _apply(logits: torch.Tensor, labels: torch.Tensor, temperature: float, entropy_mode: int):
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and labels (N,), got {tuple(logits.shape)}, {tuple(labels.shape)}")
    return _TokenLogProbs.apply(logits.contiguous(), labels.long(), 1.0 / float(temperature), entropy_mode)
