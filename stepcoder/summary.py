"""The numbers a user looks at after an iteration (CLI table, Prefect artifact, logs)."""

from __future__ import annotations

from collections import Counter

from stepcoder.execution import OUTCOMES


def iteration_summary(run: str, iteration: int, rollouts: list[dict], metrics: list[dict], curriculum: list[dict],
                      evals: list[dict] | None = None) -> dict:
    n = len(rollouts)
    by_stage: dict[int, list[int]] = {}
    for row in rollouts:
        stat = by_stage.setdefault(row["stage"], [0, 0])
        stat[0] += 1
        stat[1] += row["outcome"] == "pass"
    outcomes = Counter(row["outcome"] for row in rollouts)
    tokens = sum(len(r["fgo_mask"]) for r in rollouts)
    kept = sum(sum(r["fgo_mask"]) for r in rollouts)

    def mean(key: str) -> float:
        vals = [m[key] for m in metrics if m.get(key) is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    return {
        "run": run,
        "iteration": iteration,
        "rollouts": n,
        "pass_rate": sum(s[1] for s in by_stage.values()) / n if n else 0.0,
        "pass_rate_by_stage": {stage: {"samples": s[0], "passes": s[1], "pass_rate": s[1] / s[0]}
                               for stage, s in sorted(by_stage.items())},
        "reward_mean": sum(r["reward"] for r in rollouts) / n if n else 0.0,
        "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES},
        "policy_loss": mean("policy_loss"),
        "value_loss": mean("value_loss"),
        "kl_ref": mean("kl_ref"),
        "approx_kl": mean("approx_kl"),
        "fgo_masked_fraction": 1.0 - kept / tokens if tokens else 0.0,
        "advanced": sum(1 for c in curriculum if c["advanced"]),
        "curriculum": curriculum,
        "evals": {f"{e['eval_name']}/{e['metric']}": e["value"] for e in evals or []},
    }
