"""``HiDLRCallback``: the Trainer's events, handed to a :class:`~hidlr_hf.trainer.controller.HiDLRController`.

For a script that keeps its plain ``Trainer``::

    trainer = Trainer(model=model, args=args, train_dataset=train)
    HiDLRCallback.attach(trainer, hidlr_every=10)        # settings: HiDLRTrainingArguments fields, or overrides
    trainer.train()

``HiDLRTrainer`` uses the same callback for its own controller, so both forms set the same rates.
"""

from __future__ import annotations

import types
from typing import Optional

from transformers import TrainerCallback

from hidlr_hf.errors import HiDLRError

from . import internals
from .config import HiDLRConfig
from .controller import HiDLRController

__all__ = ["HiDLRCallback"]

_NOT_ATTACHED = (
    "HiDLRCallback must be given its Trainer: create the Trainer first, then call HiDLRCallback.attach(trainer) "
    "(instead of Trainer(callbacks=[HiDLRCallback()]) or trainer.add_callback(HiDLRCallback()))."
)


class HiDLRCallback(TrainerCallback):
    """Hi-DLR for an unchanged ``Trainer``; create it with :meth:`attach`.

    The callback forwards the Trainer's events to its controller and holds no Hi-DLR logic itself. An optimizer
    passed as ``Trainer(optimizers=(opt, sched))`` must already carry one param group per Hi-DLR group (build it with
    :func:`hidlr_hf.optimizer_param_groups`).
    """

    def __init__(self, controller: Optional[HiDLRController] = None):
        self.controller = controller
        self.attached = controller is not None  # also True for a Trainer attached with Hi-DLR turned off

    @classmethod
    def attach(cls, trainer, **overrides) -> "HiDLRCallback":
        """Run Hi-DLR in ``trainer``: returns the callback, already added to it (first in line).

        Settings come from the Trainer's ``HiDLRTrainingArguments`` when it has them, else from the defaults;
        keyword arguments named like those fields (``hidlr_every=10``) override them. The Trainer's optimizer is then
        built with one param group per Hi-DLR group, and a resumed checkpoint's Hi-DLR state is loaded with it.
        """
        if getattr(trainer, "hidlr_controller", None) is not None:
            raise HiDLRError("This HiDLRTrainer runs Hi-DLR itself; HiDLRCallback.attach is for a plain Trainer.")
        config = HiDLRConfig.from_args(trainer.args, **overrides)
        controller = HiDLRController(trainer, config, overrides) if config.hidlr else None
        callback = cls(controller)
        callback.attached = True
        if controller is not None:
            trainer.create_optimizer = types.MethodType(lambda self, model=None: controller.build_optimizer(model), trainer)
            internals.after_checkpoint_load(trainer, controller.note_checkpoint)
        callback.add_to(trainer)
        return callback

    def add_to(self, trainer) -> None:
        """Add this callback to ``trainer`` first in line, so integrations that log after it (TensorBoard, W&B) see
        the Hi-DLR metrics."""
        trainer.add_callback(self)
        callbacks = trainer.callback_handler.callbacks
        callbacks.remove(self)
        callbacks.insert(0, self)

    @property
    def engine(self):
        """The running :class:`~hidlr_hf.HiDLR` engine (None before ``train()`` or with Hi-DLR off)."""
        return self.controller.engine if self.controller is not None else None

    # -- events: each one is the controller's -----------------------------------------------------------

    def on_init_end(self, args, state, control, **kwargs):
        if not self.attached:
            raise HiDLRError(_NOT_ATTACHED)

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if not self.attached:
            raise HiDLRError(_NOT_ATTACHED)
        if self.controller is not None:
            self.controller.begin(args, optimizer, lr_scheduler, max_steps=state.max_steps)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.engine is not None:
            self.controller.before_optimizer_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.engine is not None:
            self.controller.after_optimizer_step(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.engine is not None and logs is not None:
            self.controller.add_metrics(logs, state)

    def on_save(self, args, state, control, **kwargs):
        if self.engine is not None:
            self.controller.save_checkpoint_state(args, state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.engine is not None:
            self.controller.save_final_state(args)
