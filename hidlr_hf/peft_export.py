"""Export a Hi-DLR selection as a JSON mask and the closest faithful ``peft`` config (METHOD.md section 8).

``peft`` is imported inside the functions that need it. Names are compared in *canonical* form: the
parameter name on the bare model, with peft's wrapper parts removed (``base_model.model.``,
``.base_layer``, ``.modules_to_save.<adapter>``, ``.ln_tuning_layers.<adapter>``, ``.original_module``),
LoRA factors as ``<module>.lora_A.weight`` (adapter name dropped) and a BEFT bias as ``<module>.bias``.

How a kept set becomes a config (peft 0.21; every target is ONE ``re.fullmatch`` regex of full module
paths with layer indices, never a suffix, so RoBERTa's ``attention.output.dense`` / ``output.dense`` /
``classifier.dense`` cannot be confused):

* LoRA candidate space (the mask keeps ``lora_A`` / ``lora_B`` parameters of a LoRA model):
  ``LoraConfig`` targeting exactly the modules whose A or B factor is kept, with r / alpha / dropout / DoRA
  / rsLoRA copied from the model's adapter; other kept modules go to ``modules_to_save``; kept biases of
  otherwise frozen modules choose ``bias`` among ``none`` / ``lora_only`` / ``all`` (the closest one).
  peft adapts A and B together, so a module with only one kept factor trains both (noted).
* Own-parameter space (the model's own weights): each module whose parameters are all kept is trained in
  full. peft's LN tuning (``LNTuningLayer``) trains a deep copy of whatever module it wraps, so
  ``LNTuningConfig(target_modules=<regex>)`` expresses any set of whole modules exactly: norms, linears,
  embeddings. A ``nn.Linear`` whose bias alone is kept is a BEFT bias (``BeftConfig``, an additive bias
  initialised at 0: the same function, gradients and parameter count as training the bias itself); when
  there is one, the config is a ``BeftConfig`` and the whole modules move to ``modules_to_save``.
* The task head always goes to ``modules_to_save`` (as its top module, e.g. ``classifier``); for
  ``*ForSequenceClassification`` models ``task_type="SEQ_CLS"``, which makes peft add ``classifier`` and
  ``score`` itself. A head-only selection leaves ``task_type`` unset and puts the head under LN tuning,
  because peft's SEQ_CLS wrapper would claim the head for ``modules_to_save`` and leave no target.
* A module with only part of its parameters kept (e.g. a linear weight without its bias, a Conv1D bias
  without its weight) cannot be expressed: it is trained in full when that adds no more parameters than it
  drops ("widened"), and left frozen otherwise ("dropped"), whichever changes fewer parameters. Every such
  difference is listed in the returned notes and in ``mask["not_expressible"]`` with the exact parameter
  names, never dropped silently. Each entry is ``{"kind", "reason", "modules", "trained_not_kept",
  "kept_not_trained", "params_delta"}`` in canonical names.

Not used: ``modules_to_save`` alone needs some tuner target to carry it; ``target_parameters`` puts LoRA
factors on parameters rather than training them; LoRA's ``bias`` option is all-or-nothing outside the LoRA
space; sparse tuners (SHiRA, Super-Tuning) pick their own entries. peft warns "Unsupported layer type" when
LN tuning wraps a module it cannot size (even a LayerNorm); the copy is trained all the same.

Transfer across depths: a layer group is stored as its module type and relative depth
``(i + 0.5) / L`` (with ``L`` the source depth). Source layer ``i`` covers relative depths
``[i / L, (i + 1) / L)``; target layer ``j`` of ``L'`` takes the decision of the source layer that covers
its own centre ``(j + 0.5) / L'``, i.e. ``i = floor((j + 0.5) * L / L')``. Each source layer thus covers
``L' / L`` target layers (2 -> 4 layers: source layer 1 -> target layers 2 and 3); shrinking keeps the
decisions of the source layers at the target layers' centres.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

from torch import nn

from hidlr_hf.errors import HiDLRError
from hidlr_hf.core.grouping import group_parameters
from hidlr_hf.core.selection import GroupRecord, Selection

__all__ = [
    "MASK_FORMAT",
    "apply_relative_selection",
    "build_mask",
    "canonical_name",
    "export_adapter",
    "mask_for_model",
    "mask_to_peft_config",
    "relative_selection",
]

MASK_FORMAT = "hidlr-mask/1"

_LORA_PARTS = frozenset(
    {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}
)
_SKIP_WITH_ADAPTER = frozenset({"modules_to_save", "ln_tuning_layers"})
_SKIP = frozenset({"base_layer", "original_module"})
# peft's PeftModelForSequenceClassification adds these to modules_to_save (suffix match on module paths).
_SEQ_CLS_HEADS = ("classifier", "score")
_LAYER_GROUP = re.compile(r"^(?:(?P<stack>.+)\.)?layers\.(?P<index>\d+)\.(?P<type>[^.]+)$")


# ------------------------------------------------------------------------------------------- names


def _canonical_parts(parts: list[str]) -> tuple[list[str], int | None]:
    """Canonical components, and the position of the LoRA component (None for the model's own weights)."""
    out: list[str] = []
    lora_at = None
    i = 2 if parts[:2] == ["base_model", "model"] else 0
    while i < len(parts):
        part = parts[i]
        if part in _LORA_PARTS:
            lora_at = len(out)
            out.append(part)
            i += 2  # drop the adapter name
        elif part in _SKIP_WITH_ADAPTER:
            i += 2
        elif part == "beft_bias":
            out.append("bias")  # an additive bias initialised at 0 is the module's bias, reparametrised
            i += 2
        elif part in _SKIP:
            i += 1
        else:
            out.append(part)
            i += 1
    return out, lora_at


def canonical_name(name: str) -> str:
    """A parameter's name on the bare model, with peft's wrapper parts removed (see the module docstring)."""
    return ".".join(_canonical_parts(name.split("."))[0])


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def _lora_module(name: str) -> str | None:
    """The adapted module of a canonical LoRA parameter name, else None."""
    parts, lora_at = _canonical_parts(name.split("."))
    return ".".join(parts[:lora_at]) if lora_at is not None else None


class _ModelView:
    """The model in canonical names: its own parameters, its LoRA parameters, and its modules."""

    def __init__(self, model: nn.Module):
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        self.model = model
        self.own: dict[str, int] = {}
        self.lora: dict[str, int] = {}  # canonical LoRA parameter name -> numel
        self.lora_of: dict[str, set[str]] = defaultdict(set)  # module path -> its canonical LoRA names
        self.shared: dict[str, list[str]] = {}  # canonical name -> other names of the same tensor (tied weights)
        seen: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            parts, lora_at = _canonical_parts(name.split("."))
            cname = ".".join(parts)
            if lora_at is not None:
                self.lora[cname] = param.numel()
                self.lora_of[".".join(parts[:lora_at])].add(cname)
                continue
            if id(param) in seen and seen[id(param)] != cname:
                self.shared.setdefault(seen[id(param)], []).append(cname)
                continue
            seen.setdefault(id(param), cname)
            self.own.setdefault(cname, param.numel())
        self.modules: dict[str, nn.Module] = {}
        for path, module in model.named_modules(remove_duplicate=False):
            parts, lora_at = _canonical_parts(path.split(".")) if path else ([], None)
            if lora_at is not None:
                continue
            cpath = ".".join(parts)
            if cpath in self.modules:
                continue
            if isinstance(module, AuxiliaryTrainingWrapper):
                module = module.original_module
            elif isinstance(module, BaseTunerLayer):
                module = module.get_base_layer()
            self.modules[cpath] = module
        # Parameters under each module path (recursive), for "is this whole module kept?".
        self.under: dict[str, set[str]] = defaultdict(set)
        for cname in self.own:
            parts = cname.split(".")
            for k in range(len(parts)):
                self.under[".".join(parts[:k])].add(cname)
        inner = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
        self.inner = inner
        self.is_seq_cls = type(inner).__name__.endswith("ForSequenceClassification")

    def size(self, names) -> int:
        return sum(self.own.get(n, 0) + self.lora.get(n, 0) for n in names)


def _fullmatch_regex(paths) -> str:
    """One regex that ``re.fullmatch``-es exactly ``paths``, written compactly per layer stack.

    ``roberta.encoder.layer.{0,1}.attention.self.{query,key}`` becomes
    ``roberta\\.encoder\\.layer\\.(?:0|1)\\.attention\\.self\\.(?:key|query)``-like alternatives.
    """
    by_prefix: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    plain: list[str] = []
    for path in sorted(set(paths)):
        m = re.match(r"^(.*?)\.(\d+)\.(.+)$", path)
        if m is None:
            plain.append(re.escape(path))
        else:
            by_prefix[m.group(1)][m.group(3)].add(m.group(2))
    alternatives = list(plain)
    for prefix, rests in by_prefix.items():
        by_indices: dict[tuple, list[str]] = defaultdict(list)
        for rest, indices in rests.items():
            by_indices[tuple(sorted(indices, key=int))].append(rest)
        for indices, rest_list in by_indices.items():
            idx = indices[0] if len(indices) == 1 else "(?:" + "|".join(indices) + ")"
            tail = [re.escape(r) for r in sorted(rest_list)]
            tail_rx = tail[0] if len(tail) == 1 else "(?:" + "|".join(tail) + ")"
            alternatives.append(f"{re.escape(prefix)}\\.{idx}\\.{tail_rx}")
    return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


def _checked_regex(paths, view: _ModelView) -> str:
    rx = _fullmatch_regex(paths)
    matched = {p for p in view.modules if p and re.fullmatch(rx, p)}
    if matched != set(paths):  # a guard on _fullmatch_regex itself: the target must be exact
        raise HiDLRError(
            f"Internal error: the target regex {rx!r} matches {sorted(matched ^ set(paths))[:5]} wrongly; "
            "please report this with the model's class name."
        )
    return rx


# ------------------------------------------------------------------------------------------- mask


def _finite_or_none(x: float):
    x = float(x)
    return x if math.isfinite(x) else None


def _infer_layers(names) -> int | None:
    indices = [int(m.group("index")) for n in names if (m := _LAYER_GROUP.match(n))]
    return max(indices) + 1 if indices else None


def build_mask(
    selection: Selection,
    *,
    model_type: str | None,
    num_layers: int | None,
    scheme,
    base_model_prefix: str | None,
) -> dict:
    """The JSON-safe mask of a selection: every group with its parameter names, size, influence, rank, kept flag.

    ``num_layers`` defaults to the layer count seen in the group names (``layers.<i>.*``). Non-finite
    influences are written as null. ``not_expressible`` starts empty: :func:`mask_to_peft_config` fills it.
    """
    groups = selection.groups
    if num_layers is None:
        num_layers = _infer_layers(g.name for g in groups)
    gains = [g.influence * g.numel for g, k in zip(groups, selection.kept) if k and math.isfinite(g.influence)]
    mask = {
        "format": MASK_FORMAT,
        "scheme": scheme if isinstance(scheme, str) else "custom",
        "model_type": model_type,
        "num_layers": num_layers,
        "base_model_prefix": base_model_prefix,
        "budget": dict(selection.budget),
        "total_params": int(selection.total_params),
        "trainable_params": int(selection.trainable_params),
        "trainable_fraction": float(selection.trainable_fraction),
        "predicted_gain": float(sum(gains)) if gains else None,
        "groups": [
            {
                "name": g.name,
                "param_names": list(g.param_names),
                "numel": int(g.numel),
                "influence": _finite_or_none(g.influence),
                "rank": r,
                "kept": bool(k),
                "is_head": bool(g.is_head),
            }
            for g, k, r in zip(groups, selection.kept, selection.rank)
        ],
        "not_expressible": [],
    }
    mask["relative"] = relative_selection(mask)
    return mask


def _check_mask(mask: dict) -> None:
    if not isinstance(mask, dict) or mask.get("format") != MASK_FORMAT:
        raise HiDLRError(
            f"This is not a Hi-DLR mask (format {mask.get('format') if isinstance(mask, dict) else None!r}); "
            f"build one with build_mask (format {MASK_FORMAT!r})."
        )


# ------------------------------------------------------------------------------------------- plan


@dataclass
class _Plan:
    lora_targets: list[str] = field(default_factory=list)
    whole: list[str] = field(default_factory=list)  # non-head modules trained in full
    head: list[str] = field(default_factory=list)  # head modules (modules_to_save)
    bias_only: list[str] = field(default_factory=list)  # nn.Linear modules whose bias alone is kept
    loose_biases: set[str] = field(default_factory=set)  # LoRA space: kept biases of otherwise frozen modules
    bias: str = "none"
    not_expressible: list[dict] = field(default_factory=list)

    def add(self, kind: str, reason: str, view: _ModelView, modules, extra=(), missing=()) -> None:
        extra, missing = sorted(set(extra)), sorted(set(missing))
        if not extra and not missing:
            return
        self.not_expressible.append(
            {
                "kind": kind,
                "reason": reason,
                "modules": sorted(set(modules)),
                "trained_not_kept": extra,
                "kept_not_trained": missing,
                "params_delta": view.size(extra) - view.size(missing),
            }
        )


def _inside(path: str, roots) -> bool:
    return any(path == r or path.startswith(r + ".") for r in roots)


def _plan(view: _ModelView, kept: set[str], head: set[str], use_lora: bool) -> _Plan:
    plan = _Plan()
    kept_own = {n for n in kept if n in view.own}
    kept_lora = kept - kept_own

    # The head, as its top modules (peft's SEQ_CLS wrapper names the whole `classifier` / `score`).
    head_own = head & kept_own
    for name in sorted(head_own):
        if _inside(_owner(name), plan.head):
            continue
        parts = _owner(name).split(".")
        for k in range(1, len(parts) + 1):
            path = ".".join(parts[:k])
            if path and view.under[path] <= head_own:
                plan.head.append(path)
                break
    head_missing = {n for n in head_own if not _inside(_owner(n), plan.head)}
    plan.add(
        "head_not_a_module",
        "head parameters that sit directly on the model root cannot be named as a module to save",
        view, [], missing=head_missing,
    )

    # LoRA targets: every module with a kept A or B factor; peft always creates both.
    if use_lora:
        plan.lora_targets = sorted({_lora_module(n) for n in kept_lora})

    # The model's own weights, outermost module first so that a whole parent covers its children.
    rest = kept_own - {n for n in head_own if _inside(_owner(n), plan.head)} - head_missing
    owners = sorted({_owner(n) for n in rest}, key=lambda p: (p.count("."), p))
    partial: list[tuple[str, set[str], set[str]]] = []
    bias_alone: list[str] = []
    for path in owners:
        if _inside(path, plan.whole + plan.head):
            continue
        direct = {n for n in rest if _owner(n) == path}
        unkept = view.under[path] - kept_own
        if not unkept:
            plan.whole.append(path)
        elif direct == {f"{path}.bias"} and f"{path}.weight" in unkept:
            bias_alone.append(path)
        else:
            partial.append((path, direct, unkept))

    widened, widened_extra, dropped, dropped_missing = [], set(), [], set()

    def widen_or_drop(path: str, direct: set[str], unkept: set[str]) -> None:
        # Whichever changes fewer parameters: train the whole module, or leave it frozen.
        if _inside(path, plan.whole):
            return
        if view.size(unkept) <= view.size(direct):
            plan.whole.append(path)
            widened.append(path)
            widened_extra.update(unkept)
        else:
            dropped.append(path)
            dropped_missing.update(direct)

    for item in partial:
        widen_or_drop(*item)

    if plan.lora_targets:
        # A module both LoRA-adapted and trained in full: peft never adapts a module it saves.
        both = sorted(set(plan.lora_targets) & set(plan.whole))
        if both:
            lost = {n for t in both for n in view.lora_of[t]} & kept_lora
            plan.lora_targets = [t for t in plan.lora_targets if t not in both]
            plan.add(
                "lora_replaced_by_full",
                "these modules are kept in full and also LoRA-adapted; peft never adapts a module it saves, so "
                "they are trained in full without LoRA factors",
                view, both, missing=lost,
            )

    extra = {n for t in plan.lora_targets for n in view.lora_of[t]} - kept_lora
    plan.add(
        "lora_half",
        "peft adapts a module with both LoRA factors, so a module with only lora_A or only lora_B kept trains both",
        view, {_lora_module(n) for n in extra}, extra=extra,
    )

    for path in bias_alone:
        if plan.lora_targets:
            plan.loose_biases.add(f"{path}.bias")  # LoRA's bias option decides below
        elif isinstance(view.modules.get(path), nn.Linear):
            plan.bias_only.append(path)  # BEFT
        else:
            widen_or_drop(path, {f"{path}.bias"}, view.under[path] - kept_own)

    plan.add(
        "partial_module_widened",
        "peft trains whole modules; these modules have most but not all of their parameters kept, so they "
        "are trained in full",
        view, widened, extra=widened_extra,
    )
    plan.add(
        "partial_module_dropped",
        "peft trains whole modules; only a small part of these modules' parameters is kept (e.g. a Conv1D "
        "bias, which BEFT cannot adapt), so they stay frozen",
        view, dropped, missing=dropped_missing,
    )
    # A module widened late may contain modules found whole earlier: keep only the outermost.
    plan.whole = [p for p in plan.whole if not any(p != q and _inside(p, [q]) for q in plan.whole)]
    plan.bias_only = [p for p in plan.bias_only if not _inside(p, plan.whole)]
    if plan.lora_targets:
        _choose_bias(plan, view)
    return plan


def _choose_bias(plan: _Plan, view: _ModelView) -> None:
    """LoRA's bias option closest (fewest differing parameters) to the kept loose biases."""
    covered = plan.whole + plan.head
    options = {
        "none": set(),
        "lora_only": {f"{t}.bias" for t in plan.lora_targets if f"{t}.bias" in view.own},
        "all": {n for n in view.own if n.rsplit(".", 1)[-1] == "bias" and not _inside(_owner(n), covered)},
    }
    best = min(options, key=lambda o: view.size(options[o] ^ plan.loose_biases))  # ties: first listed
    plan.bias = best
    plan.add(
        "bias_option",
        f"peft's LoRA bias option is all-or-nothing ('none', 'lora_only', 'all'); {best!r} is the closest to "
        "the kept biases",
        view, {_owner(n) for n in options[best] ^ plan.loose_biases},
        extra=options[best] - plan.loose_biases, missing=plan.loose_biases - options[best],
    )


# ------------------------------------------------------------------------------------------- config


def _lora_hyperparameters(model) -> dict:
    """r / alpha / dropout / variants of the model's active LoRA adapter."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        raise HiDLRError(
            "The mask keeps LoRA parameters but the model has no peft LoRA adapter; pass the peft model the mask "
            "was measured on."
        )
    active = getattr(model, "active_adapter", None)
    active = active[0] if isinstance(active, (list, tuple)) else active
    src = configs.get(active) or next(iter(configs.values()))
    if "LORA" not in str(getattr(src, "peft_type", "")).upper():
        raise HiDLRError(
            f"The model's adapter is {type(src).__name__}, not LoRA; export LoRA masks from a LoRA model."
        )
    keys = ("r", "lora_alpha", "lora_dropout", "fan_in_fan_out", "use_rslora", "use_dora", "lora_bias",
            "rank_pattern", "alpha_pattern")
    hp = {k: getattr(src, k) for k in keys if hasattr(src, k)}
    init = getattr(src, "init_lora_weights", True)
    # Data-dependent initialisations (PiSSA, OLoRA, EVA, LoftQ, ...) would rewrite a fresh base: keep the default.
    hp["init_lora_weights"] = init if isinstance(init, bool) or init == "gaussian" else True
    return hp


def _seq_cls_extra(view: _ModelView, kept: set[str]) -> set[str]:
    """Parameters peft's SEQ_CLS wrapper would train (modules named *classifier / *score) outside the mask."""
    roots = [p for p in view.modules if p and p.endswith(_SEQ_CLS_HEADS)]
    roots = [p for p in roots if not any(p != q and p.startswith(q + ".") for q in roots)]
    return {n for p in roots for n in view.under[p]} - kept


def mask_to_peft_config(mask: dict, model: nn.Module):
    """The closest faithful ``peft`` config for the mask's kept set, and notes on what it cannot express.

    ``model`` is the model the mask was measured on (a peft LoRA model for a LoRA mask). Returns
    ``(config, notes)``. What the config trains differently from the mask is also written, with exact
    parameter names, into ``mask["not_expressible"]`` (replacing what was there). See the module docstring
    for the mapping.
    """
    _check_mask(mask)
    from peft import BeftConfig, LNTuningConfig, LoraConfig

    view = _ModelView(model)
    kept, head = set(), set()
    for g in mask["groups"]:
        if g["kept"]:
            names = {canonical_name(n) for n in g["param_names"]}
            kept |= names
            if g["is_head"]:
                head |= names
    if not kept:
        raise HiDLRError("The mask keeps no parameter; select with a budget that keeps at least the head.")
    unknown = sorted(n for n in kept if n not in view.own and n not in view.lora)
    if unknown:
        raise HiDLRError(
            f"The mask names {len(unknown)} parameter(s) the model lacks (e.g. {unknown[0]!r}); pass the model "
            "the mask was built for, or rebuild the mask with mask_for_model."
        )
    use_lora = any(n in view.lora for n in kept)
    plan = _plan(view, kept, head, use_lora)
    notes: list[str] = []
    task_type = "SEQ_CLS" if view.is_seq_cls else None
    save = plan.whole + plan.head

    if plan.lora_targets:
        hp = _lora_hyperparameters(model)
        config = LoraConfig(
            target_modules=_checked_regex(plan.lora_targets, view),
            modules_to_save=list(save) or None,
            bias=plan.bias,
            task_type=task_type,
            **hp,
        )
        notes.append(
            f"LoraConfig on {len(plan.lora_targets)} module(s) (r={hp.get('r')}, alpha={hp.get('lora_alpha')}), "
            f"{len(save)} module(s) to save, bias={plan.bias!r}."
        )
    elif plan.bias_only:
        config = BeftConfig(
            target_modules=_checked_regex(plan.bias_only, view), modules_to_save=list(save) or None,
            task_type=task_type,
        )
        notes.append(
            f"BeftConfig: {len(plan.bias_only)} linear bias(es) trained alone (as BEFT biases), "
            f"{len(save)} module(s) trained in full through modules_to_save."
        )
    elif plan.whole:
        config = LNTuningConfig(
            target_modules=_checked_regex(plan.whole, view), modules_to_save=list(plan.head) or None,
            task_type=task_type,
        )
        notes.append(
            f"LNTuningConfig: {len(plan.whole)} whole module(s) trained as copies (peft's LN tuning copies any "
            f"module it targets), head through modules_to_save."
        )
    elif plan.head:
        task_type = None
        config = LNTuningConfig(target_modules=_checked_regex(plan.head, view))
        notes.append(
            "Head-only selection: LNTuningConfig on the head, task_type unset (peft's SEQ_CLS wrapper would claim "
            "the head for modules_to_save and leave LN tuning without a target)."
        )
    else:
        mask["not_expressible"] = plan.not_expressible
        raise HiDLRError(
            "No kept parameter can be expressed as a peft config (see mask['not_expressible']); "
            "raise the budget or group the parameters by whole modules."
        )
    if use_lora and not plan.lora_targets:
        notes.append("No LoRA factor remains a target, so the export has no LoRA adapter.")
    if task_type == "SEQ_CLS":
        plan.add(
            "seq_cls_head",
            "task_type SEQ_CLS makes peft train every module whose path ends in 'classifier' or 'score'",
            view, [], extra=_seq_cls_extra(view, kept),
        )
    tied = sorted(n for n in kept if n in view.shared)
    if tied:
        notes.append(
            f"{len(tied)} kept parameter(s) are tied to others ({tied[0]} = {view.shared[tied[0]][0]}); the "
            "adapter trains an untied copy."
        )
    for entry in plan.not_expressible:
        shown = entry["trained_not_kept"] or entry["kept_not_trained"]
        sign = "+" if entry["params_delta"] >= 0 else ""
        notes.append(
            f"Not expressible ({entry['kind']}): {entry['reason']}: "
            f"{len(entry['trained_not_kept'])} extra / {len(entry['kept_not_trained'])} missing tensor(s), "
            f"{sign}{entry['params_delta']} parameters (e.g. {shown[0]})."
        )
    name_or_path = getattr(view.inner, "name_or_path", None)
    if isinstance(name_or_path, str) and name_or_path:
        config.base_model_name_or_path = name_or_path  # lets PeftModel users find the base, as peft itself does
    mask["not_expressible"] = plan.not_expressible
    return config, notes


# ------------------------------------------------------------------------------------------- export


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def export_adapter(out_dir, mask: dict, model: nn.Module) -> str:
    """Write ``adapter_config.json`` (peft) and ``hidlr_mask.json`` to ``out_dir``; return a short summary."""
    config, notes = mask_to_peft_config(mask, model)
    os.makedirs(out_dir, exist_ok=True)
    config.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "hidlr_mask.json"), "w", encoding="utf-8") as fh:
        json.dump(mask, fh, indent=2)
        fh.write("\n")
    kept = [g["name"] for g in mask["groups"] if g["kept"]]
    gain = mask["predicted_gain"]
    lines = [
        f"Kept {len(kept)} of {len(mask['groups'])} groups: {', '.join(kept)}.",
        f"Trainable: {mask['trainable_params']:,} parameters, {100 * mask['trainable_fraction']:.2f}% of "
        f"{_human(mask['total_params'])}.",
        f"Predicted gain: {gain:.3g}." if gain is not None else "Predicted gain: unknown (no kept group measured).",
        f"Adapter: {type(config).__name__} in {out_dir}.",
    ]
    lines += [n for n in notes if n.startswith("Not expressible")]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- transfer


def relative_selection(mask: dict) -> list[dict]:
    """The kept groups in a depth-independent form.

    A layer group becomes ``{"module_type", "relative_depth": (i + 0.5) / L, "source_layers": L}`` (plus
    ``"stack"`` for ``encoder.`` / ``decoder.`` prefixes); any other group ``{"name": ...}``.
    """
    _check_mask(mask)
    num_layers = mask.get("num_layers") or _infer_layers(g["name"] for g in mask["groups"])
    out = []
    for g in mask["groups"]:
        if not g["kept"]:
            continue
        m = _LAYER_GROUP.match(g["name"])
        if m is None:
            out.append({"name": g["name"]})
            continue
        entry = {
            "module_type": m.group("type"),
            "relative_depth": (int(m.group("index")) + 0.5) / num_layers,
            "source_layers": num_layers,
        }
        if m.group("stack"):
            entry["stack"] = m.group("stack")
        out.append(entry)
    return out


def _candidate_groups(model: nn.Module, scheme):
    # A peft model's candidates are its trainable parameters (adapters, head); a bare model's are all of them.
    include_frozen = not isinstance(getattr(model, "peft_config", None), dict)
    return group_parameters(model, scheme, include_frozen=include_frozen)


def _source_layer(entry: dict) -> int:
    return int(math.floor(entry["relative_depth"] * entry["source_layers"]))


def _transfer(relative: list[dict], names: list[str]) -> list[str]:
    layer_counts: dict[str, int] = defaultdict(int)
    for n in names:
        m = _LAYER_GROUP.match(n)
        if m:
            stack = m.group("stack") or ""
            layer_counts[stack] = max(layer_counts[stack], int(m.group("index")) + 1)
    wanted_names = {e["name"] for e in relative if "name" in e}
    missing = sorted(wanted_names - set(names))
    if missing:
        warnings.warn(
            f"The target model has no group(s) {missing}; they are skipped. Transfer between models of one family.",
            stacklevel=3,
        )
    kept = []
    for n in names:
        m = _LAYER_GROUP.match(n)
        if m is None:
            if n in wanted_names:
                kept.append(n)
            continue
        stack, j, kind = m.group("stack") or "", int(m.group("index")), m.group("type")
        target_layers = layer_counts[stack]
        for e in relative:
            if "module_type" not in e or e["module_type"] != kind or e.get("stack", "") != stack:
                continue
            source_layers = int(e["source_layers"])
            # The source layer whose depth span [i/L, (i+1)/L) holds target layer j's centre (j + 0.5) / L'.
            if ((2 * j + 1) * source_layers) // (2 * target_layers) == _source_layer(e):
                kept.append(n)
                break
    return kept


def apply_relative_selection(relative: list[dict], target_model: nn.Module, scheme) -> list[str]:
    """Names of the target model's groups (under ``scheme``) that a relative selection keeps.

    Target layer ``j`` of ``L'`` is kept for a type when the source layer ``floor((j + 0.5) * L / L')`` was
    kept for that type (see the module docstring).
    """
    return _transfer(relative, [g.name for g in _candidate_groups(target_model, scheme)])


def mask_for_model(relative: list[dict], target_model: nn.Module, scheme) -> dict:
    """A full mask for ``target_model`` from a relative selection (influences unknown: null, ranks null)."""
    groups = _candidate_groups(target_model, scheme)
    kept_names = set(_transfer(relative, [g.name for g in groups]))
    records = [GroupRecord(g.name, list(g.param_names), g.numel, math.nan, g.name == "head") for g in groups]
    total = sum(p.numel() for p in target_model.parameters())
    selection = Selection(
        records, [r.name in kept_names for r in records], [None] * len(records),
        {"kind": "transfer", "value": None}, total,
    )
    inner = target_model.get_base_model() if callable(getattr(target_model, "get_base_model", None)) else target_model
    config = getattr(inner, "config", None)
    return build_mask(
        selection,
        model_type=getattr(config, "model_type", None),
        num_layers=_infer_layers(r.name for r in records),
        scheme=scheme,
        base_model_prefix=getattr(inner, "base_model_prefix", None),
    )
