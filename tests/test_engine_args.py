"""GPU settings reach vLLM's LLM(...) (the mapping is pure: tested without starting an engine)."""

import pytest

from stepcoder.config import ConfigError, load_config
from stepcoder.generation.engine_args import engine_args

BASE = {"dtype": "bfloat16", "max_model_len": 2048, "seed": 7}


def test_cpu_defaults_are_one_in_process_rank_without_gpu_settings():
    args = engine_args("/m", **BASE)
    assert args["model"] == "/m" and args["dtype"] == "bfloat16" and args["max_model_len"] == 2048
    assert (args["tensor_parallel_size"], args["distributed_executor_backend"]) == (1, "uni")
    assert args["enforce_eager"] is True and args["seed"] == 7 and args["enable_chunked_prefill"] is False
    assert args["logprobs_mode"] == "processed_logprobs"
    assert "gpu_memory_utilization" not in args and "enable_sleep_mode" not in args


def test_each_gpu_setting_reaches_the_engine():
    args = engine_args("/m", **BASE, tensor_parallel_size=4, gpu_memory_utilization=0.45, sleep_mode=True,
                       enforce_eager=False, cuda=True)
    assert args["tensor_parallel_size"] == 4 and args["distributed_executor_backend"] == "mp"
    assert args["gpu_memory_utilization"] == 0.45 and args["enable_sleep_mode"] is True
    assert args["enforce_eager"] is False


def test_gpu_only_settings_are_refused_on_cpu_with_the_reason():
    with pytest.raises(ValueError, match="sleep_mode needs CUDA"):
        engine_args("/m", **BASE, sleep_mode=True)
    with pytest.raises(ValueError, match="tensor_parallel_size=2 needs as many GPUs"):
        engine_args("/m", **BASE, tensor_parallel_size=2)


def test_the_run_config_carries_them():
    g = load_config(None, ["generation.tensor_parallel_size=8", "generation.gpu_memory_utilization=0.4",
                           "generation.sleep_mode=true", "generation.enforce_eager=false"]).generation
    assert (g.tensor_parallel_size, g.gpu_memory_utilization, g.sleep_mode, g.enforce_eager) == (8, 0.4, True, False)
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        load_config(None, ["generation.gpu_memory_utilization=1.5"])


def test_the_paper_scale_preset_loads():
    cfg = load_config("infra/configs/deepseek-6.7b-8gpu.yaml", ["model.path=/models/deepseek-coder-6.7b-instruct",
                                                               "data.path=/data/appsplus/data.json"])
    assert cfg.generation.tensor_parallel_size == 8 and cfg.generation.sleep_mode
    assert cfg.model.dtype == "bfloat16" and cfg.ppo.deepspeed_config.endswith("zero3_bf16.json")
