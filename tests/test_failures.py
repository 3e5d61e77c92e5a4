"""Failure behaviour: bad inputs get one clear error; faults during probing lose no training state."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO, tiny_roberta, toy_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hidlr_hf import HiDLR, HiDLRError, HiDLRTrainer, HiDLRTrainingArguments
from hidlr_hf.core.freezing import freeze_groups
from hidlr_hf.core.grouping import group_parameters, load_scheme

# ----------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidlr_grouping": "by_module"}, "Unknown grouping scheme 'by_module'"),
        ({"hidlr_design": "diag"}, "Unknown --hidlr_design 'diag'"),
        ({"hidlr_every": "0"}, "positive integer or 'auto'"),
        ({"hidlr_every": "-2"}, "positive integer or 'auto'"),
        ({"hidlr_every": "often"}, "positive integer or 'auto'"),
        ({"hidlr_probe_batch_size": 0}, "positive integer"),
        ({"hidlr_freeze_at": "0.1", "hidlr_trainable_budget": "0"}, "budget"),
        ({"hidlr_freeze_at": "0.1", "hidlr_trainable_budget": "1.5"}, "fraction"),
    ],
)
def test_bad_training_arguments(kwargs, match):
    with pytest.raises(HiDLRError, match=match) as info:
        HiDLRTrainingArguments(output_dir="unused", **kwargs)
    assert "\n" not in str(info.value)


def test_custom_scheme_that_matches_nothing_or_leaves_parameters(tmp_path):
    model = tiny_roberta()
    with pytest.raises(HiDLRError, match="matches no") as info:
        group_parameters(model, load_scheme([("attention", "attn"), ("nonexistent_module", "ghost"), (".*", "rest")]))
    assert "ghost" in str(info.value)
    with pytest.raises(HiDLRError, match="catch-all"):
        group_parameters(model, load_scheme([("attention", "attn")]))


def test_lora_groups_on_a_model_without_lora():
    with pytest.raises(HiDLRError, match="lora"):
        group_parameters(tiny_roberta(), load_scheme([("lora_A", "lora_A"), ("lora_B", "lora_B"), (".*", "rest")]))


def test_every_parameter_frozen_is_refused(tmp_path):
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_strategy="no", hidlr_every="1",
    )
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    trainer.train()
    rates = list(trainer.hidlr.base_rates)
    with pytest.raises(HiDLRError, match="Every group would be frozen"):
        freeze_groups(trainer.hidlr, [False] * trainer.hidlr.num_groups)
    assert trainer.hidlr.base_rates == rates  # nothing changed


def test_unsafe_yaml_scheme_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "scheme.yaml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(HiDLRError):
        load_scheme(str(path))
    assert not marker.exists()


def test_state_files_are_json_and_checkpoints_load_weights_only(tmp_path):
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_steps=2, hidlr_every="1",
    )
    HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset()).train()
    ckpt = tmp_path / "checkpoint-2"
    json.loads((ckpt / "hidlr_state.json").read_text())  # plain JSON, nothing pickled
    assert not [p for p in os.listdir(ckpt) if p.startswith("hidlr") and not p.endswith(".json")]
    torch.load(ckpt / "optimizer.pt", weights_only=True)  # the optimizer state (with Hi-DLR groups) is safe to load


# ----------------------------------------------------------------------------------------------- faults


def test_sigkill_between_checkpoints_then_resume_reproduces_run(tmp_path):
    script = REPO / "tests" / "scripts" / "kill_and_resume.py"
    common = [
        "--use_cpu", "true", "--max_steps", "8", "--per_device_train_batch_size", "8", "--report_to", "none",
        "--learning_rate", "1e-4", "--seed", "0", "--hidlr_every", "auto", "--hidlr_calibration_rounds", "3",
        "--save_strategy", "steps", "--save_steps", "3", "--hidlr_max_probe_scale", "16", "--logging_steps", "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    def run(out, *extra):
        return subprocess.run(
            [sys.executable, str(script), "--output_dir", str(out), *common, *extra],
            env=env, capture_output=True, text=True, timeout=600,
        )

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run(tmp_path / "killed", "--kill_at_step", "5")
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    assert (tmp_path / "killed" / "checkpoint-3" / "hidlr_state.json").is_file()
    resumed = run(tmp_path / "resumed", "--resume", str(tmp_path / "killed" / "checkpoint-3"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "straight" / "result.json").read_text())
    b = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert b["base_rates"] == pytest.approx(a["base_rates"], rel=1e-9)
    assert b["rounds"] == a["rounds"]
    for name, value in a["params"].items():
        assert b["params"][name] == pytest.approx(value, rel=1e-6, abs=1e-7), name


def _sgd_problem(sizes, lr):
    g = torch.Generator().manual_seed(sum(sizes))
    params = [torch.nn.Parameter(torch.randn(n, generator=g)) for n in sizes]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p in params])
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    return params, opt


LOSS_KINDS = st.sampled_from(["quadratic", "negative", "flat", "uphill", "tiny", "nan", "inf", "raise"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    kinds=st.lists(LOSS_KINDS, min_size=1, max_size=5),
    lr=st.floats(1e-7, 1e-1),
    design=st.sampled_from(["axis", "full", "random"]),
    fault_at=st.integers(0, 12),
)
def test_fuzz_rates_finite_bounded_and_parameters_exact(sizes, kinds, lr, design, fault_at):
    """Random group sizes, curvatures of any sign, uphill steps, tiny losses, NaN/Inf/raising probes."""
    params, opt = _sgd_problem(sizes, lr)
    hidlr = HiDLR(opt, design=design, every=1, lr_min=1e-8, lr_max=1.0)
    kind = {k: kinds[k % len(kinds)] for k in range(len(sizes))}
    calls = []

    def closure():
        calls.append(1)
        total = torch.zeros((), dtype=torch.float64)
        for k, p in enumerate(params):
            x = p.double().sum()
            if kind[k] == "quadratic":
                total = total + 0.5 * x**2
            elif kind[k] == "negative":
                total = total - 0.5 * x**2
            elif kind[k] == "uphill":
                total = total - x
            elif kind[k] == "tiny":
                total = total + 1e-30 * x**2
            # "flat" adds nothing: no slope, no curvature
        if len(calls) == fault_at + 1:
            fault = kind[0]
            if fault == "nan":
                return torch.tensor(float("nan"))
            if fault == "inf":
                return torch.tensor(float("inf"))
            if fault == "raise":
                raise RuntimeError("probe failed")
        return total

    before = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    rates_before = list(hidlr.base_rates)
    est = hidlr.step(closure)
    rates = hidlr.base_rates
    assert all(math.isfinite(r) and 1e-8 <= r <= 1.0 for r in rates), rates
    if est.status != "ok":
        assert rates == rates_before
    # The step taken is exactly w - lr_new * d, with d what a unit-rate SGD step reveals.
    for p, w, g, r in zip(params, before, grads, rates):
        d = w - (w - 1.0 * g)
        assert torch.equal(p.detach(), torch.add(w, d, alpha=-r))


def test_tiny_losses_keep_rates_finite():
    params, opt = _sgd_problem([3, 3], 1e-3)
    hidlr = HiDLR(opt, every=1)
    for _ in range(5):
        for p in params:
            p.grad = torch.ones_like(p)
        hidlr.step(lambda: 1e-12 * sum((p.double() ** 2).sum() for p in params))
    assert all(math.isfinite(r) and r > 0 for r in hidlr.base_rates)


def test_unknown_setting_in_callback(tmp_path):
    from transformers import Trainer, TrainingArguments

    from hidlr_hf import HiDLRCallback

    trainer = Trainer(model=tiny_roberta(), args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    with pytest.raises(HiDLRError, match=r"Unknown Hi-DLR setting\(s\) \['hidlr_evry'\]"):
        HiDLRCallback.attach(trainer, hidlr_evry=3)


def test_recipes_are_plain_yaml():
    for path in (REPO / "recipes").glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


# ----------------------------------------------------------------------------------------------- security


def test_trust_remote_code_is_off_unless_asked(tmp_path):
    from hidlr_hf.glue.arguments import parse_args

    model_args, _, _, _ = parse_args(["--task_name", "rte", "--output_dir", str(tmp_path / "a")])
    assert model_args.trust_remote_code is False
    model_args, _, _, _ = parse_args(["--task_name", "rte", "--output_dir", str(tmp_path / "b"), "--trust_remote_code", "true"])
    assert model_args.trust_remote_code is True


def test_outputs_stay_inside_the_output_directory(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = HiDLRTrainingArguments(
        output_dir=str(work / "out"), max_steps=2, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_steps=1, hidlr_every="1", hidlr_freeze_at="1", hidlr_trainable_budget="top1",
        hidlr_grouping="module_type_by_layer",
    )
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    trainer.train()
    trainer.save_model()
    trainer.export_peft_config(str(work / "out" / "adapter"))
    written = [p for p in work.rglob("*") if p.is_file()]
    assert written and all((work / "out") in p.parents for p in written), [str(p) for p in written]
