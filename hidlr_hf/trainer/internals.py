"""Every use of a private ``transformers.Trainer`` method or attribute, in one module.

Hi-DLR needs five things the Trainer keeps private: the collator with unused columns removed and the device
placement of a batch (so a probe batch looks exactly like a training batch), the hyperparameter-search trial being
run and the output folder of the current run (``<output_dir>/run-<n>`` in a trial: to find the checkpoint just
written), and the moment a checkpoint's optimizer and scheduler were loaded (to load the Hi-DLR state that belongs
with them). Checked against transformers 4.57.6 and 5.24.0 (pyproject allows >=4.57,<6): the names and parameters
below are the same in both, and both set ``self._trial = trial`` in ``_hp_search_setup`` at the start of every
``train()``. ``tests/test_trainer_internals.py`` fails if one disappears or changes; when it does, this module is
the only place to update.
"""

from __future__ import annotations

import os
import types

PRIVATE_TRAINER_METHODS = {
    "_get_collator_with_removed_columns": ("data_collator", "description"),
    "_prepare_inputs": ("inputs",),
    "_get_output_dir": ("trial",),
    "_load_optimizer_and_scheduler": ("checkpoint",),
}
"""The private ``Trainer`` methods used here, with the parameters passed to them."""

PRIVATE_TRAINER_ATTRIBUTES = {"_trial": "_hp_search_setup"}
"""The private ``Trainer`` attributes read here, with the Trainer method that sets them (``self._trial = trial``)."""


def probe_collator(trainer):
    """The Trainer's data collator wrapped to drop the columns the model does not take, as for training batches."""
    return trainer._get_collator_with_removed_columns(trainer.data_collator, description="hidlr probe")


def prepare_inputs(trainer, batch: dict) -> dict:
    """``batch`` on the training device, in the form ``compute_loss`` receives during training."""
    return trainer._prepare_inputs(batch)


def current_trial(trainer):
    """The hyperparameter-search trial ``trainer.train()`` is running, None outside ``hyperparameter_search``.

    The Trainer passes the trial to its own methods but not to callbacks; it keeps it as ``_trial``, which is reset
    to None by every ``train()`` without a trial.
    """
    return getattr(trainer, "_trial", None)


def run_folder(trainer) -> str:
    """The output folder of the current run: ``output_dir``, or in a hyperparameter-search trial its own
    ``<output_dir>/run-<n>`` (``hp_name``'s name if given), where the Trainer writes that trial's checkpoints."""
    return trainer._get_output_dir(trial=current_trial(trainer))


def checkpoint_folder(trainer, global_step: int) -> str:
    """The ``checkpoint-<step>`` folder the Trainer writes at ``global_step`` (in its run's output folder)."""
    return os.path.join(run_folder(trainer), f"checkpoint-{global_step}")


def after_checkpoint_load(trainer, hook) -> None:
    """Call ``hook(checkpoint)`` each time ``trainer`` has loaded a checkpoint's optimizer and scheduler state.

    Installed on the instance, so it works for ``HiDLRTrainer`` and for a plain ``Trainer`` alike; ``checkpoint`` is
    None when training starts afresh.
    """
    load = trainer._load_optimizer_and_scheduler

    def load_then_hook(self, checkpoint):
        load(checkpoint)
        hook(checkpoint)

    trainer._load_optimizer_and_scheduler = types.MethodType(load_then_hook, trainer)
