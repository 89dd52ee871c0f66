from stepcoder.completion import to_program


def test_plain_continuation_is_kept_whole():
    p = to_program("def f(x):\n", "    return x + 1\n")
    assert p.text == "def f(x):\n    return x + 1\n"
    assert (p.start, p.end) == (0, len("    return x + 1\n"))
    assert p.completion_char_to_program(4) == len("def f(x):\n") + 4


def test_closing_fence_and_trailing_prose_are_cut():
    completion = "    return x\n```\n\nThis function returns x.\n"
    p = to_program("def f(x):\n", completion)
    assert p.text == "def f(x):\n    return x\n"
    assert p.completion_char_to_program(completion.index("```")) is None


def test_leading_fence_is_dropped_and_offsets_shift():
    completion = "```python\ndef f():\n    return 1\n```\n"
    p = to_program("", completion)
    assert p.text == "def f():\n    return 1\n"
    assert p.completion_char_to_program(completion.index("def")) == 0
    assert p.completion_char_to_program(0) is None


def test_prose_without_fence_is_cut_when_the_code_before_it_parses():
    completion = "    return x * 2\nThe function doubles x and returns it.\n"
    assert to_program("def f(x):\n", completion).text == "def f(x):\n    return x * 2\n"


def test_syntax_errors_in_code_are_left_for_compile_error():
    completion = "    return x +\n"
    p = to_program("def f(x):\n", completion)
    assert p.text == "def f(x):\n    return x +\n"
