"""HiDLRConfig / HiDLRTrainingArguments: every Hi-DLR setting, its default and its validation, in one place."""

import dataclasses

import pytest
from conftest import tiny_roberta
from transformers import HfArgumentParser, Trainer, TrainingArguments

from hidlr_hf import HiDLRCallback, HiDLRError, HiDLRTrainingArguments
from hidlr_hf.core import defaults
from hidlr_hf.trainer.config import HiDLRConfig


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidlr_grouping": "by_module"}, "Unknown grouping scheme 'by_module'"),
        ({"hidlr_design": "diag"}, "Unknown --hidlr_design 'diag'"),
        ({"hidlr_every": "0"}, "positive integer or 'auto'"),
        ({"hidlr_every": "-2"}, "positive integer or 'auto'"),
        ({"hidlr_every": "often"}, "positive integer or 'auto'"),
        ({"hidlr_probe_batch_size": 0}, "positive integer"),
        ({"hidlr_probe_batch_size": 64.0}, "positive integer"),  # set in code: a float would fail mid-run
        ({"hidlr_horizon": 0.5}, "--hidlr_horizon must be >= 1"),
        ({"hidlr_ratio_limit": 0.5}, "--hidlr_ratio_limit must be 0"),
        ({"hidlr_head_phase": 1.5}, "--hidlr_head_phase must be 0, a fraction"),
        ({"hidlr_jump_limit": 1.5}, "--hidlr_jump_limit must be >= --hidlr_trust_region"),
        ({"hidlr_smoothing": 0}, "--hidlr_smoothing must lie in"),
        ({"hidlr_trust_region": 0.5}, "--hidlr_trust_region must be >= 1"),
        ({"hidlr_overhead_budget": 1.5}, "--hidlr_overhead_budget must lie in"),
        ({"hidlr_freeze_at": "0.1", "hidlr_trainable_budget": "0"}, "budget"),
        ({"hidlr_freeze_at": "0.1", "hidlr_trainable_budget": "1.5"}, "fraction"),
    ],
)
def test_bad_training_arguments(kwargs, match):
    with pytest.raises(HiDLRError, match=match) as info:
        HiDLRTrainingArguments(output_dir="unused", **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_setting_in_callback(tmp_path):
    from transformers import Trainer, TrainingArguments

    from hidlr_hf import HiDLRCallback

    trainer = Trainer(model=tiny_roberta(), args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    with pytest.raises(HiDLRError, match=r"Unknown Hi-DLR setting\(s\) \['hidlr_evry'\]"):
        HiDLRCallback.attach(trainer, hidlr_evry=3)


def test_every_setting_is_a_flag_with_the_core_default():
    parser = HfArgumentParser(HiDLRTrainingArguments)
    flags = {a.dest: a for a in parser._actions}
    expected = {
        "hidlr_design": defaults.DESIGN, "hidlr_every": defaults.EVERY, "hidlr_grouping": defaults.GROUPING,
        "hidlr_trust_region": defaults.TRUST_REGION, "hidlr_smoothing": defaults.SMOOTHING,
        "hidlr_horizon": defaults.HORIZON, "hidlr_ratio_limit": defaults.RATIO_LIMIT,
        "hidlr_head_phase": defaults.HEAD_PHASE, "hidlr_jump_limit": defaults.JUMP_LIMIT,
        "hidlr_calibration_rounds": defaults.CALIBRATION_ROUNDS, "hidlr_lr_min": defaults.LR_MIN,
        "hidlr_lr_max": defaults.LR_MAX, "hidlr_max_probe_scale": defaults.MAX_PROBE_SCALE,
        "hidlr_overhead_budget": defaults.OVERHEAD_BUDGET,
    }
    for name, value in expected.items():
        assert flags[name].default == value, name
    for field in dataclasses.fields(HiDLRConfig):
        assert field.name in flags and field.metadata["help"], field.name
    # The engine gets exactly these values (fp32 and mixed-precision noise defaults included).
    args = HiDLRTrainingArguments(output_dir="unused")
    settings = args.engine_settings(mixed_precision=False)
    assert {k: settings[k] for k in ("trust_region", "smoothing", "horizon", "ratio_limit", "head_phase", "jump_limit",
                                     "calibration_rounds", "lr_min", "overhead_budget")} == {
        "trust_region": 2.0, "smoothing": 0.1, "horizon": 32.0, "ratio_limit": 4.0, "head_phase": 0.06,
        "jump_limit": 100.0, "calibration_rounds": 6, "lr_min": 1e-8, "overhead_budget": 0.02}
    assert settings["noise_tolerance"] == 1e-6 and args.engine_settings(mixed_precision=True)["noise_tolerance"] == 1e-3


def test_callback_form_builds_the_same_validated_config(tmp_path):
    args = HiDLRTrainingArguments(output_dir=str(tmp_path), hidlr_every="7", hidlr_design="full")
    copy = HiDLRConfig.from_args(args)
    assert copy is not args and copy.hidlr_settings() == args.hidlr_settings()
    # Read again (at each train()), values set after the arguments were built (a hyperparameter-search trial's) count
    # and are validated like flags.
    args.hidlr_horizon, args.hidlr_every = 3.0, "4"
    assert HiDLRConfig.from_args(args).hidlr_horizon == 3.0 and HiDLRConfig.from_args(args).hidlr_every == 4
    args.hidlr_trust_region = 0.5
    with pytest.raises(HiDLRError, match="--hidlr_trust_region must be >= 1"):
        HiDLRConfig.from_args(args)
    args.hidlr_trust_region, args.hidlr_horizon, args.hidlr_every = 2.0, defaults.HORIZON, 7
    plain = TrainingArguments(output_dir=str(tmp_path), report_to="none")
    config = HiDLRConfig.from_args(plain, hidlr_every="7", hidlr_design="full")
    assert config.hidlr_settings() == args.hidlr_settings()
    with pytest.raises(HiDLRError, match="--hidlr_trust_region must be >= 1"):
        HiDLRConfig.from_args(plain, hidlr_trust_region=0.5)
    trainer = Trainer(model=tiny_roberta(), args=plain)
    with pytest.raises(HiDLRError, match="--hidlr_every must be a positive integer"):
        HiDLRCallback.attach(trainer, hidlr_every="0")
