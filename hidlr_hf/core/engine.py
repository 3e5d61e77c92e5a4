"""The Hi-DLR engine: per-group learning rates from forward-only curvature probes, for any torch optimizer.

Use it in any training loop (docs/METHOD.md section 6)::

    hidlr = HiDLR(optimizer)               # optimizer.param_groups are the groups
    loss.backward()
    hidlr.step(closure)                    # instead of optimizer.step(); closure() -> probe-batch loss
    optimizer.zero_grad()

On a probe step the engine calls ``optimizer.step()`` exactly once, at a unit learning rate, so the optimizer
state advances once, as without Hi-DLR; the displacement is the optimizer's own direction ``d``. It then
evaluates the probe losses around the pre-step parameters, fits ``b`` and ``A``, sets the new rates, and moves
the parameters to ``w - lr_new * d``: the step taken already uses the new rates.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Callable, Optional

import torch

from hidlr_hf.errors import HiDLRError

from . import defaults, distributed, estimation
from .estimation import Estimate
from .gate import StepGate
from .influence import InfluenceTracker, round_influence
from .linearity import check_linearity, refuse_known_nonlinear
from .params import (
    UNIT_RATE, assign, clone_state, displacement, innermost_optimizer, lr_value, move, read_base_rates, restore_state,
    set_lr, tie_groups, write_base_rates,
)
from .probing import ProbeSettings, measure, probe_context, scalar_loss
from .progress import round_message
from .rates import INACTIVE, RateControl, RateSettings
from .schedule import ProbeSchedule

STATE_VERSION = 2  # version 1 (hidlr-hf before the phased rate control) cannot be resumed

logger = logging.getLogger(__name__)


class _Discard(Exception):
    """A probe round cannot be used (non-finite loss); its rates stay unchanged."""


class HiDLR:
    """Hessian-informed differential learning rates around any LR-linear torch optimizer.

    Args:
        optimizer: the optimizer; each param group is one Hi-DLR group, except that param groups sharing a
            ``"hidlr_group"`` key are tied into one group (a decay / no-decay split of one group).
        design: ``"axis"`` (b and diag A, 2K+1 forwards), ``"full"`` (all of A, adds K(K-1)/2), or
            ``"random"`` (the paper's 4K random probes).
        every: probe every N optimizer steps, or ``"auto"`` (every step in the head phase and calibration, then
            within ``overhead_budget``; see :class:`~hidlr_hf.core.schedule.ProbeSchedule`).
        lr_scheduler: a scheduler whose ``base_lrs`` hold the base rates (e.g. the Trainer's ``LambdaLR``);
            rates are changed there too so the schedule multiplies the estimated base rates.
        model: if given, put in eval mode during probes (no dropout noise) and restored to its modes after.
        horizon, ratio_limit, smoothing, trust_region, calibration_rounds, head_phase, jump_limit, lr_min, lr_max,
        saddle_free, body_horizon, noise_hold:
            the rate rule, see :class:`~hidlr_hf.core.rates.RateSettings` (``trust_region=jump_limit=1`` keeps every
            rate as it is).
        head_groups: names of the groups that form a newly initialised task head; with ``head_phase`` they train
            alone first (the other groups step at rate 0, which warms their Adam state and leaves them in place; with
            optimizers outside ``gate.ZERO_RATE_STILL`` their gradients are dropped), so the body's rates are measured
            through a head that reads its features.
        total_steps: optimizer steps of the whole run, when known: a fractional ``head_phase`` and the whole-run
            overhead budget use it.
        probe_scale: initial probe multiplier ``c`` (1 probes at the step about to be taken).
        scale_growth, max_probe_scale: when a group's probe changes the loss by less than
            ``noise_tolerance * |L|``, ``c`` is multiplied by ``scale_growth`` and the group probed again,
            up to ``max_probe_scale``: this is what lets a far-too-small rate recover.
        noise_tolerance: relative loss change treated as numerical noise (raise it for bf16 forwards).
        random_probes: probes per group for ``design="random"`` (the paper uses 4).
        overhead_budget, step_cost: see :class:`~hidlr_hf.core.schedule.ProbeSchedule`.
        loss_reduce: ``f(tensor) -> tensor`` averaging probe losses across processes; ``"auto"`` uses
            ``torch.distributed`` when it is initialised with several ranks.
        verify_linearity: on the first round, check that the step is linear in the LR and that the
            optimizer state does not depend on it (costs one extra optimizer step, once).
        direction_in_grads: during a probe round, hold the direction ``d`` in the parameters' ``.grad``
            buffers (the gradient is spent once ``optimizer.step()`` has run), which saves one copy of the tuned
            parameters. After a probe step ``.grad`` then holds ``d`` until the next ``zero_grad()``; pass
            ``False`` if you read gradients after the step. Buffers of another dtype or layout are never reused.
        restore_optimizer_state: on a probe step, keep a copy of the optimizer state of the tuned parameters until the
            direction is known, so that an error inside ``optimizer.step()`` (out of memory) or while the direction is
            computed puts that state back bit for bit. The copy costs the size of that state (twice the tuned
            parameters for AdamW) on probe steps, at the moment memory is tightest; without it such an error leaves
            the optimizer state as ``optimizer.step()`` left it (see :meth:`step`).
        seed: seed of the engine's own generator (``random`` design); the global RNG is never touched.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        design: str = defaults.DESIGN,
        every=defaults.EVERY,
        lr_scheduler=None,
        model: Optional[torch.nn.Module] = None,
        horizon: float = defaults.HORIZON,
        ratio_limit: float = defaults.RATIO_LIMIT,
        smoothing: float = defaults.SMOOTHING,
        trust_region: float = defaults.TRUST_REGION,
        calibration_rounds: int = defaults.CALIBRATION_ROUNDS,
        head_phase: float = defaults.HEAD_PHASE,
        jump_limit: float = defaults.JUMP_LIMIT,
        lr_min: float = defaults.LR_MIN,
        lr_max: float = defaults.LR_MAX,
        saddle_free: bool = defaults.SADDLE_FREE,
        body_horizon: float = defaults.BODY_HORIZON,
        noise_hold: float = defaults.NOISE_HOLD,
        head_groups: Optional[list] = None,
        total_steps: Optional[int] = None,
        probe_scale: float = defaults.PROBE_SCALE,
        scale_growth: float = defaults.SCALE_GROWTH,
        max_probe_scale: float = defaults.MAX_PROBE_SCALE,
        noise_tolerance: float = defaults.NOISE_TOLERANCE,
        random_probes: int = defaults.RANDOM_PROBES,
        overhead_budget: float = defaults.OVERHEAD_BUDGET,
        step_cost: float = defaults.STEP_COST,
        loss_reduce="auto",
        verify_linearity: bool = True,
        direction_in_grads: bool = True,
        restore_optimizer_state: bool = False,
        seed: int = 0,
    ):
        estimation.check_probe_settings(design, probe_scale, scale_growth, max_probe_scale, noise_tolerance, random_probes)
        self.optimizer = optimizer
        self._inner = innermost_optimizer(optimizer)
        refuse_known_nonlinear(self._inner)
        self.design = design
        self.lr_scheduler = lr_scheduler
        self.model = model
        self.rate_settings = RateSettings(
            horizon=horizon, body_horizon=body_horizon, ratio_limit=ratio_limit, smoothing=smoothing,
            trust_region=trust_region, calibration_rounds=calibration_rounds, head_phase=head_phase,
            jump_limit=jump_limit, lr_min=lr_min, lr_max=lr_max, saddle_free=bool(saddle_free), noise_hold=noise_hold,
        )
        self.schedule = ProbeSchedule(every, overhead_budget, step_cost, total_steps)
        self.probe_settings = ProbeSettings(
            design, float(probe_scale), float(scale_growth), float(max_probe_scale), float(noise_tolerance),
            int(random_probes),
        )
        self.loss_reduce = loss_reduce
        self.verify_linearity = verify_linearity
        self.direction_in_grads = bool(direction_in_grads)
        self.restore_optimizer_state = bool(restore_optimizer_state)
        self.seed = int(seed)

        self.group_names, self.param_group_indices = tie_groups(self.optimizer.param_groups)
        if lr_scheduler is None and any("initial_lr" in g for g in self.optimizer.param_groups):
            # A scheduler owns the base rates and would overwrite every rate Hi-DLR sets.
            raise HiDLRError(
                "The optimizer has a learning-rate scheduler attached; pass it as HiDLR(optimizer, "
                "lr_scheduler=scheduler) so the schedule multiplies the estimated rates instead of undoing them."
            )
        self.base_rates = self._read_base_rates()
        unknown = sorted(set(head_groups or ()) - set(self.group_names))
        if unknown:
            raise HiDLRError(f"head_groups {unknown} are not groups of the optimizer ({self.group_names}).")
        head = [k for k, name in enumerate(self.group_names) if name in set(head_groups or ())]
        self.control = RateControl(len(self.group_names), head, self.rate_settings, total_steps)
        self.influence = InfluenceTracker(len(self.group_names))
        self.num_steps = 0  # optimizer steps taken through the engine
        self.num_rounds = 0
        self.discarded_rounds = 0
        self.probe_seconds = 0.0
        self.forward_passes = 0
        self.linearity_checked = False
        self.probe_scales = [float(probe_scale)] * len(self.group_names)  # last round's c_k
        self.history: list[dict] = []
        self.last_estimate: Optional[Estimate] = None
        self._pending: Optional[dict] = None
        self.gate = StepGate(self.optimizer, self._inner)

    # ----------------------------------------------------------------------------------------------
    # public API

    @property
    def num_groups(self) -> int:
        """Number of Hi-DLR groups (K)."""
        return len(self.group_names)

    @property
    def probe_due(self) -> bool:
        """Whether the next optimizer step runs a probe round (prepare a probe batch then)."""
        self._begin_step()
        return self.schedule.due(self.num_steps)

    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[Estimate]:
        """Replace ``optimizer.step()``: a plain step, or on probe steps a step with freshly estimated rates.

        ``closure()`` returns the loss on one probe batch (the same batch at every call within the step),
        forward only; the engine calls it under ``torch.no_grad()``. Without a closure no probe ever runs.
        Returns the round's :class:`Estimate` on probe steps, else None.

        A probe round that cannot be measured (a non-finite probe loss, a closure that raises) is discarded: the
        step is taken at the unchanged rates, exactly as without the round. An error before the probes, inside
        ``optimizer.step()`` (out of memory) or while the direction is computed, is re-raised after the step is
        undone: the parameters and every learning rate are as before the step, bit for bit, and so are the engine's
        rates, schedule and counters. The optimizer state is restored too with ``restore_optimizer_state=True``;
        without it, it is what ``optimizer.step()`` left: advanced once by this step's gradient when the error came
        after it, possibly in part when it came from inside it (as with the plain optimizer). With
        ``direction_in_grads`` the ``.grad`` buffers may hold part of the direction: zero them before retrying.
        """
        if closure is None:
            self._gate()
        prepared = self.pre_step() if closure is not None else False
        try:
            self.optimizer.step()
        except BaseException:
            if prepared:
                self._abandon()
            self.gate.release()
            raise
        return self.post_step(closure if prepared else None)

    def pre_step(self) -> bool:
        """First half of :meth:`step`, for frameworks that call ``optimizer.step()`` themselves.

        Call after gradients are final and before ``optimizer.step()``; on a probe step it snapshots the
        parameters and sets a unit rate so the step reveals the optimizer's direction. Returns whether a round
        was prepared; then call :meth:`post_step` right after ``optimizer.step()``.
        """
        if self._pending is not None:
            raise HiDLRError("pre_step() was called twice without post_step(); call post_step() after optimizer.step().")
        self._gate()
        if not self.probe_due:
            return False
        active = self._active_groups()
        if not active:
            return False
        params = {k: [p for i in self.param_group_indices[k] for p in self.optimizer.param_groups[i]["params"] if p.grad is not None] for k in active}
        snapshot = {k: [p.detach().clone() for p in ps] for k, ps in params.items()}
        lrs = [self.gate.rate(i) for i in range(len(self.optimizer.param_groups))]
        if self.verify_linearity and not self.linearity_checked:
            self._check_linearity(active, params, snapshot)
        saved = None
        if self.restore_optimizer_state:
            saved = clone_state(self._inner, [p for k in active for p in params[k]])
        for k in active:
            for i in self.param_group_indices[k]:
                set_lr(self.optimizer.param_groups[i], UNIT_RATE)
        self._pending = {"active": active, "params": params, "snapshot": snapshot, "lrs": lrs, "optimizer_state": saved}
        return True

    def abandon_step(self) -> bool:
        """Undo a step prepared by :meth:`pre_step` whose ``optimizer.step()`` raised, as :meth:`step` does itself (a
        framework that calls ``optimizer.step()`` calls this when it fails). Returns whether a step was pending."""
        pending = self._pending is not None
        self._abandon()
        return pending

    def post_step(self, closure: Optional[Callable[[], torch.Tensor]] = None, skipped: bool = False) -> Optional[Estimate]:
        """Second half of :meth:`step`: runs the prepared probe round, sets rates, takes the step.

        ``skipped=True`` says the optimizer skipped its step (an fp16 overflow): no round, no rate change, and
        the step does not count.
        """
        pending, self._pending = self._pending, None
        self.gate.release()
        if skipped:
            if pending is not None:
                self._restore_lrs(pending["lrs"])
            return None
        if pending is None:
            self.num_steps += 1
            return None
        if closure is None:
            self._abandon(pending)
            raise HiDLRError("A probe round was prepared but post_step() got no closure; pass the probe-loss closure.")
        snapshot, params = pending["snapshot"], pending["params"]
        try:
            direction = {
                k: [displacement(w, p, p.grad if self.direction_in_grads else None) for w, p in zip(snapshot[k], params[k])]
                for k in pending["active"]
            }
        except BaseException:
            self._abandon(pending)  # the step is undone and does not count
            raise
        # From here on the step is always completed (at new or unchanged rates): the state copy is not needed.
        pending["optimizer_state"] = None
        try:
            estimate = self._probe_round(pending, closure, direction)
        finally:
            self.num_steps += 1
        return estimate

    def state_dict(self) -> dict:
        """Everything needed to resume with the same rates and the same schedule of rounds (JSON-safe)."""
        return {
            "version": STATE_VERSION,
            "group_names": list(self.group_names),
            "base_rates": list(self.base_rates),
            "num_steps": self.num_steps,
            "num_rounds": self.num_rounds,
            "discarded_rounds": self.discarded_rounds,
            "probe_seconds": self.probe_seconds,
            "forward_passes": self.forward_passes,
            "probe_scales": list(self.probe_scales),
            "linearity_checked": self.linearity_checked,
            "schedule": self.schedule.state_dict(),
            "control": self.control.state_dict(),
            "influence": self.influence.state_dict(),
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; the base rates are written back into the optimizer and scheduler."""
        if state.get("version") != STATE_VERSION:
            raise HiDLRError(
                f"This Hi-DLR state has version {state.get('version')!r}; this hidlr-hf reads version {STATE_VERSION} "
                "(an older release wrote it): start the run afresh, or resume it with the release that saved it."
            )
        try:
            names = list(state["group_names"])
            rates = [float(r) for r in state["base_rates"]]
            if names != self.group_names or len(rates) != self.num_groups:
                raise HiDLRError(
                    f"Hi-DLR state has groups {names} but the optimizer has {self.group_names}; "
                    "resume with the same grouping scheme and model."
                )
            # The optimizer (and scheduler) may have been restored already: start from what they hold now,
            # so the schedule's multiplier is kept when the saved base rates are written back.
            self.base_rates = self._read_base_rates()
            self.set_base_rates(rates)
            self.num_steps = int(state["num_steps"])
            self.num_rounds = int(state["num_rounds"])
            self.discarded_rounds = int(state.get("discarded_rounds", 0))
            self.probe_seconds = float(state.get("probe_seconds", 0.0))
            self.forward_passes = int(state.get("forward_passes", 0))
            self.probe_scales = [float(x) for x in state.get("probe_scales", self.probe_scales)]
            self.linearity_checked = bool(state.get("linearity_checked", False))
            self.schedule.load_state_dict(state["schedule"])
            self.control.load_state_dict(state["control"])
            self.influence.load_state_dict(state["influence"])
            self.history = list(state.get("history", []))
        except HiDLRError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise HiDLRError(f"Hi-DLR state is corrupt ({type(exc).__name__}: {exc}); resume from another checkpoint.") from exc

    def set_base_rates(self, rates: list[float]) -> None:
        """Set every group's base rate, keeping the scheduler's multiplier ``s(t)`` on top of it."""
        if len(rates) != self.num_groups:
            raise HiDLRError(f"Expected {self.num_groups} rates (one per group), got {len(rates)}.")
        write_base_rates(self.optimizer, self.param_group_indices, self.lr_scheduler, self.base_rates, rates)
        self.base_rates[:] = [float(r) for r in rates]

    def rates_in_force(self) -> list[float]:
        """The learning rate each group uses now (base rate times the schedule's multiplier)."""
        return [lr_value(self.optimizer.param_groups[m[0]]["lr"]) for m in self.param_group_indices]

    def group_sizes(self) -> list[int]:
        """Number of trainable scalars in each group."""
        return [
            sum(p.numel() for i in m for p in self.optimizer.param_groups[i]["params"] if p.requires_grad)
            for m in self.param_group_indices
        ]

    # ----------------------------------------------------------------------------------------------
    # the probe round

    def _probe_round(self, pending: dict, closure, direction: dict) -> Estimate:
        started = time.perf_counter()
        active, params, snapshot = pending["active"], pending["params"], pending["snapshot"]
        K = self.num_groups
        old_lrs = pending["lrs"]
        old_rates = torch.tensor(self.base_rates, dtype=torch.float64)
        round_passes = 0
        try:
            for k in active:
                assign(params[k], snapshot[k])

            def evaluate(xis: torch.Tensor) -> torch.Tensor:
                nonlocal round_passes
                losses, failure = [], None
                for xi in xis:
                    moved = [k for k in active if xi[k] != 0]
                    for k in moved:
                        move(params[k], snapshot[k], direction[k], float(xi[k]) * self.base_rates[k])
                    try:
                        losses.append(scalar_loss(closure()))
                    except Exception as exc:  # noqa: BLE001 - re-raised below, once every rank knows
                        failure = exc
                        break
                    finally:
                        for k in moved:
                            assign(params[k], snapshot[k])
                    round_passes += 1
                if failure is not None:
                    # The other ranks must not wait in the all-reduce for losses this rank will never send: it sends
                    # NaN instead, so every rank sees a non-finite mean and discards the round with it.
                    nan = losses[0].new_full((), math.nan) if losses else torch.tensor(math.nan, dtype=torch.float64)
                    losses += [nan] * (len(xis) - len(losses))
                if not losses:
                    return torch.zeros(0, dtype=torch.float64)
                values = distributed.reduce_losses(torch.stack(losses), self.loss_reduce)
                if failure is not None:
                    raise failure
                if not bool(torch.isfinite(values).all()):
                    where = " (on this rank or another)" if distributed.world_size() > 1 else ""
                    raise _Discard(f"non-finite probe loss{where}")
                return values

            phase, verified = self.control.phase, None
            with probe_context(self.model):
                base = float(evaluate(torch.zeros(1, K, dtype=torch.float64))[0])
                # Start one growth step below where the last round ended: the right scale is found again in one
                # re-probe instead of climbing from 1 every round.
                start = [c / self.probe_settings.scale_growth for c in self.probe_scales]
                seed = self.seed * 1_000_003 + self.num_steps
                beta, alpha, scales, bounded = measure(evaluate, base, active, K, start, self.probe_settings, seed)
                grown = [float(c) > self.probe_settings.initial_scale for c in scales]
                proposal = self.control.propose(beta, alpha, self.base_rates, active, grown, bounded)
                factors = proposal.factors
                if proposal.jump:
                    factors, verified = self._verify(evaluate, base, beta, proposal.alpha, factors, active)
            factors = self.control.bounded(factors, self.base_rates)
            self.control.after_round(active, factors, grown)
            rho, verdict = proposal.optimal, proposal.verdict
            joint = estimation.joint_optimum(beta, alpha, active) if self.design == "full" else None
            if joint is not None:  # reported only: the rule uses the diagonal (docs/METHOD.md section 5)
                rho = joint
            # The probe distance is scale x rate: a rate that moved needs a scale that moved the other way.
            self.probe_scales = [float(c) / f for c, f in zip(scales, factors)]
            status = "ok"
        except (KeyboardInterrupt, HiDLRError):
            # Interrupted, or a broken closure contract: finish the step at the current rates, then re-raise.
            self._finish_step(active, params, snapshot, direction, old_lrs, [1.0] * K)
            raise
        except Exception as exc:
            # A non-finite probe loss or a closure that raised: the round is discarded, the rates stay.
            reason = str(exc) if isinstance(exc, _Discard) else f"closure raised {type(exc).__name__}: {exc}"
            factors, status = [1.0] * K, f"discarded: {reason}"
            beta = torch.full((K,), float("nan"), dtype=torch.float64)
            alpha = torch.full((K, K), float("nan"), dtype=torch.float64)
            rho, verdict, scales, base = beta.clone(), [INACTIVE] * K, None, float("nan")
            phase, verified = self.control.phase, None
            self.discarded_rounds += 1
            logger.warning("Hi-DLR probe round at step %d discarded (%s); rates unchanged.", self.num_steps, reason)

        self._finish_step(active, params, snapshot, direction, old_lrs, factors)
        distributed.check_same_rates(self.base_rates, self.loss_reduce, self.num_steps)
        seconds = time.perf_counter() - started
        self.probe_seconds += seconds
        self.forward_passes += round_passes

        rates = torch.tensor(self.base_rates, dtype=torch.float64)
        # b and A in absolute units: beta_k = r_k b_k and alpha_jk = r_j r_k A_jk (docs/METHOD.md section 4).
        b = beta / old_rates
        A = alpha / torch.outer(old_rates, old_rates)
        influence = round_influence(b, A, self.group_sizes())
        estimate = Estimate(
            step=self.num_steps,
            group_names=list(self.group_names),
            b=b,
            A=A,
            optimal_rate=rho * old_rates,
            rate=rates,
            influence=influence,
            verdict=verdict,
            probe_scale=scales,
            loss=base,
            forward_passes=round_passes,
            seconds=seconds,
            status=status,
            phase=phase,
            verified=verified,
        )
        if status == "ok":
            self.influence.update(influence)
            self.num_rounds += 1
            if logger.isEnabledFor(logging.INFO):  # why a step took longer, for a user watching a slow run
                logger.info(round_message(self.num_rounds, self.num_steps, phase, self.group_names, self.base_rates,
                                          factors, seconds, round_passes))
            dense_gap = self.control.dense_gap if self.control.dense else None
            self.schedule.after_round(self.num_steps, round_passes, dense_gap=dense_gap, spent=self.forward_passes)
        else:
            # A discarded round is retried at the next step rather than waiting a whole gap.
            self.schedule.next_step = self.num_steps + 1
        self.history.append(
            {
                "step": self.num_steps,
                "status": status,
                "phase": phase,
                "factors": [float(f) for f in factors],
                "verified": verified,
                "rates": [float(r) for r in rates],
                "influence": [_json_float(x) for x in influence.tolist()],
                "loss": _json_float(base),
            }
        )
        self.last_estimate = estimate
        return estimate

    def _verify(self, evaluate, base: float, beta, alpha, factors: list, active: list) -> tuple[list, bool]:
        """One forward pass at the proposed rates: a jump is kept when the loss drops by at least ``verify_ratio`` of
        the decrease the quadratic model predicts; otherwise :meth:`RateControl.unconfirmed` (moves up clipped to the trust
        region, moves down kept)."""
        xi = torch.zeros(1, self.num_groups, dtype=torch.float64)
        predicted = 0.0
        for k in active:
            xi[0, k] = factors[k]
            predicted += -factors[k] * float(beta[k]) + 0.5 * factors[k] ** 2 * float(alpha[k, k])
        for j in active:
            for k in active:
                if j < k and math.isfinite(float(alpha[j, k])):  # cross curvature, measured by design "full"
                    predicted += factors[j] * factors[k] * float(alpha[j, k])
        measured = float(evaluate(xi)[0]) - base
        if predicted < 0 and measured <= self.rate_settings.verify_ratio * predicted:
            return factors, True
        return self.control.unconfirmed(factors), False

    def _begin_step(self) -> None:
        if self.control.begin_step(self.num_steps) and self.schedule.every == "auto":
            self.schedule.next_step = min(self.schedule.next_step, self.num_steps)  # calibration starts now

    def _gate(self) -> None:
        """Hold the groups that must not move this step (the body, in the head phase) where they are
        (:class:`~hidlr_hf.core.gate.StepGate`)."""
        self._begin_step()
        self.gate.hold([i for k, indices in enumerate(self.param_group_indices) if self.control.gated(k)
                        for i in indices])

    def _finish_step(self, active, params, snapshot, direction, old_lrs, factors) -> None:
        """Set the new rates and take the step ``w - lr_new d`` from the snapshot."""
        self._restore_lrs(old_lrs)
        new_rates = [r * f for r, f in zip(self.base_rates, factors)]
        self.set_base_rates(new_rates)
        with torch.no_grad():
            for k in active:
                lr = lr_value(self.optimizer.param_groups[self.param_group_indices[k][0]]["lr"])
                move(params[k], snapshot[k], direction[k], lr)

    def _abandon(self, pending: Optional[dict] = None) -> None:
        """Undo a prepared round that cannot run: parameters and learning rates as before the step, and the optimizer
        state when ``restore_optimizer_state`` kept a copy (see :meth:`step` for what is left otherwise)."""
        self.gate.release()
        pending = pending or self._pending
        self._pending = None
        if pending is None:
            return
        for k in pending["active"]:
            assign(pending["params"][k], pending["snapshot"][k])
        if pending.get("optimizer_state") is not None:
            restore_state(self._inner, pending["optimizer_state"])
        self._restore_lrs(pending["lrs"])

    # ----------------------------------------------------------------------------------------------
    # helpers

    def _active_groups(self) -> list[int]:
        """Groups with a positive base rate and at least one parameter with a gradient."""
        active = []
        for k, indices in enumerate(self.param_group_indices):
            if self.base_rates[k] <= 0 or self.control.gated(k):
                continue
            if any(p.grad is not None for i in indices for p in self.optimizer.param_groups[i]["params"]):
                active.append(k)
        return active

    def _read_base_rates(self) -> list[float]:
        return read_base_rates(self.optimizer, self.param_group_indices, self.lr_scheduler, self.group_names)

    def _restore_lrs(self, lrs) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            set_lr(group, lr)

    def _check_linearity(self, active: list[int], params: dict, snapshot: dict) -> None:
        """Once, before the first real step: the optimizer's step must be linear in the learning rate. Gradients that
        are not finite cannot tell; the check is then made at the next probe step."""
        if check_linearity(self.optimizer, self._inner, self.param_group_indices, active, params, snapshot):
            self.linearity_checked = True
        else:
            logger.info("Hi-DLR linearity check at step %d postponed: the gradients are not finite.", self.num_steps)

# --------------------------------------------------------------------------------------------------
# module-level helpers


def _json_float(x: float):
    return x if math.isfinite(x) else None
