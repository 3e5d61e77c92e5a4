"""Every Hi-DLR setting of the Trainer layer, with its default and its validation, in one place.

:class:`HiDLRConfig` holds the ``hidlr_*`` settings and validates them once, in ``__post_init__`` (defaults come
from :mod:`hidlr_hf.core.defaults`, the numeric checks from the core classes that use the values).
:class:`HiDLRTrainingArguments` is ``TrainingArguments`` plus these fields, so ``HfArgumentParser`` scripts get
``--hidlr_*`` flags; :meth:`HiDLRConfig.from_args` builds the same object for a plain ``TrainingArguments`` with
keyword overrides (the callback form, :meth:`hidlr_hf.HiDLRCallback.attach`).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Optional

from transformers import TrainingArguments

from hidlr_hf.core import defaults
from hidlr_hf.core.estimation import check_probe_settings
from hidlr_hf.core.grouping import load_scheme
from hidlr_hf.core.rates import RateSettings
from hidlr_hf.core.schedule import ProbeSchedule
from hidlr_hf.core.selection import parse_budget
from hidlr_hf.errors import HiDLRError

__all__ = ["HiDLRConfig", "HiDLRTrainingArguments", "parse_every", "parse_freeze_at"]


@dataclass
class HiDLRConfig:
    """The Hi-DLR settings (``hidlr_*``), validated when the object is built.

    ``learning_rate`` (a ``TrainingArguments`` field) is every group's *starting* base rate; Hi-DLR moves each
    group's rate from there, and ``lr_scheduler_type`` / warmup multiply the estimated base rates.
    """

    hidlr: bool = field(
        default=True,
        metadata={"help": "Turn Hi-DLR on (default) or off (--hidlr false): off is plain Trainer training."},
    )
    hidlr_grouping: str = field(
        default=defaults.GROUPING,
        metadata={
            "help": "Parameter grouping: 'module_type', 'module_type_by_layer', or a path to a JSON/YAML file "
            "with an ordered list of (regex, group name) pairs."
        },
    )
    hidlr_design: str = field(
        default=defaults.DESIGN,
        metadata={"help": "Probe design: 'axis' (b and diag A, 2K+1 forwards), 'full' (all of A), 'random' (4K)."},
    )
    hidlr_every: str = field(
        default=defaults.EVERY,
        metadata={
            "help": "Probe every N optimizer steps, or 'auto': every step in the head phase and calibration, then "
            "spaced out so that the whole run's probing stays within --hidlr_overhead_budget."
        },
    )
    hidlr_probe_batch_size: Optional[int] = field(
        default=None,
        metadata={"help": "Batch size of probe batches (fresh training batches); default per_device_train_batch_size."},
    )
    hidlr_overhead_budget: float = field(
        default=defaults.OVERHEAD_BUDGET,
        metadata={"help": "With --hidlr_every auto: probing cost as a fraction of training compute, whole run."},
    )
    hidlr_horizon: float = field(
        default=defaults.HORIZON,
        metadata={"help": "Rates are the one-step optimum b / A divided by this factor (a rate holds for many steps); "
                  "the task head's, and every group's of a model without a task head."},
    )
    hidlr_body_horizon: float = field(
        default=defaults.BODY_HORIZON,
        metadata={"help": "The horizon of the pretrained body of a model with a task head (its features can be lost)."},
    )
    hidlr_ratio_limit: float = field(
        default=defaults.RATIO_LIMIT,
        metadata={"help": "Each body group's rate within this factor of the geometric mean of the body groups' rates; "
                  "0: no limit."},
    )
    hidlr_noise_hold: float = field(
        default=defaults.NOISE_HOLD,
        metadata={"help": "In steady rounds a group whose mean slope is within this many standard errors of zero keeps "
                  "its rate; 0: every round moves it."},
    )
    hidlr_saddle_free: bool = field(
        default=defaults.SADDLE_FREE,
        metadata={"help": "A negative curvature along a group's step counts at its magnitude (saddle-free Newton); "
                  "false: such a round adds nothing to the group's statistics."},
    )
    hidlr_head_phase: float = field(
        default=defaults.HEAD_PHASE,
        metadata={
            "help": "The task head trains alone first, for this fraction of the steps (< 1) or number of steps (>= 1); "
            "0: no head phase."
        },
    )
    hidlr_jump_limit: float = field(
        default=defaults.JUMP_LIMIT,
        metadata={
            "help": "During calibration a rate lost in rounding noise may jump by up to this factor in one round, when "
            "one extra forward pass confirms it; equal to --hidlr_trust_region: no jumps."
        },
    )
    hidlr_calibration_rounds: int = field(
        default=defaults.CALIBRATION_ROUNDS,
        metadata={"help": "The most calibration rounds (a round at every step, verified jumps) before steady rounds."},
    )
    hidlr_trust_region: float = field(
        default=defaults.TRUST_REGION,
        metadata={"help": "After calibration a round changes a rate by at most this factor (either way)."},
    )
    hidlr_smoothing: float = field(
        default=defaults.SMOOTHING,
        metadata={"help": "Weight of the newest round in the running means of b and A that the rates come from."},
    )
    hidlr_lr_min: float = field(default=defaults.LR_MIN, metadata={"help": "Lower bound on every base rate."})
    hidlr_lr_max: float = field(default=defaults.LR_MAX, metadata={"help": "Upper bound on every base rate."})
    hidlr_max_probe_scale: float = field(
        default=defaults.MAX_PROBE_SCALE,
        metadata={
            "help": "Largest probe multiplier c when a group's curvature is lost in numerical noise (values up to 1: "
            "no growth)."
        },
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
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:  # TrainingArguments' own checks first, in HiDLRTrainingArguments
            parent()
        self._validate_hidlr()

    def _validate_hidlr(self) -> None:
        self.hidlr_every = parse_every(self.hidlr_every)
        load_scheme(self.hidlr_grouping)  # unknown scheme names and broken scheme files fail here, not mid-run
        size = self.hidlr_probe_batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise HiDLRError(f"--hidlr_probe_batch_size must be a positive integer (got {size!r}).")
        if not self.hidlr_max_probe_scale > 0:
            raise HiDLRError(f"--hidlr_max_probe_scale must be positive (got {self.hidlr_max_probe_scale}); 1 means no growth.")
        with _named_as_flags():
            # The classes that use these values check them; their messages then name the flags.
            check_probe_settings(**self._probe_settings(self.hidlr_noise_tolerance or defaults.NOISE_TOLERANCE))
            RateSettings(**self._rule_settings())
            ProbeSchedule(self.hidlr_every, self.hidlr_overhead_budget)
        if (self.hidlr_freeze_at is None) != (self.hidlr_trainable_budget is None):
            raise HiDLRError(
                "Automatic PEFT needs both --hidlr_freeze_at (when) and --hidlr_trainable_budget (how much to keep); "
                "give both or neither."
            )
        if self.hidlr_freeze_at is not None:
            self.hidlr_freeze_at = parse_freeze_at(self.hidlr_freeze_at)
            parse_budget(self.hidlr_trainable_budget)  # fail now, not mid-run

    @classmethod
    def from_args(cls, args, **overrides) -> "HiDLRConfig":
        """The settings of ``args`` (a ``HiDLRTrainingArguments``, or defaults for a plain ``TrainingArguments``),
        with ``overrides`` named like the fields (``hidlr_every=10``) on top; a new object, validated.

        Always a copy, validated again: ``args`` may have changed since it was built (a hyperparameter-search trial
        sets its values on the Trainer's arguments with ``setattr``, which no ``__post_init__`` checks)."""
        names = [f.name for f in fields(HiDLRConfig)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise HiDLRError(f"Unknown Hi-DLR setting(s) {unknown}; valid ones are {names}.")
        values = {f.name: getattr(args, f.name, f.default) for f in fields(HiDLRConfig)}
        values.update(overrides)
        return HiDLRConfig(**values)

    def hidlr_settings(self) -> dict:
        """Every ``hidlr_*`` setting by name, JSON-safe (stored in ``hidlr_state.json``)."""
        return {f.name: getattr(self, f.name) for f in fields(HiDLRConfig)}

    def engine_settings(self, mixed_precision: bool) -> dict:
        """Keyword arguments of :class:`~hidlr_hf.HiDLR` for these settings; ``mixed_precision`` (bf16 / fp16
        forwards) chooses the default noise tolerance."""
        noise = self.hidlr_noise_tolerance
        if noise is None:
            noise = defaults.NOISE_TOLERANCE_LOW_PRECISION if mixed_precision else defaults.NOISE_TOLERANCE
        probe = self._probe_settings(noise)
        return {
            "design": probe["design"],
            "every": self.hidlr_every,
            **self._rule_settings(),
            "max_probe_scale": probe["max_probe_scale"],
            "noise_tolerance": noise,
            "overhead_budget": self.hidlr_overhead_budget,
        }

    def _rule_settings(self) -> dict:
        return {
            "horizon": self.hidlr_horizon,
            "body_horizon": self.hidlr_body_horizon,
            "ratio_limit": self.hidlr_ratio_limit,
            "smoothing": self.hidlr_smoothing,
            "trust_region": self.hidlr_trust_region,
            "calibration_rounds": self.hidlr_calibration_rounds,
            "head_phase": self.hidlr_head_phase,
            "jump_limit": self.hidlr_jump_limit,
            "lr_min": self.hidlr_lr_min,
            "lr_max": self.hidlr_lr_max,
            "saddle_free": self.hidlr_saddle_free,
            "noise_hold": self.hidlr_noise_hold,
        }

    def _probe_settings(self, noise_tolerance: float) -> dict:
        return {
            "design": self.hidlr_design,
            "probe_scale": defaults.PROBE_SCALE,
            "scale_growth": defaults.SCALE_GROWTH,
            "max_probe_scale": max(self.hidlr_max_probe_scale, defaults.PROBE_SCALE),
            "noise_tolerance": noise_tolerance,
            "random_probes": defaults.RANDOM_PROBES,
        }


@dataclass
class HiDLRTrainingArguments(HiDLRConfig, TrainingArguments):
    """``TrainingArguments`` with Hi-DLR settings; every field is exposed by ``HfArgumentParser`` as ``--hidlr_*``.

    ``learning_rate`` is the *starting* base rate of every group; Hi-DLR moves each group's rate from there,
    and ``lr_scheduler_type`` / warmup multiply the estimated base rates. The ``hidlr_*`` fields are those of
    :class:`HiDLRConfig`, validated after ``TrainingArguments``' own checks.
    """


# Setting names used by the core classes' messages, and the flags users set them with.
_CORE_NAMES = ("calibration_rounds", "overhead_budget", "noise_tolerance", "trust_region", "smoothing", "horizon",
               "body_horizon", "noise_hold", "ratio_limit", "head_phase", "jump_limit", "lr_min", "lr_max", "every", "design")


@contextmanager
def _named_as_flags():
    """Re-raise a core validation error with ``--hidlr_<name>`` in place of the core parameter ``<name>``."""
    try:
        yield
    except HiDLRError as exc:
        text = str(exc)
        for name in _CORE_NAMES:
            text = re.sub(rf"(?<![\w-]){name}\b", f"--hidlr_{name}", text)
        raise HiDLRError(text) from None


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
