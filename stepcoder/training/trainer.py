"""One PPO update on DeepSpeed over a batch of rollouts (StepCoder section 3.3; PPO as in CleanRL/OpenRLHF).

    1. experience (:mod:`stepcoder.training.experience`): old/ref log-probs, values, KL-shaped rewards, GAE
    2. epochs × minibatches of clipped policy loss (completion × FGO mask) + clipped value loss + entropy bonus,
       each minibatch's losses normalised by its own token (or sequence) count, whatever its micro-batches
    3. checkpoints: an HF policy dir vLLM reloads, the value head, DeepSpeed and trainer state

The math lives in :mod:`stepcoder.ppo`; this file wires models, DeepSpeed and checkpoints around it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from stepcoder import ppo
from stepcoder.config import PPOConfig, RunConfig
from stepcoder.faults import crash_point
from stepcoder.training.actor_critic import ActorCritic, check_plain_lm_head, lm_logits
from stepcoder.training.batch import PPOBatch, by_length
from stepcoder.training.distributed import init_distributed
from stepcoder.training.engines import ds_config_for, make_engine
from stepcoder.training import data_parallel as dp
from stepcoder.training.experience import Experience, experience_from_scores, score_batch
from stepcoder.training.layout import DEEPSPEED, POLICY, STATE_FILE



def loss_item(x: torch.Tensor) -> float:
    return float(x.detach())


@dataclass(frozen=True)
class PPOHyper:
    """What one PPO update needs: the run's validated ``ppo`` config section (its defaults live there, once) and
    three values that other sections own. ``hp.lr`` etc. read through to the section."""

    ppo: PPOConfig = PPOConfig()
    temperature: float = 1.0  # sampling temperature: log-probs are of softmax(logits / T), as vLLM sampled
    seed: int = 0
    mask_value_loss: bool = False  # FGO mask on the value loss too (fgo.mask_value_loss; paper: policy only)

    @classmethod
    def of(cls, *, temperature: float = 1.0, seed: int = 0, mask_value_loss: bool = False, **ppo) -> "PPOHyper":
        """Build from ``ppo`` section fields by name (validated like a config file's)."""
        return cls(PPOConfig(**ppo), temperature, seed, mask_value_loss)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "PPOHyper":
        # Greedy (T=0) generation is scored at T=1: PPO's ratio must use the distribution vLLM sampled from.
        return cls(cfg.ppo, cfg.generation.temperature or 1.0, cfg.generation.seed, cfg.fgo.mask_value_loss)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.ppo, name)

    def to_dict(self) -> dict:
        return {**self.ppo.model_dump(mode="json"), "temperature": self.temperature, "seed": self.seed,
                "mask_value_loss": self.mask_value_loss}


def _load_lm(path: Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


class PPOTrainer:
    """Owns the training engine (actor + critic), the frozen reference model and the KL controller."""

    def __init__(
        self,
        policy_dir: Path,
        ref_dir: Path,
        ds_config: dict,
        hp: PPOHyper,
        resume_dir: Path | None = None,
    ):
        self.hp = hp
        self.device = init_distributed()
        self.rank, self.world = dp.rank_and_world()
        if self.world > 1 and hp.engine != "deepspeed":
            raise ValueError(f"ppo.engine={hp.engine!r} trains on one rank only; use deepspeed for {self.world}")
        torch.manual_seed(hp.seed)
        self.policy_dir = Path(policy_dir)
        critic_lm = None
        if hp.critic == "separate":
            saved = Path(resume_dir) / "critic" if resume_dir else None
            critic_lm = _load_lm(saved if saved and saved.exists() else Path(ref_dir))
        model = ActorCritic(_load_lm(self.policy_dir), critic_lm)
        if resume_dir is not None:
            model.load_value_head(Path(resume_dir))
        config = ds_config_for(ds_config, hp.micro_batch_size, self._window, hp.lr)
        self.engine = make_engine(hp.engine, model, config, self.device, model.param_groups(hp.lr, hp.critic_lr))
        # The frozen reference only runs forward passes: in a bf16 run it computes in bf16 too (the log-softmax
        # over its logits stays in fp32).
        ref_dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
        self.ref = _load_lm(Path(ref_dir), ref_dtype).to(self.device).eval().requires_grad_(False)
        check_plain_lm_head(self.ref)
        self.kl_ctl = ppo.make_kl_controller(hp.kl_controller, hp.kl_coef, hp.kl_target, hp.kl_horizon)
        self.global_step = 0
        if resume_dir is not None:
            self._load_state(Path(resume_dir))

    # ---- forward helpers -------------------------------------------------------------------------------
    def _scored(self, mb: PPOBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where logits are needed: (B, T) bool input positions that score an action, the (N,) tokens they
        score, and the (B, T-1) bool action mask that puts the N results back on the action axis."""
        actions = mb.action_mask.bool().to(self.device)
        at = torch.nn.functional.pad(actions, (0, 1))  # position t scores action t; the last one scores nothing
        labels = mb.input_ids.to(self.device)[:, 1:][actions]
        return at, labels, actions

    @staticmethod
    def _on_actions(flat: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(N,) per-action values → (B, T-1), 0 off the actions (every consumer masks those out)."""
        return torch.zeros(actions.shape, dtype=flat.dtype, device=flat.device).masked_scatter(actions, flat)

    def _policy_forward(self, mb: PPOBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log π(a_t) (b, t-1), V(s_t) (b, t-1) and entropy (b, t-1) on the action axis, at temperature T."""
        ids, att = mb.input_ids.to(self.device), mb.attention_mask.to(self.device)
        at, labels, actions = self._scored(mb)
        logits, values = self.engine(ids, att, at)
        # Log-softmax in fp32 blocks whatever the logits' dtype; the entropy only needs a gradient when it is
        # in the loss (ent_coef ≠ 0), otherwise it is a logged statistic.
        logprobs, entropy = ppo.token_logprobs_and_entropy(
            logits, labels, self.hp.temperature, entropy_grad=self.hp.ent_coef != 0 and torch.is_grad_enabled()
        )
        return self._on_actions(logprobs, actions), values[:, :-1].float(), self._on_actions(entropy, actions)

    @torch.no_grad()
    def _old_logprobs_values(self, mb: PPOBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """log π_old(a_t) and V_old(s_t), (b, t-1) each: the policy forward without the entropy."""
        ids, att = mb.input_ids.to(self.device), mb.attention_mask.to(self.device)
        at, labels, actions = self._scored(mb)
        logits, values = self.engine(ids, att, at)
        logprobs = ppo.token_logprobs(logits, labels, self.hp.temperature)
        return self._on_actions(logprobs, actions), values[:, :-1].float()

    @torch.no_grad()
    def _ref_logprobs(self, mb: PPOBatch) -> torch.Tensor:
        ids, att = mb.input_ids.to(self.device), mb.attention_mask.to(self.device)
        at, labels, actions = self._scored(mb)
        logits, _ = lm_logits(self.ref, ids, att, at)
        return self._on_actions(ppo.token_logprobs(logits, labels, self.hp.temperature), actions)

    @property
    def _window(self) -> int:
        """Micro-steps per optimizer step on each rank (DeepSpeed's gradient accumulation steps)."""
        return dp.micro_steps(self.hp.minibatch_size, self.hp.micro_batch_size, self.world)

    def _micro_slices(self, n: int) -> list[slice]:
        m = self.hp.micro_batch_size
        return [slice(i, min(i + m, n)) for i in range(0, n, m)]

    # ---- the update ------------------------------------------------------------------------------------
    def _experience(self, batch: PPOBatch) -> Experience:
        """Score this rank's rows, gather every rank's scores, then the experience of the whole batch (the same
        numbers on every rank: stepcoder/training/data_parallel.py)."""
        self.engine.eval()
        hp = self.hp
        n = len(batch)
        mine = dp.shard(torch.arange(n), self.rank, self.world)
        scores = score_batch(batch.select(mine), self._old_logprobs_values, self._ref_logprobs, hp.micro_batch_size)
        if self.world > 1:
            for _ in range(dp.micro_steps(n, hp.micro_batch_size, self.world) - self._passes(len(mine))):
                self._old_logprobs_values(batch.select(torch.arange(1)))  # ZeRO-3: every rank gathers alike
            width = batch.action_mask.shape[1]  # a shard is trimmed to its own longest row: pad to the batch's
            scores = tuple(dp.gather_rows(torch.nn.functional.pad(s, (0, width - s.shape[1])), n, self.rank,
                                          self.world, self.device) for s in scores)
        return experience_from_scores(batch, scores, kl_coef=self.kl_ctl.value, gamma=hp.gamma,
                                      gae_lambda=hp.gae_lambda, whiten=hp.whiten_advantages,
                                      old_logprobs=hp.old_logprobs)

    def _passes(self, rows: int) -> int:
        return -(-rows // self.hp.micro_batch_size)

    def step(self, batch: PPOBatch) -> list[dict[str, float]]:
        """Run ``epochs`` × minibatches of PPO on ``batch``; one metrics dict per optimizer step."""
        hp = self.hp
        exp = self._experience(batch)
        kl_coef = self.kl_ctl.value
        n = len(batch)
        masked_fraction = 1.0 - float(batch.fgo_mask.sum() / batch.action_mask.sum().clamp(min=1))
        # How much of the return's variance the critic explained before this update (CleanRL's
        # losses/explained_variance): the number that says whether the critic learns at all.
        explained = ppo.explained_variance(exp.old_values, exp.returns, batch.action_mask)
        value_mask = batch.fgo_mask if hp.mask_value_loss else batch.action_mask
        metrics: list[dict[str, float]] = []
        gen = torch.Generator().manual_seed(hp.seed + self.global_step)
        lengths = batch.attention_mask.sum(dim=1)
        self.engine.train()
        for epoch in range(hp.epochs):
            perm = torch.randperm(n, generator=gen)
            for mb_index, start in enumerate(range(0, n, hp.minibatch_size)):
                # Micro-batches of similar lengths pad least (each is trimmed to its longest row); the
                # minibatch-wide normalisers make the gradient independent of this split.
                mb_rows = perm[start : start + hp.minibatch_size]
                if len(mb_rows) > hp.micro_batch_size:  # one micro-batch: nothing to gain, keep the row order
                    mb_rows = by_length(mb_rows, lengths)
                # Each loss is normalised by the whole minibatch's count, not per micro-batch, so the gradient
                # does not depend on how the minibatch is split (docs/algorithm.md, "Losses").
                norms = {name: ppo.loss_normalizer(m[mb_rows], hp.loss_agg)
                         for name, m in (("policy", batch.fgo_mask), ("value", value_mask),
                                         ("entropy", batch.action_mask))}
                sums: dict[str, float] = {}
                means: dict[str, list[float]] = {}
                my_rows = dp.shard(mb_rows, self.rank, self.world)  # this rank's share of the minibatch
                micro = self._micro_slices(len(my_rows))
                for sl in micro:
                    mb = batch.select(my_rows[sl])
                    losses, stats = self._micro_step(mb, exp.rows(my_rows[sl], mb.action_mask.shape[1]), norms)
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    for k, v in stats.items():
                        means.setdefault(k, []).append(v)
                # DeepSpeed steps the optimizer after a fixed number of micro-steps: a short last minibatch
                # completes its window with zero-loss micro-steps (its own normaliser already makes its mean).
                if self.world == 1 and not self._zero3:
                    norm = self._flush_partial_window(len(micro))
                    if norm is not None:
                        means.setdefault("grad_norm", []).append(norm)
                else:
                    self._pad_window(len(micro), batch, exp, norms, means)
                    sums = dp.all_reduce_sum(sums, self.device)  # each rank holds shares of the minibatch loss
                    means = self._mean_over_ranks(means)
                self.global_step += 1
                row = {**sums, **{k: sum(v) / len(v) for k, v in means.items()}}
                row.update(
                    step=self.global_step, epoch=epoch, minibatch=mb_index,
                    kl_ref=exp.kl_ref, kl_coef=kl_coef, masked_fraction=masked_fraction,
                    logprob_gap=exp.logprob_gap, explained_variance=explained,
                    lr=float(self.engine.optimizer.param_groups[0]["lr"]),
                    critic_lr=float(self.engine.optimizer.param_groups[-1]["lr"]),
                )
                metrics.append(row)
        self.kl_ctl.update(exp.kl_ref, n_steps=n)
        return metrics

    def _micro_step(self, mb: PPOBatch, exp: dict[str, torch.Tensor], norms: dict[str, torch.Tensor],
                    weight: float = 1.0) -> tuple[dict[str, float], dict[str, float]]:
        """Forward/backward of one micro-batch. Returns its share of each minibatch loss (they sum to the
        minibatch's loss) and per-micro-batch statistics (averaged by the caller)."""
        hp = self.hp
        exp = {k: v.to(self.device) for k, v in exp.items()}
        logprobs, values, token_entropy = self._policy_forward(mb)
        action_mask = mb.action_mask.to(self.device)
        policy_mask = mb.fgo_mask.to(self.device)
        value_mask = policy_mask if hp.mask_value_loss else action_mask
        pg_loss, pg_stats = ppo.policy_loss(logprobs, exp["old_logprobs"], exp["advantages"], policy_mask,
                                            hp.clip_coef, hp.loss_agg, norms["policy"])
        v_loss, _ = ppo.value_loss(values, exp["old_values"], exp["returns"], value_mask, hp.vf_clip_coef,
                                   hp.loss_agg, norms["value"])
        entropy = ppo.entropy_bonus(token_entropy, action_mask, hp.loss_agg, norms["entropy"])
        loss = pg_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
        # The engine divides by the accumulation window (DeepSpeed's 1/GA) and averages over ranks; the losses
        # above are already shares of the minibatch mean, so undo both.
        self.engine.backward(loss * (self._window * self.world * weight))
        boundary = self.engine.is_gradient_accumulation_boundary()
        local_norm = self._local_grad_norm() if boundary else None
        self.engine.step()
        losses = {"policy_loss": loss_item(pg_loss), "value_loss": loss_item(v_loss), "entropy": loss_item(entropy)}
        stats = {"approx_kl": float(pg_stats["approx_kl"]), "clipfrac": float(pg_stats["clipfrac"])}
        if boundary:  # DeepSpeed reports the norm on some engines (ZeRO ≥ 1, fp16/bf16), not on CPU ZeRO-0
            reported = self.engine.get_global_grad_norm()
            stats["grad_norm"] = float(reported) if reported is not None else local_norm
        return losses, stats

    def _local_grad_norm(self) -> float:
        """L2 norm of the accumulated (unclipped) gradient held by this rank's parameters."""
        grads = [p.grad.detach().float().norm() for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.stack(grads).norm()) if grads else 0.0

    def _pad_window(self, done: int, batch: PPOBatch, exp: Experience, norms: dict, means: dict) -> None:
        """Several ranks or ZeRO-3: complete the window with zero-weighted real passes (a rank with fewer rows, or
        none, in this minibatch), so that every rank runs the same forwards and collectives; ZeRO-3 needs a
        forward before each backward even on one rank."""
        pad = torch.arange(1)
        for _ in range(self._window - done):
            mb = batch.select(pad)
            _, stats = self._micro_step(mb, exp.rows(pad, mb.action_mask.shape[1]), norms, weight=0.0)
            if "grad_norm" in stats:  # the window's last pass reports the (all-reduced) gradient's norm
                means.setdefault("grad_norm", []).append(stats["grad_norm"])

    def _mean_over_ranks(self, means: dict[str, list[float]]) -> dict[str, list[float]]:
        """Per-micro-step statistics averaged over every rank's real micro-steps."""
        keys = ("approx_kl", "clipfrac", "grad_norm")
        totals = dp.all_reduce_sum({**{f"{k}.sum": sum(means.get(k, [])) for k in keys},
                                    **{f"{k}.n": len(means.get(k, [])) for k in keys}}, self.device)
        return {k: [totals[f"{k}.sum"] / totals[f"{k}.n"]] for k in keys if totals[f"{k}.n"]}

    def _flush_partial_window(self, micro_steps_done: int) -> float | None:
        """Zero-loss micro-steps up to the window's end; the gradient norm at its boundary, if it is reached here."""
        norm = None
        for _ in range(self._window - micro_steps_done):
            dummy = sum(p.sum() * 0.0 for p in self.engine.module.value_head.parameters())
            self.engine.backward(dummy)
            if self.engine.is_gradient_accumulation_boundary():
                reported = self.engine.get_global_grad_norm()
                norm = float(reported) if reported is not None else self._local_grad_norm()
            self.engine.step()
        return norm

    # ---- checkpoints -----------------------------------------------------------------------------------
    def save(self, out_dir: Path, tokenizer_dir: Path, policy_dtype: torch.dtype = torch.float32) -> Path:
        """Write an HF policy dir (vLLM loads it), the value head, the DeepSpeed state and trainer state.

        The policy is written in ``policy_dtype``, the dtype vLLM serves it in: half the bytes of fp32 for bf16,
        and vLLM loads it without casting. Resuming does not read it back for training: the DeepSpeed state
        holds the fp32 master weights. Written under ``<out_dir>.tmp`` and renamed at the end, so a crash
        mid-save leaves the previous checkpoint intact and never a half-written ``out_dir``.
        """
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        lead = self.rank == 0  # several ranks: rank 0 writes the files, every rank its DeepSpeed shard
        if lead:
            shutil.rmtree(tmp, ignore_errors=True)
        dp.barrier()
        try:
            self._write_checkpoint(tmp, Path(tokenizer_dir), policy_dtype)
        except Exception as e:  # noqa: BLE001 - disk full, quota, I/O: drop the partial copy, keep the previous one
            # torch.save reports a full disk as a RuntimeError ("iostream error"): ask the filesystem instead
            full = shutil.disk_usage(tmp.parent).free < (1 << 20)
            if lead:
                shutil.rmtree(tmp, ignore_errors=True)
            if not full and not isinstance(e, OSError):
                raise
            code = errno.ENOSPC if full else e.errno
            raise OSError(code, f"writing checkpoint {out_dir} failed ({'no space left on device' if full else e}); "
                          "the previous checkpoint is untouched and the next run resumes from it") from e
        dp.barrier()  # every rank's shard is written
        if lead:
            shutil.rmtree(out_dir, ignore_errors=True)
            tmp.rename(out_dir)
        dp.barrier()
        return out_dir

    def _write_checkpoint(self, tmp: Path, tokenizer_dir: Path, policy_dtype: torch.dtype) -> None:
        module: ActorCritic = self.engine.module
        with self._whole_parameters():
            if self.rank == 0:
                (tmp / POLICY).mkdir(parents=True)
                save_policy(module.lm, tmp / POLICY, policy_dtype)
                for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "chat_template.jinja"):
                    src = Path(tokenizer_dir) / name
                    if src.exists():
                        shutil.copy2(src, tmp / POLICY / name)
                crash_point("checkpoint")  # fault-injection tests: the policy is written, the optimizer state not
                module.save_value_head(tmp)
                if module.critic_lm is not None:
                    module.critic_lm.save_pretrained(tmp / "critic", safe_serialization=True)
        self.engine.save_checkpoint(str(tmp / DEEPSPEED), tag="latest", save_latest=False)
        if self.rank == 0:
            state = {"global_step": self.global_step, "kl_controller": self.kl_ctl.state_dict(),
                     "hyper": self.hp.to_dict(), "world_size": self.world}
            (tmp / STATE_FILE).write_text(json.dumps(state))

    @property
    def _zero3(self) -> bool:
        return getattr(self.engine, "zero_optimization_stage", lambda: 0)() == 3

    def _whole_parameters(self):
        """ZeRO-3 keeps a slice of each parameter per rank: gather them (on every rank) while rank 0 saves."""
        if self._zero3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(self.engine.module.parameters()), modifier_rank=None)
        return contextlib.nullcontext()

    def _load_state(self, ckpt: Path) -> None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        saved_world = int(state.get("world_size", 1))
        stage = getattr(self.engine, "zero_optimization_stage", lambda: 0)()
        if saved_world != self.world and stage >= 1:  # each rank's optimizer shard was saved for that world
            raise ValueError(f"checkpoint {ckpt} was trained on {saved_world} rank(s) with ZeRO-{stage}, this update "
                             f"has {self.world}: keep ppo.num_processes at {saved_world} for this run (ZeRO-0 "
                             "checkpoints resume on any number of ranks)")
        self.engine.load_checkpoint(str(ckpt / DEEPSPEED), tag="latest")
        self.global_step = int(state["global_step"])
        self.kl_ctl.load_state_dict(state.get("kl_controller", {}))

    def close(self) -> None:
        del self.engine, self.ref


def save_policy(lm, directory: Path, dtype: torch.dtype) -> None:
    """``lm`` as an HF dir with its floating-point weights in ``dtype``; the live module is not touched.

    Tied weights (SmolLM2's embedding and LM head) stay one tensor, so they are stored once.
    """
    converted: dict[int, torch.Tensor] = {}
    state = {}
    for key, tensor in lm.state_dict().items():
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = converted.setdefault(tensor.data_ptr(), tensor.detach().to(dtype))
        state[key] = tensor
    lm.save_pretrained(directory, state_dict=state, safe_serialization=True)
    config = Path(directory) / "config.json"  # say what the file holds: loaders pick their dtype from it
    data = json.loads(config.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in data:
            data[key] = str(dtype).removeprefix("torch.")
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
