"""PPO math as pure torch functions on the action axis (B, T). No I/O, no config, no DeepSpeed/vLLM."""

from stepcoder.ppo.gae import compute_gae
from stepcoder.ppo.kl_controller import AdaptiveKLController, FixedKLController, make_kl_controller
from stepcoder.ppo.logprobs import (
    entropy_from_logits,
    logprobs_from_logits,
    token_logprobs,
    token_logprobs_and_entropy,
)
from stepcoder.ppo.losses import entropy_bonus, explained_variance, policy_loss, value_loss
from stepcoder.ppo.masked import aggregate_loss, loss_normalizer, masked_mean, masked_sum, masked_var, masked_whiten
from stepcoder.ppo.kl_penalty import kl_estimate, kl_penalized_rewards

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "aggregate_loss",
    "compute_gae",
    "entropy_bonus",
    "entropy_from_logits",
    "explained_variance",
    "kl_estimate",
    "kl_penalized_rewards",
    "loss_normalizer",
    "logprobs_from_logits",
    "make_kl_controller",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "token_logprobs",
    "token_logprobs_and_entropy",
    "value_loss",
]
