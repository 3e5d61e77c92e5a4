"""A dev-loop diagnostic: what the steps a probe round chose actually did to the training loss.

A round measures, per group k, the slope ``b_k`` and curvature ``A_k`` of the loss along the optimizer's step ``d_k``
on one probe batch, and sets the rate ``r_k``; the step taken is ``u_k = r_k d_k`` (times the schedule). On each of the
next ``window`` training steps this callback records ``s_k(j) = g_{t+j} . u_k``, the training gradient (after
clipping) dotted with that step. On a fresh batch its expectation is the slope that is left along ``u_k`` after the
``j`` steps taken since: ``lr (b_k - lr A_k)`` right after the step under the quadratic model, falling as the next
steps, correlated with ``u_k`` by momentum, keep going the same way. A realised slope that turns negative within a few
steps says the rate overshoots over a run of steps; one that stays near the first-step value says the rate could be
larger. This is what the body horizon of docs/METHOD.md section 5.2 stands in for, measured instead of assumed.

Used by ``scripts/devloop.py --realised-window N``; costs one parameter copy of the probed groups and one dot product
per parameter and step, so it is never part of a timed run.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback


class RealisedSlope(TrainerCallback):
    """Record, after each Hi-DLR probe round, ``g_{t+j} . u_k`` per group for ``j = 1 .. window``.

    Add it with ``trainer.add_callback`` after the trainer is built, so that it runs after the Hi-DLR callback: it reads
    the parameters the engine snapshot before the step (the engine's pending round) and the parameters after it.
    ``rounds`` holds one entry per round: its step, phase, per-group ``b``, ``A``, base rate and rate in force, and
    ``slopes`` (one list of per-group values per later step) with ``clipped`` (whether that step's gradient was at the
    clipping norm, which scales the realised slope down).
    """

    def __init__(self, trainer, window: int = 40):
        if window < 1:
            raise ValueError(f"window must be >= 1 (got {window})")
        self.trainer = trainer
        self.window = window
        self.rounds: list[dict] = []
        self._before = None  # (params, snapshot) of the round being taken this step
        self._step = None  # per group, the step just taken: [(param, w_before - w_after)]
        self._current = None

    def _engine(self):
        return self.trainer.hidlr

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        engine = self._engine()
        if engine is None:
            return
        if self._step is not None and len(self._current["slopes"]) < self.window:
            self._record_slopes(args)
        pending = engine._pending  # set by the Hi-DLR callback just before: this step runs a probe round
        self._before = (pending["params"], pending["snapshot"]) if pending is not None else None

    def on_optimizer_step(self, args, state, control, **kwargs):
        engine = self._engine()
        if engine is None or self._before is None:
            return
        params, snapshot = self._before
        self._before = None
        estimate = engine.last_estimate
        if estimate is None or estimate.status != "ok":
            return
        with torch.no_grad():
            self._step = {k: [(p, (w - p.detach()).to(torch.float64)) for p, w in zip(params[k], snapshot[k])]
                          for k in params}
        lrs = engine.rates_in_force()
        self._current = {
            "step": int(estimate.step), "phase": estimate.phase, "groups": list(estimate.group_names),
            "b": [_finite(x) for x in estimate.b.tolist()],
            "A": [_finite(estimate.A[k, k].item()) for k in range(len(estimate.group_names))],
            "base_rate": [float(r) for r in estimate.rate.tolist()], "rate_in_force": [float(r) for r in lrs],
            "slopes": [], "clipped": [],
        }
        self.rounds.append(self._current)

    def _record_slopes(self, args) -> None:
        values, norm_sq = {}, 0.0
        with torch.no_grad():
            for k, pairs in self._step.items():
                total = 0.0
                for p, u in pairs:
                    if p.grad is not None:
                        total += float((p.grad.detach().to(torch.float64) * u).sum())
                values[self._current["groups"][k]] = total
            for group in self.trainer.optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        norm_sq += float(p.grad.detach().to(torch.float64).pow(2).sum())
        max_norm = float(getattr(args, "max_grad_norm", 0) or 0)
        self._current["slopes"].append(values)
        self._current["clipped"].append(bool(max_norm > 0 and math.sqrt(norm_sq) >= max_norm * (1 - 1e-4)))
        if len(self._current["slopes"]) >= self.window:
            self._step = None  # release the copy


def summarise(rounds: list[dict]) -> list[dict]:
    """Per round and group: the slope the probe predicts right after the step (``lr (b - lr A)``, ``lr`` the rate in
    force) against the realised mean over the window, its standard error, and the means of its first and second half."""
    rows = []
    for entry in rounds:
        for k, name in enumerate(entry["groups"]):
            values = [s[name] for s in entry["slopes"] if name in s]
            if not values or entry["b"][k] is None or entry["A"][k] is None:
                continue
            lr = entry["rate_in_force"][k]
            n, half = len(values), len(values) // 2
            mean = sum(values) / n
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
            rows.append({
                "step": entry["step"], "phase": entry["phase"], "group": name, "lr": lr,
                "predicted": lr * (entry["b"][k] - lr * entry["A"][k]), "realised": mean,
                "std_error": sd / math.sqrt(n) if n > 1 else math.nan,
                "first_half": sum(values[:half]) / half if half else math.nan,
                "second_half": sum(values[half:]) / (n - half),
                "steps": n, "clipped": sum(entry["clipped"]) / len(entry["clipped"]),
            })
    return rows


def _finite(x: float):
    return float(x) if math.isfinite(x) else None
