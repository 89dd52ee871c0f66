"""Prompt text for a problem at a CCCS stage: the statement, example tests, then the solution prefix.

Two forms, both ending *inside* Python code so that ``prefix + completion`` is the program:

- chat (instruction-tuned models with a chat template): the user turn holds the statement and tests; the
  assistant turn is pre-filled with an opening ```` ```python ```` fence and the prefix. The model closes the
  fence when done, which is where completion cleaning cuts (see :mod:`stepcoder.completion`).
- plain (base models, the tiny test model): the statement and tests as a comment block, then the prefix.
"""

from __future__ import annotations

from collections.abc import Callable

from stepcoder.problems import Problem

MAX_EXAMPLE_TESTS = 3
FENCE_OPEN = "```python\n"


def _task_text(problem: Problem) -> str:
    text = problem.statement.strip()
    if problem.tests.kind == "assert" and problem.dataset in ("mbpp", "mbpp-plus"):
        # MBPP's standard prompt shows the asserts: they fix the function name and signature (MBPP+: its base
        # asserts as written, kept aside from its generated tests; EvalPlus's own prompt shows one)
        shown = problem.meta.get("examples") or problem.tests.asserts
        text += "\nYour code should pass these tests:\n" + "\n".join(shown[:MAX_EXAMPLE_TESTS])
    return text


def build_prompt(problem: Problem, prefix: str) -> str:
    """Plain form: a comment block, so the prompt is itself valid Python up to the prefix."""
    comment = "\n".join(f"# {line}".rstrip() for line in _task_text(problem).splitlines())
    return comment + "\n" + prefix


def render_prompt(problem: Problem, prefix: str, chat_template: Callable[[str], str] | None) -> str:
    """``chat_template(user_text)`` renders a one-turn conversation with the generation prompt appended."""
    if chat_template is None:
        return build_prompt(problem, prefix)
    return chat_template(_task_text(problem)) + FENCE_OPEN + prefix


def chat_renderer(tokenizer, prompt_format: str) -> Callable[[str], str] | None:
    """The chat-template renderer for ``prompt_format`` ("auto" picks chat when the tokenizer has a template)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "plain" or (prompt_format == "auto" and not has_template):
        return None
    if not has_template:
        raise ValueError("model.prompt_format=chat but the model's tokenizer has no chat template")

    def render(user_text: str) -> str:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )

    return render
