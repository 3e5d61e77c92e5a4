"""Rate control: from each round's measured ``(b, A)`` to new base rates (docs/METHOD.md section 5).

A round measures, per group k, the slope ``b_k`` and curvature ``A_kk`` of the loss along the optimizer's own step.
Their ratio ``b_k / A_kk`` is the step size that is optimal for that one step; this module turns those noisy,
one-step numbers into rates that are good for the whole run:

* **Smoothed statistics.** ``b`` and ``A`` are averaged across rounds in absolute units and the rate is taken from the
  ratio of the averages, not from each round's ratio: a probe batch is small, ``b`` is noise-dominated once training
  is under way, and the rate that is right for the distribution of steps to come is ``E[b] / E[A]``.
* **Saddle-free curvature.** A negative curvature along a group's step counts at its magnitude, as in saddle-free
  Newton: the quadratic model has no optimum then, but ``|A|`` still says how far the linear model holds, in both
  directions (a step far too small, or far too large from a fresh head).
* **Horizon.** The rate is ``b / (horizon A)``: a rate is held for many steps, along directions that momentum keeps
  correlated, so the one-step optimum overshoots over a run. A pretrained body under a task head has features to
  lose and takes the longer ``body_horizon``.
* **Ratio limit.** Every group's rate stays within ``ratio_limit`` of the geometric mean of the body groups' rates:
  the curvature sets the ratios, but one group's one-step optimum cannot run far from the rest (a sparse embedding
  group's does, and training it that fast costs accuracy). The newly initialised task head is outside the limit: it
  has nothing pretrained to lose.
* **Phases.** ``head``: only the new task head is probed and trained, so the body's curvature is first measured
  through a head that reads its features. ``calibration``: a probe round at every step, and a rate that is far too
  small may jump to its target when one extra forward pass confirms the predicted decrease. ``steady``: rounds
  spaced within the overhead budget, each moving a rate by at most ``trust_region``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from hidlr_hf.errors import HiDLRError

from . import defaults

# Why a group's rate changed (or not) in a round; logged and kept in the estimate.
ACCEPTED = "accepted"
NO_CURVATURE = "no_curvature"  # A_kk <= 0 this round (A_kk = 0 with saddle_free): the round adds nothing
UPHILL = "uphill"  # b_k <= 0 this round: it enters the running mean (one noisy round does not cut the rate)
NOT_FINITE = "not_finite"
INACTIVE = "inactive"  # frozen, rate 0, no gradient this step, or not probed in this phase

HEAD, CALIBRATION, STEADY = "head", "calibration", "steady"
HEAD_PROBE_GAP = 4  # the head's rate needs few rounds; probing it at every fourth step keeps the phase cheap
HEAD_ROUNDS = 8  # ... and on a long head phase about this many rounds (the gap widens), so its cost does not grow
PHASES = (HEAD, CALIBRATION, STEADY)


@dataclass
class RateSettings:
    """The rate rule's settings (docs/METHOD.md section 5), validated when built.

    Args:
        horizon: rates are ``b / (horizon A)``: the one-step optimum divided by this factor (the task head, and every
            group of a model without head groups).
        body_horizon: the horizon of the body groups of a model with head groups: a pretrained body being fine-tuned,
            whose features a run of too-large steps destroys.
        ratio_limit: each group's target within ``[M / limit, M limit]`` of ``M``, the geometric mean of the
            body groups' targets, each counted once (head groups are neither limited nor counted); 0 switches the
            limit off.
        smoothing: weight of the newest round in the running means of ``b`` and ``A`` (an exponential average).
        trust_region: after calibration a round changes a rate by at most this factor.
        calibration_rounds: the most rounds of calibration; it ends earlier once two rounds in a row propose no
            change beyond the trust region.
        head_phase: how long only the task head trains first: a fraction of the run's steps (< 1) or a number of
            steps (>= 1); 0 skips the phase. Without head groups, or without a known run length for a fraction,
            there is none.
        jump_limit: the largest change of one verified jump.
        verify_ratio: a jump is kept when the measured loss decrease is at least this fraction of the predicted one.
        lr_min, lr_max: bounds on every base rate.
        noise_hold: in steady rounds, a group whose mean slope ``b`` lies within this many standard errors of zero
            keeps its rate (0: every round moves it).
        saddle_free: a round whose curvature along a group's step is negative counts it at its magnitude ``|A_kk|``
            (as saddle-free Newton does), instead of adding nothing to that group's statistics.
    """

    horizon: float = defaults.HORIZON
    body_horizon: float = defaults.BODY_HORIZON
    ratio_limit: float = defaults.RATIO_LIMIT
    smoothing: float = defaults.SMOOTHING
    trust_region: float = defaults.TRUST_REGION
    calibration_rounds: int = defaults.CALIBRATION_ROUNDS
    head_phase: float = defaults.HEAD_PHASE
    jump_limit: float = defaults.JUMP_LIMIT
    verify_ratio: float = defaults.VERIFY_RATIO
    lr_min: float = defaults.LR_MIN
    lr_max: float = defaults.LR_MAX
    saddle_free: bool = defaults.SADDLE_FREE
    noise_hold: float = defaults.NOISE_HOLD

    def __post_init__(self):
        checks = (
            (self.noise_hold >= 0, f"noise_hold must be >= 0 (got {self.noise_hold}); 0 acts on every round."),
            (self.horizon >= 1.0, f"horizon must be >= 1 (got {self.horizon}); 1 takes the one-step optimum."),
            (self.body_horizon >= 1.0,
             f"body_horizon must be >= 1 (got {self.body_horizon}); 1 takes the one-step optimum."),
            (self.ratio_limit == 0 or self.ratio_limit >= 1.0,
             f"ratio_limit must be 0 (off) or >= 1 (got {self.ratio_limit})."),
            (0.0 < self.smoothing <= 1.0, f"smoothing must lie in (0, 1] (got {self.smoothing}); 1 uses the newest round only."),
            (self.trust_region >= 1.0, f"trust_region must be >= 1 (got {self.trust_region}); 2 is GeN's choice."),
            (self.calibration_rounds >= 0, f"calibration_rounds must be >= 0 (got {self.calibration_rounds})."),
            (self.head_phase >= 0 and (self.head_phase < 1 or float(self.head_phase).is_integer()),
             f"head_phase must be 0, a fraction in (0, 1) or a whole number of steps (got {self.head_phase})."),
            (self.jump_limit >= self.trust_region, f"jump_limit must be >= trust_region (got {self.jump_limit})."),
            (0.0 < self.verify_ratio <= 1.0, f"verify_ratio must lie in (0, 1] (got {self.verify_ratio})."),
            (0.0 < self.lr_min <= self.lr_max, f"Need 0 < lr_min <= lr_max (got lr_min={self.lr_min}, lr_max={self.lr_max})."),
        )
        for ok, message in checks:
            if not ok:
                raise HiDLRError(message)


@dataclass
class Proposal:
    """What :meth:`RateControl.propose` decided for one round."""

    factors: list  # multiplicative change of each group's base rate (1.0 keeps it)
    optimal: torch.Tensor  # this round's own one-step multipliers b_k / A_kk (NaN where undefined)
    verdict: list  # per group, one of the verdict constants
    jump: bool  # some factor leaves the trust region: confirm it with one forward pass first
    alpha: torch.Tensor  # the curvature the rule used (diagonal at its magnitude with saddle_free): verify with it


class RateControl:
    """The state of the rate rule over a run: phase, running means of ``b`` and ``A``, calibration progress.

    Args:
        num_groups: K.
        head: indices of the task-head groups (trained alone in the head phase).
        settings: :class:`RateSettings`.
        total_steps: optimizer steps of the whole run, when known (a fractional ``head_phase`` needs it).
    """

    def __init__(self, num_groups: int, head: list[int], settings: RateSettings, total_steps: Optional[int] = None):
        self.settings = settings
        self.num_groups = num_groups
        self.head = sorted(set(head))
        self.head_steps = self._head_steps(total_steps)
        self.phase = HEAD if self.head_steps > 0 else CALIBRATION
        self.calibration_rounds = 0
        self.settled_rounds = 0
        # Exponential running means of b, b^2 and A per group, with their normalising weights (bias-corrected).
        self.b_mean = [math.nan] * num_groups
        self.b_sq_mean = [math.nan] * num_groups
        self.A_mean = [math.nan] * num_groups
        self.weight = [0.0] * num_groups
        self.weight_sq = [0.0] * num_groups
        self._raw: list[float] = [1.0] * num_groups

    def _head_steps(self, total_steps: Optional[int]) -> int:
        phase = self.settings.head_phase
        if not self.head or len(self.head) >= self.num_groups or phase <= 0:
            return 0
        if phase >= 1:
            return int(phase)
        return max(1, round(phase * total_steps)) if total_steps else 0

    # -- phases --------------------------------------------------------------------------------------

    def begin_step(self, step: int) -> bool:
        """Called before each optimizer step (0-based): the head phase ends after ``head_steps`` steps. Returns
        whether calibration starts at this step."""
        if self.phase == HEAD and step >= self.head_steps:
            self.phase = CALIBRATION
            return True
        return False

    @property
    def dense(self) -> bool:
        """Whether the current phase probes on a fixed short gap (with ``every="auto"``): the head phase every
        ``HEAD_PROBE_GAP`` steps, calibration at every step."""
        return self.phase != STEADY

    @property
    def dense_gap(self) -> int:
        """Steps between rounds in a dense phase: calibration 1; the head phase ``HEAD_PROBE_GAP``, widened so that a
        long head phase (6% of 2,000 steps is 120) still has about ``HEAD_ROUNDS`` rounds."""
        if self.phase != HEAD:
            return 1
        return max(HEAD_PROBE_GAP, math.ceil(self.head_steps / HEAD_ROUNDS))

    def gated(self, k: int) -> bool:
        """Whether group k must not move this step (the body, during the head phase)."""
        return self.phase == HEAD and k not in self.head

    # -- the rule ------------------------------------------------------------------------------------

    def propose(self, beta, alpha, rates, active, grown, bounded=None) -> Proposal:
        """New-rate factors from one round.

        Args:
            beta, alpha: the round's fit in multiplier units (``beta_k = r_k b_k``, ``alpha_kk = r_k^2 A_kk``).
            rates: base rates in force during the round.
            active: the groups probed.
            grown: per group, whether its probe scale had to grow: the step is lost in rounding noise, so the rate is
                far too small and may jump.
            bounded: per group, whether ``alpha_kk`` is only the noise bound; such a round gives a lower bound on the
                target, which it uses without entering the running means.
        """
        s = self.settings
        bounded = bounded or [False] * self.num_groups
        if s.saddle_free:
            alpha = saddle_free(alpha)
        verdict, optimal = _verdicts(beta, alpha, active)
        self._accumulate(beta, alpha, rates, [k for k in active if not bounded[k]], verdict)
        targets = {}
        for k in active:
            if bounded[k] and verdict[k] == ACCEPTED:
                # At least this far off: b / A with A at its upper bound. Never below the running means' target.
                floor = float(beta[k]) / (self.horizon_of(k) * float(alpha[k, k])) * rates[k]
                mean_target = self._mean_target(k)
                targets[k] = max(floor, mean_target) if mean_target is not None else floor
                continue
            b, A = self.b_mean[k], self.A_mean[k]
            if not (math.isfinite(b) and math.isfinite(A)) or A <= 0:
                continue
            std_error = self.b_std_error(k)
            if self.phase == STEADY and abs(b) <= s.noise_hold * std_error:
                # The mean slope is within its noise of zero: no evidence about the rate either way, so it stays.
                # Acted on, a slope lost in noise gives a target near zero and cuts the rate at every round.
                continue
            if b > 0:
                targets[k] = b / (self.horizon_of(k) * A)
            elif b < -std_error or (self.phase != STEADY and verdict[k] == UPHILL):
                # Uphill on average, clearly; or, while calibrating, uphill now and on average: shrink.
                targets[k] = rates[k] / s.trust_region
        targets = self._limit_ratios(targets, rates, active, alpha)
        dense = self.phase != STEADY
        factors = [1.0] * self.num_groups
        for k, target in targets.items():
            if rates[k] <= 0:
                continue
            raw = target / rates[k]
            self._raw[k] = raw
            up = s.jump_limit if dense and grown[k] else s.trust_region
            down = s.jump_limit if dense else s.trust_region
            factors[k] = min(max(raw, 1.0 / down), up)
        for k in range(self.num_groups):
            if k not in targets:
                self._raw[k] = 1.0
        jump = any(f > s.trust_region or f < 1.0 / s.trust_region for f in factors)
        return Proposal(factors, optimal, verdict, jump, alpha)

    def horizon_of(self, k: int) -> float:
        """Group k's horizon: ``body_horizon`` for the body of a model with head groups, else ``horizon``."""
        return self.settings.body_horizon if self.head and k not in self.head else self.settings.horizon

    def _mean_target(self, k: int):
        b, A = self.b_mean[k], self.A_mean[k]
        if math.isfinite(b) and math.isfinite(A) and A > 0 and b > 0:
            return b / (self.horizon_of(k) * A)
        return None

    def unconfirmed(self, factors: list) -> list:
        """What a jump falls back to when its verification fails: moves up clipped to the trust region, moves down
        kept. A smaller step can lose at most its own small predicted decrease, where a destructive rate kept one more
        step can wreck the model (an MLP started at 1.0: loss 0.75 -> 1.4e5 after one step at the trust region's 0.5;
        docs/METHOD.md section 5.4)."""
        g = self.settings.trust_region
        return [min(f, g) for f in factors]

    def bounded(self, factors: list, rates: list) -> list:
        """``factors`` such that every new rate stays within ``[lr_min, lr_max]``."""
        s = self.settings
        return [min(max(r * f, s.lr_min), s.lr_max) / r if r > 0 else 1.0 for r, f in zip(rates, factors)]

    def after_round(self, active: list, factors: list, grown: Optional[list] = None) -> None:
        """Record the factors taken. A group whose rate jumped (moved beyond the trust region) after its probe scale
        had to grow (``grown``, as given to :meth:`propose`) starts its running means afresh: they were measured in
        rounding noise. Any other group keeps them: ``b`` and ``A`` are in absolute units, and restarting them at
        every calibration jump handed the steady phase rates that rested on one probe batch. Calibration ends
        after ``calibration_rounds`` rounds, or once two in a row proposed no change beyond the trust region."""
        g = self.settings.trust_region
        grown = grown if grown is not None else [True] * self.num_groups
        for k in active:
            jumped = factors[k] > g * (1 + 1e-9) or factors[k] < 1.0 / (g * (1 + 1e-9))
            if jumped and grown[k]:
                self.b_mean[k] = self.b_sq_mean[k] = self.A_mean[k] = math.nan
                self.weight[k] = self.weight_sq[k] = 0.0
        if self.phase != CALIBRATION:
            return
        self.calibration_rounds += 1
        settled = all(1.0 / g <= self._raw[k] <= g for k in active)
        self.settled_rounds = self.settled_rounds + 1 if settled else 0
        if self.settled_rounds >= 2 or self.calibration_rounds >= self.settings.calibration_rounds:
            self.phase = STEADY

    def b_std_error(self, k: int) -> float:
        """Standard error of the running mean of ``b_k`` (infinite until two rounds are in)."""
        w, w2 = self.weight[k], self.weight_sq[k]
        effective = w * w / w2 if w2 > 0 else 0.0
        if effective <= 1.0:
            return math.inf
        variance = max(self.b_sq_mean[k] - self.b_mean[k] ** 2, 0.0)
        return math.sqrt(variance / (effective - 1.0))

    def _accumulate(self, beta, alpha, rates, active, verdict) -> None:
        keep = 1.0 - self.settings.smoothing
        for k in active:
            if verdict[k] not in (ACCEPTED, UPHILL) or rates[k] <= 0:
                continue
            b, A = float(beta[k]) / rates[k], float(alpha[k, k]) / rates[k] ** 2
            w = keep * self.weight[k]
            if self.weight[k] == 0:
                self.b_mean[k], self.b_sq_mean[k], self.A_mean[k] = b, b * b, A
            else:
                self.b_mean[k] = (w * self.b_mean[k] + b) / (w + 1.0)
                self.b_sq_mean[k] = (w * self.b_sq_mean[k] + b * b) / (w + 1.0)
                self.A_mean[k] = (w * self.A_mean[k] + A) / (w + 1.0)
            self.weight[k] = w + 1.0
            self.weight_sq[k] = keep * keep * self.weight_sq[k] + 1.0

    def _limit_ratios(self, targets: dict, rates: list, active: list, alpha) -> dict:
        limit = self.settings.ratio_limit
        # Every active body group counts in the mean with the same weight, at its target or, without one this round,
        # at its current rate. One runaway target (a sparse embedding's) moves the mean by only its share of the
        # logs. Weighted by the curvature of each group's step (alpha_kk = A_kk r_k^2), a group that had run ahead
        # outweighed the rest by the square of its lead and carried the mean, and the limit, with it; weighted by A_kk
        # the stiffest groups set the mean alone and held the flatter ones to a fixed multiple of their rates. The task
        # head is left out on both sides: newly initialised, it has no pretrained features to lose and rightly runs at
        # rates far above the body's, which it must not drag upwards.
        body = [k for k in active if k not in self.head]
        points = [t for t in (targets.get(k, rates[k]) for k in body) if t > 0 and math.isfinite(t)]
        if limit <= 0 or len(points) < 2:
            return targets
        mean = math.exp(sum(math.log(t) for t in points) / len(points))
        return {k: min(max(t, mean / limit), mean * limit) if k in body else t for k, t in targets.items()}

    # -- state ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-safe state (NaN where a group was never measured)."""
        return {
            "phase": self.phase,
            "head_steps": self.head_steps,
            "calibration_rounds": self.calibration_rounds,
            "settled_rounds": self.settled_rounds,
            "b_mean": list(self.b_mean),
            "b_sq_mean": list(self.b_sq_mean),
            "A_mean": list(self.A_mean),
            "weight": list(self.weight),
            "weight_sq": list(self.weight_sq),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if state["phase"] not in PHASES:
            raise ValueError(f"unknown phase {state['phase']!r}")
        lists = {key: [float(x) for x in state[key]] for key in ("b_mean", "b_sq_mean", "A_mean", "weight", "weight_sq")}
        if any(len(v) != self.num_groups for v in lists.values()):
            raise ValueError(f"rate statistics for {len(lists['weight'])} groups, expected {self.num_groups}")
        self.phase = state["phase"]
        self.head_steps = int(state["head_steps"])
        self.calibration_rounds = int(state["calibration_rounds"])
        self.settled_rounds = int(state["settled_rounds"])
        for key, values in lists.items():
            setattr(self, key, values)


def saddle_free(alpha: torch.Tensor) -> torch.Tensor:
    """``alpha`` with its diagonal at its magnitude. Along a step whose curvature is negative the quadratic model has
    no optimum, but ``|alpha_kk|`` still measures where its linear part stops holding: from 1e-6, a step too small to
    bend the loss; from 1e-3 with a fresh head, a step whose every direction lowers the probe loss (MiniLM, SST-2:
    every body group's curvature negative in the first calibration round). Saddle-free Newton (Dauphin et al., 2014)
    takes the same magnitude."""
    out = alpha.clone()
    diag = out.diagonal()
    diag.copy_(diag.abs())
    return out


def _verdicts(beta: torch.Tensor, alpha: torch.Tensor, active: list) -> tuple[list, torch.Tensor]:
    """Per group, what the round saw, and its own one-step multiplier ``beta_k / alpha_kk``."""
    verdict = [INACTIVE] * beta.numel()
    optimal = torch.full((beta.numel(),), math.nan, dtype=torch.float64)
    for k in active:
        b, a = float(beta[k]), float(alpha[k, k])
        if not (math.isfinite(b) and math.isfinite(a)):
            verdict[k] = NOT_FINITE
        elif a <= 0:
            verdict[k] = NO_CURVATURE
        else:
            verdict[k] = ACCEPTED if b > 0 else UPHILL
            optimal[k] = b / a
    return verdict, optimal
