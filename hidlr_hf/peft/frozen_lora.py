"""LoRA layers that automatic PEFT froze stop running their branch (docs/METHOD.md section 8, "How").

After honest freezing a frozen LoRA layer holds its initial factors: with peft's default initialisation ``lora_B``
is zero, so the branch adds exactly zero to the base layer's output, yet it still costs its dropout, two small matmuls
and their backward at every step (on CPU, LoRA on every linear layer of MiniLM made a training step as slow as full
fine-tuning, most of it in the branches' dropout). peft's own switch, ``BaseTunerLayer.enable_adapters(False)``, makes
such a layer call its base layer alone, which gives the same output bit for bit.

Only layers whose switch-off is exact are touched: plain LoRA (no DoRA), every factor frozen, every ``lora_B`` weight
(and bias) exactly zero. Not under DDP, whose reducer expects every parameter it was built with to take part in the
forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from hidlr_hf.core.distributed import world_size


def skip_frozen_lora(model: nn.Module) -> list[str]:
    """Switch off the branch of every LoRA layer of ``model`` whose factors are all frozen and whose output is zero.

    Returns the names of the layers switched off (empty for a model without peft LoRA layers, or under DDP).
    The model's output does not change: a switched-off layer computes its base layer's output, which is what it
    computed before with a zero ``lora_B``.
    """
    if world_size() > 1:
        return []
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # without peft there are no LoRA layers
        return []
    skipped = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and not module.disable_adapters and _branch_is_zero_and_frozen(module):
            module.enable_adapters(False)
            skipped.append(name)
    return skipped


def _branch_is_zero_and_frozen(layer) -> bool:
    if not layer.lora_A or any(getattr(layer, "use_dora", {}).values()):
        return False  # DoRA rescales the base weight: its output is not the base layer's bit for bit
    factors = [p for key in ("lora_A", "lora_B") for m in getattr(layer, key).values() for p in m.parameters()]
    if any(p.requires_grad for p in factors):
        return False
    with torch.no_grad():
        return all(bool((p == 0).all()) for m in layer.lora_B.values() for p in m.parameters())
