"""The Trainer's optimizer with one param group per Hi-DLR group (docs/METHOD.md sections 6 and 9).

``Trainer.create_optimizer`` builds two param groups (decay / no decay) over the whole model; Hi-DLR needs one
learning rate per group, so :func:`build_optimizer` builds the same optimizer class with the same keyword arguments
over :func:`~hidlr_hf.core.grouping.optimizer_param_groups` (the decay / no-decay split kept inside each group).
:func:`check_supported` refuses, at the start, the set-ups where Hi-DLR cannot own the optimizer's groups or weights.
"""

from __future__ import annotations

import torch

from hidlr_hf.core.grouping import group_parameters, load_scheme, optimizer_param_groups
from hidlr_hf.errors import HiDLRError

__all__ = ["UNSUPPORTED_OPTIM", "build_optimizer", "check_supported"]

# --optim values Hi-DLR refuses (by substring), and why; any other is checked for linearity at its first step.
UNSUPPORTED_OPTIM = {
    "schedule_free": "averages iterates with learning-rate-dependent weights, so its step is not linear in the LR",
    "galore": "projects gradients inside its own parameter groups, which Hi-DLR needs to own",
    "apollo": "projects gradients inside its own parameter groups, which Hi-DLR needs to own",
    "lomo": "updates parameters during the backward pass, so there is no optimizer step to probe",
}
_LINEAR_OPTIM = "adamw_torch, sgd, adagrad, rmsprop, adafactor or lion_32bit"


def build_optimizer(trainer, grouping, model=None) -> torch.optim.Optimizer:
    """``Trainer.create_optimizer`` with one param group per Hi-DLR group of the scheme ``grouping``.

    Uses the Trainer's optimizer class and keyword arguments (``--optim``, ``optimizer_cls_and_kwargs``); an
    optimizer the Trainer already has (``Trainer(optimizers=...)``) is returned unchanged.
    """
    if trainer.optimizer is not None:
        return trainer.optimizer
    opt_model = trainer.model if model is None else model
    args = trainer.args
    optim = str(getattr(args.optim, "value", args.optim))
    for key, why in UNSUPPORTED_OPTIM.items():
        if key in optim:
            raise HiDLRError(
                f"--optim {optim} cannot be used with Hi-DLR: it {why}; use {_LINEAR_OPTIM}, or turn Hi-DLR off with "
                "--hidlr false."
            )
    groups = group_parameters(opt_model, load_scheme(grouping))
    param_groups = optimizer_param_groups(groups, weight_decay=args.weight_decay)
    if trainer.optimizer_cls_and_kwargs is not None:
        optimizer_cls, optimizer_kwargs = trainer.optimizer_cls_and_kwargs
    else:
        optimizer_cls, optimizer_kwargs = trainer.get_optimizer_cls_and_kwargs(args, opt_model)
    optimizer_kwargs = dict(optimizer_kwargs)
    for key in ("params", "model", "optimizer_dict"):
        if key in optimizer_kwargs:
            raise HiDLRError(
                f"--optim {optim} builds its own parameter groups, which Hi-DLR needs to own; use {_LINEAR_OPTIM}."
            )
    trainer.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
    return trainer.optimizer


def check_supported(trainer) -> None:
    """Refuse DeepSpeed and FSDP1 without ``use_orig_params`` before training starts (both would give wrong rates)."""
    if getattr(trainer, "is_deepspeed_enabled", False):
        # DeepSpeed steps fp32 master weights that Hi-DLR cannot move to w - lr d; with an "optimizer" section
        # it also bypasses create_optimizer. Either way the rates would be wrong, so refuse at the start.
        raise HiDLRError(
            "Hi-DLR does not support DeepSpeed: its optimizer keeps master weights Hi-DLR cannot set (and an "
            "\"optimizer\" section bypasses Hi-DLR's parameter groups); use DDP or FSDP, or turn Hi-DLR off."
        )
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
        if getattr(plugin, "fsdp_version", 1) == 1 and not getattr(plugin, "use_orig_params", False):
            # FSDP1 flattens parameters: one flat tensor cannot belong to several Hi-DLR groups.
            raise HiDLRError(
                "Hi-DLR under FSDP needs per-parameter groups: set fsdp_config use_orig_params=true (FSDP1) or use "
                "FSDP2 (fsdp_version 2)."
            )
