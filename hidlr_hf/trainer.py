"""``HiDLRTrainer``: ``transformers.Trainer`` with Hi-DLR; swap the two names in a Trainer script, nothing else."""

from __future__ import annotations

from typing import Optional

from transformers import Trainer

from .callbacks import HiDLRCallback, build_optimizer, find_callback


class HiDLRTrainer(Trainer):
    """A ``Trainer`` whose optimizer has one param group per Hi-DLR group and whose rates Hi-DLR sets.

    Use with :class:`~hidlr_hf.HiDLRTrainingArguments` (``--hidlr_*`` flags); with ``hidlr=False`` it is exactly the
    plain ``Trainer``. The work happens in :class:`~hidlr_hf.HiDLRCallback`, which this class adds and wires itself,
    so both forms produce the same rates.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hidlr_callback: Optional[HiDLRCallback] = find_callback(self)
        if getattr(self.args, "hidlr", True) and self.hidlr_callback is None:
            self.hidlr_callback = HiDLRCallback()
            self.add_callback(self.hidlr_callback)
        if self.hidlr_callback is not None and self.hidlr_callback.trainer is not self:
            self.hidlr_callback.set_trainer(self)

    @property
    def hidlr_enabled(self) -> bool:
        cb = self.hidlr_callback
        return cb is not None and bool(cb.settings and cb.settings["hidlr"])

    @property
    def hidlr(self):
        """The running :class:`~hidlr_hf.HiDLR` engine (None before ``train()`` or with Hi-DLR off)."""
        return self.hidlr_callback.engine if self.hidlr_callback is not None else None

    def create_optimizer(self, model=None):
        if not self.hidlr_enabled:
            return super().create_optimizer(model)
        return build_optimizer(self, model)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.hidlr_callback is not None:
            self.hidlr_callback.note_checkpoint(checkpoint)

    def save_model(self, output_dir=None, _internal_call=False):
        """Save the model and, beside it, the Hi-DLR state (so ``hidlr export`` works on that folder)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.hidlr is not None and self.args.should_save and not _internal_call:
            self.hidlr_callback.save_state(output_dir or self.args.output_dir)

    def export_peft_config(self, out_dir: str, budget=None) -> str:
        """Write the discovered adapter (``adapter_config.json`` + ``hidlr_mask.json``) to ``out_dir``.

        Uses the selection made by automatic PEFT, or, if none was made, ranks groups now under ``budget``
        (default ``--hidlr_trainable_budget``). Returns the human summary, also printed. In a multi-process run only
        the main process writes; the others return an empty string.
        """
        from .export import export_from_callback

        if not self.is_world_process_zero():
            return ""
        summary = export_from_callback(self.hidlr_callback, out_dir, budget=budget)
        print(summary)
        return summary
