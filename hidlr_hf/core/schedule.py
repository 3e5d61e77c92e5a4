"""Which optimizer steps run a probe round (docs/METHOD.md section 7).

The schedule depends on counts only (steps, forward passes), never on timings, so a resumed run probes at exactly
the same steps as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Optional

from hidlr_hf.errors import HiDLRError

from . import defaults

MIN_STEADY_ROUNDS = 3  # rounds the steady phase keeps even when the dense phases spent the whole-run allowance


class ProbeSchedule:
    """When to probe.

    ``every=N`` probes at steps 0, N, 2N, ... . ``every="auto"`` probes at every step while the rate control is in a
    dense phase (the head phase and calibration), then spaces rounds out: the gap doubles after each round up to the
    gap that keeps probing under ``overhead_budget`` of training compute. A round of P forward passes every Phi steps
    costs ``P / (step_cost Phi)``, with ``step_cost`` the cost of one training step in probe forward passes (3 for a
    forward and a backward at equal batch size). When the run's length is known (``total_steps``), the whole run's
    probing, the dense phases included, is held to the same budget where it can be: once the run has spent
    ``overhead_budget * step_cost * total_steps`` forward passes, about ``MIN_STEADY_ROUNDS`` rounds are left for
    the rest of the run (doubling gaps, early ones first), to correct calibration's errors. With ``"auto"`` no steady
    round runs where fewer than half of the gap before it would be left of the run: its rates would barely be used.

    Args:
        every: ``"auto"`` or a positive number of steps.
        overhead_budget: probing cost as a fraction of training compute, in (0, 1).
        step_cost: one training step in probe forward passes.
        total_steps: optimizer steps of the whole run, if known.
    """

    def __init__(
        self,
        every=defaults.EVERY,
        overhead_budget: float = defaults.OVERHEAD_BUDGET,
        step_cost: float = defaults.STEP_COST,
        total_steps: Optional[int] = None,
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
        self.overhead_budget = overhead_budget
        self.step_cost = step_cost
        self.total_steps = int(total_steps) if total_steps else None
        self.next_step = 0
        self.gap = 1
        self._dense_gap: Optional[int] = None
        self._widest: Optional[int] = None

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based) runs a probe round."""
        return step >= self.next_step

    def budget_gap(self, forward_passes: int) -> int:
        """The smallest gap between rounds whose probing cost stays under the overhead budget."""
        return max(1, math.ceil(forward_passes / (self.step_cost * self.overhead_budget)))

    def allowance(self) -> Optional[float]:
        """Forward passes the whole run may spend on probing (None when its length is unknown)."""
        if self.total_steps is None:
            return None
        return self.overhead_budget * self.step_cost * self.total_steps

    def after_round(self, step: int, forward_passes: int, dense_gap: Optional[int] = None, spent: int = 0) -> None:
        """Plan the next round after one of ``forward_passes`` passes ran at ``step``, ``spent`` passes so far;
        ``dense_gap`` is the gap of a dense phase (None after it)."""
        if self.every != "auto":
            self.gap = self.every
        elif dense_gap is not None:
            self.gap = dense_gap
            self._dense_gap = dense_gap
        else:
            allowance = self.allowance()
            if self._dense_gap is not None:
                # The dense phases are over: doubling starts afresh. Once the allowance is spent the gaps double from
                # _widest, chosen so that MIN_STEADY_ROUNDS rounds are left over the rest of the run, early ones first.
                self.gap, self._dense_gap = 1, None
                if allowance is not None:
                    self._widest = max(1, (self.total_steps - step) // (2 ** (MIN_STEADY_ROUNDS + 1) - 1))
            if allowance is not None and spent + forward_passes > allowance:
                self.gap = max(2 * self.gap, self._widest)
            else:
                # Front-loaded: rates move most right after calibration, so the gap starts small and doubles.
                self.gap = min(2 * self.gap, self.budget_gap(forward_passes))
        self.next_step = step + self.gap
        if self.every == "auto" and dense_gap is None and self.total_steps is not None \
                and self.total_steps - self.next_step <= self.gap // 2:
            # A rate set this late would be used for less than half the gap before it (the last doubling gap ends at
            # the very last step): the round cannot repay its forward passes, so the run ends without it.
            self.next_step = self.total_steps

    def state_dict(self) -> dict:
        """JSON-safe state."""
        return {"next_step": self.next_step, "gap": self.gap, "dense_gap": self._dense_gap, "widest": self._widest}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.next_step = int(state["next_step"])
        self.gap = int(state["gap"])
        self._dense_gap = state.get("dense_gap")
        self._widest = state.get("widest")
