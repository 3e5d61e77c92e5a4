"""``HiDLRController``: Hi-DLR for one ``transformers.Trainer``, the logic both Trainer forms share.

:class:`~hidlr_hf.HiDLRTrainer` owns one controller; :meth:`hidlr_hf.HiDLRCallback.attach` gives one to a plain
``Trainer``. Either way the Trainer's events reach it through a :class:`~hidlr_hf.HiDLRCallback`, in the Trainer's
order within one optimizer step (docs/METHOD.md section 6):

gradient clipping -> ``on_pre_optimizer_step`` (:meth:`before_optimizer_step`: probe batch, snapshot, unit rate)
-> ``optimizer.step()`` -> ``on_optimizer_step`` (:meth:`after_optimizer_step`: probes, new rates, the step actually
taken, automatic PEFT) -> ``lr_scheduler.step()``.

It builds the optimizer's Hi-DLR param groups, creates the :class:`~hidlr_hf.HiDLR` engine at the start of
training, draws probe batches and computes probe losses with the Trainer's own ``compute_loss``, adds the
``hidlr/...`` metrics to the logs, freezes groups (automatic PEFT), and saves and loads ``hidlr_state.json``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from typing import Optional

import torch

from hidlr_hf.core.engine import HiDLR
from hidlr_hf.core.freezing import copy_bytes, copy_groups, drop_frozen_grads, freeze_groups
from hidlr_hf.core.grouping import is_head_group
from hidlr_hf.core.selection import group_records, select
from hidlr_hf.errors import HiDLRError
from hidlr_hf.peft.frozen_lora import skip_frozen_lora

from . import internals
from .config import HiDLRConfig
from .initial import INITIAL_FILE, read_initial, write_initial
from .optimizer import build_optimizer, check_supported
from .state import STATE_FILE, read_state, run_state, write_state

logger = logging.getLogger(__name__)


class HiDLRController:
    """Hi-DLR inside one Trainer: optimizer groups, engine, probe batches, metrics, freezing, state.

    Args:
        trainer: the ``transformers.Trainer`` (or ``HiDLRTrainer``) to run Hi-DLR in.
        config: the validated settings (:meth:`HiDLRConfig.from_args`).
        overrides: the keyword settings given to :meth:`hidlr_hf.HiDLRCallback.attach`, kept on top of the Trainer's
            arguments each time the settings are read again (:meth:`read_settings`).

    Attributes:
        engine: the :class:`~hidlr_hf.HiDLR` engine of the current training (None before ``train()``).
        freeze_decision: what automatic PEFT decided (``step``, ``kept``, ``rank``, ``budget``, ``total_params``,
            ``trainable_params``, ``restored``: whether frozen groups went back to their initial values,
            ``lora_layers_skipped``: how many frozen LoRA layers stopped computing their zero branch), None until
            groups are frozen.
        initial: ``{group index: CPU tensors}``, the values candidate groups had when training started (automatic
            PEFT only; :mod:`hidlr_hf.trainer.initial`): every candidate group until the freeze, the kept ones after.
        initial_copy_bytes: the memory the copy took when training started (4 bytes per candidate parameter in fp32).
    """

    def __init__(self, trainer, config: HiDLRConfig, overrides: Optional[dict] = None):
        check_supported(trainer)
        self.trainer = trainer
        self.config = config
        self._overrides = dict(overrides or {})
        self.engine: Optional[HiDLR] = None
        self.freeze_decision: Optional[dict] = None
        self.resume_from: Optional[str] = None
        self._probe_inputs = None
        self._collator = None
        self._train_started = None
        self._probe_seconds_at_start = 0.0
        self._group_param_names: Optional[list] = None
        self.initial: Optional[dict] = None
        self.initial_copy_bytes = 0
        # Bad input fails here, when the Trainer is built, rather than after the first optimizer step.
        if trainer.train_dataset is not None:
            self.check_train_dataset(trainer.train_dataset)
        if trainer.args.max_steps and trainer.args.max_steps > 0:
            self.check_freeze_step(trainer.args.max_steps)

    # -- checks ------------------------------------------------------------------------------------

    def probe_batch_size(self, args=None) -> int:
        """Rows per process in a probe batch: ``--hidlr_probe_batch_size``, else the training batch size."""
        args = args or self.trainer.args
        return self.config.hidlr_probe_batch_size or args.per_device_train_batch_size

    def check_train_dataset(self, dataset, args=None) -> None:
        """Refuse a training set Hi-DLR cannot draw probe batches from: not map-style, or fewer rows than one
        probe batch on every process."""
        args = args or self.trainer.args
        if isinstance(dataset, torch.utils.data.IterableDataset) or not (
            hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")
        ):
            raise HiDLRError(
                f"The train_dataset is a {type(dataset).__name__}; Hi-DLR draws probe batches by index and needs a "
                "map-style dataset (with __len__ and __getitem__): load it without streaming, or turn Hi-DLR off "
                "(--hidlr false)."
            )
        rows, per_process, world = len(dataset), self.probe_batch_size(args), max(int(args.world_size), 1)
        if rows == 0:
            raise HiDLRError("The training set is empty: pass a train_dataset with at least one probe batch of rows.")
        if rows < per_process * world:
            smaller = f"--hidlr_probe_batch_size {rows // world} or smaller, or " if rows >= world else ""
            raise HiDLRError(
                f"The training set has {rows} rows, fewer than one probe batch ({per_process} rows on each of {world} "
                f"process(es)); pass {smaller}more training rows."
            )

    def check_freeze_step(self, max_steps: int) -> None:
        """Refuse ``--hidlr_freeze_at`` after the last optimizer step (automatic PEFT would never freeze)."""
        freeze = self._freeze_step(max_steps)
        if freeze is not None and max_steps and freeze > max_steps:
            raise HiDLRError(
                f"--hidlr_freeze_at {self.config.hidlr_freeze_at} is after the last optimizer step ({max_steps}), so no "
                f"group would ever be frozen; pass a step up to {max_steps} or a fraction of training such as 0.1."
            )

    # -- set-up ------------------------------------------------------------------------------------

    def read_settings(self, args=None) -> HiDLRConfig:
        """The settings of the ``train()`` about to run: the Trainer's arguments read again (``attach``'s overrides
        on top), validated like the flags, and kept as :attr:`config`.

        ``Trainer.hyperparameter_search`` sets each trial's ``hp_space`` values (``hidlr_*`` fields, ``learning_rate``)
        on ``trainer.args`` at the start of that trial's ``train()``, long after this controller was built; reading
        them here, when the optimizer is built and when training begins, gives every trial its own settings.
        """
        config = HiDLRConfig.from_args(args if args is not None else self.trainer.args, **self._overrides)
        if not config.hidlr:
            raise HiDLRError(
                "hidlr was set to false after the Trainer was built (by a hyperparameter-search trial?); Hi-DLR is "
                "turned on or off when the Trainer is built: leave `hidlr` out of the hp_space, or search it with "
                "two Trainers, one built with hidlr=False."
            )
        self.config = config
        return config

    def build_optimizer(self, model=None) -> torch.optim.Optimizer:
        """The Trainer's optimizer with one param group per Hi-DLR group (``Trainer.create_optimizer``)."""
        return build_optimizer(self.trainer, self.read_settings().hidlr_grouping, model)

    def note_checkpoint(self, checkpoint: Optional[str]) -> None:
        """Remember the checkpoint the Trainer resumes from; its Hi-DLR state is loaded when training begins."""
        self.resume_from = checkpoint

    # -- the Trainer's events ------------------------------------------------------------------------

    def begin(self, args, optimizer, lr_scheduler, max_steps: Optional[int] = None) -> None:
        """At ``on_train_begin``: a fresh engine on the Trainer's optimizer, or the checkpoint's when resuming.

        ``max_steps`` (the Trainer state's) lets the head phase and the overhead budget plan for the whole run."""
        if not any("hidlr_group" in g for g in optimizer.param_groups):
            raise HiDLRError(
                "The optimizer was not built with Hi-DLR parameter groups (was it passed as Trainer(optimizers=...)?); "
                "build its groups with hidlr_hf.optimizer_param_groups, or let the Trainer create it."
            )
        if self.engine is not None and self.engine.abandon_step():
            # The last train() stopped inside optimizer.step() (out of memory): the unit learning rate of its probe
            # step must not survive into this one.
            logger.warning("Hi-DLR undid the probe step that the previous train() call left unfinished.")
        self.read_settings(args)  # a hyperparameter-search trial may have changed them since the last train()
        probe_bs = self.probe_batch_size(args)
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
        total_steps = max_steps if max_steps and max_steps > 0 else None
        # Again here: the train_dataset may have been set after the Trainer was built, and the run length is now known.
        if self.trainer.train_dataset is not None:
            self.check_train_dataset(self.trainer.train_dataset, args)
        if total_steps is not None:
            self.check_freeze_step(total_steps)
        settings = self.config.engine_settings(mixed_precision=bool(args.bf16 or args.fp16))
        settings["head_phase"] = self._head_phase_before_freezing(settings["head_phase"], total_steps)
        self.engine = HiDLR(
            optimizer,
            lr_scheduler=scheduler if hasattr(scheduler, "base_lrs") else None,
            model=self.trainer.model,
            # One training step = forward + backward (~3 forwards) per micro-batch, in probe-batch units.
            step_cost=3.0 * args.gradient_accumulation_steps * args.per_device_train_batch_size / probe_bs,
            seed=self._seed(),
            head_groups=[name for name in _group_names(optimizer) if is_head_group(name)],
            total_steps=total_steps,
            **settings,
        )
        self._probe_bs = probe_bs
        self._drop_frozen_grads_before_clipping()
        self._train_started = time.perf_counter()
        self._probe_seconds_at_start = 0.0
        # A second train() call on the same Trainer starts from scratch unless it resumes.
        self.freeze_decision, self._group_param_names, self._collator = None, None, None
        self.initial = None
        if self.resume_from is not None:
            self._load_state(self.resume_from)
            self._probe_seconds_at_start = self.engine.probe_seconds
            self.resume_from = None
        elif self.config.hidlr_freeze_at is not None:
            self._copy_initial()

    def _copy_initial(self) -> None:
        """Copy the candidate groups (all but the head, which is always kept) before their first step: honest
        freezing puts the frozen ones back to these values. On CPU, so an accelerator pays nothing for it."""
        candidates = [k for k, name in enumerate(self.engine.group_names) if not is_head_group(name)]
        self.initial = copy_groups(self.engine, candidates, device="cpu")
        self.initial_copy_bytes = copy_bytes(self.initial)
        logger.info(
            "Hi-DLR automatic PEFT: initial values of %d candidate groups copied to CPU (%.1f MB) for the freeze.",
            len(candidates), self.initial_copy_bytes / 1e6,
        )

    def _drop_frozen_grads_before_clipping(self) -> None:
        """Under DDP frozen groups keep ``requires_grad`` (the reducer expects them) and get gradients: dropped only
        before the optimizer step, they would still count in the Trainer's clip norm, and the kept groups would be
        clipped harder than in one process. The Trainer clips through ``accelerator.clip_grad_norm_`` (also to
        measure the norm it logs): the frozen gradients are dropped first."""
        accelerator = getattr(self.trainer, "accelerator", None)
        clip = getattr(accelerator, "clip_grad_norm_", None)
        if clip is None or getattr(clip, "_hidlr_controller", None) is self:
            return
        clip = getattr(clip, "_hidlr_original", clip)  # a second train() wraps the Trainer's own method, once

        def clip_grad_norm_(parameters, *args, **kwargs):
            if self.engine is not None and self.freeze_decision:
                drop_frozen_grads(self.engine, self.freeze_decision["kept"])
            return clip(parameters, *args, **kwargs)

        clip_grad_norm_._hidlr_controller, clip_grad_norm_._hidlr_original = self, clip
        accelerator.clip_grad_norm_ = clip_grad_norm_

    def before_optimizer_step(self) -> None:
        """At ``on_pre_optimizer_step``: gradients are final; prepare a probe round when one is due."""
        if self.freeze_decision:
            drop_frozen_grads(self.engine, self.freeze_decision["kept"])
        if self.engine.probe_due:
            self._probe_inputs = self._draw_probe_batch()
        self.engine.pre_step()

    def after_optimizer_step(self, state) -> None:
        """At ``on_optimizer_step``: run the prepared round (not on a step the optimizer skipped), maybe freeze."""
        skipped = bool(getattr(self.trainer.accelerator, "optimizer_step_was_skipped", False))
        inputs, self._probe_inputs = self._probe_inputs, None
        self.engine.post_step(self._closure(inputs) if inputs is not None else None, skipped=skipped)
        if not skipped:
            self._maybe_freeze(state)

    def add_metrics(self, logs: dict, state) -> None:
        """At ``on_log``: the ``hidlr/...`` metrics join a training-loss record (and its ``log_history`` entry)."""
        if "loss" not in logs:
            return
        metrics = self.metrics()
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            # The Trainer appended its record before calling on_log.
            state.log_history[-1].update(metrics)

    def save_checkpoint_state(self, args, state) -> None:
        """At ``on_save``: the state goes into the checkpoint folder the Trainer has just written."""
        if not args.should_save:
            return
        folder = internals.checkpoint_folder(self.trainer, state.global_step)
        if os.path.isdir(folder):
            self.save_state(folder)

    def save_final_state(self, args) -> None:
        """At ``on_train_end``: next to the final model, so ``hidlr export <output_dir>`` works on a finished run; a
        hyperparameter-search trial's state goes into its own ``<output_dir>/run-<n>``, beside its checkpoints, so
        one trial never overwrites another's."""
        if args.should_save:
            folder = internals.run_folder(self.trainer)
            os.makedirs(folder, exist_ok=True)
            self.save_state(folder)

    # -- state ---------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Everything a resumed or exported run needs, JSON-safe (the content of ``hidlr_state.json``)."""
        return run_state(
            self.engine, self.config.hidlr_settings(), self.group_param_names(), self.freeze_decision, self.trainer.model
        )

    def save_state(self, folder: str) -> str:
        """Write ``hidlr_state.json`` into ``folder`` atomically, and beside it the initial values still held
        (``hidlr_initial.safetensors``, automatic PEFT); returns the state's path."""
        path = write_state(folder, self.state())
        stale = os.path.join(folder, INITIAL_FILE)
        if self.initial:
            write_initial(folder, self.initial, self.group_param_names())
        elif os.path.isfile(stale):
            os.remove(stale)  # a copy from an earlier save of this folder no longer matches the state
        return path

    def initial_by_name(self) -> dict:
        """The initial values still held, by parameter name (empty without automatic PEFT)."""
        names = self.group_param_names()
        return {n: t for k, saved in (self.initial or {}).items() for n, t in zip(names[k], saved)}

    def _load_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            warnings.warn(
                f"No {STATE_FILE} in {checkpoint}: resuming with fresh Hi-DLR state (rates restart from the optimizer's).",
                stacklevel=2,
            )
            return
        saved = read_state(path)
        self.engine.load_state_dict(saved["engine"])
        self.freeze_decision = saved.get("frozen")
        initial = os.path.join(checkpoint, INITIAL_FILE)
        if os.path.isfile(initial):
            self.initial = read_initial(initial, self.group_param_names())
            self.initial_copy_bytes = copy_bytes(self.initial)
        elif self.config.hidlr_freeze_at is not None and not self.freeze_decision:
            warnings.warn(
                f"No {INITIAL_FILE} in {checkpoint}: the groups frozen later keep their values at the freeze instead "
                "of returning to their pretrained values, and the exported adapter will not reproduce the run.",
                stacklevel=2,
            )
        if self.freeze_decision:
            # The checkpoint's model already holds the frozen groups at their initial values.
            freeze_groups(self.engine, self.freeze_decision["kept"])
            if self.freeze_decision.get("restored"):
                self._skip_frozen_lora()

    def _skip_frozen_lora(self) -> list[str]:
        """Frozen LoRA layers back at their zero start stop computing their branch: the same output, faster steps."""
        skipped = skip_frozen_lora(self.trainer.model)
        if skipped:
            logger.info("Hi-DLR automatic PEFT: %d frozen LoRA layers now skip their (zero) branch.", len(skipped))
        return skipped

    # -- probes --------------------------------------------------------------------------------------

    def _seed(self) -> int:
        seed = self.config.hidlr_seed
        return int(self.trainer.args.seed if seed is None else seed)

    def _draw_probe_batch(self):
        """A fresh training batch chosen by (seed, step) alone, so a resumed run draws the same batches.

        All ranks draw the same global sample of ``world_size * probe_batch_size`` indices and each takes its own
        slice: the mean of the ranks' probe losses is then the loss on the global probe batch, exactly what one
        process with the same global batch would measure.
        """
        trainer = self.trainer
        dataset = trainer.train_dataset
        if self._collator is None:
            self._collator = internals.probe_collator(trainer)
        rank, world = trainer.args.process_index, trainer.args.world_size
        generator = torch.Generator().manual_seed((self._seed() * 1_000_003 + self.engine.num_steps) % (2**63))
        size = self._probe_bs  # begin() checked that the training set holds world * size rows
        indices = torch.randperm(len(dataset), generator=generator)[rank * size : (rank + 1) * size].tolist()
        return internals.prepare_inputs(trainer, self._collator([dataset[i] for i in indices]))

    def _closure(self, inputs):
        """The probe loss exactly as training computes it (``compute_loss``: label smoothing, custom losses)."""
        trainer = self.trainer

        def closure():
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(trainer.model, dict(inputs))
            return loss.detach().float()

        return closure

    # -- logging -------------------------------------------------------------------------------------

    def metrics(self) -> dict:
        """Per-group rates and influence, and the cost of probing, under ``hidlr/...`` keys."""
        engine = self.engine
        out = {}
        for name, lr, base, infl in zip(
            engine.group_names, engine.rates_in_force(), engine.base_rates, engine.influence.mean
        ):
            out[f"hidlr/lr/{name}"] = float(lr)
            out[f"hidlr/base_rate/{name}"] = float(base)
            if math.isfinite(infl):
                out[f"hidlr/influence/{name}"] = float(infl)
        elapsed = time.perf_counter() - self._train_started if self._train_started else 0.0
        probe = engine.probe_seconds - self._probe_seconds_at_start
        out["hidlr/probe_seconds"] = float(engine.probe_seconds)
        out["hidlr/overhead"] = float(probe / max(elapsed - probe, 1e-9)) if elapsed > 0 else 0.0
        out["hidlr/rounds"] = engine.num_rounds
        out["hidlr/discarded_rounds"] = engine.discarded_rounds
        return out

    # -- automatic PEFT ------------------------------------------------------------------------------

    def freeze_step(self, state) -> Optional[int]:
        """The optimizer step after which groups are frozen, or None without automatic PEFT."""
        return self._freeze_step(state.max_steps)

    def _freeze_step(self, max_steps) -> Optional[int]:
        at = self.config.hidlr_freeze_at
        if at is None:
            return None
        return max(1, int(round(at * (max_steps or 0)))) if isinstance(at, float) else int(at)

    def _head_phase_before_freezing(self, head_phase: float, total_steps: Optional[int]) -> float:
        """Automatic PEFT ranks groups by influence measured after the head phase (the body is not probed in it):
        the head phase ends by half the steps before freezing, as a step count."""
        freeze = self._freeze_step(total_steps)
        if freeze is None or head_phase <= 0:
            return head_phase
        steps = head_phase if head_phase >= 1 else round(head_phase * total_steps) if total_steps else 0
        return float(min(int(steps), freeze // 2))

    def _maybe_freeze(self, state) -> None:
        at = self.freeze_step(state)
        if at is None or self.freeze_decision is not None or state.global_step + 1 < at:
            return
        self.freeze()

    def freeze(self, budget=None) -> dict:
        """Rank groups by influence, keep the best within the budget (the head always), freeze the rest.

        ``budget`` defaults to ``--hidlr_trainable_budget``. Returns (and keeps as :attr:`freeze_decision`) what was
        decided.
        """
        engine = self.engine
        budget = budget if budget is not None else self.config.hidlr_trainable_budget
        if engine.num_rounds == 0:
            raise HiDLRError(
                "Automatic PEFT was asked to freeze before any Hi-DLR probe round measured influence; set "
                "--hidlr_freeze_at later than the first optimizer step."
            )
        records = group_records(engine.group_names, self.group_param_names(), engine.group_sizes(), engine.influence.mean)
        total = sum(p.numel() for p in self.trainer.model.parameters())
        selection = select(records, budget, total)
        restored = self.initial is not None and all(
            k in self.initial for k, keep in enumerate(selection.kept) if not keep
        )
        if not restored:
            warnings.warn(
                "Freezing without the initial values of the frozen groups (taken when training starts with "
                "--hidlr_freeze_at): they keep the values they reached, so the model is not base model + kept groups.",
                stacklevel=2,
            )
        freeze_groups(engine, selection.kept, initial=self.initial if restored else None)
        skipped = self._skip_frozen_lora() if restored else []
        # Frozen groups now sit at their initial values in the model itself; the kept ones' copy stays (it is the
        # budget's size) for adapters that store a change from the base (BEFT biases).
        self.initial = {k: v for k, v in (self.initial or {}).items() if selection.kept[k]} if restored else None
        self.freeze_decision = {
            "step": engine.num_steps,
            "kept": list(selection.kept),
            "rank": list(selection.rank),
            "budget": selection.budget,
            "total_params": selection.total_params,
            "trainable_params": selection.trainable_params,
            "restored": restored,
            "lora_layers_skipped": len(skipped),
        }
        logger.info(
            "Hi-DLR automatic PEFT at step %d: kept %s (%d of %d parameters, %.3f%%).",
            engine.num_steps,
            selection.kept_names,
            selection.trainable_params,
            total,
            100.0 * selection.trainable_params / max(total, 1),
        )
        return self.freeze_decision

    def group_param_names(self) -> list:
        """Per Hi-DLR group, the names (``model.named_parameters()``) of its parameters, in the optimizer's order."""
        if self._group_param_names is None:
            names = {id(p): n for n, p in self.trainer.model.named_parameters()}
            optimizer = self.engine.optimizer
            self._group_param_names = [
                [names.get(id(p), "?") for i in indices for p in optimizer.param_groups[i]["params"]]
                for indices in self.engine.param_group_indices
            ]
        return self._group_param_names


def _group_names(optimizer) -> list:
    """The Hi-DLR group names of the optimizer's param groups, in order, each once."""
    names = []
    for group in optimizer.param_groups:
        name = group.get("hidlr_group")
        if name is not None and name not in names:
            names.append(name)
    return names
