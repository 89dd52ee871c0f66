"""The actor (a causal LM) and the critic: a scalar value head on the actor's last hidden state (shared
trunk, the default: one model's memory), or on a separate copy of the trunk (``critic="separate"``: the value
loss cannot disturb the policy's features, at twice the memory)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


def lm_logits(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              logits_at: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, last hidden state (B, T, H)) of a causal LM; logits only where ``logits_at`` (B, T) bool is
    True: (N, V) for its N True entries in row-major order (None: all positions, (B, T, V)).

    PPO needs logits only where completion tokens are scored; skipping prompt and padding positions saves most
    of the vocabulary projection and its log-softmax (49k columns per position for SmolLM2). The selected hidden
    states are gathered into one contiguous (N, H) matrix, so the head is a plain matmul forward and backward (a
    strided 3-D slice made autograd expand the (V, H) weight per row into a batched matmul).
    """
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    head_in = hidden if logits_at is None else hidden[logits_at]
    return lm.get_output_embeddings()(head_in), hidden


class ActorCritic(nn.Module):
    def __init__(self, lm: nn.Module, critic_lm: nn.Module | None = None):
        super().__init__()
        self.lm = lm
        self.critic_lm = critic_lm  # None = shared trunk
        hidden = (critic_lm or lm).config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        # Zero init: V ≡ 0 at the start, so early advantages are the (KL-shaped) rewards themselves.
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_at: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (at ``logits_at``, see :func:`lm_logits`) and values (B, T) of every position."""
        logits, hidden = lm_logits(self.lm, input_ids, attention_mask, logits_at)
        if self.critic_lm is not None:
            hidden = self.critic_lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return logits, values

    def save_value_head(self, directory: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()},
                  str(directory / VALUE_HEAD_FILE))

    def load_value_head(self, directory: Path) -> bool:
        path = directory / VALUE_HEAD_FILE
        if not path.exists():
            return False
        self.value_head.load_state_dict(load_file(str(path)))
        return True
