"""CCCS prompts end where the default model's tokenizer would put a token boundary, on real MBPP solutions.

A prompt is tokenized apart from its completion. If the prompt's last token is one the tokenizer would have
merged with the text after it (a bare "\\n" before indentation), the model is asked to continue from a token
sequence it never saw in training, and small models then drop the indentation. So: the prompt's tokens must be
exactly the first tokens of the tokenized prompt + canonical continuation.
"""

from __future__ import annotations

import pytest

from stepcoder.curriculum import num_stages, split_points, stage_prefix
from stepcoder.datasets import load_problems
from stepcoder.datasets.splits import random_subset
from stepcoder.prompts import chat_renderer, render_prompt


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def cases(smollm2_tokenizer):
    chat = chat_renderer(smollm2_tokenizer, "auto")
    assert chat is not None  # the default model is chat-tuned: prompts end inside an open code fence
    out = []
    for problem in random_subset(load_problems("mbpp", split="train"), 60, seed=3):
        splits = split_points(problem.solution)
        for stage in range(num_stages(splits) - 1):  # every stage that shows part of the solution
            cut = stage_prefix(problem.solution, splits, stage)
            assert problem.solution.startswith(cut.prefix)
            prompt = render_prompt(problem, cut.prefix, chat)
            # What the model should write next: the rest of the solution (less the trailing blanks of the cut line).
            out.append((problem.problem_id, stage, prompt, problem.solution[len(cut.prefix):].lstrip(" \t")))
    assert len(out) > 100
    return out


def test_prompt_tokens_are_a_prefix_of_the_whole_programs_tokens(smollm2_tokenizer, cases):
    bad = []
    for pid, stage, prompt, rest in cases:
        p = _ids(smollm2_tokenizer, prompt)
        if _ids(smollm2_tokenizer, prompt + rest)[: len(p)] != p:
            bad.append((pid, stage))
    assert bad == []


def test_the_first_token_to_generate_holds_the_newline_and_the_indentation(smollm2_tokenizer, cases):
    indented = 0
    for _, _, prompt, rest in cases:
        p = _ids(smollm2_tokenizer, prompt)
        first = smollm2_tokenizer.decode(_ids(smollm2_tokenizer, prompt + rest)[len(p)])
        assert first.startswith("\n"), repr(first)
        line = rest.lstrip("\n").splitlines()[0]
        depth = len(line) - len(line.lstrip())
        if depth >= 4 and line.startswith("    " * (depth // 4)):
            indented += 1
            # "\n" plus the indentation (the last space may go with the keyword, as in " if")
            assert first.strip("\n") in (" " * depth, " " * (depth - 1)), repr(first)
    assert indented > 50
