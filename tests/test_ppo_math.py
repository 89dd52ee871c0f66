"""Unit tests for stepcoder.ppo: a hand-computed example and a property per function (docs: STYLE.md §3)."""

import math

import pytest
import torch
from torch.testing import assert_close

from stepcoder.ppo import (
    AdaptiveKLController,
    FixedKLController,
    aggregate_loss,
    compute_gae,
    entropy_bonus,
    entropy_from_logits,
    explained_variance,
    kl_estimate,
    kl_penalized_rewards,
    logprobs_from_logits,
    make_kl_controller,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    policy_loss,
    token_logprobs,
    token_logprobs_and_entropy,
    value_loss,
)

T = torch.tensor


def random_mask(B, L, gen, p=0.7):
    """Random 0/1 mask with holes, row 0 fully valid and the last row empty."""
    mask = (torch.rand(B, L, generator=gen) < p).float()
    mask[0], mask[-1] = 1.0, 0.0
    return mask


# ---------------------------------------------------------------- masked reductions

X = T([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = T([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_masked_sum_mean_by_hand():
    assert_close(masked_sum(X, M), T(7.0))  # 1 + 2 + 4
    assert_close(masked_mean(X, M), T(7.0 / 3))
    assert_close(masked_sum(X, M, dim=-1), T([3.0, 4.0]))
    assert_close(masked_mean(X, M, dim=-1), T([1.5, 4.0]))  # (1+2)/2, 4/1
    assert_close(masked_mean(X, M, dim=0), T([2.5, 2.0, 0.0]))  # empty column → 0


def test_masked_mean_empty_mask_is_zero_and_ignores_nan_padding():
    zero = torch.zeros_like(X)
    assert_close(masked_mean(X, zero), T(0.0))
    assert_close(masked_mean(X, zero, dim=-1), T([0.0, 0.0]))
    x_bad = X.clone()
    x_bad[M == 0] = float("nan")
    assert_close(masked_mean(x_bad, M), masked_mean(X, M))
    assert_close(masked_mean(X, M.bool()), masked_mean(X, M))  # bool and float masks agree


def test_masked_var_by_hand():
    x, m = T([[1.0, 2.0, 3.0, 100.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    # mean 2; squared deviations 1 + 0 + 1 = 2; unbiased 2 / 2 = 1, biased 2 / 3
    assert_close(masked_var(x, m), T(1.0))
    assert_close(masked_var(x, m, unbiased=False), T(2.0 / 3))
    assert_close(masked_var(x, torch.zeros_like(m)), T(0.0))  # no valid entry → 0, not NaN
    assert_close(masked_var(x, T([[1.0, 0.0, 0.0, 0.0]])), T(0.0))  # one entry, unbiased → 0


def test_masked_var_matches_torch_var_on_valid_entries():
    gen = torch.Generator().manual_seed(0)
    x, m = torch.randn(4, 7, generator=gen), random_mask(4, 7, gen)
    assert_close(masked_var(x, m), x[m.bool()].var())
    assert_close(masked_var(x, m, unbiased=False), x[m.bool()].var(unbiased=False))


def test_masked_whiten_by_hand():
    x, m = T([[1.0, 2.0, 3.0, 100.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    # mean 2, unbiased var 1 → (x − 2) / 1; masked position → 0
    assert_close(masked_whiten(x, m), T([[-1.0, 0.0, 1.0, 0.0]]))
    assert_close(masked_whiten(x, m, shift_mean=False), T([[1.0, 2.0, 3.0, 0.0]]))


def test_masked_whiten_valid_entries_standardised_and_masked_values_ignored():
    gen = torch.Generator().manual_seed(1)
    x, m = 3.0 + 5.0 * torch.randn(6, 9, generator=gen), random_mask(6, 9, gen)
    w = masked_whiten(x, m)
    valid = m.bool()
    assert_close(w[valid].mean(), T(0.0), atol=1e-6, rtol=0)
    assert_close(w[valid].var(), T(1.0))
    assert torch.all(w[~valid] == 0)
    x_other = torch.where(valid, x, T(1e6))  # change only the masked values
    assert_close(masked_whiten(x_other, m), w)


LOSS = T([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
LOSS_MASK = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # lengths 3, 1, 0


def test_aggregate_loss_token_vs_sequence_by_hand():
    # token: (1 + 2 + 3 + 4) / 4 = 2.5; sequence: rows (1+2+3)/3 = 2 and 4/1 = 4 → (2 + 4) / 2 = 3
    # (the empty third row is not averaged in as 0)
    assert_close(aggregate_loss(LOSS, LOSS_MASK, "token"), T(2.5))
    assert_close(aggregate_loss(LOSS, LOSS_MASK, "sequence"), T(3.0))


def test_aggregate_loss_equal_lengths_agree_empty_mask_zero_unknown_mode_raises():
    gen = torch.Generator().manual_seed(2)
    loss, full = torch.randn(3, 5, generator=gen), torch.ones(3, 5)
    assert_close(aggregate_loss(loss, full, "token"), aggregate_loss(loss, full, "sequence"))
    for mode in ("token", "sequence"):
        assert_close(aggregate_loss(loss, torch.zeros(3, 5), mode), T(0.0))
    with pytest.raises(ValueError, match="token, sequence"):
        aggregate_loss(loss, full, "seq-mean-token-sum")


# ---------------------------------------------------------------- log-probs and entropy


def test_logprobs_and_entropy_by_hand():
    # logits (0, ln 3) → p = (1/4, 3/4); H = −(¼ ln ¼ + ¾ ln ¾) ≈ 0.5623
    logits = T([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # (1, 2, 2)
    labels = T([[1, 0]])
    assert_close(logprobs_from_logits(logits, labels), T([[math.log(0.75), math.log(0.25)]]))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert_close(entropy_from_logits(logits), T([[h, h]]))
    assert_close(entropy_from_logits(torch.zeros(2, 3, 4)), torch.full((2, 3), math.log(4.0)))  # uniform: ln V


def test_logprobs_and_entropy_match_naive_shift_invariant_float32():
    gen = torch.Generator().manual_seed(3)
    logits = 4 * torch.randn(2, 5, 11, generator=gen)
    labels = torch.randint(0, 11, (2, 5), generator=gen)
    lp = logprobs_from_logits(logits, labels)
    assert_close(lp, torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1))
    p = torch.softmax(logits, -1)
    assert_close(entropy_from_logits(logits), -(p * torch.log(p)).sum(-1))
    assert_close(logprobs_from_logits(logits + 7.0, labels), lp)  # softmax is shift-invariant
    assert logprobs_from_logits(logits.bfloat16(), labels).dtype == torch.float32
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32


def test_token_logprobs_and_entropy_by_hand():
    # row 0: logits (0, ln 3) → p = (1/4, 3/4), label 1 → ln ¾; H = −(¼ ln ¼ + ¾ ln ¾)
    # row 1: at T = 2 the same logits (0, 2 ln 3) are (0, ln 3) → the same p; label 0 → ln ¼
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    lp, ent = token_logprobs_and_entropy(T([[0.0, math.log(3.0)], [0.0, math.log(3.0)]]), T([1, 0]))
    assert_close(lp, T([math.log(0.75), math.log(0.25)]))
    assert_close(ent, T([h, h]))
    lp2, ent2 = token_logprobs_and_entropy(T([[0.0, 2 * math.log(3.0)]]), T([0]), temperature=2.0)
    assert_close(lp2, T([math.log(0.25)]))
    assert_close(ent2, T([h]))
    assert_close(token_logprobs(T([[0.0, 0.0, 0.0, 0.0]]), T([2])), T([math.log(0.25)]))  # uniform over 4
    # gradient by hand: ∂ log p_a/∂z = onehot_a − p = (−¼, ¼) for label 1 of row 0
    z = T([[0.0, math.log(3.0)]], requires_grad=True)
    token_logprobs(z, T([1]))[0].backward()
    assert_close(z.grad, T([[-0.25, 0.25]]))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_and_entropy_match_autograd_of_the_reference(temperature):
    # Several row blocks (V = 2^17 makes each block 4 rows) and both gradients against plain autograd.
    gen = torch.Generator().manual_seed(4)
    n, vocab = 9, 1 << 17
    logits = (3 * torch.randn(n, vocab, generator=gen)).requires_grad_(True)
    labels = torch.randint(0, vocab, (n,), generator=gen)
    g_lp, g_ent = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    ref_in = logits.detach().clone().requires_grad_(True)
    scaled = ref_in / temperature
    ref_lp, ref_ent = logprobs_from_logits(scaled, labels), entropy_from_logits(scaled)
    ((ref_lp * g_lp).sum() + (ref_ent * g_ent).sum()).backward()
    lp, ent = token_logprobs_and_entropy(logits, labels, temperature)
    ((lp * g_lp).sum() + (ent * g_ent).sum()).backward()
    assert_close(lp, ref_lp)
    # fp32 sums over 131k terms in another order: relative errors ~1e-5, amplified in ∂H/∂z = −p(log p + H)/T
    assert_close(ent, ref_ent, rtol=1e-4, atol=0.0)
    assert_close(logits.grad, ref_in.grad, rtol=1e-3, atol=1e-4)
    # entropy_grad=False: the entropy is a statistic only, the log-prob gradient is unchanged
    logits.grad = None
    lp, ent = token_logprobs_and_entropy(logits, labels, temperature, entropy_grad=False)
    assert not ent.requires_grad
    (lp * g_lp).sum().backward()
    ref_in.grad = None
    (logprobs_from_logits(ref_in / temperature, labels) * g_lp).sum().backward()
    assert_close(logits.grad, ref_in.grad)


def test_token_logprobs_bf16_logits_fp32_math_and_bf16_gradient():
    gen = torch.Generator().manual_seed(5)
    logits = (3 * torch.randn(6, 50, generator=gen)).bfloat16().requires_grad_(True)
    labels = torch.randint(0, 50, (6,), generator=gen)
    lp, ent = token_logprobs_and_entropy(logits, labels)
    assert lp.dtype == ent.dtype == torch.float32
    # exactly the fp32 result on the bf16 values: only the logits are rounded, not the log-softmax
    assert_close(lp, logprobs_from_logits(logits.detach().float(), labels))
    lp.sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="expected logits"):
        token_logprobs(logits.detach()[None], labels[None])


# ---------------------------------------------------------------- KL estimates and shaped rewards


def test_kl_estimate_by_hand():
    lp, ref = T([[math.log(0.5)]]), T([[math.log(0.25)]])
    # k1 = ln 0.5 − ln 0.25 = ln 2; log r = −ln 2, k3 = r − 1 − log r = 0.5 − 1 + ln 2
    assert_close(kl_estimate(lp, ref, "k1"), T([[math.log(2.0)]]))
    assert_close(kl_estimate(lp, ref, "k3"), T([[math.log(2.0) - 0.5]]))
    with pytest.raises(ValueError, match="k1, k3"):
        kl_estimate(lp, ref, "k2")


def test_kl_estimates_unbiased_and_k3_nonnegative():
    # Monte Carlo over a ~ p: E[k1] = E[k3] = KL(p ‖ q)
    gen = torch.Generator().manual_seed(4)
    p, q = torch.softmax(torch.randn(6, generator=gen), 0), torch.softmax(torch.randn(6, generator=gen), 0)
    true_kl = (p * (p / q).log()).sum()
    a = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    lp, ref = p.log()[a], q.log()[a]
    assert_close(kl_estimate(lp, ref, "k1").mean(), true_kl, atol=0.01, rtol=0)
    assert_close(kl_estimate(lp, ref, "k3").mean(), true_kl, atol=0.01, rtol=0)
    assert kl_estimate(lp, ref, "k3").min() >= 0
    assert_close(kl_estimate(lp, lp, "k3"), torch.zeros_like(lp))


def test_kl_penalized_rewards_by_hand():
    score = T([1.0, 2.0, 5.0, 3.0])
    logprobs = torch.full((4, 3), -1.0)
    ref_logprobs = T([[-2.0, -1.0, -9.0], [-1.5, -0.5, -1.0], [-2.0, -2.0, -2.0], [-1.0, -9.0, -3.0]])
    mask = T([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    rewards, kl = kl_penalized_rewards(score, logprobs, ref_logprobs, mask, kl_coef=0.1)
    # kl = lp − ref on valid tokens: row0 (1, 0, ·), row1 (0.5, −0.5, 0), row2 none, row3 (0, ·, 2)
    assert_close(kl, T([[1.0, 0.0, 0.0], [0.5, -0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    # r = −0.1·kl, + score at the last valid token; row2 (no valid token) drops its score;
    # row3's last valid token is t=2 (hole at t=1): −0.2 + 3 = 2.8
    expected = T([[-0.1, 1.0, 0.0], [-0.05, 0.05, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.8]])
    assert_close(rewards, expected)


def test_kl_penalized_rewards_row_sum_and_masked_values_ignored():
    gen = torch.Generator().manual_seed(5)
    B, L = 5, 8
    score, mask = torch.randn(B, generator=gen), random_mask(B, L, gen)
    lp, ref = torch.randn(B, L, generator=gen), torch.randn(B, L, generator=gen)
    rewards, kl = kl_penalized_rewards(score, lp, ref, mask, kl_coef=0.05)
    has_valid = mask.bool().any(-1).float()
    assert_close(rewards.sum(-1), has_valid * score - 0.05 * masked_sum(lp - ref, mask, dim=-1))
    valid = mask.bool()
    lp_pad, ref_pad = torch.where(valid, lp, T(float("-inf"))), torch.where(valid, ref, T(3.0))
    assert_close(kl_penalized_rewards(score, lp_pad, ref_pad, mask, kl_coef=0.05), (rewards, kl))


# ---------------------------------------------------------------- GAE


def compute_gae_loop(rewards, values, mask, gamma, lam):
    """Slow reference: per row, keep only the valid tokens and run textbook GAE on them."""
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        idx = mask[b].nonzero().flatten().tolist()
        lastgaelam = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            nextvalue = values[b, idx[k + 1]].item() if k + 1 < len(idx) else 0.0
            delta = rewards[b, t].item() + gamma * nextvalue - values[b, t].item()
            lastgaelam = delta + gamma * lam * lastgaelam
            advantages[b, t] = lastgaelam
            returns[b, t] = lastgaelam + values[b, t]
    return advantages, returns


def test_gae_by_hand():
    r, v, m = T([[0.0, 0.0, 1.0]]), T([[0.5, 0.5, 0.5]]), torch.ones(1, 3)
    # γ = λ = 1: δ = (0 + .5 − .5, 0 + .5 − .5, 1 + 0 − .5) = (0, 0, .5); A = suffix sums = (.5, .5, .5); R = 1
    adv, ret = compute_gae(r, v, m, gamma=1.0, lam=1.0)
    assert_close(adv, T([[0.5, 0.5, 0.5]]))
    assert_close(ret, T([[1.0, 1.0, 1.0]]))
    # γ = λ = .5 (γλ = .25): δ2 = 1 − .5 = .5; δ1 = δ0 = 0 + .5·.5 − .5 = −.25
    # A2 = .5; A1 = −.25 + .25·.5 = −.125; A0 = −.25 + .25·(−.125) = −.28125; R = A + .5
    adv, ret = compute_gae(r, v, m, gamma=0.5, lam=0.5)
    assert_close(adv, T([[-0.28125, -0.125, 0.5]]))
    assert_close(ret, T([[0.21875, 0.375, 1.0]]))


def test_gae_matches_loop_reference():
    gen = torch.Generator().manual_seed(6)
    B, L = 6, 12
    r, v, m = torch.randn(B, L, generator=gen), torch.randn(B, L, generator=gen), random_mask(B, L, gen)
    adv, ret = compute_gae(r, v, m, gamma=0.99, lam=0.95)
    adv_ref, ret_ref = compute_gae_loop(r, v, m, gamma=0.99, lam=0.95)
    assert_close(adv, adv_ref)
    assert_close(ret, ret_ref)


def test_gae_inserting_masked_columns_changes_nothing():
    gen = torch.Generator().manual_seed(7)
    B, L = 4, 6
    r, v = torch.randn(B, L, generator=gen), torch.randn(B, L, generator=gen)
    m = torch.ones(B, L)
    m[1, 4:] = 0.0  # a shorter row
    adv, ret = compute_gae(r, v, m, gamma=0.9, lam=0.8)
    # insert garbage mask=0 columns at the front, in the middle and at the end
    keep = [None, 0, 1, None, None, 2, 3, 4, None, 5, None]
    new_r = torch.stack([r[:, j] if j is not None else torch.full((B,), 1e3) for j in keep], -1)
    new_v = torch.stack([v[:, j] if j is not None else torch.full((B,), -7.0) for j in keep], -1)
    new_m = torch.stack([m[:, j] if j is not None else torch.zeros(B) for j in keep], -1)
    new_adv, new_ret = compute_gae(new_r, new_v, new_m, gamma=0.9, lam=0.8)
    cols = [k for k, j in enumerate(keep) if j is not None]
    assert_close(new_adv[:, cols], adv)
    assert_close(new_ret[:, cols], ret)
    assert torch.all(new_adv[new_m == 0] == 0) and torch.all(new_ret[new_m == 0] == 0)


# ---------------------------------------------------------------- losses


def test_policy_loss_by_hand():
    ratio = T([[1.0, 1.5, 0.5, 1.1]])
    logprobs, old_logprobs = ratio.log(), torch.zeros(1, 4)
    adv = T([[1.0, 1.0, -1.0, -1.0]])
    loss, stats = policy_loss(logprobs, old_logprobs, adv, torch.ones(1, 4), clip_coef=0.2)
    # ε = .2:  pg_loss1 = −A·ρ = (−1, −1.5, .5, 1.1);  pg_loss2 = −A·clip(ρ) = (−1, −1.2, .8, 1.1)
    # max = (−1, −1.2, .8, 1.1) → mean −.3 / 4 = −.075; clipped branch strictly larger at t=1, 2 → clipfrac .5
    assert_close(loss, T(-0.075))
    assert_close(stats["clipfrac"], T(0.5))
    # approx_kl = mean((ρ − 1) − ln ρ) = (0 + (.5 − ln 1.5) + (−.5 − ln .5) + (.1 − ln 1.1)) / 4
    k3 = (0.5 - math.log(1.5)) + (-0.5 - math.log(0.5)) + (0.1 - math.log(1.1))
    assert_close(stats["approx_kl"], T(k3 / 4))


@pytest.mark.parametrize(
    "ratio, adv, clipped",
    [
        (1.1, 1.0, False),  # inside the trust region: plain −A·ρ
        (1.1, -1.0, False),
        (1.5, 1.0, True),  # A > 0, ρ > 1+ε: no incentive to push further
        (0.5, -1.0, True),  # A < 0, ρ < 1−ε: same on the other side
        (0.5, 1.0, False),  # A > 0, ρ < 1−ε: pessimistic bound is the unclipped term, gradient kept
        (1.5, -1.0, False),  # A < 0, ρ > 1+ε: likewise
    ],
)
def test_policy_loss_gradient_inside_vs_beyond_clip_range(ratio, adv, clipped):
    logprobs = T([[math.log(ratio)]], requires_grad=True)
    loss, stats = policy_loss(logprobs, torch.zeros(1, 1), T([[adv]]), torch.ones(1, 1), clip_coef=0.2)
    (grad,) = torch.autograd.grad(loss, logprobs)
    # unclipped: d(−A·ρ)/d log π = −A·ρ; clipped: the loss is constant in log π
    assert_close(grad, T([[0.0 if clipped else -adv * ratio]]))
    assert_close(loss, T(-adv * (min(max(ratio, 0.8), 1.2) if clipped else ratio)))
    assert stats["clipfrac"].item() == float(clipped)


def test_policy_loss_padding_and_empty_mask_are_safe():
    logprobs = T([[-1.0, float("-inf")]], requires_grad=True)
    old = T([[-1.0, -2.0]])
    loss, stats = policy_loss(logprobs, old, T([[2.0, 5.0]]), T([[1.0, 0.0]]), clip_coef=0.2)
    (grad,) = torch.autograd.grad(loss, logprobs)
    assert_close(loss, T(-2.0))  # only t=0: ρ = 1, −A·ρ = −2
    assert torch.isfinite(grad).all()
    loss, stats = policy_loss(logprobs, old, T([[2.0, 5.0]]), torch.zeros(1, 2), clip_coef=0.2)
    assert loss.item() == 0.0 and stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0


def test_value_loss_by_hand():
    values, old_values, returns, mask = T([[0.5, 0.1]]), T([[0.0, 0.0]]), T([[1.0, 1.0]]), torch.ones(1, 2)
    # t0: (V − R)² = .25; V_clip = 0 + clamp(.5, ±.2) = .2 → (.2 − 1)² = .64; max .64 (clipped)
    # t1: (.1 − 1)² = .81 = (V_clip − R)²; max .81        →  loss = ½·(.64 + .81)/2 = .3625
    loss, stats = value_loss(values, old_values, returns, mask, clip_coef=0.2)
    assert_close(loss, T(0.3625))
    assert_close(stats["vf_clipfrac"], T(0.5))
    # unclipped: ½·(.25 + .81)/2 = .265
    loss, stats = value_loss(values, old_values, returns, mask, clip_coef=None)
    assert_close(loss, T(0.265))
    assert stats["vf_clipfrac"].item() == 0.0


def test_value_loss_clipping_inactive_within_range_and_sequence_mode():
    gen = torch.Generator().manual_seed(8)
    old, ret = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    mask = random_mask(3, 5, gen)
    values = old + 0.1 * (2 * torch.rand(3, 5, generator=gen) - 1)  # |V − V_old| ≤ .1 < ε
    for agg in ("token", "sequence"):
        clipped, stats = value_loss(values, old, ret, mask, clip_coef=0.2, agg=agg)
        unclipped, _ = value_loss(values, old, ret, mask, clip_coef=None, agg=agg)
        assert_close(clipped, unclipped)
        assert_close(clipped, 0.5 * aggregate_loss((values - ret) ** 2, mask, agg))
        assert stats["vf_clipfrac"].item() == 0.0


def test_entropy_bonus_by_hand_and_matches_aggregation():
    assert_close(entropy_bonus(LOSS, LOSS_MASK, "token"), T(2.5))  # same numbers as the aggregation test
    assert_close(entropy_bonus(LOSS, LOSS_MASK, "sequence"), T(3.0))
    h = entropy_from_logits(torch.zeros(2, 3, 8))  # uniform over 8 → ln 8 at every token
    assert_close(entropy_bonus(h, T([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), "sequence"), T(math.log(8.0)))


def test_explained_variance_by_hand():
    ret, mask = T([[1.0, 2.0, 3.0, 50.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 4), ret, mask) == pytest.approx(0.0)
    # R − V = (0, 0, −1): Var = 2/9; Var[R] = 2/3 → 1 − (2/9)/(2/3) = 2/3
    assert explained_variance(T([[1.0, 2.0, 4.0, -9.0]]), ret, mask) == pytest.approx(2.0 / 3)


def test_explained_variance_offset_invariant_and_nan_when_undefined():
    gen = torch.Generator().manual_seed(9)
    v, r, m = torch.randn(3, 6, generator=gen), torch.randn(3, 6, generator=gen), random_mask(3, 6, gen)
    assert explained_variance(v + 3.0, r, m) == pytest.approx(explained_variance(v, r, m), abs=1e-5)
    assert math.isnan(explained_variance(v, torch.ones(3, 6), m))  # Var[R] = 0
    assert math.isnan(explained_variance(v, r, torch.zeros(3, 6)))  # no valid token


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_by_hand():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    # e = 9/6 − 1 = .5 → clipped to .2; β·(1 + .2·1000/10000) = .1·1.02
    ctl.update(current_kl=9.0, n_steps=1000)
    assert ctl.value == pytest.approx(0.102)
    ctl.update(current_kl=6.6, n_steps=1000)  # e = .1 (inside the clip); ×1.01
    assert ctl.value == pytest.approx(0.10302)
    ctl.update(current_kl=0.0, n_steps=1000)  # e = −1 → −.2; ×0.98
    assert ctl.value == pytest.approx(0.10302 * 0.98)
    ctl.update(current_kl=6.0, n_steps=1000)  # at the target: unchanged
    assert ctl.value == pytest.approx(0.10302 * 0.98)


def test_kl_controllers_state_dict_roundtrip_and_factory():
    ctl = make_kl_controller("adaptive", kl_coef=0.2, target=1.0, horizon=100)
    ctl.update(current_kl=2.0, n_steps=10)
    resumed = make_kl_controller("adaptive", kl_coef=0.2, target=1.0, horizon=100)
    resumed.load_state_dict(ctl.state_dict())
    for kl in (0.5, 3.0, 1.1):
        ctl.update(kl, 10)
        resumed.update(kl, 10)
        assert resumed.value == ctl.value
    fixed = make_kl_controller("fixed", kl_coef=0.05)
    assert isinstance(fixed, FixedKLController)
    fixed.update(current_kl=100.0, n_steps=1000)
    fixed.load_state_dict(fixed.state_dict())
    assert fixed.value == 0.05
    with pytest.raises(ValueError, match="fixed, adaptive"):
        make_kl_controller("pid", kl_coef=0.1)
    with pytest.raises(ValueError, match="target and horizon"):
        make_kl_controller("adaptive", kl_coef=0.1)


# ---------------------------------------------------------------- minibatch normalisers


def test_aggregate_loss_with_a_minibatch_normalizer_hand_computed():
    from stepcoder.ppo import aggregate_loss, loss_normalizer

    a = torch.tensor([[1.0, 2.0, 3.0]])  # one micro-batch: 3 counted tokens, sum 6
    b = torch.tensor([[10.0, 0.0, 0.0]])  # another: 1 counted token, sum 10
    ma, mb = torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    n = loss_normalizer(torch.cat([ma, mb]))
    assert n.item() == 4
    parts = aggregate_loss(a, ma, "token", n) + aggregate_loss(b, mb, "token", n)
    assert parts.item() == pytest.approx(16 / 4)  # the minibatch token mean, not (2 + 10) / 2 = 6
    assert aggregate_loss(torch.cat([a, b]), torch.cat([ma, mb]), "token").item() == pytest.approx(4.0)
    ns = loss_normalizer(torch.cat([ma, mb]), "sequence")  # 2 rows with a token
    seq = aggregate_loss(a, ma, "sequence", ns) + aggregate_loss(b, mb, "sequence", ns)
    assert seq.item() == pytest.approx((2.0 + 10.0) / 2)
    assert aggregate_loss(a, torch.zeros_like(a), "token", 0.0).item() == 0.0  # nothing counted: 0, not NaN


def test_summed_micro_batch_shares_equal_the_whole_for_any_split():
    from stepcoder.ppo import aggregate_loss, loss_normalizer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 9, generator=g)
    mask = (torch.rand(7, 9, generator=g) > 0.6).float()
    for agg in ("token", "sequence"):
        whole = aggregate_loss(x, mask, agg)
        n = loss_normalizer(mask, agg)
        for size in (1, 2, 3, 7):
            parts = sum(aggregate_loss(x[i:i + size], mask[i:i + size], agg, n) for i in range(0, 7, size))
            assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


# ---------------------------------------------------------------- experience


def test_advantages_for_hand_computed():
    """One row, 3 completion tokens (the first one FGO-masked), γ = λ = 1, β = 0.5, V = (0.5, 0.2, 0.1)."""
    from stepcoder.training.experience import advantages_for

    old = torch.tensor([[-1.0, -2.0, -1.0]])
    ref = torch.tensor([[-1.0, -1.0, -3.0]])
    values = torch.tensor([[0.5, 0.2, 0.1]])
    action, fgo = torch.ones(1, 3), torch.tensor([[0.0, 1.0, 1.0]])
    rewards, adv, ret, kl = advantages_for(torch.tensor([1.0]), old, ref, values, action, fgo, 0.5, 1.0, 1.0,
                                           whiten=False)
    # kl = old − ref = (0, −1, 2); r = −β·kl + R at the end = (0, 0.5, −1 + 1)
    assert kl.tolist() == [[0.0, -1.0, 2.0]] and rewards.tolist() == [[0.0, 0.5, 0.0]]
    # returns-to-go (γ = λ = 1) = (0.5, 0.5, 0); advantages = returns-to-go − V
    assert ret[0].tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-6)
    assert adv[0].tolist() == pytest.approx([0.0, 0.3, -0.1], abs=1e-6)
    _, white, _, _ = advantages_for(torch.tensor([1.0]), old, ref, values, action, fgo, 0.5, 1.0, 1.0)
    # whitened over the FGO tokens only: (0.3, −0.1) → mean 0.1, unbiased std 0.2828 → ±0.7071; masked → 0
    assert white[0].tolist() == pytest.approx([0.0, 0.70711, -0.70711], abs=1e-4)
