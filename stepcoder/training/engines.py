"""Training engines behind one small interface: DeepSpeed (default) or a plain torch loop (reference/bench).

Both read the same DeepSpeed JSON (optimizer type and params, gradient clipping, ZeRO stage, bf16), so the
plain loop is a faithful baseline: same AdamW, same loss scaling by 1/GA, same clipping at the boundary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

ENGINES = ("deepspeed", "torch")


def ds_config_for(base: dict, micro_batch_size: int, grad_accum: int, lr: float) -> dict:
    """Fill the batch-size and learning-rate fields a run config owns into a DeepSpeed JSON."""
    cfg = json.loads(json.dumps(base))
    cfg["train_micro_batch_size_per_gpu"] = micro_batch_size
    cfg["gradient_accumulation_steps"] = grad_accum
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and the world size
    cfg.setdefault("optimizer", {"type": "AdamW", "params": {"torch_adam": True, "fused": True}})
    cfg["optimizer"].setdefault("params", {})["lr"] = lr
    return cfg


def make_engine(kind: str, model: nn.Module, ds_config: dict, device: str, param_groups: list[dict] | None = None):
    """``deepspeed``: deepspeed.initialize; ``torch``: :class:`TorchEngine`. Unknown kinds list the valid ones.

    ``param_groups``: optimizer groups with their own ``lr`` (actor and critic); None = one group at the
    config's lr."""
    params = param_groups or [p for p in model.parameters() if p.requires_grad]
    if kind == "deepspeed":
        import deepspeed

        engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
        return engine
    if kind == "torch":
        return TorchEngine(model.to(device), ds_config, param_groups)
    raise ValueError(f"unknown training engine {kind!r}; valid: {', '.join(ENGINES)}")


class TorchEngine:
    """The subset of DeepSpeedEngine the PPO trainer uses, as a plain single-process torch loop."""

    def __init__(self, module: nn.Module, ds_config: dict, param_groups: list[dict] | None = None):
        opt = ds_config.get("optimizer", {})
        if opt.get("type", "AdamW").lower() not in ("adamw", "adam"):
            raise ValueError(f"torch engine supports AdamW only, not {opt.get('type')!r}")
        # "fused" (torch's single-kernel AdamW, CPU and CUDA) and "foreach" pass through as DeepSpeed passes them
        # to torch.optim.AdamW under "torch_adam", so both engines run the same optimizer kernel.
        keys = ("lr", "betas", "eps", "weight_decay", "fused", "foreach")
        p = {k: v for k, v in opt.get("params", {}).items() if k in keys}
        self.module = module
        self.optimizer = torch.optim.AdamW(param_groups or [q for q in module.parameters() if q.requires_grad], **p)
        self.grad_accum = int(ds_config.get("gradient_accumulation_steps", 1))
        self.clip = float(ds_config.get("gradient_clipping", 0.0))
        self.micro_steps = 0
        self.global_steps = 0
        self._grad_norm: float | None = None

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def train(self) -> None:
        self.module.train()

    def eval(self) -> None:
        self.module.eval()

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.grad_accum == 0

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()  # DeepSpeed scales by 1/GA the same way

    def step(self) -> None:
        if self.is_gradient_accumulation_boundary():
            params = [q for q in self.module.parameters() if q.requires_grad]
            if self.clip > 0:
                self._grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_steps += 1
        self.micro_steps += 1

    def get_global_grad_norm(self) -> float | None:
        return self._grad_norm

    def save_checkpoint(self, save_dir: str, tag: str, **_: object) -> None:
        out = Path(save_dir) / tag
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "micro_steps": self.micro_steps, "global_steps": self.global_steps}, out / "state.pt")

    def load_checkpoint(self, load_dir: str, tag: str, **_: object) -> None:
        state = torch.load(Path(load_dir) / tag / "state.pt", weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.micro_steps, self.global_steps = state["micro_steps"], state["global_steps"]
