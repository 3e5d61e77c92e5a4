"""``HiDLRCallback``: Hi-DLR inside ``transformers.Trainer``, through the Trainer's own hooks.

Where it sits in one optimizer step (METHOD.md section 6), in the Trainer's order:
gradient clipping -> ``on_pre_optimizer_step`` (snapshot, unit rate) -> ``optimizer.step()`` ->
``on_optimizer_step`` (probes, new rates, the step actually taken) -> ``lr_scheduler.step()``.

Both ``HiDLRTrainer`` and a plain ``Trainer(..., callbacks=[HiDLRCallback()])`` run this code. Callbacks are not
given the Trainer, yet Hi-DLR needs it: probe losses must be computed by ``trainer.compute_loss`` (label smoothing,
custom losses) and the optimizer must be built with one param group per Hi-DLR group. So the callback finds its
Trainer on the call stack when the Trainer announces ``on_init_end`` (or is told with :meth:`set_trainer`), and
installs two instance hooks there: ``create_optimizer`` and ``_load_optimizer_and_scheduler``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
import types
import warnings
from typing import Optional

import torch
from transformers import TrainerCallback

from .core.engine import HiDLR
from .errors import HiDLRError
from .core.grouping import group_parameters, load_scheme, optimizer_param_groups

logger = logging.getLogger(__name__)

STATE_FILE = "hidlr_state.json"

# args.optim values whose step is linear in the LR with a state independent of it (checked again at run time).
SUPPORTED_OPTIM = {
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_anyprecision",
    "adafactor", "sgd", "adagrad", "rmsprop", "grokadamw", "stable_adamw", "ademamix", "ademamix_8bit",
    "paged_ademamix_32bit", "paged_ademamix_8bit", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_32bit",
    "paged_adamw_8bit", "lion_8bit", "lion_32bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop_bnb",
    "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "adamw_torch_4bit", "adamw_torch_8bit",
}
UNSUPPORTED_OPTIM = {
    "schedule_free": "averages iterates with learning-rate-dependent weights, so its step is not linear in the LR",
    "galore": "projects gradients inside its own parameter groups, which Hi-DLR needs to own",
    "apollo": "projects gradients inside its own parameter groups, which Hi-DLR needs to own",
    "lomo": "updates parameters during the backward pass, so there is no optimizer step to probe",
}

def _hidlr_defaults() -> dict:
    """Every ``hidlr*`` field of ``HiDLRTrainingArguments`` with its default: one source for both forms."""
    from .training_args import HiDLRTrainingArguments

    return {f.name: f.default for f in dataclasses.fields(HiDLRTrainingArguments) if f.name.startswith("hidlr")}


DEFAULTS = _hidlr_defaults()


def settings_from(args, overrides: dict) -> dict:
    """Hi-DLR settings: ``HiDLRTrainingArguments`` fields when the Trainer has them, else defaults; then overrides."""
    settings = {name: getattr(args, name, default) for name, default in DEFAULTS.items()}
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise HiDLRError(f"Unknown Hi-DLR setting(s) {sorted(unknown)}; valid ones are {sorted(DEFAULTS)}.")
    settings.update(overrides)
    from .training_args import parse_every, parse_freeze_at

    settings["hidlr_every"] = parse_every(settings["hidlr_every"])
    if settings["hidlr_freeze_at"] is not None:
        settings["hidlr_freeze_at"] = parse_freeze_at(settings["hidlr_freeze_at"])
    return settings


def build_optimizer(trainer, model=None) -> torch.optim.Optimizer:
    """``Trainer.create_optimizer`` with one param group per Hi-DLR group (decay / no-decay split inside each)."""
    if trainer.optimizer is not None:
        return trainer.optimizer
    opt_model = trainer.model if model is None else model
    args = trainer.args
    callback = find_callback(trainer)
    settings = callback.settings if callback is not None else settings_from(args, {})
    optim = str(getattr(args.optim, "value", args.optim))
    for key, why in UNSUPPORTED_OPTIM.items():
        if key in optim:
            raise HiDLRError(
                f"--optim {optim} cannot be used with Hi-DLR: it {why}; use adamw_torch, sgd, adagrad, rmsprop, "
                "adafactor or lion_32bit, or turn Hi-DLR off with --hidlr false."
            )
    groups = group_parameters(opt_model, load_scheme(settings["hidlr_grouping"]))
    param_groups = optimizer_param_groups(groups, weight_decay=args.weight_decay)
    if trainer.optimizer_cls_and_kwargs is not None:
        optimizer_cls, optimizer_kwargs = trainer.optimizer_cls_and_kwargs
    else:
        optimizer_cls, optimizer_kwargs = trainer.get_optimizer_cls_and_kwargs(args, opt_model)
    optimizer_kwargs = dict(optimizer_kwargs)
    for key in ("params", "model", "optimizer_dict"):
        if key in optimizer_kwargs:
            raise HiDLRError(
                f"--optim {optim} builds its own parameter groups, which Hi-DLR needs to own; use adamw_torch, sgd, "
                "adagrad, rmsprop, adafactor or lion_32bit."
            )
    trainer.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
    return trainer.optimizer


def find_callback(trainer) -> Optional["HiDLRCallback"]:
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, HiDLRCallback):
            return cb
    return None


class HiDLRCallback(TrainerCallback):
    """Hi-DLR for an unchanged ``Trainer``: ``Trainer(..., callbacks=[HiDLRCallback()])``.

    Settings come from the Trainer's ``HiDLRTrainingArguments`` when it has them; keyword arguments named like
    those fields (``HiDLRCallback(hidlr_every=10)``) override them, so a plain ``TrainingArguments`` works too.

    What the callback form cannot do by itself: callbacks are not handed the Trainer, so it finds it on the call
    stack at ``on_init_end``. Add it through ``Trainer(callbacks=[...])``; a callback added later with
    ``trainer.add_callback`` must be given the Trainer with :meth:`set_trainer` before ``train()``. An optimizer
    passed as ``Trainer(optimizers=(opt, sched))`` must already carry one param group per Hi-DLR group (build it with
    :func:`hidlr_hf.optimizer_param_groups`).
    """

    def __init__(self, **overrides):
        self.overrides = overrides
        self.settings: Optional[dict] = None
        self.trainer = None
        self.engine: Optional[HiDLR] = None
        self.resume_from: Optional[str] = None
        self.frozen: Optional[dict] = None  # selection, once automatic PEFT has frozen groups
        self._probe_inputs = None
        self._train_started = None
        self._last_estimate_step = None
        self._group_names_params: Optional[list] = None

    # -- wiring ------------------------------------------------------------------------------------

    def set_trainer(self, trainer) -> None:
        """Attach to ``trainer``: install the Hi-DLR optimizer builder and checkpoint loader on it."""
        self.trainer = trainer
        self.settings = settings_from(trainer.args, self.overrides)
        if not self.settings["hidlr"]:
            return
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
        from .trainer import HiDLRTrainer

        if not isinstance(trainer, HiDLRTrainer):
            trainer.create_optimizer = types.MethodType(build_optimizer, trainer)
            original_load = trainer._load_optimizer_and_scheduler

            def load_with_hidlr(this, checkpoint):
                original_load(checkpoint)
                self.note_checkpoint(checkpoint)

            trainer._load_optimizer_and_scheduler = types.MethodType(load_with_hidlr, trainer)
        # First in line, so integrations that log after us (TensorBoard, W&B) see the Hi-DLR metrics.
        callbacks = trainer.callback_handler.callbacks
        callbacks.remove(self)
        callbacks.insert(0, self)

    def note_checkpoint(self, checkpoint: Optional[str]) -> None:
        """Remember the checkpoint the Trainer resumes from; its Hi-DLR state is loaded at ``on_train_begin``."""
        self.resume_from = checkpoint

    def on_init_end(self, args, state, control, **kwargs):
        if self.trainer is None:
            trainer = _trainer_on_stack(self)
            if trainer is not None:
                self.set_trainer(trainer)

    # -- training ----------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if self.trainer is None:
            raise HiDLRError(
                "HiDLRCallback was not attached to its Trainer; pass it as Trainer(callbacks=[HiDLRCallback()]) or call "
                "callback.set_trainer(trainer) before trainer.train()."
            )
        if not self.settings["hidlr"]:
            return
        trainer = self.trainer
        if not any("hidlr_group" in g for g in optimizer.param_groups):
            raise HiDLRError(
                "The optimizer was not built with Hi-DLR parameter groups (was it passed as Trainer(optimizers=...)?); "
                "build its groups with hidlr_hf.optimizer_param_groups, or let the Trainer create it."
            )
        s = self.settings
        probe_bs = s["hidlr_probe_batch_size"] or args.per_device_train_batch_size
        mixed = bool(args.bf16 or args.fp16)
        noise = s["hidlr_noise_tolerance"]
        if noise is None:
            noise = 1e-3 if mixed else 1e-6
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
        self.engine = HiDLR(
            optimizer,
            design=s["hidlr_design"],
            every=s["hidlr_every"],
            lr_scheduler=scheduler if hasattr(scheduler, "base_lrs") else None,
            model=trainer.model,
            trust_region=s["hidlr_trust_region"],
            smoothing=s["hidlr_smoothing"],
            calibration_smoothing=s["hidlr_calibration_smoothing"],
            calibration_rounds=s["hidlr_calibration_rounds"],
            lr_min=s["hidlr_lr_min"],
            lr_max=s["hidlr_lr_max"],
            max_probe_scale=max(s["hidlr_max_probe_scale"], 1.0),
            noise_tolerance=noise,
            overhead_budget=s["hidlr_overhead_budget"],
            # One training step = forward + backward (~3 forwards) per micro-batch, in probe-batch units.
            step_cost=3.0 * args.gradient_accumulation_steps * args.per_device_train_batch_size / probe_bs,
            seed=self._seed(),
        )
        self._probe_bs = probe_bs
        self._train_started = time.perf_counter()
        self._probe_seconds_at_start = 0.0
        # A second train() call on the same Trainer starts from scratch unless it resumes.
        self.frozen, self._group_names_params = None, None
        self.__dict__.pop("_collator", None)
        if self.resume_from is not None:
            self._load_state(self.resume_from)
            self._probe_seconds_at_start = self.engine.probe_seconds
            self.resume_from = None

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.engine is None:
            return
        if self.frozen:
            self._drop_frozen_grads()
        if self.engine.probe_due:
            self._probe_inputs = self._draw_probe_batch()
        self.engine.pre_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.engine is None:
            return
        skipped = bool(getattr(self.trainer.accelerator, "optimizer_step_was_skipped", False))
        inputs, self._probe_inputs = self._probe_inputs, None
        estimate = self.engine.post_step(self._closure(inputs) if inputs is not None else None, skipped=skipped)
        if estimate is not None:
            self._last_estimate_step = state.global_step
        if not skipped:
            self._maybe_freeze(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.engine is None or logs is None or "loss" not in logs:
            return
        metrics = self.metrics()
        logs.update(metrics)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            # The Trainer appended its record before calling on_log.
            state.log_history[-1].update(metrics)

    def on_save(self, args, state, control, **kwargs):
        if self.engine is None or not args.should_save:
            return
        output_dir = self.trainer._get_output_dir(trial=None) if self.trainer is not None else args.output_dir
        folder = os.path.join(output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            self.save_state(folder)

    def on_train_end(self, args, state, control, **kwargs):
        # Next to the final model, so `hidlr export <output_dir>` works on a finished run.
        if self.engine is not None and args.should_save:
            os.makedirs(args.output_dir, exist_ok=True)
            self.save_state(args.output_dir)

    # -- state ---------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Everything a resumed or exported run needs, JSON-safe."""
        names = self._group_param_names()
        return {
            "format": "hidlr-state/1",
            "engine": self.engine.state_dict(),
            "settings": {k: v for k, v in self.settings.items()},
            "groups": [
                {"name": n, "param_names": p, "numel": size}
                for n, p, size in zip(self.engine.group_names, names, self.engine.group_sizes())
            ],
            "frozen": self.frozen,
            "model": _model_facts(self.trainer.model),
        }

    def save_state(self, folder: str) -> str:
        """Write ``hidlr_state.json`` into ``folder`` atomically; returns its path."""
        path = os.path.join(folder, STATE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.state(), fh, indent=1, allow_nan=True)
        os.replace(tmp, path)
        return path

    def _load_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            warnings.warn(
                f"No {STATE_FILE} in {checkpoint}: resuming with fresh Hi-DLR state (rates restart from the optimizer's).",
                stacklevel=2,
            )
            return
        try:
            with open(path) as fh:
                saved = json.load(fh)
            engine_state = saved["engine"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HiDLRError(f"{path} is corrupt ({type(exc).__name__}: {exc}); resume from another checkpoint or delete it to start Hi-DLR afresh.") from exc
        self.engine.load_state_dict(engine_state)
        self.frozen = saved.get("frozen")
        if self.frozen:
            self._apply_freeze(self.frozen["kept"])

    # -- probes --------------------------------------------------------------------------------------

    def _seed(self) -> int:
        seed = self.settings["hidlr_seed"]
        return int(self.trainer.args.seed if seed is None else seed)

    def _draw_probe_batch(self):
        """A fresh training batch chosen by (seed, step) alone, so a resumed run draws the same batches.

        All ranks draw the same global sample of ``world_size * probe_batch_size`` indices and each takes its own
        slice: the mean of the ranks' probe losses is then the loss on the global probe batch, exactly what one
        process with the same global batch would measure.
        """
        trainer = self.trainer
        dataset = trainer.train_dataset
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise HiDLRError("Hi-DLR draws probe batches by index and needs a map-style train_dataset (with __len__).")
        if not hasattr(self, "_collator"):
            self._collator = trainer._get_collator_with_removed_columns(trainer.data_collator, description="hidlr probe")
        rank, world = trainer.args.process_index, trainer.args.world_size
        generator = torch.Generator().manual_seed((self._seed() * 1_000_003 + self.engine.num_steps) % (2**63))
        size = min(self._probe_bs, len(dataset) // world)
        if size < 1:
            raise HiDLRError(f"The training set has {len(dataset)} rows, too few for a probe batch on each of {world} processes.")
        indices = torch.randperm(len(dataset), generator=generator)[rank * size : (rank + 1) * size].tolist()
        batch = self._collator([dataset[i] for i in indices])
        return trainer._prepare_inputs(batch)

    def _closure(self, inputs):
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
        at = self.settings["hidlr_freeze_at"]
        if at is None:
            return None
        return max(1, int(round(at * state.max_steps))) if isinstance(at, float) else int(at)

    def _maybe_freeze(self, state) -> None:
        at = self.freeze_step(state)
        if at is None or self.frozen is not None or state.global_step + 1 < at:
            return
        self.freeze()

    def freeze(self, budget=None) -> dict:
        """Rank groups by influence, keep the best within the budget (head always), freeze the rest."""
        from .core.selection import GroupRecord, select

        engine = self.engine
        budget = budget if budget is not None else self.settings["hidlr_trainable_budget"]
        if engine.num_rounds == 0:
            raise HiDLRError(
                "Automatic PEFT was asked to freeze before any Hi-DLR probe round measured influence; set "
                "--hidlr_freeze_at later than the first optimizer step."
            )
        names = self._group_param_names()
        records = [
            GroupRecord(name=n, param_names=p, numel=size, influence=float(infl), is_head=_is_head(n))
            for n, p, size, infl in zip(engine.group_names, names, engine.group_sizes(), engine.influence.mean)
        ]
        total = sum(p.numel() for p in self.trainer.model.parameters())
        selection = select(records, budget, total)
        self.frozen = {
            "step": engine.num_steps,
            "kept": list(selection.kept),
            "rank": list(selection.rank),
            "budget": selection.budget,
            "total_params": selection.total_params,
            "trainable_params": selection.trainable_params,
        }
        self._apply_freeze(selection.kept)
        logger.info(
            "Hi-DLR automatic PEFT at step %d: kept %s (%d of %d parameters, %.3f%%).",
            engine.num_steps,
            [n for n, k in zip(engine.group_names, selection.kept) if k],
            selection.trainable_params,
            total,
            100.0 * selection.trainable_params / max(total, 1),
        )
        return self.frozen

    def _apply_freeze(self, kept: list) -> None:
        """LR 0, weight decay 0, no gradient, no optimizer state for frozen groups; the group layout stays fixed."""
        engine = self.engine
        if all(not k for k in kept):
            raise HiDLRError("Every group would be frozen; raise --hidlr_trainable_budget so at least one group trains.")
        rates = [rate if keep else 0.0 for rate, keep in zip(engine.base_rates, kept)]
        engine.set_base_rates(rates)
        inner = engine._inner
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        for k, keep in enumerate(kept):
            if keep:
                continue
            for i in engine.members[k]:
                group = engine.optimizer.param_groups[i]
                group["weight_decay"] = 0.0
                for p in group["params"]:
                    inner.state.pop(p, None)
                    p.grad = None
                    if not distributed:
                        # Under DDP the reducer was built for these parameters; there they keep requires_grad and
                        # their gradients are dropped, LR 0 keeps them fixed.
                        p.requires_grad_(False)

    def _drop_frozen_grads(self) -> None:
        """Under DDP frozen parameters keep requires_grad (the reducer expects them); drop their gradients before
        the optimizer sees them, so they get no update and no optimizer state."""
        for k, keep in enumerate(self.frozen["kept"]):
            if not keep:
                for i in self.engine.members[k]:
                    for p in self.engine.optimizer.param_groups[i]["params"]:
                        p.grad = None

    def _group_param_names(self) -> list:
        if self._group_names_params is None:
            names = {id(p): n for n, p in self.trainer.model.named_parameters()}
            self._group_names_params = [
                [names.get(id(p), "?") for i in m for p in self.engine.optimizer.param_groups[i]["params"]]
                for m in self.engine.members
            ]
        return self._group_names_params


def _is_head(group_name: str) -> bool:
    return group_name == "head" or group_name.endswith(".head")


def _model_facts(model) -> dict:
    config = getattr(model, "config", None)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", config)
    return {
        "class": type(inner).__name__,
        "model_type": getattr(config, "model_type", None),
        "num_layers": getattr(config, "num_hidden_layers", None),
        "base_model_prefix": getattr(inner, "base_model_prefix", None),
        "is_peft": hasattr(model, "peft_config"),
        "total_params": sum(p.numel() for p in model.parameters()),
    }


def _trainer_on_stack(callback):
    """The Trainer whose callback handler holds ``callback``, found in the frames that called us."""
    frame = sys._getframe(1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        handler = getattr(candidate, "callback_handler", None)
        if handler is not None and any(cb is callback for cb in getattr(handler, "callbacks", [])):
            return candidate
        frame = frame.f_back
    return None
