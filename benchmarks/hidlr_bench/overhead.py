"""Overhead: step time of ``HiDLRTrainer`` against the plain ``Trainer``, and peak memory, measured side by side.

Runs alternate (plain, then Hi-DLR, for each ``hidlr_every`` setting) so that each pair shares the machine's load;
each optimizer step is timed from ``on_step_begin`` to ``on_step_end``. Peak memory is read in a fresh subprocess
per mode (``scripts/benchmark.py --_mem plain|hidlr``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time

from . import REPO, SCRIPT
from .environment import command_line, machine_info, reset_peak_rss, rss_mb
from .loading import load_classifier, load_task_data, load_tokenizer
from .methods import step_timer
from .protocol import BATCH_SIZE, OVERHEAD_EVERY, TRAINER_DEFAULT_LR, WARMUP, WEIGHT_DECAY


def _overhead_trainer(model, train, collator, steps: int, seed: int, every):
    """A plain ``Trainer`` (``every is None``) or a ``HiDLRTrainer`` with ``hidlr_every=every``, same settings."""
    from transformers import Trainer, TrainingArguments

    from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments

    common = dict(output_dir=tempfile.mkdtemp(prefix="hidlr-overhead-"), learning_rate=TRAINER_DEFAULT_LR,
                  per_device_train_batch_size=BATCH_SIZE, max_steps=steps, lr_scheduler_type="linear",
                  warmup_steps=WARMUP, weight_decay=WEIGHT_DECAY, logging_steps=10**6, save_strategy="no",
                  report_to="none", disable_tqdm=True, seed=seed)
    timer = step_timer()
    if every is None:
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=train, data_collator=collator,
                          callbacks=[timer])
    else:
        args = HiDLRTrainingArguments(hidlr=True, hidlr_every=str(every), **common)
        trainer = HiDLRTrainer(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[timer])
    timer.trainer = trainer
    return trainer, timer


def _overhead_one(task, train, collator, steps: int, every) -> dict:
    import gc
    import shutil

    model = load_classifier(task, 0)
    trainer, timer = _overhead_trainer(model, train, collator, steps, 0, every)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    result = {"every": "plain" if every is None else str(every), "step_seconds": list(timer.seconds),
              "train_seconds": seconds}
    engine = getattr(trainer, "hidlr", None)
    if engine is not None:
        result.update(rounds=engine.num_rounds, probe_seconds=engine.probe_seconds, round_details=timer.rounds,
                      forward_passes=engine.forward_passes, groups=len(engine.group_names))
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    del trainer, model
    gc.collect()
    return result


def projected_ratio(every, steps: int, plain_step: float, round_seconds: float, passes: float,
                    first_round_seconds: float | None = None) -> float:
    """Step-time ratio over a run of ``steps`` steps, from measured per-round costs (the first round, which also
    checks linearity, apart) and the engine's own schedule of rounds (``hidlr_hf.core.rates.ProbeSchedule``, default
    settings; batch = probe batch, so a step costs 3 forwards)."""
    from hidlr_hf.core.rates import ProbeSchedule

    schedule = ProbeSchedule(every if every == "auto" else int(every))
    rounds = 0
    for step in range(steps):
        if schedule.due(step):
            rounds += 1
            schedule.after_round(step, rounds, max(1, int(round(passes))))
    first = round_seconds if first_round_seconds is None else first_round_seconds
    probing = first + (rounds - 1) * round_seconds if rounds else 0.0
    return (steps * plain_step + probing) / (steps * plain_step)


def run_overhead(args) -> dict:
    """Step time of HiDLRTrainer vs the plain Trainer, alternating runs (A B A B ...), plus peak memory."""
    import transformers
    from transformers import DataCollatorWithPadding

    transformers.logging.set_verbosity_error()
    tokenizer = load_tokenizer()
    task, train, _ = load_task_data("sst2", tokenizer, args.overhead_rows, 1)
    collator = DataCollatorWithPadding(tokenizer)
    steps, reps = args.overhead_steps, args.overhead_reps
    print(f"[overhead] MiniLM on {len(train)} SST-2 rows, {steps} steps per run, {reps} repetitions", flush=True)
    _overhead_one(task, train, collator, 2, None)  # warm-up: first-run costs (allocator, imports) hit no one
    runs = []
    for rep in range(reps):
        for every in OVERHEAD_EVERY:
            for label in (None, every):  # A (plain) then B (Hi-DLR): each pair shares the machine's current load
                result = _overhead_one(task, train, collator, steps, label)
                result.update(rep=rep, pair=str(every))
                runs.append(result)
                print(f"[overhead] rep {rep} {result['every']:>5}: median step "
                      f"{statistics.median(result['step_seconds']):.3f} s, mean {statistics.fmean(result['step_seconds']):.3f} s",
                      flush=True)
    settings = {}
    for every in OVERHEAD_EVERY:
        key = str(every)
        plain = [t for r in runs if r["pair"] == key and r["every"] == "plain" for t in r["step_seconds"]]
        hidlr = [r for r in runs if r["pair"] == key and r["every"] == key]
        times = [t for r in hidlr for t in r["step_seconds"]]
        rounds = sum(r["rounds"] for r in hidlr)
        first = [r["round_details"][0] for r in hidlr if r.get("round_details")]
        later = [d for r in hidlr for d in (r.get("round_details") or [])[1:]]
        typical = later or first
        round_seconds = statistics.median(d["seconds"] for d in typical) if typical else 0.0
        passes = statistics.median(d["forward_passes"] for d in typical) if typical else 0.0
        first_seconds = statistics.median(d["seconds"] for d in first) if first else None
        plain_median = statistics.median(plain)
        settings[key] = {
            "step_time_ratio_median": statistics.median(times) / plain_median,
            "step_time_ratio_mean": statistics.fmean(times) / statistics.fmean(plain),
            "plain_median_step_seconds": plain_median,
            "hidlr_median_step_seconds": statistics.median(times),
            "rounds_per_run": rounds / len(hidlr),
            "seconds_per_round": round_seconds,
            "first_round_seconds": first_seconds,
            "forward_passes_per_round": passes,
            "rounds_measured_apart_from_first": len(later),
            "projected_ratio": {
                str(n): projected_ratio(every, n, plain_median, round_seconds, passes, first_seconds)
                for n in (args.steps, 1000, 10000)
            },
        }
    memory = {mode: measure_memory(args, mode) for mode in ("plain", "hidlr")}
    return {"steps_per_run": steps, "reps": reps, "rows": len(train), "order": "A B per setting, settings in turn",
            "runs": runs, "settings": settings, "memory": memory, "command": command_line(),
            "machine": machine_info(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def measure_memory(args, mode: str) -> dict:
    """Peak resident memory of a short full fine-tuning run in a fresh subprocess (``--_mem plain|hidlr``)."""
    cmd = [sys.executable, str(SCRIPT), "--_mem", mode, "--overhead_steps", str(args.overhead_steps),
           "--overhead_rows", str(args.overhead_rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=1800)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    return {"error": f"exit status {proc.returncode}: {proc.stderr[-1000:]}"}


def child_memory(args) -> int:
    """``--_mem plain|hidlr``: one short run; prints ``MEMORY {json}`` with the training peak."""
    import transformers
    from transformers import DataCollatorWithPadding

    transformers.logging.set_verbosity_error()
    tokenizer = load_tokenizer()
    task, train, _ = load_task_data("sst2", tokenizer, args.overhead_rows, 1)
    collator = DataCollatorWithPadding(tokenizer)
    model = load_classifier(task, 0)
    from transformers import TrainerCallback

    trainer, _ = _overhead_trainer(model, train, collator, args.overhead_steps, 0, None if args._mem == "plain" else "auto")
    first: dict = {}

    class AfterFirstStep(TrainerCallback):
        # The first step is special for Hi-DLR (its first round also checks linearity on copies of the optimizer
        # state): keep its peak, then reset the high-water mark to see the peak of the steps after it.
        def on_step_end(self, args_, state, control, **kwargs):
            if state.global_step == 1:
                first["peak"] = rss_mb("VmHWM")
                reset_peak_rss()

    trainer.add_callback(AfterFirstStep())
    loaded = rss_mb("VmRSS")
    how = reset_peak_rss()
    trainer.train()
    after = rss_mb("VmHWM")
    print("MEMORY " + json.dumps({"mode": args._mem, "rss_before_train_mb": loaded,
                                  "peak_rss_mb": max(first.get("peak") or 0.0, after),
                                  "peak_rss_first_step_mb": first.get("peak"), "peak_rss_after_first_step_mb": after,
                                  "how": how, "steps": args.overhead_steps}))
    return 0
