"""The closest faithful ``peft`` config for the kept set of a Hi-DLR mask (docs/METHOD.md section 12).

``peft`` is imported inside the functions that need it. Names are compared in *canonical* form
(:func:`hidlr_hf.core.wrappers.canonical_name`): the parameter name on the bare model, with peft's wrapper parts
removed, LoRA factors as ``<module>.lora_A.weight`` (adapter name dropped) and a BEFT bias as ``<module>.bias``.

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
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from torch import nn

from hidlr_hf.core.wrappers import canonical_name, canonical_parts, unwrap_model
from hidlr_hf.errors import HiDLRError

from .mask import check_mask

__all__ = ["mask_to_peft_config"]

# peft's PeftModelForSequenceClassification adds these to modules_to_save (suffix match on module paths).
_SEQ_CLS_HEADS = ("classifier", "score")


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def _lora_module(name: str) -> str | None:
    """The adapted module of a canonical LoRA parameter name, else None."""
    parts, lora_at = canonical_parts(name.split("."))
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
            parts, lora_at = canonical_parts(name.split("."))
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
            parts, lora_at = canonical_parts(path.split(".")) if path else ([], None)
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
        inner = unwrap_model(model)
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
    check_mask(mask)
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
