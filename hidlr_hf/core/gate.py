"""Holding parameter groups still for one optimizer step: the body during the head phase (docs/METHOD.md section 5.4).

With an optimizer whose step at rate 0 leaves every parameter exactly in place, a held group steps at rate 0: its
optimizer state (Adam's moments) takes in the gradient, so that when the group starts to move its direction is an
average over the steps it waited, not the sign of one batch's gradient. With any other optimizer its gradients are
dropped, and the optimizer leaves the group and its state untouched.
"""

from __future__ import annotations

import torch

from .params import lr_value, set_lr

# torch optimizers whose step at rate 0 leaves every parameter exactly where it is (the update and the decoupled weight
# decay are both scaled by the rate) while their state still takes in the gradient.
ZERO_RATE_STILL = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.NAdam, torch.optim.RAdam,
                   torch.optim.Adamax)


class StepGate:
    """Holds optimizer param groups still for one step: :meth:`hold` before ``optimizer.step()``, :meth:`release`
    after it (or when the step fails).

    Args:
        optimizer: the torch optimizer (unwrapped or not: its ``param_groups`` are what is held).
        inner: the innermost torch optimizer, whose type decides between rate 0 and dropped gradients.
    """

    def __init__(self, optimizer, inner):
        self.optimizer = optimizer
        self.warms = type(inner) in ZERO_RATE_STILL
        self.held: dict = {}  # param-group index -> its rate, for groups held at rate 0 this step

    def hold(self, indices) -> None:
        """Keep the param groups at ``indices`` where they are during the next ``optimizer.step()``."""
        self.release()
        for i in indices:
            group = self.optimizer.param_groups[i]
            if self.warms:
                self.held[i] = lr_value(group["lr"])
                set_lr(group, 0.0)
            else:
                for p in group["params"]:
                    p.grad = None

    def release(self) -> None:
        """Give the groups held at rate 0 their rates back."""
        for i, lr in self.held.items():
            set_lr(self.optimizer.param_groups[i], lr)
        self.held = {}

    def rate(self, i: int) -> float:
        """Param group ``i``'s rate as it is outside the held step."""
        return self.held.get(i, lr_value(self.optimizer.param_groups[i]["lr"]))
