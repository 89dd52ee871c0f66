"""Rollout rows (Arrow) → a typed PPO batch of padded tensors.

Layout: each row is prompt_ids + completion_ids, right-padded to T. The *action axis* has T-1 positions:
action t is the token at input position t+1, scored by the logits at position t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch


@dataclass
class PPOBatch:
    input_ids: torch.Tensor  # (B, T) int64   prompt + completion, right-padded
    attention_mask: torch.Tensor  # (B, T) int64
    action_mask: torch.Tensor  # (B, T-1) float  1 where action t is a completion token
    fgo_mask: torch.Tensor  # (B, T-1) float  action_mask × FGO (tokens the policy loss counts)
    scores: torch.Tensor  # (B,) float      sequence-level reward R (placed on the last action)
    gen_logprobs: torch.Tensor  # (B, T-1) float  log π_old from the generator (0 off the completion)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: torch.Tensor | slice) -> "PPOBatch":
        """Rows ``idx``, trimmed to their longest valid length (saves compute on short micro-batches)."""
        rows = {k: v[idx] for k, v in self.__dict__.items()}
        t = int(rows["attention_mask"].sum(dim=1).max().item()) if len(rows["scores"]) else 1
        for k in ("input_ids", "attention_mask"):
            rows[k] = rows[k][:, :t]
        for k in ("action_mask", "fgo_mask", "gen_logprobs"):
            rows[k] = rows[k][:, : max(t - 1, 0)]
        return PPOBatch(**rows)


def by_length(rows: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``rows`` reordered longest first, so that consecutive micro-batches hold sequences of similar length
    and pad little. Stable, so equal lengths keep their order (the update stays deterministic)."""
    order = torch.sort(lengths[rows], descending=True, stable=True).indices
    return rows[order]


def _list_column(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat values and offsets of a list column, zero-copy where Arrow allows it."""
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy(zero_copy_only=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def batch_from_arrow(table: pa.Table, pad_token_id: int) -> PPOBatch:
    """Build a PPOBatch from rollout rows with prompt_ids, completion_ids, fgo_mask, old_logprobs, reward."""
    p_vals, p_off = _list_column(table, "prompt_ids")
    c_vals, c_off = _list_column(table, "completion_ids")
    f_vals, f_off = _list_column(table, "fgo_mask")
    l_vals, l_off = _list_column(table, "old_logprobs")
    b = table.num_rows
    p_len, c_len = np.diff(p_off), np.diff(c_off)
    if not (np.array_equal(np.diff(f_off), c_len) and np.array_equal(np.diff(l_off), c_len)):
        raise ValueError("rollouts: fgo_mask and old_logprobs must have one entry per completion token")
    t = int((p_len + c_len).max()) if b else 1
    input_ids = torch.full((b, t), pad_token_id, dtype=torch.long)
    attention = torch.zeros((b, t), dtype=torch.long)
    action = torch.zeros((b, t - 1))
    fgo = torch.zeros((b, t - 1))
    gen_lp = torch.zeros((b, t - 1))
    for i in range(b):
        p, c = int(p_len[i]), int(c_len[i])
        input_ids[i, :p] = torch.from_numpy(p_vals[p_off[i] : p_off[i + 1]].astype(np.int64))
        input_ids[i, p : p + c] = torch.from_numpy(c_vals[c_off[i] : c_off[i + 1]].astype(np.int64))
        attention[i, : p + c] = 1
        # completion token j sits at input position p+j, i.e. action index p+j-1
        action[i, p - 1 : p - 1 + c] = 1
        fgo[i, p - 1 : p - 1 + c] = torch.from_numpy(f_vals[f_off[i] : f_off[i + 1]].astype(np.float32))
        gen_lp[i, p - 1 : p - 1 + c] = torch.from_numpy(l_vals[l_off[i] : l_off[i + 1]].astype(np.float32))
    scores = torch.tensor(table.column("reward").to_pylist(), dtype=torch.float32)
    return PPOBatch(input_ids, attention, action, fgo * action, scores, gen_lp)
