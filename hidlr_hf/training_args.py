"""``HiDLRTrainingArguments``: ``TrainingArguments`` plus every Hi-DLR setting, as ``--hidlr_*`` flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from .errors import HiDLRError


@dataclass
class HiDLRTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with Hi-DLR settings; every field is exposed by ``HfArgumentParser`` as ``--hidlr_*``.

    ``learning_rate`` is the *starting* base rate of every group; Hi-DLR moves each group's rate from there,
    and ``lr_scheduler_type`` / warmup multiply the estimated base rates.
    """

    hidlr: bool = field(
        default=True,
        metadata={"help": "Turn Hi-DLR on (default) or off (--hidlr false): off is plain Trainer training."},
    )
    hidlr_grouping: str = field(
        default="module_type",
        metadata={
            "help": "Parameter grouping: 'module_type', 'module_type_by_layer', or a path to a JSON/YAML file "
            "with an ordered list of (regex, group name) pairs."
        },
    )
    hidlr_design: str = field(
        default="axis",
        metadata={"help": "Probe design: 'axis' (b and diag A, 2K+1 forwards), 'full' (all of A), 'random' (4K)."},
    )
    hidlr_every: str = field(
        default="auto",
        metadata={
            "help": "Probe every N optimizer steps, or 'auto': every step during calibration, then spaced out to "
            "stay within --hidlr_overhead_budget."
        },
    )
    hidlr_probe_batch_size: Optional[int] = field(
        default=None,
        metadata={"help": "Batch size of probe batches (fresh training batches); default per_device_train_batch_size."},
    )
    hidlr_overhead_budget: float = field(
        default=0.05, metadata={"help": "With --hidlr_every auto: probing cost as a fraction of training compute."}
    )
    hidlr_calibration_rounds: int = field(
        default=10, metadata={"help": "Rounds at the start that use --hidlr_calibration_smoothing (and, with auto, run every step)."}
    )
    hidlr_trust_region: float = field(
        default=2.0, metadata={"help": "Per-round rate multipliers are clipped to [1/gamma, gamma]."}
    )
    hidlr_smoothing: float = field(
        default=0.1, metadata={"help": "tau in r <- r((1 - tau) + tau rho) after calibration (GeN uses 0.1)."}
    )
    hidlr_calibration_smoothing: float = field(
        default=0.5, metadata={"help": "tau during the calibration rounds."}
    )
    hidlr_lr_min: float = field(default=1e-8, metadata={"help": "Lower bound on every base rate."})
    hidlr_lr_max: float = field(default=1.0, metadata={"help": "Upper bound on every base rate."})
    hidlr_max_probe_scale: float = field(
        default=256.0,
        metadata={"help": "Largest probe multiplier c when a group's curvature is lost in numerical noise."},
    )
    hidlr_noise_tolerance: Optional[float] = field(
        default=None,
        metadata={"help": "Relative loss change treated as rounding noise; default 1e-6 in fp32, 1e-3 with bf16/fp16."},
    )
    hidlr_freeze_at: Optional[str] = field(
        default=None,
        metadata={
            "help": "Automatic PEFT: when to freeze the least influential groups, as an optimizer step (e.g. 200) or "
            "a fraction of training (e.g. 0.1). Needs --hidlr_trainable_budget."
        },
    )
    hidlr_trainable_budget: Optional[str] = field(
        default=None,
        metadata={
            "help": "Automatic PEFT: parameters kept trainable, as a fraction of the model (0.01), a count "
            "(150000), or the top k groups (top3). The task head is always kept."
        },
    )
    hidlr_seed: Optional[int] = field(
        default=None, metadata={"help": "Seed of the probe-batch sampler and random probes; default --seed."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.hidlr_every = parse_every(self.hidlr_every)
        from .core.estimation import DESIGNS
        from .core.grouping import load_scheme

        load_scheme(self.hidlr_grouping)  # unknown scheme names and broken scheme files fail here, not mid-run

        if self.hidlr_design not in DESIGNS:
            raise HiDLRError(f"Unknown --hidlr_design {self.hidlr_design!r}; choose one of {', '.join(DESIGNS)}.")
        if self.hidlr_probe_batch_size is not None and self.hidlr_probe_batch_size <= 0:
            raise HiDLRError(f"--hidlr_probe_batch_size must be a positive integer (got {self.hidlr_probe_batch_size}).")
        if (self.hidlr_freeze_at is None) != (self.hidlr_trainable_budget is None):
            raise HiDLRError(
                "Automatic PEFT needs both --hidlr_freeze_at (when) and --hidlr_trainable_budget (how much to keep); "
                "give both or neither."
            )
        if self.hidlr_freeze_at is not None:
            self.hidlr_freeze_at = parse_freeze_at(self.hidlr_freeze_at)
            from .core.selection import parse_budget

            parse_budget(self.hidlr_trainable_budget)  # fail now, not mid-run


def parse_every(value):
    """``'auto'`` or a positive integer; anything else is a clear error."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = int(text)
        except ValueError:
            raise HiDLRError(f"--hidlr_every must be a positive integer or 'auto' (got {value!r}).") from None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise HiDLRError(f"--hidlr_every must be a positive integer or 'auto' (got {value!r}).")
    return value


def parse_freeze_at(value):
    """A step (integer >= 1) or a fraction of training in (0, 1)."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise HiDLRError(f"--hidlr_freeze_at must be a step (e.g. 200) or a fraction of training (e.g. 0.1), got {value!r}.") from None
    if number <= 0:
        raise HiDLRError(f"--hidlr_freeze_at must be positive (got {value!r}): a step >= 1 or a fraction in (0, 1).")
    if number < 1:
        return number
    if number != int(number):
        raise HiDLRError(f"--hidlr_freeze_at {value!r} is neither a whole step nor a fraction in (0, 1).")
    return int(number)
