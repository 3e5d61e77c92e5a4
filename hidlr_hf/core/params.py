"""Parameter and optimizer helpers of the engine: param groups, learning rates (base rates under a scheduler too),
and moving parameters exactly.

Hi-DLR works on whatever optimizer it is given (docs/METHOD.md section 6): these helpers see through wrappers such as
accelerate's ``AcceleratedOptimizer``, read and write learning rates that may be Python floats or tensors, and move
parameters to ``w - lr d`` in the parameter's own dtype, so that restores and steps are exact to the bit; optimizer
state is copied and put back to the bit as well (the linearity check, and a probe step that fails).
"""

from __future__ import annotations

import copy
from typing import Optional

import torch

from hidlr_hf.errors import HiDLRError

UNIT_RATE = 1.0
"""The learning rate of the step that reveals the optimizer's direction ``d`` (docs/METHOD.md section 6)."""


def innermost_optimizer(optimizer):
    """Unwrap accelerate's ``AcceleratedOptimizer`` (and similar) to the torch optimizer doing the work."""
    inner = optimizer
    while isinstance(getattr(inner, "optimizer", None), torch.optim.Optimizer):
        inner = inner.optimizer
    return inner


def tie_groups(param_groups) -> tuple[list[str], list[list[int]]]:
    """Hi-DLR groups of an optimizer: their names, and for each the indices of its param groups.

    Param groups sharing a ``"hidlr_group"`` key are one Hi-DLR group (e.g. its decay / no-decay halves); any other
    param group is a group of its own, named ``group_<i>``.
    """
    names, indices = [], []
    for i, group in enumerate(param_groups):
        name = str(group.get("hidlr_group", f"group_{i}"))
        if name in names:
            indices[names.index(name)].append(i)
        else:
            names.append(name)
            indices.append([i])
    return names, indices


def lr_value(lr) -> float:
    """A param group's learning rate as a float (some optimizers hold it as a tensor)."""
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


def set_lr(group: dict, value) -> None:
    """Set a param group's learning rate in place, keeping a tensor learning rate a tensor."""
    value = lr_value(value)
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


def displacement(before: torch.Tensor, after: torch.Tensor, scratch: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``d = w - w_after`` of a unit-rate step, kept in at least float32 for low-precision parameters; written into
    ``scratch`` (a spent gradient buffer) when it has the same dtype, shape and a dense layout."""
    dtype = torch.promote_types(before.dtype, torch.float32) if before.is_floating_point() else before.dtype
    if (scratch is not None and scratch.dtype == dtype == before.dtype == after.dtype and scratch.shape == before.shape
            and scratch.layout == torch.strided and not scratch.requires_grad):
        return torch.sub(before, after.detach(), out=scratch)
    return before.to(dtype) - after.detach().to(dtype)


@torch.no_grad()
def assign(params, values) -> None:
    """Copy ``values`` into ``params`` in place (bit-exact restores)."""
    for p, v in zip(params, values):
        p.copy_(v)


@torch.no_grad()
def move(params, snapshot, direction, rate: float) -> None:
    """``p <- w - rate * d``, computed in the direction's precision, written in the parameter's dtype."""
    for p, w, d in zip(params, snapshot, direction):
        if d.dtype == p.dtype:
            torch.add(w, d, alpha=-rate, out=p)
        else:
            p.copy_(w.to(d.dtype).add(d, alpha=-rate))


def clone_state(optimizer, params) -> dict:
    """A deep copy of the optimizer's state of ``params`` (None for a parameter without state)."""
    state = {}
    for p in params:
        if p in optimizer.state:
            state[p] = {
                key: value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
                for key, value in optimizer.state[p].items()
            }
        else:
            state[p] = None
    return state


def restore_state(optimizer, saved: dict) -> None:
    """Put back what :func:`clone_state` copied (a parameter that had no state loses the state it gained), bit for
    bit; ``saved`` stays intact, so it can be restored again. Tensors of the same shape and dtype are copied into in
    place, so no second copy of the state is ever allocated."""
    for p, entry in saved.items():
        if entry is None:
            optimizer.state.pop(p, None)
            continue
        current = optimizer.state.get(p)
        restored = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                now = current.get(key) if current else None
                same = isinstance(now, torch.Tensor) and now.shape == value.shape and now.dtype == value.dtype
                restored[key] = now.copy_(value) if same and now.device == value.device else value.clone()
            else:
                restored[key] = copy.deepcopy(value)
        optimizer.state[p] = restored


def read_base_rates(optimizer, param_group_indices, lr_scheduler, group_names) -> list[float]:
    """Each Hi-DLR group's base rate: the scheduler's ``base_lrs`` (or ``initial_lr``, else ``lr``) of its param
    groups, which must agree."""
    rates = []
    for k, indices in enumerate(param_group_indices):
        values = []
        for i in indices:
            group = optimizer.param_groups[i]
            if lr_scheduler is not None:
                values.append(float(lr_scheduler.base_lrs[i]))
            else:
                values.append(float(group.get("initial_lr", lr_value(group["lr"]))))
        if max(values) - min(values) > 1e-12 * max(abs(v) for v in values):
            raise HiDLRError(
                f"Param groups tied as Hi-DLR group {group_names[k]!r} have different learning rates "
                f"{values}; give them the same lr or different 'hidlr_group' keys."
            )
        rates.append(values[0])
    return rates


def write_base_rates(optimizer, param_group_indices, lr_scheduler, old_rates, rates) -> None:
    """Give each Hi-DLR group the base rate ``rates[k]`` in the optimizer (``initial_lr``) and the scheduler
    (``base_lrs``), keeping the schedule's current multiplier (``lr / old_rates[k]``) on the rate in force."""
    for k, rate in enumerate(rates):
        old = old_rates[k]
        for i in param_group_indices[k]:
            group = optimizer.param_groups[i]
            multiplier = lr_value(group["lr"]) / old if old > 0 else 1.0
            set_lr(group, rate * multiplier)
            if "initial_lr" in group:
                group["initial_lr"] = rate
            if lr_scheduler is not None:
                lr_scheduler.base_lrs[i] = rate
