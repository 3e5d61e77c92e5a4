"""How one (task, method, seed) run trains and what it records.

Every method runs inside the Trainer (``HiDLRTrainer`` with Hi-DLR on or off) with the protocol's data, batch, epochs
and schedule; a method differs only in what :data:`~hidlr_bench.protocol.METHOD_SPECS` says of it (its rate, its
optimizer, LoRA / BitFit, Hi-DLR grouping, freezing and, for the ablation, ``hidlr_*`` settings). The rivals' own
packages are driven where their READMEs put them (GeN's ``lr_parabola`` before ``optimizer.step()``, Prodigy and
LoRA+ as the Trainer's optimizer).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from .environment import cpu_clock, other_cpu_load, reset_peak_rss, rss_mb
from .loading import load_classifier, load_task_data, load_tokenizer, minilm_args
from .protocol import (
    BATCH_SIZE,
    EVAL_BATCH_SIZE,
    LORA,
    METHOD_SPECS,
    WARMUP,
    WEIGHT_DECAY,
    planned_steps,
    spec_record,
)
from .records import median_or_none


def add_lora(model, targets=None, dropout=None):
    """LoRA as the protocol sets it (:data:`~hidlr_bench.protocol.LORA`), through ``hidlr-glue``'s ``--peft lora``;
    ``targets`` (``"all-linear"`` or a list of module names) and ``dropout`` replace the protocol's."""
    from hidlr_hf.glue.modeling import apply_peft

    targets = LORA["target_modules"] if targets is None else targets
    args = minilm_args()
    args.peft, args.lora_r, args.lora_alpha = "lora", LORA["r"], LORA["lora_alpha"]
    args.lora_dropout = LORA["lora_dropout"] if dropout is None else dropout
    args.lora_target_modules = targets if isinstance(targets, str) else ",".join(targets)
    return apply_peft(model, args)


def apply_bitfit(model) -> None:
    """Only biases and the classification head keep ``requires_grad``."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("bias") or name.startswith("classifier."))


def count_params(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def step_timer():
    """A Trainer callback that times every optimizer step (``on_step_begin`` to ``on_step_end``) and, once given the
    trainer (``timer.trainer = trainer``), records each Hi-DLR probe round's seconds and forward passes."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.rounds: list[dict] = []
            self.trainer = None
            self._start = None
            self._seen = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self._start is not None:
                self.seconds.append(time.perf_counter() - self._start)
                self._start = None
            engine = getattr(self.trainer, "hidlr", None) if self.trainer is not None else None
            estimate = getattr(engine, "last_estimate", None)
            if estimate is not None and estimate is not self._seen:
                self._seen = estimate
                self.rounds.append({"step": int(estimate.step), "seconds": float(estimate.seconds),
                                    "forward_passes": int(estimate.forward_passes), "status": estimate.status,
                                    "phase": getattr(estimate, "phase", None),
                                    "active_groups": sum(v != "inactive" for v in estimate.verdict)})

    return StepTimer()


def gen_callback(train_dataset, collator, seed: int, lazy_freq: int):
    """Drives the authors' ``GeN.lr_parabola`` inside the Trainer, exactly where its README puts it: after
    ``backward()`` (and clipping), before ``optimizer.step()``, every ``lazy_freq`` steps, with an iterator of fresh
    training batches and ``scale = 1 - t/T`` (its horizon-aware decay)."""
    import torch
    from transformers import TrainerCallback
    from GeN import lr_parabola

    def batches():
        generator = torch.Generator().manual_seed(seed + 7919)
        while True:
            loader = torch.utils.data.DataLoader(train_dataset, batch_size=BATCH_SIZE, shuffle=True,
                                                 collate_fn=collator, generator=generator)
            yield from loader

    class GeNCallback(TrainerCallback):
        def __init__(self):
            self.tr_iter = batches()
            self.calls = 0
            self.rates: list[dict] = []

        def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
            if (state.global_step + 1) % lazy_freq != 0:
                return
            scale = 1.0 - state.global_step / max(state.max_steps, 1)
            lr_parabola(model, optimizer, tr_iter=self.tr_iter, device=args.device, task="NLU", scale=scale,
                        lr_factor=[-1, 0, 1])
            self.calls += 1
            self.rates.append({"step": state.global_step, "lr": float(optimizer.param_groups[0]["lr"])})

    return GeNCallback()


def held_rate_scheduler(optimizer):
    """A scheduler that keeps whatever rate the optimizer's groups hold (GeN sets it; a schedule would undo it)."""
    import torch

    class HeldRate(torch.optim.lr_scheduler.LRScheduler):
        def get_lr(self):
            return [group["lr"] for group in self.optimizer.param_groups]

    return HeldRate(optimizer)


def decay_split(model, weight_decay: float) -> list[dict]:
    """The Trainer's decay / no-decay param groups (biases and norms without decay), one set for all parameters."""
    from hidlr_hf import group_parameters, optimizer_param_groups

    return optimizer_param_groups(group_parameters(model, [(".*", "all")]), weight_decay=weight_decay)


def engine_facts(engine) -> dict:
    """The rate control's settings, head groups and phases and the probe schedule's settings of a finished engine:
    what the overhead projection replays (:func:`hidlr_bench.overhead.project_ratio`)."""
    control, schedule = engine.control, engine.schedule
    return {
        "rate_settings": dataclasses.asdict(engine.rate_settings),
        "schedule": {"every": schedule.every, "overhead_budget": schedule.overhead_budget,
                     "step_cost": schedule.step_cost, "total_steps": schedule.total_steps},
        "head_groups": list(control.head),
        "head_steps": int(control.head_steps),
        "final_phase": control.phase,
    }


def train_one(task_name: str, method: str, seed: int, protocol: dict, workdir: Path, realised_window: int = 0) -> dict:
    """Train and evaluate one (task, method, seed) under ``protocol``; returns the run record. With
    ``realised_window`` (the dev loop's diagnostic, never in a protocol run) a Hi-DLR run also records what each probe
    round's step did to the training loss over that many later steps (:mod:`hidlr_bench.realised`)."""
    import torch
    import transformers
    from transformers import DataCollatorWithPadding

    from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments
    from hidlr_hf.glue.metrics import make_compute_metrics

    transformers.logging.set_verbosity_error()
    spec = METHOD_SPECS[method]
    kind = spec["kind"]
    tokenizer = load_tokenizer()
    task, train, dev = load_task_data(task_name, tokenizer, protocol["train_rows"], protocol.get("max_eval"))
    collator = DataCollatorWithPadding(tokenizer)
    model = load_classifier(task, seed)
    if spec.get("lora"):
        model = add_lora(model, spec.get("lora_targets"), spec.get("lora_dropout"))
    if spec.get("bitfit"):
        apply_bitfit(model)
    trainable, total = count_params(model)
    steps = planned_steps(len(train), protocol["epochs"])  # what num_train_epochs gives, fixed up front

    hidlr_fields = {"hidlr": kind == "hidlr"}
    if kind == "hidlr":
        grouping = spec["grouping"]
        if not isinstance(grouping, str):
            scheme = workdir / "grouping.json"
            scheme.write_text(json.dumps(grouping))
            grouping = str(scheme)
        hidlr_fields.update(hidlr_grouping=grouping, hidlr_every="auto")
        if spec.get("freeze_at"):
            hidlr_fields.update(hidlr_freeze_at=spec["freeze_at"], hidlr_trainable_budget=spec["budget"])
        hidlr_fields.update(spec.get("hidlr_args") or {})
    extra = {}
    if kind == "schedule_free":
        # The Trainer hands its warmup_steps to the optimizer as is; a ratio (0.06) would mean no warmup there.
        extra.update(optim="schedule_free_adamw", lr_scheduler_type="constant",
                     warmup_steps=max(1, math.ceil(WARMUP * steps)))
    elif kind == "gen":
        extra.update(lr_scheduler_type="constant", warmup_steps=0)
    args = HiDLRTrainingArguments(
        output_dir=str(workdir / "trainer"),
        learning_rate=spec["lr"],
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        max_steps=steps,
        lr_scheduler_type=extra.pop("lr_scheduler_type", "linear"),
        warmup_steps=extra.pop("warmup_steps", WARMUP),
        weight_decay=WEIGHT_DECAY,
        logging_strategy="steps",
        logging_steps=protocol["logging_steps"],
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        dataloader_num_workers=0,
        **hidlr_fields,
        **extra,
    )
    timer = step_timer()
    callbacks = [timer]
    optimizers = (None, None)
    gen = None
    if kind == "gen":
        gen = gen_callback(train, collator, seed, spec["lazy_freq"])
        callbacks.append(gen)
        optimizer = torch.optim.AdamW(decay_split(model, WEIGHT_DECAY), lr=spec["lr"])
        optimizers = (optimizer, held_rate_scheduler(optimizer))
    elif kind == "prodigy":
        from prodigyopt import Prodigy

        optimizers = (Prodigy(decay_split(model, WEIGHT_DECAY), lr=spec["lr"], weight_decay=WEIGHT_DECAY,
                              safeguard_warmup=True), None)
    elif kind == "loraplus":
        from peft.optimizers import create_loraplus_optimizer

        optimizers = (create_loraplus_optimizer(model, torch.optim.AdamW, lr=spec["lr"],
                                                loraplus_lr_ratio=spec["ratio"], weight_decay=WEIGHT_DECAY), None)

    trainer = HiDLRTrainer(model=model, args=args, train_dataset=train, data_collator=collator,
                           compute_metrics=make_compute_metrics(task), callbacks=callbacks, optimizers=optimizers)
    timer.trainer = trainer
    realised = None
    if realised_window and trainer.hidlr_controller is not None:
        from .realised import RealisedSlope

        realised = RealisedSlope(trainer, realised_window)
        trainer.add_callback(realised)  # after the Hi-DLR callback: it reads the round that callback prepared
    rss_before = rss_mb("VmRSS")
    peak_how = reset_peak_rss()
    clock = cpu_clock()
    started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - started
    peak = rss_mb("VmHWM")
    other_load = other_cpu_load(clock, cpu_clock())
    metrics = trainer.evaluate(eval_dataset=dev)

    main_key = f"eval_{task.main_metric}"
    step_seconds = list(timer.seconds)
    record = {
        "task": task.name,
        "method": method,
        "seed": seed,
        "metric": task.main_metric,
        "value": float(metrics[main_key]),
        "eval_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "train_loss": float(output.training_loss),
        "loss_curve": [[int(h["step"]), float(h["loss"])] for h in trainer.state.log_history if "loss" in h],
        "steps": int(trainer.state.global_step),
        "planned_steps": steps,
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(trainer.state.global_step, 1),
        "step_seconds": step_seconds,
        "median_step_seconds": median_or_none(step_seconds),
        "peak_rss_mb": peak,
        "rss_before_train_mb": rss_before,
        "peak_memory_how": peak_how,
        # Cores other processes kept busy during training, on average: a timing taken next to other work shows here.
        "other_cpu_load": other_load,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_params_final": trainable,
        "train_rows": len(train),
        "eval_rows": len(dev),
        "protocol": protocol,
        "spec": spec_record(method),
    }
    engine = trainer.hidlr
    if engine is not None:
        frozen = trainer.hidlr_controller.freeze_decision
        record["hidlr"] = {
            "group_names": list(engine.group_names),
            "group_sizes": engine.group_sizes(),
            "base_rates": list(engine.base_rates),
            "rates_in_force": engine.rates_in_force(),
            "influence": list(engine.influence.mean),
            "history": engine.history,
            "rounds": engine.num_rounds,
            "round_details": timer.rounds,
            "discarded_rounds": engine.discarded_rounds,
            "probe_seconds": engine.probe_seconds,
            "forward_passes": engine.forward_passes,
            "frozen": frozen,
            **engine_facts(engine),
        }
        if frozen:
            record["trainable_params_final"] = int(frozen["trainable_params"])
            at = int(frozen["step"])
            record["freeze_step"] = at
            record["median_step_seconds_after_freeze"] = median_or_none(step_seconds[at + 1:])
            record["median_step_seconds_before_freeze"] = median_or_none(step_seconds[: at + 1])
    if realised is not None:
        record["realised"] = realised.rounds
    if gen is not None:
        record["gen"] = {"calls": gen.calls, "rates": gen.rates, "lazy_freq": spec["lazy_freq"]}
    if kind == "schedule_free":
        # The Trainer must call optimizer.eval() before evaluating (schedule-free evaluates at its averaged point).
        record["schedule_free_evaluated_in_eval_mode"] = not trainer.optimizer.param_groups[0].get("train_mode", True)
    return record
