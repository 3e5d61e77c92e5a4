"""Rate control: from measured ``(beta, alpha)`` to new base rates, and when to measure.

Everything here works on rate *multipliers* ``rho_k = eta*_k / r_k`` (docs/METHOD.md section 4), so it never
needs the absolute scale of the optimizer's direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hidlr_hf.errors import HiDLRError

from . import defaults

# Why a group's rate changed (or not) in a round; logged and kept in the estimate.
ACCEPTED = "accepted"
NO_CURVATURE = "no_curvature"  # alpha_kk <= 0: keep the rate (the paper's rule)
UPHILL = "uphill"  # beta_k <= 0: the step goes uphill on fresh data, shrink by the trust factor
NOT_FINITE = "not_finite"
INACTIVE = "inactive"  # frozen, rate 0, or no gradient this step


@dataclass
class RateRule:
    """Safeguards of docs/METHOD.md section 5: trust region, smoothing and bounds.

    Args:
        trust_region: ``gamma``; multipliers are clipped to ``[1/gamma, gamma]`` (GeN uses 2).
        smoothing: ``tau`` in ``r <- r ((1 - tau) + tau rho)`` after calibration (GeN uses 0.1).
        calibration_smoothing: ``tau`` during the first ``calibration_rounds`` rounds, larger so that a
            badly chosen starting rate is corrected quickly.
        calibration_rounds: how many rounds count as calibration.
        lr_min, lr_max: bounds on every base rate.
    """

    trust_region: float = defaults.TRUST_REGION
    smoothing: float = defaults.SMOOTHING
    calibration_smoothing: float = defaults.CALIBRATION_SMOOTHING
    calibration_rounds: int = defaults.CALIBRATION_ROUNDS
    lr_min: float = defaults.LR_MIN
    lr_max: float = defaults.LR_MAX

    def __post_init__(self):
        if not self.trust_region >= 1.0:
            raise HiDLRError(f"trust_region must be >= 1 (got {self.trust_region}); 2 is GeN's choice.")
        for name in ("smoothing", "calibration_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise HiDLRError(f"{name} must lie in [0, 1] (got {value}); 0.1 is GeN's choice.")
        if not 0.0 < self.lr_min <= self.lr_max:
            raise HiDLRError(f"Need 0 < lr_min <= lr_max (got lr_min={self.lr_min}, lr_max={self.lr_max}).")
        if self.calibration_rounds < 0:
            raise HiDLRError(f"calibration_rounds must be >= 0 (got {self.calibration_rounds}).")

    def multipliers(
        self, beta: torch.Tensor, alpha: torch.Tensor, active: list[int], full: bool
    ) -> tuple[torch.Tensor, list[str]]:
        """Unclipped optimal multipliers ``rho`` (NaN where undefined) and each group's verdict.

        ``full`` solves ``rho = alpha^-1 beta`` on the active groups when that block of ``alpha`` is
        finite and positive definite, and falls back to the diagonal ``beta_k / alpha_kk`` otherwise.
        """
        num_groups = beta.numel()
        rho = torch.full((num_groups,), float("nan"), dtype=torch.float64)
        verdict = [INACTIVE] * num_groups
        diag = alpha.diagonal()
        for k in active:
            b, a = float(beta[k]), float(diag[k])
            if not (math.isfinite(b) and math.isfinite(a)):
                verdict[k] = NOT_FINITE
            elif a <= 0:
                verdict[k] = NO_CURVATURE
            elif b <= 0:
                verdict[k] = UPHILL
                rho[k] = b / a
            else:
                verdict[k] = ACCEPTED
                rho[k] = b / a
        if full and len(active) > 1:
            idx = torch.tensor(active)
            block = alpha[idx][:, idx]
            if bool(torch.isfinite(block).all()) and bool(torch.isfinite(beta[idx]).all()):
                block = 0.5 * (block + block.T)
                if float(torch.linalg.eigvalsh(block).min()) > 0:
                    rho[idx] = torch.linalg.solve(block, beta[idx])
                    for k, r in zip(active, rho[idx].tolist()):
                        verdict[k] = ACCEPTED if r > 0 else UPHILL
        return rho, verdict

    def factors(self, rho: torch.Tensor, verdict: list[str], rates: list[float], round_index: int) -> list[float]:
        """Multiplicative changes of the base rates for one round (1.0 keeps a rate)."""
        tau = self.calibration_smoothing if round_index < self.calibration_rounds else self.smoothing
        gamma = self.trust_region
        out = []
        for k, rate in enumerate(rates):
            if verdict[k] == ACCEPTED:
                clipped = min(max(float(rho[k]), 1.0 / gamma), gamma)
            elif verdict[k] == UPHILL:
                # Uphill on fresh data: shrink by the trust factor, damped like any other move.
                clipped = 1.0 / gamma
            else:
                out.append(1.0)
                continue
            new = rate * ((1.0 - tau) + tau * clipped)
            new = min(max(new, self.lr_min), self.lr_max)
            out.append(new / rate if rate > 0 else 1.0)
        return out


class ProbeSchedule:
    """Which optimizer steps run a probe round (docs/METHOD.md section 7).

    ``every=N`` probes at steps 0, N, 2N, ... . ``every="auto"`` probes at each of the first
    ``calibration_rounds`` steps, then doubles the gap after every round until it reaches the gap that keeps
    probing under ``overhead_budget`` of training compute: a round of P forward passes every Phi steps costs
    ``P / (step_cost Phi)``, with ``step_cost`` the cost of one training step in probe forward passes
    (3 for forward plus backward at equal batch size). The schedule depends on counts only, never on
    timings, so a resumed run probes at exactly the same steps as an uninterrupted one.
    """

    def __init__(
        self,
        every=defaults.EVERY,
        calibration_rounds: int = defaults.CALIBRATION_ROUNDS,
        overhead_budget: float = defaults.OVERHEAD_BUDGET,
        step_cost: float = defaults.STEP_COST,
    ):
        if every != "auto":
            if isinstance(every, str) and every.strip().isdigit():
                every = int(every)
            if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
                raise HiDLRError(f"every must be a positive integer or 'auto' (got {every!r}).")
        if not 0.0 < overhead_budget < 1.0:
            raise HiDLRError(f"overhead_budget must lie in (0, 1) (got {overhead_budget}); 0.05 means 5%.")
        if not step_cost > 0:
            raise HiDLRError(f"step_cost must be > 0 (got {step_cost}).")
        self.every = every
        self.calibration_rounds = calibration_rounds
        self.overhead_budget = overhead_budget
        self.step_cost = step_cost
        self.next_step = 0
        self.gap = 1

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based) runs a probe round."""
        return step >= self.next_step

    def budget_gap(self, forward_passes: int) -> int:
        """The smallest gap between rounds whose probing cost stays under the overhead budget."""
        return max(1, math.ceil(forward_passes / (self.step_cost * self.overhead_budget)))

    def after_round(self, step: int, rounds_done: int, forward_passes: int) -> None:
        """Plan the next round after a round ran at ``step`` (``rounds_done`` rounds so far)."""
        if self.every != "auto":
            self.gap = self.every
        elif rounds_done < self.calibration_rounds:
            self.gap = 1
        else:
            self.gap = min(2 * self.gap, self.budget_gap(forward_passes))
        self.next_step = step + self.gap

    def state_dict(self) -> dict:
        return {"next_step": self.next_step, "gap": self.gap}

    def load_state_dict(self, state: dict) -> None:
        self.next_step = int(state["next_step"])
        self.gap = int(state["gap"])
