"""The sequence reward R of one program: where StepCoder's (and PPOCoder's) reward lives.

- :mod:`stepcoder.rewards.outcome`: the unit-test outcome table (StepCoder eq. 1: +1 / −0.3 / −0.6 / −1).
- :mod:`stepcoder.rewards.ppocoder`: PPOCoder's table + AST match + data-flow match (imports codebleu, so it is
  loaded only when that mode is used).
- :func:`sequence_reward`: the ``reward.mode`` switch between the two.

The per-token KL penalty that PPO adds on top is not here: it is part of the PPO update
(:mod:`stepcoder.ppo.kl_penalty`).
"""

from stepcoder.rewards.modes import REWARD_MODES, sequence_reward
from stepcoder.rewards.outcome import DEFAULT_REWARDS, execution_reward, reward_table

__all__ = ["DEFAULT_REWARDS", "REWARD_MODES", "execution_reward", "reward_table", "sequence_reward"]
