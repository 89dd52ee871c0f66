"""One validated, frozen run config (pydantic), loaded from YAML with dotted overrides.

Every section is a model with ``extra="forbid"`` so a typo fails fast with the field's path, e.g.
``ppo.clip_coef: Input should be greater than 0``. Downstream code receives plain values, not this object.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "infra" / "configs" / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    path: str = Field("smollm2-135m", description="HF model dir, or the name of a model `stepcoder model prepare` makes")
    dtype: Literal["float32", "bfloat16"] = Field("bfloat16", description="vLLM inference dtype")
    max_model_len: int = Field(1024, gt=0, description="prompt + completion token budget")
    prompt_format: Literal["auto", "chat", "plain"] = Field(
        "auto", description="chat = chat template + pre-filled code fence; auto = chat if the tokenizer has one"
    )


class DataConfig(_Section):
    dataset: str = Field("mbpp", description="format: mbpp, mbpp-sanitized, humaneval, leetcode, apps, appsplus, ...")
    path: str | None = Field(None, description="dataset file or folder; None = the copy shipped in data/")
    split: str | None = Field("train", description="the format's split (MBPP: train = task_ids 601-974)")
    difficulty: tuple[str, ...] | None = Field(None, description="keep only these difficulties (APPS)")
    ids: tuple[str, ...] | None = Field(None, description="keep only these problem ids")
    subset: int | None = Field(
        None, gt=0, description="a seeded random subset of this many problems: the training pool, visited "
        "problems_per_iteration at a time, each one again every ⌈subset / problems_per_iteration⌉ iterations")
    problems_per_iteration: int = Field(8, gt=0, description="problems sampled each iteration")
    limit: int | None = Field(None, gt=0, description="use only the first N problems (after the filters)")
    seed: int = 0

    @model_validator(mode="after")
    def _known_dataset_and_split(self) -> "DataConfig":
        from stepcoder.datasets import FORMATS

        fmt = FORMATS.get(self.dataset)
        if fmt is None:
            raise ValueError(f"data.dataset {self.dataset!r} is unknown; valid: {', '.join(FORMATS)}")
        if self.split is not None and fmt.splits and self.split not in fmt.splits:
            raise ValueError(f"data.split {self.split!r} is not a split of {self.dataset}; valid: {', '.join(fmt.splits)}")
        if not fmt.shipped and not self.path:
            raise ValueError(f"data.path is required for dataset {self.dataset} (no copy ships with StepCoder)")
        return self


class EvalConfig(_Section):
    every: int = Field(0, ge=0, description="evaluate the new checkpoint every N iterations (0 = never)")
    splits: tuple[str, ...] = Field(("mbpp-test",), description="held-out eval splits, never trained on")
    paths: dict[str, str] = Field(default_factory=dict, description="eval split → file, where none ships (APPS+)")
    n: int = Field(1, gt=0, description="samples per problem")
    k: tuple[int, ...] = Field((1,), description="pass@k values reported")
    temperature: float = Field(0.0, ge=0, description="0 = greedy pass@1")
    max_new_tokens: int = Field(256, gt=0)
    limit: int | None = Field(None, gt=0, description="evaluate only the first N problems of each split")

    @model_validator(mode="after")
    def _consistent(self) -> "EvalConfig":
        from stepcoder.datasets.splits import EVAL_SPLITS

        unknown = [s for s in self.splits if s not in EVAL_SPLITS]
        if unknown:
            raise ValueError(f"eval.splits {unknown} unknown; valid: {', '.join(EVAL_SPLITS)}")
        if self.temperature == 0 and self.n != 1:
            raise ValueError("eval.temperature=0 (greedy) needs eval.n=1")
        if any(k > self.n or k < 1 for k in self.k):
            raise ValueError(f"eval.k values must be between 1 and eval.n={self.n}")
        return self


class CurriculumConfig(_Section):
    enabled: bool = Field(True, description="False = every prompt is full generation (no-CCCS ablation)")
    split_nodes: tuple[Literal["If", "Else", "For", "While", "Try", "Except", "With", "Match"], ...] = Field(
        ("If", "Else", "For", "While", "Try", "Except", "With", "Match"),
        description="conditional statements whose first line is a split point",
    )
    mode: Literal["per_problem", "global"] = Field(
        "per_problem", description="advance each problem on its own pass rate, or one shared stage on the batch's"
    )
    full_stage_fraction: float = Field(
        0.1, ge=0, le=1, description="fraction of prompts asked at the final (write-it-all) stage for practice"
    )
    advance_threshold: float = Field(
        0.5, ge=0, le=1, description="pass rate ρ at which a problem moves a stage on (0 = every iteration); "
        "0.5 = solved at least half the time (docs/algorithm.md: why not 0.8)"
    )
    min_samples: int = Field(4, gt=0, description="samples needed at a stage before it can advance")


class GenerationConfig(_Section):
    backend: Literal["vllm"] = "vllm"
    n_samples: int = Field(8, gt=0, description="samples per prompt (8: pass rates in steps of 1/8 for ρ)")
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1, description="must stay 1: see the validator")
    max_new_tokens: int = Field(256, gt=0)
    seed: int = 0
    # GPU settings, passed to vLLM (stepcoder/generation/engine_args.py); CPU runs keep the defaults
    tensor_parallel_size: int = Field(1, gt=0, description="vLLM tensor-parallel degree (GPUs per engine)")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="share of each GPU vLLM takes for weights + KV cache (None: vLLM's 0.9); "
        "the rest is DeepSpeed's when they share GPUs")
    sleep_mode: bool = Field(False, description="GPU: vLLM frees its KV cache and offloads its weights while "
                             "DeepSpeed trains on the same GPUs, and wakes before the next generate")
    enforce_eager: bool = Field(True, description="no CUDA graphs (false on GPUs: faster decoding)")

    @model_validator(mode="after")
    def _full_softmax(self) -> "GenerationConfig":
        # vLLM's log-probs under top-p are of the truncated, renormalised distribution, while the trainer scores
        # the full softmax: the PPO ratio and the KL would compare two different policies.
        if self.top_p != 1.0:
            raise ValueError(
                f"generation.top_p={self.top_p} is not supported: PPO needs the log-probs of the distribution it "
                "samples from, and the trainer scores the full softmax; use generation.temperature to sharpen")
        return self


class ExecutionConfig(_Section):
    backend: Literal["embedded", "docker"] = Field("embedded", description="embedded sandbox or warm Docker pool")
    workers: int | None = Field(None, gt=0, description="parallel sandboxed programs; None = CPU count")
    timeout_s: float = Field(4.0, gt=0, description="per-test wall timeout")
    budget_s: float = Field(20.0, gt=0, description="per-program wall budget over all tests")
    memory_mb: int = Field(1024, ge=64)
    coverage: bool = Field(True, description="record executed lines (FGO needs them; off = FGO mask all ones)")
    python: str | None = Field(None, description="runner interpreter; None = the cheapest with coverage available")
    lenient_stdio: bool = Field(False, description="APPS' order-insensitive token-set rule (passes wrong answers)")
    stop_on_first_failure: bool = Field(False, description="stop a program at its first failing test")
    guard_comparisons: bool = Field(
        True, description="assert tests refuse comparisons decided by the program's own __eq__/__bool__/... "
        "(a reward hack); off = run the tests exactly as written")
    split_tests: bool = Field(
        True, description="assert tests (MBPP, HumanEval, LeetCode) run in a test driver outside the program's "
        "process, which only gets calls and returns data; off = in the program's process under the guard")
    cache: bool = Field(True, description="run identical (program, tests) once per process")
    docker_image: str = Field("stepcoder-runner:latest", description="runner image of the docker backend")
    chunk_size: int = Field(64, gt=0, description="programs per execute task")


class RewardConfig(_Section):
    mode: Literal["stepcoder", "ppocoder"] = Field(
        "stepcoder", description="stepcoder = unit-test table; ppocoder = table + AST match + data-flow match"
    )
    exec_weight: float = Field(1.0, ge=0, description="ppocoder: weight of the compiler/unit-test signal")
    ast_weight: float = Field(1.0, ge=0, description="ppocoder: weight of the AST (syntax) match")
    dfg_weight: float = Field(1.0, ge=0, description="ppocoder: weight of the data-flow-graph match")
    pass_reward: float = 1.0
    fail: float = -0.3
    runtime_error: float = -0.6
    timeout: float = -0.6
    compile_error: float = -1.0


class FGOConfig(_Section):
    enabled: bool = Field(True, description="False = train on every completion token (no-FGO ablation)")
    mask_value_loss: bool = Field(False, description="also apply the FGO mask to the value loss")


class PPOConfig(_Section):
    lr: float = Field(1e-6, gt=0, description="actor learning rate (the policy LM)")
    critic_lr: float = Field(
        1e-4, gt=0, description="learning rate of the value head (and of the critic trunk when critic=separate): "
        "a freshly initialised head at the actor's 1e-6 stays ≈ 0 for hundreds of steps")
    epochs: int = Field(1, gt=0, description="PPO epochs over each batch")
    minibatch_size: int = Field(8, gt=0, description="sequences per optimizer step")
    micro_batch_size: int = Field(4, gt=0, description="sequences per forward/backward")
    gamma: float = Field(1.0, ge=0, le=1)
    gae_lambda: float = Field(
        1.0, ge=0, le=1, description="GAE λ. 1 (verl's default) gives every token the full return minus its value; "
        "with 0.95 and a terminal-only reward a token 50 steps from the end gets 0.95^50 ≈ 8 % of it")
    clip_coef: float = Field(0.2, gt=0)
    vf_clip_coef: float | None = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    ent_coef: float = Field(0.0, ge=0)
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the per-token KL penalty to the reference")
    kl_controller: Literal["fixed", "adaptive"] = Field("fixed", description="adaptive = Ziegler et al. 2019")
    kl_target: float | None = Field(None, gt=0, description="adaptive KL: target KL per token")
    kl_horizon: int | None = Field(None, gt=0, description="adaptive KL: horizon in samples")
    critic: Literal["shared", "separate"] = Field("shared", description="value head on the actor or own trunk")
    old_logprobs: Literal["recompute", "generator"] = Field(
        "recompute", description="log π_old: recomputed by the trainer (default) or taken from vLLM"
    )
    engine: Literal["deepspeed", "torch"] = Field("deepspeed", description="torch = plain loop baseline")
    whiten_advantages: bool = True
    loss_agg: Literal["token", "sequence"] = Field("token", description="normalizer of masked losses")
    deepspeed_config: str = Field("infra/deepspeed/zero0_fp32.json", description="path, relative to the repo root")
    keep_checkpoints: int = Field(2, gt=0, description="keep the last k checkpoints of a run")
    num_processes: int = Field(
        1, gt=0, description="DeepSpeed ranks of the PPO update per node; > 1 launches them with torchrun")
    own_process: bool = Field(
        False, description="one rank too runs as a torchrun-launched process, apart from the flow's vLLM")
    launcher_args: list[str] = Field(
        default_factory=list, description="more torchrun arguments, e.g. for several nodes: "
        "['--nnodes=2', '--node-rank=0', '--rdzv-backend=c10d', '--rdzv-endpoint=head:29500']")

    @model_validator(mode="after")
    def _adaptive_needs_target(self) -> "PPOConfig":
        if self.kl_controller == "adaptive" and (self.kl_target is None or self.kl_horizon is None):
            raise ValueError("ppo.kl_controller=adaptive needs ppo.kl_target and ppo.kl_horizon")
        return self

    @model_validator(mode="after")
    def _ranks_need_deepspeed(self) -> "PPOConfig":
        if self.num_processes > 1 and self.engine != "deepspeed":
            raise ValueError(f"ppo.num_processes={self.num_processes} needs ppo.engine=deepspeed "
                             f"(the {self.engine!r} engine trains on one rank)")
        return self

    @model_validator(mode="after")
    def _micro_divides_mini(self) -> "PPOConfig":
        if self.minibatch_size % self.micro_batch_size:
            raise ValueError(
                f"ppo.minibatch_size ({self.minibatch_size}) must be a multiple of "
                f"ppo.micro_batch_size ({self.micro_batch_size})"
            )
        return self


class OrchestrationConfig(_Section):
    task_runner: Literal["thread", "dask"] = Field(
        "thread", description="runner of the execute fan-out: thread (in the flow process) or dask"
    )
    max_workers: int = Field(2, gt=0, description="threads, or LocalCluster worker processes (dask, no address)")
    dask_address: str | None = Field(None, description="Dask scheduler, e.g. tcp://10.0.0.5:8786; None = LocalCluster")
    lock_wait_s: float = Field(0.0, ge=0, description="wait this long for another writer of the run, then fail")


class RunConfig(_Section):
    run_name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    store: str = Field(".stepcoder/store", description="rollout store: a directory or an fsspec URL")
    store_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec/s3fs options (endpoint_url, ...); keep secrets in AWS_* env vars"
    )
    checkpoint_dir: str = Field(
        ".stepcoder/checkpoints",
        description="policy checkpoints: a directory or an fsspec URL (s3://bucket/prefix, with store_options)",
    )
    checkpoint_cache: str = Field(
        ".stepcoder/cache/checkpoints", description="local copies of remote checkpoints (the newest one only)"
    )
    log_dir: str = Field(".stepcoder/logs", description="`stepcoder run` writes library logs to <log_dir>/<run>/")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    generation: GenerationConfig = GenerationConfig()
    execution: ExecutionConfig = ExecutionConfig()
    reward: RewardConfig = RewardConfig()
    fgo: FGOConfig = FGOConfig()
    ppo: PPOConfig = PPOConfig()
    eval: EvalConfig = EvalConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def _scalar(raw: str) -> Any:
    """YAML scalar, except that 1e-5 is a float (YAML 1.1 would read it as a string)."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["ppo.lr=1e-5", "fgo.enabled=false"]`` → nested dict. Values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    if not overrides:
        return tree
    items = overrides.items() if isinstance(overrides, dict) else None
    if items is None:
        pairs = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.field=value")
            key, raw = item.split("=", 1)
            pairs.append((key.strip(), _scalar(raw)))
        items = pairs
    for key, value in items:
        _set_dotted(tree, key, value)
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    run_name: str | None = None,
) -> RunConfig:
    """Load YAML (default: infra/configs/default.yaml), apply overrides, validate once."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    tree = _deep_merge(tree, parse_overrides(overrides))
    if run_name:
        tree["run_name"] = run_name
    for key in ("store", "checkpoint_dir", "checkpoint_cache", "log_dir"):
        # Plain paths are pinned to absolute once, so tasks in other threads/processes agree on them.
        value = tree.get(key)
        if isinstance(value, str) and "://" not in value:
            tree[key] = str(Path(value).expanduser().resolve())
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        ]
        raise ConfigError(f"invalid config ({path}):\n" + "\n".join(lines)) from None


def resolve_repo_path(path: str) -> Path:
    """Relative paths in the config are relative to the repo root (so `make run` works from anywhere)."""
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p
