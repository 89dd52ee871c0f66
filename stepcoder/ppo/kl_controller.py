"""The KL coefficient β of the reward penalty, fixed or adapted towards a target KL.

Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2:
    e_t = clip(KL_t / KL_target − 1, −0.2, 0.2),   β_{t+1} = β_t · (1 + K_β · e_t),   K_β = n_steps / horizon
(same as TRL / OpenRLHF ``AdaptiveKLController``). ``n_steps`` is the number of samples in the update batch.
"""

from __future__ import annotations

from typing import Any


class FixedKLController:
    """β stays at ``kl_coef``. Stateless: on resume the coefficient comes from config."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class AdaptiveKLController:
    """Proportional controller moving β so the measured KL approaches ``target`` (Ziegler et al. 2019)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        mult = 1.0 + proportional_error * n_steps / self.horizon
        self.value *= mult

    def state_dict(self) -> dict[str, Any]:
        """Only β evolves; target and horizon come from config."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


KLController = FixedKLController | AdaptiveKLController
KL_CONTROLLERS = ("fixed", "adaptive")


def make_kl_controller(
    kind: str, kl_coef: float, target: float | None = None, horizon: int | None = None
) -> KLController:
    """``"fixed"`` → FixedKLController(kl_coef); ``"adaptive"`` → AdaptiveKLController(kl_coef, target, horizon)."""
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError("adaptive KL controller needs target and horizon")
        return AdaptiveKLController(kl_coef, target, horizon)
    raise ValueError(f"unknown KL controller kind {kind!r}; valid kinds: {', '.join(KL_CONTROLLERS)}")
