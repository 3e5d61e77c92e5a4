"""Automatic PEFT in training: freeze by influence mid-run, resume, export a peft config, reuse it."""

import json

import pytest
import torch
from conftest import tiny_roberta, toy_dataset

from hidlr_hf import HiDLRError, HiDLRTrainer, HiDLRTrainingArguments
from hidlr_hf.cli import main as hidlr_main
from hidlr_hf.peft import canonical_name


def make_trainer(tmp_path, model=None, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=8, logging_steps=1, report_to="none",
        learning_rate=1e-3, seed=0, save_strategy="no", disable_tqdm=True, hidlr_every="1",
        hidlr_grouping="module_type_by_layer", hidlr_freeze_at="3", hidlr_trainable_budget="0.2",
        hidlr_max_probe_scale=1.0,  # no probe-scale growth: keeps these tests fast
    )
    kwargs.update(overrides)
    return HiDLRTrainer(model=model or tiny_roberta(), args=HiDLRTrainingArguments(**kwargs), train_dataset=toy_dataset())


class Snapshots:
    """Parameters right after the freeze, to compare with the end of training."""

    def __init__(self, trainer):
        self.at_freeze = None
        controller = trainer.hidlr_controller
        real = controller.freeze

        def spy(budget=None):
            decision = real(budget)
            self.at_freeze = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
            return decision

        controller.freeze = spy


def frozen_names(trainer):
    cb = trainer.hidlr_controller
    names = cb.group_param_names()
    return {n for k, keep in enumerate(cb.freeze_decision["kept"]) if not keep for n in names[k]}


def test_freeze_mid_run(tmp_path):
    trainer = make_trainer(tmp_path)
    snaps = Snapshots(trainer)
    trainer.train()
    cb, engine = trainer.hidlr_controller, trainer.hidlr
    assert cb.freeze_decision is not None and cb.freeze_decision["step"] == 3
    kept = dict(zip(engine.group_names, cb.freeze_decision["kept"]))
    assert kept["head"] and not all(kept.values())
    total = sum(p.numel() for p in trainer.model.parameters())
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert trainable == cb.freeze_decision["trainable_params"] <= 0.2 * total
    frozen = frozen_names(trainer)
    params = dict(trainer.model.named_parameters())
    inner = trainer.optimizer.optimizer
    for name in frozen:
        assert torch.equal(params[name], snaps.at_freeze[name]), name  # bit-identical after the freeze
        assert not params[name].requires_grad and params[name] not in inner.state
    moved = [n for n in params if n not in frozen and not torch.equal(params[n], snaps.at_freeze[n])]
    assert moved, "kept groups keep training"
    for k, keep in enumerate(cb.freeze_decision["kept"]):
        assert (engine.base_rates[k] > 0) == keep
        for i in engine.param_group_indices[k]:
            group = trainer.optimizer.param_groups[i]
            if not keep:
                assert group["lr"] == 0.0 and group["weight_decay"] == 0.0
    # Influence is accumulated and logged per group.
    logged = [h for h in trainer.state.log_history if "loss" in h][-1]
    assert any(k.startswith("hidlr/influence/layers.0.") for k in logged)


def test_freeze_then_resume(tmp_path):
    common = dict(max_steps=8, save_strategy="steps", save_steps=5)
    straight = make_trainer(tmp_path / "a", **common)
    straight.train()
    ckpt = tmp_path / "a" / "checkpoint-5"
    saved = json.loads((ckpt / "hidlr_state.json").read_text())
    assert saved["frozen"]["kept"] == straight.hidlr_controller.freeze_decision["kept"]

    resumed = make_trainer(tmp_path / "b", model=tiny_roberta(seed=3), **common)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.hidlr_controller.freeze_decision["kept"] == straight.hidlr_controller.freeze_decision["kept"]
    a, b = dict(straight.model.named_parameters()), dict(resumed.model.named_parameters())
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), name
    for name in frozen_names(resumed):
        assert not b[name].requires_grad
        assert torch.equal(a[name], b[name])
    assert resumed.hidlr.base_rates == pytest.approx(straight.hidlr.base_rates, rel=1e-9)


def test_frozen_groups_return_to_their_initial_values(tmp_path):
    initial = {n: p.detach().clone() for n, p in tiny_roberta().named_parameters()}
    trainer = make_trainer(tmp_path)
    trainer.train()
    cb = trainer.hidlr_controller
    assert cb.freeze_decision["restored"] is True
    params = dict(trainer.model.named_parameters())
    frozen = frozen_names(trainer)
    assert frozen
    for name in frozen:
        assert torch.equal(params[name], initial[name]), name  # bit for bit: the model is base + kept groups
    assert all(not torch.equal(params[n], initial[n]) for n in params if n not in frozen)
    # The copy covered every candidate group (all but the head): 4 bytes per fp32 parameter.
    head = {n for k, g in enumerate(trainer.hidlr.group_names) if g == "head" for n in cb.group_param_names()[k]}
    assert cb.initial_copy_bytes == 4 * sum(p.numel() for n, p in params.items() if n not in head)
    # After the freeze only the kept candidate groups' copy is held (for BEFT deltas).
    kept = cb.freeze_decision["kept"]
    assert set(cb.initial) == {k for k, keep in enumerate(kept) if keep and trainer.hidlr.group_names[k] != "head"}


def test_resume_before_and_after_the_freeze_restores_the_initial_values(tmp_path):
    initial = {n: p.detach().clone() for n, p in tiny_roberta().named_parameters()}
    common = dict(max_steps=8, save_strategy="steps", save_steps=2)
    straight = make_trainer(tmp_path / "a", **common)
    straight.train()
    before, after = tmp_path / "a" / "checkpoint-2", tmp_path / "a" / "checkpoint-4"
    assert (before / "hidlr_initial.safetensors").stat().st_size > (after / "hidlr_initial.safetensors").stat().st_size
    a = dict(straight.model.named_parameters())
    for ckpt in (before, after):
        # Another random start: the initial values must come from the checkpoint, not from this model.
        resumed = make_trainer(tmp_path / ckpt.name, model=tiny_roberta(seed=3), **common)
        resumed.train(resume_from_checkpoint=str(ckpt))
        assert resumed.hidlr_controller.freeze_decision["kept"] == straight.hidlr_controller.freeze_decision["kept"]
        b = dict(resumed.model.named_parameters())
        for name in frozen_names(resumed):
            assert torch.equal(b[name], initial[name]), (ckpt.name, name)
        for name in a:
            assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), (ckpt.name, name)


def kept_set(trainer):
    cb = trainer.hidlr_controller
    names = cb.group_param_names()
    return {canonical_name(n) for k, keep in enumerate(cb.freeze_decision["kept"]) if keep for n in names[k]}


def trainable_set(peft_model):
    return {canonical_name(n) for n, p in peft_model.named_parameters() if p.requires_grad}


def test_export_round_trip_with_peft(tmp_path):
    from peft import PeftConfig, get_peft_model

    trainer = make_trainer(tmp_path / "run")
    trainer.train()
    summary = trainer.export_peft_config(str(tmp_path / "adapter"))
    assert "Kept" in summary and "Trainable" in summary
    config = PeftConfig.from_pretrained(str(tmp_path / "adapter"))
    mask = json.loads((tmp_path / "adapter" / "hidlr_mask.json").read_text())
    assert {g["name"] for g in mask["groups"] if g["kept"]} == {
        n for n, k in zip(trainer.hidlr.group_names, trainer.hidlr_controller.freeze_decision["kept"]) if k
    }
    fresh = get_peft_model(tiny_roberta(seed=5), config)
    got = trainable_set(fresh)
    want = kept_set(trainer)
    widened = {p for entry in mask["not_expressible"] for p in entry.get("trained_not_kept", [])}
    dropped = {p for entry in mask["not_expressible"] for p in entry.get("kept_not_trained", [])}
    assert got == (want | widened) - dropped
    assert sum(p.numel() for p in fresh.parameters() if p.requires_grad) == mask["trainable_params"] + sum(
        e.get("params_delta", 0) for e in mask["not_expressible"]
    )


def saved_base(tmp_path):
    """A tiny base model saved to a folder, as a user's `from_pretrained(path)` base."""
    path = tmp_path / "base"
    tiny_roberta().save_pretrained(path)
    return str(path)


def eval_logits(model):
    data = toy_dataset(n=24, seed=7)
    model.eval()
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(data["input_ids"]), attention_mask=torch.tensor(data["attention_mask"])
        ).logits


def load_adapter(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    return PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=2), adapter)


@pytest.mark.parametrize(
    "grouping, budget, config_type",
    [
        ("module_type_by_layer", "0.2", "BeftConfig"),
        ("module_type", "top1", "LNTuningConfig"),  # the embeddings
        ("module_type", "top2", "LNTuningConfig"),
    ],
)
def test_exported_adapter_reproduces_the_run(tmp_path, grouping, budget, config_type):
    from peft import PeftConfig
    from transformers import AutoModelForSequenceClassification

    base = saved_base(tmp_path)
    trainer = make_trainer(
        tmp_path / "run", model=AutoModelForSequenceClassification.from_pretrained(base),
        hidlr_grouping=grouping, hidlr_trainable_budget=budget,
    )
    trainer.train()
    out = tmp_path / "adapter"
    summary = trainer.export_peft_config(str(out))
    assert (out / "adapter_model.safetensors").is_file() and "reproduces the trained model" in summary
    config = PeftConfig.from_pretrained(str(out))
    assert type(config).__name__ == config_type
    assert config.base_model_name_or_path == base  # the path the user loaded the base from
    mask = json.loads((out / "hidlr_mask.json").read_text())
    assert mask["weights"]["exact"] is True and mask["weights"]["not_exact"] == []
    loaded = load_adapter(base, str(out))
    torch.testing.assert_close(eval_logits(loaded), eval_logits(trainer.model), rtol=0, atol=1e-5)


def test_exported_lora_adapter_reproduces_the_run(tmp_path):
    from peft import LoraConfig, PeftConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = saved_base(tmp_path)
    model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base),
        LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear"),
    )
    trainer = make_trainer(tmp_path / "run", model=model, hidlr_trainable_budget="top2")
    trainer.train()
    out = tmp_path / "adapter"
    trainer.export_peft_config(str(out))
    config = PeftConfig.from_pretrained(str(out))
    assert type(config).__name__ == "LoraConfig" and config.base_model_name_or_path == base
    assert json.loads((out / "hidlr_mask.json").read_text())["weights"]["exact"] is True
    loaded = load_adapter(base, str(out))
    # A module with one kept factor gets both in peft; the frozen factor is back at its initial value, so the
    # function is the same.
    torch.testing.assert_close(eval_logits(loaded), eval_logits(trainer.model), rtol=0, atol=1e-5)


def test_frozen_lora_layers_skip_their_branch_and_the_adapter_still_reproduces_the_run(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    base = saved_base(tmp_path)
    model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base),
        LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear"),
    )
    scheme = tmp_path / "scheme.json"  # both factors of a layer in one group, so a whole layer can be frozen
    scheme.write_text(json.dumps({"layer0": r"layer\.0\..*lora_", "layer1": r"layer\.1\..*lora_", "head": "classifier"}))
    trainer = make_trainer(tmp_path / "run", model=model, hidlr_grouping=str(scheme), hidlr_trainable_budget="top1",
                           save_strategy="steps", save_steps=5)
    trainer.train()
    decision = trainer.hidlr_controller.freeze_decision
    frozen_layer = [g for g, keep in zip(trainer.hidlr.group_names, decision["kept"]) if not keep]
    assert len(frozen_layer) == 1, (trainer.hidlr.group_names, decision)
    index = frozen_layer[0][-1]
    layers = {n: m for n, m in trainer.model.named_modules() if hasattr(m, "lora_B") and hasattr(m, "disable_adapters")}
    skipped = {n for n, m in layers.items() if m.disable_adapters}
    assert skipped == {n for n in layers if f".layer.{index}." in n} and decision["lora_layers_skipped"] == 6
    # Switched back on, the frozen layers change nothing: their branch is exactly zero.
    logits = eval_logits(trainer.model)
    for n in skipped:
        layers[n].enable_adapters(True)
    assert torch.equal(eval_logits(trainer.model), logits)
    for n in skipped:
        layers[n].enable_adapters(False)
    out = tmp_path / "adapter"
    trainer.export_peft_config(str(out))
    torch.testing.assert_close(eval_logits(load_adapter(base, str(out))), logits, rtol=0, atol=1e-5)
    # A run resumed after the freeze skips the same layers.
    resumed_model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(base),
        LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear"),
    )
    resumed = make_trainer(tmp_path / "resumed", model=resumed_model, hidlr_grouping=str(scheme),
                           hidlr_trainable_budget="top1", save_strategy="steps", save_steps=5)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-5"))
    assert {n for n, m in resumed.model.named_modules() if getattr(m, "disable_adapters", False) is True
            and hasattr(m, "lora_B")} == skipped


def test_export_command_line(tmp_path, capsys):
    trainer = make_trainer(tmp_path / "run")
    trainer.train()
    trainer.save_model()
    assert hidlr_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "cli_adapter")]) == 0
    out = capsys.readouterr().out
    assert "Kept" in out
    assert (tmp_path / "cli_adapter" / "adapter_config.json").is_file()
    # A new budget ranks the same run's groups again.
    assert hidlr_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "top1"), "--budget", "top1"]) == 0
    mask = json.loads((tmp_path / "top1" / "hidlr_mask.json").read_text())
    assert sum(g["kept"] and not g["is_head"] for g in mask["groups"]) == 1
    # Not the selection the run froze with: the weights are written but not claimed to reproduce the run.
    assert mask["weights"]["exact"] is False and "budget" in mask["weights"]["not_exact"][0]
    assert "NOT an exact copy" in capsys.readouterr().out


def test_export_from_a_run_folder_with_only_checkpoints(tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    base = saved_base(tmp_path)
    run = tmp_path / "run"
    trainer = make_trainer(
        run, model=AutoModelForSequenceClassification.from_pretrained(base), save_strategy="steps", save_steps=4,
    )
    trainer.train()  # no save_model: the run folder holds checkpoint-4, checkpoint-8 and the final Hi-DLR state
    assert not (run / "config.json").exists() and (run / "checkpoint-8" / "config.json").is_file()
    assert hidlr_main(["export", str(run), "--out", str(tmp_path / "adapter")]) == 0
    out = capsys.readouterr().out
    assert f"exported its last checkpoint, {run / 'checkpoint-8'}" in out
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == base  # the name the run was given, not the checkpoint's path
    loaded = load_adapter(base, str(tmp_path / "adapter"))
    torch.testing.assert_close(eval_logits(loaded), eval_logits(trainer.model), rtol=0, atol=1e-5)


def test_export_without_hidlr_state_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert hidlr_main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hidlr: error: No Hi-DLR state")


def test_lora_candidate_space(tmp_path):
    from peft import LoraConfig, PeftConfig, get_peft_model

    model = get_peft_model(tiny_roberta(), LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear"))
    trainer = make_trainer(tmp_path / "run", model=model, hidlr_trainable_budget="top2")
    trainer.train()
    names = trainer.hidlr.group_names
    assert {"layers.0.lora_A", "layers.0.lora_B", "layers.1.lora_A", "layers.1.lora_B", "head"} <= set(names)
    trainer.export_peft_config(str(tmp_path / "adapter"))
    config = PeftConfig.from_pretrained(str(tmp_path / "adapter"))
    assert type(config).__name__ == "LoraConfig"
    fresh = get_peft_model(tiny_roberta(seed=9), config)
    kept_layers = {n.split(".")[1] for n, k in zip(names, trainer.hidlr_controller.freeze_decision["kept"]) if k and n.startswith("layers.")}
    adapted_layers = {n.split("layer.")[1].split(".")[0] for n in trainable_set(fresh) if "lora_" in n}
    assert adapted_layers == kept_layers


def test_bad_freeze_settings():
    with pytest.raises(HiDLRError, match="both"):
        HiDLRTrainingArguments(output_dir="x", hidlr_freeze_at="3")
    with pytest.raises(HiDLRError, match="fraction"):
        HiDLRTrainingArguments(output_dir="x", hidlr_freeze_at="3", hidlr_trainable_budget="1.5")
    with pytest.raises(HiDLRError):
        HiDLRTrainingArguments(output_dir="x", hidlr_freeze_at="3", hidlr_trainable_budget="0")
    with pytest.raises(HiDLRError, match="freeze_at"):
        HiDLRTrainingArguments(output_dir="x", hidlr_freeze_at="-1", hidlr_trainable_budget="0.1")


def test_budget_larger_than_model(tmp_path):
    trainer = make_trainer(tmp_path, hidlr_trainable_budget="100000000", max_steps=4)
    with pytest.raises(HiDLRError, match="larger than"):
        trainer.train()


def test_freeze_needs_a_measured_round(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, hidlr_freeze_at="1")
    trainer.train()
    trainer.hidlr.num_rounds = 0
    with pytest.raises(HiDLRError, match="before any Hi-DLR probe round"):
        trainer.hidlr_controller.freeze()


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
