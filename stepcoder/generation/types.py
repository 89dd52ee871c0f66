"""What a generator returns for one sample."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    completion_ids: list[int]  # generated tokens, EOS included when the model stopped on it
    logprobs: list[float]  # log π_old(a_t) of each generated token, after temperature (vLLM "processed")
    text: str  # decode(completion_ids) without special tokens
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    token_spans: tuple[tuple[int, int], ...] = ()  # (start, end) in ``text`` of each non-special token
    n_special: int = 0  # trailing special tokens (EOS) after the text tokens
