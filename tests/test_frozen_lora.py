"""Frozen LoRA layers skip their zero branch after automatic PEFT's freeze, with the same output bit for bit."""

import pytest
import torch
from conftest import tiny_roberta

from hidlr_hf.peft.frozen_lora import skip_frozen_lora

peft = pytest.importorskip("peft")


def lora_model(**config):
    return peft.get_peft_model(
        tiny_roberta(),
        peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear", lora_dropout=0.1, **config),
    )


def lora_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}


def freeze_layer(layer, b_value=None):
    for key in ("lora_A", "lora_B"):
        for p in getattr(layer, key).parameters():
            p.requires_grad_(False)
    if b_value is not None:
        with torch.no_grad():
            layer.lora_B["default"].weight.fill_(b_value)


def logits(model, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(3, 100, (4, 12))
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_only_frozen_layers_with_a_zero_branch_are_switched_off():
    model = lora_model()
    layers = lora_layers(model)
    names = sorted(layers)
    trained = [n for n in names if ".layer.0." in n]  # layer 0 keeps training: its B moves away from zero
    for n in trained:
        with torch.no_grad():
            layers[n].lora_B["default"].weight.normal_()
    frozen_zero = [n for n in names if ".layer.1." in n and "query" not in n]
    moved = [n for n in names if ".layer.1." in n and "query" in n]  # frozen where its branch is not zero
    for n in frozen_zero:
        freeze_layer(layers[n])
    for n in moved:
        freeze_layer(layers[n], b_value=0.01)
    before = logits(model)
    assert sorted(skip_frozen_lora(model)) == frozen_zero
    assert all(layers[n].disable_adapters for n in frozen_zero)
    assert not any(layers[n].disable_adapters for n in trained + moved)
    assert torch.equal(logits(model), before)  # the switched-off branches added exactly zero
    # Trainable factors stay trainable; a second call finds nothing new.
    assert all(p.requires_grad for n in trained for p in layers[n].lora_B.parameters())
    assert skip_frozen_lora(model) == []


def test_dora_layers_are_left_alone():
    model = lora_model(use_dora=True)
    for layer in lora_layers(model).values():
        freeze_layer(layer)
    assert skip_frozen_lora(model) == []


def test_a_model_without_lora_is_untouched():
    model = tiny_roberta()
    before = logits(model)
    assert skip_frozen_lora(model) == []
    assert torch.equal(logits(model), before)
