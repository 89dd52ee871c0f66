"""Character spans of generated tokens in their decoded text (FGO maps tokens → program lines with them)."""

from __future__ import annotations

from collections.abc import Sequence


def token_char_spans(tokenizer, ids: Sequence[int]) -> tuple[list[tuple[int, int]], int]:
    """(start, end) of each text token of ``ids`` in ``decode(ids)``, and the count of trailing special tokens.

    Re-tokenizing the text with offsets is exact when it reproduces the same ids (the usual case). When it
    does not (sampling can produce non-canonical token sequences), fall back to incremental decoding:
    span_i = [len(decode(ids[:i])), len(decode(ids[:i+1]))).
    """
    special = set(tokenizer.all_special_ids)
    n_special = 0
    while n_special < len(ids) and ids[len(ids) - 1 - n_special] in special:
        n_special += 1
    body = list(ids[: len(ids) - n_special])
    text = tokenizer.decode(body, skip_special_tokens=True)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) == body:
        return [tuple(span) for span in enc["offset_mapping"]], n_special
    spans, prev = [], 0
    for i in range(len(body)):
        end = len(tokenizer.decode(body[: i + 1], skip_special_tokens=True))
        spans.append((prev, max(prev, end)))
        prev = max(prev, end)
    return spans, n_special
