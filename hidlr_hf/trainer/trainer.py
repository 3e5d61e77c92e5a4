"""``HiDLRTrainer``: ``transformers.Trainer`` with Hi-DLR; swap the two names in a Trainer script, nothing else."""

from __future__ import annotations

from typing import Optional

from transformers import Trainer

from hidlr_hf.errors import HiDLRError
from hidlr_hf.files import check_writable_dir

from . import internals
from .callback import HiDLRCallback
from .config import HiDLRConfig
from .controller import HiDLRController
from .export import export_state

__all__ = ["HiDLRTrainer"]


class HiDLRTrainer(Trainer):
    """A ``Trainer`` whose optimizer has one param group per Hi-DLR group and whose rates Hi-DLR sets.

    Use with :class:`~hidlr_hf.HiDLRTrainingArguments` (``--hidlr_*`` flags); a plain ``TrainingArguments`` means
    the default settings. With ``hidlr=False`` it is exactly the plain ``Trainer``. The trainer owns a
    :class:`~hidlr_hf.trainer.controller.HiDLRController` (:attr:`hidlr_controller`), which receives the Trainer's
    events through a :class:`~hidlr_hf.HiDLRCallback`, the same path a plain ``Trainer`` uses with
    ``HiDLRCallback.attach``: both forms set the same rates.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        config = HiDLRConfig.from_args(self.args)
        self.hidlr_controller: Optional[HiDLRController] = None
        if config.hidlr:
            self.hidlr_controller = HiDLRController(self, config)
            internals.after_checkpoint_load(self, self.hidlr_controller.note_checkpoint)
            HiDLRCallback(self.hidlr_controller).add_to(self)

    @property
    def hidlr(self):
        """The running :class:`~hidlr_hf.HiDLR` engine (None before ``train()`` or with Hi-DLR off)."""
        return self.hidlr_controller.engine if self.hidlr_controller is not None else None

    def create_optimizer(self, model=None):
        """``Trainer.create_optimizer`` with one param group per Hi-DLR group (the plain one with Hi-DLR off)."""
        if self.hidlr_controller is None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        return self.hidlr_controller.build_optimizer(model)

    def save_model(self, output_dir=None, _internal_call=False):
        """Save the model and, beside it, the Hi-DLR state (so ``hidlr export`` works on that folder)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.hidlr is not None and self.args.should_save and not _internal_call:
            self.hidlr_controller.save_state(output_dir or self.args.output_dir)

    def export_peft_config(self, out_dir: str, budget=None) -> str:
        """Write the discovered adapter (``adapter_config.json``, ``adapter_model.safetensors``, ``hidlr_mask.json``).

        Uses the selection made by automatic PEFT, or, if none was made, ranks groups now under ``budget``
        (default ``--hidlr_trainable_budget``). Returns the human summary, also printed. In a multi-process run only
        the main process writes; the others return an empty string.
        """
        if self.hidlr is None:
            raise HiDLRError("There is no Hi-DLR state to export: train with Hi-DLR on (--hidlr true) before exporting.")
        if not self.is_world_process_zero():
            return ""
        check_writable_dir(out_dir, "out_dir")
        controller = self.hidlr_controller
        summary = export_state(controller.state(), self.model, out_dir, budget=budget, initial=controller.initial_by_name())
        print(summary)
        return summary
