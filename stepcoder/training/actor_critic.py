"""The actor (a causal LM) and the critic: a scalar value head on the actor's last hidden state (shared
trunk, the default: one model's memory), or on a separate copy of the trunk (``critic="separate"``: the value
loss cannot disturb the policy's features, at twice the memory)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


# Config fields of HF models whose forward() changes the logits after the output projection (Gemma 2/3
# soft-capping, Cohere's logit_scale, Granite's logits_scaling). lm_logits() applies the projection itself.
_LOGIT_TRANSFORMS = {"final_logit_softcapping": None, "logit_scale": 1.0, "logits_scaling": 1.0}


def check_plain_lm_head(lm: nn.Module) -> None:
    """Refuse a model whose logits are not just ``output_embeddings(hidden)``: :func:`lm_logits` bypasses the
    model's ``forward`` to compute logits only where needed, so a post-projection transform would be lost and
    the trainer's log-probs would not be those of the policy vLLM samples from."""
    config = getattr(lm, "config", None)
    for name, neutral in _LOGIT_TRANSFORMS.items():
        value = getattr(config, name, neutral)
        if value is not None and value != neutral:
            raise ValueError(
                f"model {type(lm).__name__} transforms its logits ({name}={value}); StepCoder's trainer computes "
                "logits from the output projection alone and does not support such models yet")


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
        check_plain_lm_head(lm)
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

    def param_groups(self, actor_lr: float, critic_lr: float) -> list[dict]:
        """Optimizer groups: the actor LM at ``actor_lr`` first, then the critic (value head, and its own trunk
        when separate) at ``critic_lr``. A shared trunk stays in the actor group: it is the policy."""
        critic = list(self.value_head.parameters())
        if self.critic_lm is not None:
            critic += list(self.critic_lm.parameters())
        critic_ids = {id(p) for p in critic}
        actor = [p for p in self.parameters() if p.requires_grad and id(p) not in critic_ids]
        return [{"params": actor, "lr": actor_lr, "name": "actor"},
                {"params": [p for p in critic if p.requires_grad], "lr": critic_lr, "name": "critic"}]

    def save_value_head(self, directory: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in self.value_head.state_dict().items()},
                  str(directory / VALUE_HEAD_FILE))

    def load_value_head(self, directory: Path) -> bool:
        path = directory / VALUE_HEAD_FILE
        if not path.exists():
            return False
        self.value_head.load_state_dict(load_file(str(path)))
        return True
