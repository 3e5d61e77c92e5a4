"""Freezing the groups automatic PEFT did not keep (docs/METHOD.md section 8), without changing the optimizer's layout.

A frozen group gets learning rate 0, weight decay 0, no gradient and no optimizer state, but keeps its param groups:
``optimizer.load_state_dict`` needs the same groups at resume, and DDP's reducer was built for the parameters it
has. Plain PyTorch on a :class:`~hidlr_hf.core.engine.HiDLR` engine.

Honest freezing: every group trains until the freeze point, so a frozen group has moved away from its pretrained
value. Given the values the groups had when training started (:func:`copy_groups`), :func:`freeze_groups` puts each
frozen group back to them, so the model after the freeze is exactly the base model plus the kept groups, the model
an adapter of the kept groups rebuilds on the base.
"""

from __future__ import annotations

import torch

from hidlr_hf.errors import HiDLRError

from .distributed import world_size
from .params import innermost_optimizer


def copy_groups(engine, groups, device="cpu") -> dict[int, list[torch.Tensor]]:
    """Detached copies of the parameters of the groups ``groups`` (indices), each group's in the optimizer's order.

    On CPU by default, so that the copy costs host memory, not accelerator memory; the copies keep each
    parameter's dtype, so restoring them is exact to the bit. Memory: :func:`copy_bytes`.
    """
    return {
        int(k): [p.detach().to(device=device, copy=True) for p in group_params(engine, k)] for k in groups
    }


def copy_bytes(values: dict[int, list[torch.Tensor]]) -> int:
    """Bytes held by a :func:`copy_groups` copy (4 per parameter in float32)."""
    return sum(t.numel() * t.element_size() for tensors in values.values() for t in tensors)


def group_params(engine, k: int) -> list[torch.Tensor]:
    """The parameters of group ``k`` of ``engine``, in the optimizer's order."""
    return [p for i in engine.param_group_indices[k] for p in engine.optimizer.param_groups[i]["params"]]


def restore_groups(engine, values: dict[int, list[torch.Tensor]], groups) -> None:
    """Copy ``values`` (from :func:`copy_groups`) back into the parameters of the groups ``groups``, bit for bit."""
    pairs = []
    for k in groups:  # every group checked before any is written, so a mismatch changes nothing
        params, saved = group_params(engine, k), values.get(k)
        if saved is None or len(saved) != len(params) or any(s.shape != p.shape for s, p in zip(saved, params)):
            raise HiDLRError(
                f"No matching initial values for group {engine.group_names[k]!r}; the copy was taken on another "
                "model or grouping."
            )
        pairs += zip(params, saved)
    with torch.no_grad():
        for p, s in pairs:
            p.copy_(s.to(device=p.device, dtype=p.dtype))


def freeze_groups(engine, kept: list[bool], initial: dict[int, list[torch.Tensor]] | None = None) -> None:
    """Freeze every group of ``engine`` whose ``kept`` flag is False: LR 0, weight decay 0, no gradient, no state.

    With ``initial`` (:func:`copy_groups` of at least the frozen groups, taken when training started), each frozen
    group first returns to those values (honest freezing). Outside DDP the parameters also stop requiring gradients;
    under DDP they keep ``requires_grad`` (the reducer expects them) and :func:`drop_frozen_grads` discards their
    gradients before each optimizer step instead.
    """
    if all(not k for k in kept):
        raise HiDLRError("Every group would be frozen; raise --hidlr_trainable_budget so at least one group trains.")
    if initial is not None:
        # Checked (and restored) before anything changes, so a mismatch leaves the engine as it was.
        restore_groups(engine, initial, [k for k, keep in enumerate(kept) if not keep])
    engine.set_base_rates([rate if keep else 0.0 for rate, keep in zip(engine.base_rates, kept)])
    inner = innermost_optimizer(engine.optimizer)
    distributed = world_size() > 1
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
