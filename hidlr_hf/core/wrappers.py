"""Seeing through ``peft`` wrappers, by names and duck typing alone (no ``peft`` import).

A peft model renames parameters (``x.base_layer.weight``, ``x.lora_A.<adapter>.weight``,
``x.modules_to_save.<adapter>.weight``, ...) and wraps the model it adapts. Grouping (:mod:`.grouping`) and the
adapter export (:mod:`hidlr_hf.peft`) both need the bare model's names and modules; this module is the one word list
and the one unwrapping rule they share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import nn

LORA_A = frozenset({"lora_A", "lora_embedding_A"})
# DoRA magnitudes rescale the adapter's output, so they travel with lora_B rather than the frozen base.
LORA_B = frozenset({"lora_B", "lora_embedding_B", "lora_magnitude_vector"})
# `<part>.<adapter>` holds a trainable copy of the module just before it (modules_to_save, LN tuning).
ADAPTER_COPIES = frozenset({"modules_to_save", "ln_tuning_layers"})
# The wrapped module itself.
PASS_THROUGH = frozenset({"base_layer", "original_module"})
# `<module>.beft_bias.<adapter>`: an additive bias initialised at 0, i.e. the module's bias reparametrised.
BEFT_BIAS = "beft_bias"
# PeftModel.base_model (the tuner) .model (the adapted model).
PEFT_MODEL_PREFIX = ("base_model", "model")


def bare_parts(parts: Sequence[str], start: int = 0) -> Iterator[tuple[int, str, str | None]]:
    """The parts of a dotted name (from ``start``) that the bare model has, with their roles.

    Yields ``(i, part, role)``: ``i`` is the position in ``parts``; ``role`` is None for an ordinary part,
    ``"lora_A"`` / ``"lora_B"`` for a LoRA factor (the adapter name after it is skipped), and ``"bias"`` for a BEFT
    bias (yielded as the part ``"bias"``). Wrapper parts and adapter names are skipped.
    """
    i = start
    while i < len(parts):
        part = parts[i]
        if part in LORA_A or part in LORA_B:
            yield i, part, "lora_A" if part in LORA_A else "lora_B"
            i += 2
        elif part in ADAPTER_COPIES:
            i += 2
        elif part == BEFT_BIAS:
            yield i, "bias", "bias"
            i += 2
        elif part in PASS_THROUGH:
            i += 1
        else:
            yield i, part, None
            i += 1


def canonical_parts(parts: Sequence[str]) -> tuple[list[str], int | None]:
    """Canonical components of a parameter or module name, and the position of its LoRA component (None for the
    model's own weights). See :func:`canonical_name`."""
    start = len(PEFT_MODEL_PREFIX) if tuple(parts[: len(PEFT_MODEL_PREFIX)]) == PEFT_MODEL_PREFIX else 0
    out: list[str] = []
    lora_at = None
    for _, part, role in bare_parts(parts, start):
        if role in ("lora_A", "lora_B"):
            lora_at = len(out)
        out.append(part)
    return out, lora_at


def canonical_name(name: str) -> str:
    """A parameter's name on the bare model: peft's wrapper parts removed (``base_model.model.``, ``.base_layer``,
    ``.modules_to_save.<adapter>``, ``.ln_tuning_layers.<adapter>``, ``.original_module``), LoRA factors as
    ``<module>.lora_A.weight`` (adapter name dropped) and a BEFT bias as ``<module>.bias``."""
    return ".".join(canonical_parts(name.split("."))[0])


def unwrap_model(model: nn.Module) -> nn.Module:
    """The adapted model under peft wrappers (PeftModel -> LoraModel -> transformers model), by duck typing."""
    inner = model
    for _ in range(4):  # PeftModel, tuner, and at most a couple of nested wrappers
        get_base = getattr(inner, "get_base_model", None)
        if callable(get_base):
            nxt = get_base()
        elif (
            hasattr(inner, "peft_config")
            and not hasattr(inner, "base_model_prefix")  # a transformers model with a native adapter stays put
            and isinstance(getattr(inner, "model", None), nn.Module)
        ):
            nxt = inner.model
        else:
            break
        if not isinstance(nxt, nn.Module) or nxt is inner:
            break
        inner = nxt
    return inner
