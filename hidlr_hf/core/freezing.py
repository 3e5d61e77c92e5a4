"""Freezing the groups automatic PEFT did not keep (docs/METHOD.md section 8), without changing the optimizer's layout.

A frozen group gets learning rate 0, weight decay 0, no gradient and no optimizer state, but keeps its param groups:
``optimizer.load_state_dict`` needs the same groups at resume, and DDP's reducer was built for the parameters it
has. Plain PyTorch on a :class:`~hidlr_hf.core.engine.HiDLR` engine.
"""

from __future__ import annotations

import torch

from hidlr_hf.errors import HiDLRError

from .params import innermost_optimizer


def freeze_groups(engine, kept: list[bool]) -> None:
    """Freeze every group of ``engine`` whose ``kept`` flag is False: LR 0, weight decay 0, no gradient, no state.

    Outside DDP the parameters also stop requiring gradients; under DDP they keep ``requires_grad`` (the reducer
    expects them) and :func:`drop_frozen_grads` discards their gradients before each optimizer step instead.
    """
    if all(not k for k in kept):
        raise HiDLRError("Every group would be frozen; raise --hidlr_trainable_budget so at least one group trains.")
    engine.set_base_rates([rate if keep else 0.0 for rate, keep in zip(engine.base_rates, kept)])
    inner = innermost_optimizer(engine.optimizer)
    distributed = (
        torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    )
    for group in _frozen_param_groups(engine, kept):
        group["weight_decay"] = 0.0
        for p in group["params"]:
            inner.state.pop(p, None)
            p.grad = None
            if not distributed:
                p.requires_grad_(False)


def drop_frozen_grads(engine, kept: list[bool]) -> None:
    """Discard the gradients of frozen groups, so they get no update and no optimizer state (needed under DDP)."""
    for group in _frozen_param_groups(engine, kept):
        for p in group["params"]:
            p.grad = None


def _frozen_param_groups(engine, kept: list[bool]):
    for k, keep in enumerate(kept):
        if not keep:
            for i in engine.param_group_indices[k]:
                yield engine.optimizer.param_groups[i]
