"""Is the optimizer's step linear in the learning rate? Hi-DLR needs it (docs/METHOD.md section 2).

The engine recovers the direction ``d`` from one unit-rate step, and moves to ``w - lr d``: that is only the step the
optimizer would take at ``lr`` when its displacement scales with the learning rate and its state does not depend on
it. Optimizers known to break this are refused by name before any step (:func:`refuse_known_nonlinear`); any other is
checked once, on its first probe step, by :func:`check_linearity`.
"""

from __future__ import annotations

import torch

from hidlr_hf.errors import HiDLRError

from .params import UNIT_RATE, assign, clone_state, displacement, lr_value, restore_state, set_lr

# Optimizers whose update is not linear in the learning rate, refused by name before any step.
NONLINEAR_OPTIMIZERS = {
    "Prodigy": "estimates its own step size from the learning rate",
    "DAdaptAdam": "estimates its own step size (D-Adaptation)",
    "DAdaptSGD": "estimates its own step size (D-Adaptation)",
    "DAdaptAdaGrad": "estimates its own step size (D-Adaptation)",
    "DAdaptAdan": "estimates its own step size (D-Adaptation)",
    "DAdaptLion": "estimates its own step size (D-Adaptation)",
    "AdamWScheduleFree": "averages iterates with learning-rate-dependent weights",
    "SGDScheduleFree": "averages iterates with learning-rate-dependent weights",
    "RAdamScheduleFree": "averages iterates with learning-rate-dependent weights",
    "LBFGS": "runs a line search and needs its own closure",
    "Rprop": "keeps per-parameter step sizes initialised from the learning rate",
    "ASGD": "keeps a learning-rate-dependent averaging state",
}

LINEARITY_CHECK_SIZE = 1 << 16  # elements per group stepped twice by the one-time linearity check


def refuse_known_nonlinear(optimizer) -> None:
    """Raise :class:`HiDLRError` for an optimizer known not to be linear in the learning rate."""
    name = type(optimizer).__name__
    if name in NONLINEAR_OPTIMIZERS:
        raise HiDLRError(
            f"{name} cannot be used with Hi-DLR: it {NONLINEAR_OPTIMIZERS[name]}, so its step is not linear in the "
            "learning rate; use AdamW, SGD, Adagrad, RMSprop or Lion."
        )
    for group in optimizer.param_groups:
        if group.get("relative_step"):
            raise HiDLRError(
                f"{name} with relative_step=True ignores the learning rate; construct it with relative_step=False "
                "and an explicit lr to use Hi-DLR."
            )


def check_linearity(optimizer, inner, param_group_indices, active: list[int], params: dict, snapshot: dict) -> bool:
    """Before the first real step: from the same state, a step at twice the unit rate must move the parameters
    twice as far and leave the same optimizer state.

    ``optimizer`` is the optimizer the engine was given and ``inner`` the torch optimizer under it;
    ``param_group_indices[k]`` are the param groups of Hi-DLR group ``k``; ``params[k]`` and ``snapshot[k]`` its
    parameters with a gradient and their values before the step. Checked on a small subset of each active group's
    parameters (the optimizer steps only those), so it costs little memory; parameters, optimizer state and learning
    rates are restored either way. Raises :class:`HiDLRError` when the step is not linear.

    Returns whether the check could decide: with a non-finite gradient (an fp16 overflow, a bad batch), or a step
    or state that is not finite, nothing can be compared, so it returns False (check again at a later step) rather
    than blame the optimizer for the numbers it was given.
    """
    subset, before = [], []
    for k in active:
        size = 0
        # Smallest tensors first: a group led by a large embedding matrix is checked on its small members.
        for p, w in sorted(zip(params[k], snapshot[k]), key=lambda pw: pw[0].numel()):
            subset.append(p)
            before.append(w)
            size += p.numel()
            if size >= LINEARITY_CHECK_SIZE:
                break
    if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in subset):
        return False
    chosen = {id(p) for p in subset}
    state0 = clone_state(inner, subset)
    lists = [group["params"] for group in inner.param_groups]
    lrs = [lr_value(group["lr"]) for group in inner.param_groups]
    moves, states = [], []
    try:
        for group, plist in zip(inner.param_groups, lists):
            group["params"] = [p for p in plist if id(p) in chosen]
        for scale in (UNIT_RATE, 2 * UNIT_RATE):
            for k in active:
                for i in param_group_indices[k]:
                    set_lr(optimizer.param_groups[i], scale)
            inner.step()
            moves.append([displacement(w, p) for w, p in zip(before, subset)])
            states.append(clone_state(inner, subset))
            restore_state(inner, state0)
            assign(subset, before)
    finally:
        for group, plist, lr in zip(inner.param_groups, lists, lrs):
            group["params"] = plist
            set_lr(group, lr)
        restore_state(inner, state0)
        assign(subset, before)
    if not (all(_finite(d) for ds in moves for d in ds) and all(_finite(st) for st in states)):
        return False
    linear = all(_doubles(w, d1, d2) for w, d1, d2 in zip(before, moves[0], moves[1]))
    same_state = _states_close(states[0], states[1])
    if not (linear and same_state):
        raise HiDLRError(
            f"{type(inner).__name__}'s step is not linear in the learning rate"
            f"{'' if linear else ' (the displacement does not scale with it)'}"
            f"{'' if same_state else ' (its state depends on it)'}; Hi-DLR needs an optimizer such as AdamW, "
            "SGD, Adagrad, RMSprop or Lion."
        )
    return True


def _finite(value) -> bool:
    """Whether a tensor, or every floating tensor of a :func:`clone_state` copy, is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    return all(_finite(t) for entry in value.values() if entry for t in entry.values() if isinstance(t, torch.Tensor))


def _doubles(w: torch.Tensor, d1: torch.Tensor, d2: torch.Tensor) -> bool:
    """Whether ``d2 == 2 d1`` up to a relative 1e-3 plus the rounding of ``w - d`` in the parameter's precision
    (a displacement much smaller than the weight it moves loses digits there)."""
    eps = torch.finfo(w.dtype).eps if w.is_floating_point() else 0.0
    w, d1, d2 = w.double(), d1.double(), d2.double()
    slack = 1e-3 * (2 * d1).abs() + 8 * eps * (w.abs() + 2 * d1.abs()) + 1e-30
    return bool(((d2 - 2 * d1).abs() <= slack).all())


def _states_close(a: dict, b: dict) -> bool:
    for p in a:
        sa, sb = a[p], b[p]
        if (sa is None) != (sb is None):
            return False
        if sa is None:
            continue
        if set(sa) != set(sb):
            return False
        for key in sa:
            va, vb = sa[key], sb[key]
            if isinstance(va, torch.Tensor):
                if va.shape != vb.shape or not torch.allclose(va.double(), vb.double(), rtol=1e-5, atol=1e-12):
                    return False
            elif va != vb:
                return False
    return True
