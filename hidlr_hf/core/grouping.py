"""Parameter grouping: which parameters share one learning rate (docs/METHOD.md section 9).

Plain PyTorch: models are classified by module class names and module paths, never by importing
``transformers`` or ``peft``, so any ``nn.Module`` can be grouped and this file stays cheap to import.

Three kinds of scheme:

* ``"module_type"`` (default): ``embeddings``, ``attention``, ``mlp``, ``norm``, ``bias``, ``pooler``,
  ``head``, ``lora_A``, ``lora_B`` and, only when nothing else fits, ``other``.
* ``"module_type_by_layer"``: the same split per transformer layer (``layers.3.attention``), with an
  ``encoder.`` / ``decoder.`` prefix for encoder-decoder models.
* custom: an ordered list of ``(regex, group_name)``; the first ``re.search`` match on the parameter name
  (as in ``model.named_parameters()``) wins.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hidlr_hf.errors import HiDLRError

from . import defaults
from .wrappers import LORA_A, LORA_B, bare_parts, unwrap_model

__all__ = [
    "BUILTIN_SCHEMES",
    "HEAD_GROUP",
    "ParameterGroup",
    "group_of_parameter",
    "group_parameters",
    "is_head_group",
    "load_scheme",
    "optimizer_param_groups",
]

BUILTIN_SCHEMES = ("module_type", "module_type_by_layer")
"""Names of the built-in grouping schemes."""

HEAD_GROUP = "head"
"""Name of the task-head group of the built-in schemes (the new classifier, always kept by automatic PEFT)."""

# Canonical order of module_type groups; `other` last because it only collects what nothing else fits.
_TYPE_ORDER = ("embeddings", "attention", "mlp", "norm", "bias", "pooler", HEAD_GROUP, "lora_A", "lora_B", "other")
# Group kinds that module_type_by_layer splits per layer, in their order inside one layer.
_LAYER_TYPES = ("attention", "mlp", "norm", "bias", "lora_A", "lora_B")
# ModuleList names whose integer children are transformer layers (BERT/ViT, Llama, GPT-2, T5, ...).
_LAYER_CONTAINERS = frozenset({"layer", "layers", "h", "block", "blocks"})

_TORCH_NORMS = tuple(
    cls
    for cls in (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
        nn.modules.batchnorm._NormBase,  # BatchNorm*d and InstanceNorm*d
    )
    if cls is not None
)
# LlamaRMSNorm, T5LayerNorm, DebertaLayerNorm, FusedLayerNorm, BatchNorm2d ...
_NORM_CLASS = re.compile(r"Norm(\d[dD])?$")

# Class names of modules that hold attention projections; "SelfOutput" is BERT's attention output block.
_ATTENTION_CLASS = re.compile(r"attention|attn|selfoutput", re.I)
# Class names of feed-forward blocks; BERT-family `XOutput` (not `XSelfOutput`) is the MLP down projection.
_MLP_CLASS = re.compile(
    r"mlp|feed_?forward|intermediate|ffn|dense(relu|act|gatedact)dense|layerff|output$", re.I
)
_EMBEDDING_CLASS = re.compile(r"embedding", re.I)
# Path components that name attention / MLP / embedding blocks when the class name says nothing.
_ATTENTION_PATH = re.compile(r"attn|attention", re.I)
_MLP_PATH = re.compile(r"^(mlp|ffn|ff|feed_?forward|intermediate|densereludense)$", re.I)
_EMBEDDING_PATH = re.compile(r"embed|^wte$|^wpe$", re.I)
# Last resort: the projection's own name, for layers that hold their Linear modules directly.
_ATTENTION_LEAF = re.compile(
    r"^(q|k|v|o|query|key|value|qkv|query_key_value|[qkvo]_proj|[qkv]_lin|out_lin|out_proj|c_attn|wqkv|wq|wk|wv)$",
    re.I,
)
_MLP_LEAF = re.compile(
    r"^(fc\d|c_fc|up_proj|down_proj|gate_proj|gate_up_proj|wi|wo|wi_\d|lin\d|w\d|ffn_output|"
    r"dense_h_to_4h|dense_4h_to_h)$",
    re.I,
)
_POOLER = re.compile(r"pooler", re.I)


@dataclass
class ParameterGroup:
    """Parameters that share one learning rate.

    ``param_names`` are the names from ``model.named_parameters()``; ``no_decay[i]`` is True when
    ``params[i]`` belongs to a normalisation module or is a bias (the rule of transformers'
    ``Trainer.get_decay_parameter_names``), so it gets weight decay 0.
    """

    name: str
    param_names: list[str]
    params: list[torch.nn.Parameter]
    no_decay: list[bool]

    @property
    def numel(self) -> int:
        """Total number of scalar entries in the group."""
        return sum(p.numel() for p in self.params)


def is_head_group(name: str) -> bool:
    """Whether a group is the task head: the built-in schemes' ``head``, or a custom group named ``<prefix>.head``.

    Automatic PEFT always keeps the head (it is new and task-specific) and it counts toward the budget.
    """
    return name == HEAD_GROUP or name.endswith("." + HEAD_GROUP)


# --------------------------------------------------------------------------------------------- schemes


def _scheme_help() -> str:
    return (
        f"use one of the built-in schemes {', '.join(repr(s) for s in BUILTIN_SCHEMES)}, "
        "a custom scheme as a list of (regex, group_name) pairs, or a path to a .json/.yaml file holding one"
    )


def _pairs_from_data(data, source: str) -> list[tuple[str, str]]:
    """Turn a parsed scheme (list of pairs / list of {pattern, group} / mapping) into (regex, name) pairs."""
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for group, patterns in data.items():
            # A mapping value may list several regexes for one group; they merge.
            for pattern in patterns if isinstance(patterns, (list, tuple)) else [patterns]:
                pairs.append((pattern, group))
    elif isinstance(data, (list, tuple)):
        for item in data:
            if isinstance(item, dict):
                if set(item) != {"pattern", "group"}:
                    raise HiDLRError(
                        f"Scheme entry {item!r} in {source} must have exactly the keys 'pattern' and 'group'."
                    )
                pairs.append((item["pattern"], item["group"]))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise HiDLRError(
                    f"Scheme entry {item!r} in {source} is not a (regex, group_name) pair; "
                    "write it as [regex, name] or {'pattern': regex, 'group': name}."
                )
    else:
        raise HiDLRError(
            f"The custom scheme in {source} is a {type(data).__name__}; "
            "it must be a list of (regex, group_name) pairs or a mapping {group_name: regex}."
        )
    if not pairs:
        raise HiDLRError(f"The custom scheme in {source} is empty; give at least one (regex, group_name) pair.")
    for pattern, group in pairs:
        if not isinstance(pattern, str) or not isinstance(group, str) or not group:
            raise HiDLRError(
                f"Scheme entry ({pattern!r}, {group!r}) in {source} must be a regex string and a non-empty "
                "group name string."
            )
        try:
            re.compile(pattern)
        except re.error as err:
            raise HiDLRError(
                f"The pattern {pattern!r} for group {group!r} in {source} is not a valid regular expression "
                f"({err}); fix or escape it."
            ) from None
    return pairs


def _read_scheme_file(path: Path):
    """Parsed content of a .json / .yaml / .yml scheme file."""
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise HiDLRError(f"The scheme file {str(path)!r} must end in .json, .yaml or .yml; rename or convert it.")
    if not path.is_file():
        raise HiDLRError(f"The scheme file {str(path)!r} does not exist; check the path.")
    if suffix == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            raise HiDLRError(f"The scheme file {str(path)!r} is not valid JSON ({err}); fix its syntax.") from None
    import yaml  # only YAML scheme files need it

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as err:
        raise HiDLRError(f"The scheme file {str(path)!r} is not valid YAML ({err}); fix its syntax.") from None


def load_scheme(scheme=defaults.GROUPING) -> str | list[tuple[str, str]]:
    """Normalise a grouping scheme to a built-in name or an ordered list of ``(regex, group_name)``.

    Accepts a built-in scheme name (see ``BUILTIN_SCHEMES``), a list of ``(regex, group_name)`` pairs (or
    2-lists), a dict ``{group_name: regex}`` (ordered; a value may also be a list of regexes), or a path to a
    ``.json`` / ``.yaml`` / ``.yml`` file holding either a list of ``{"pattern": ..., "group": ...}`` objects,
    a list of ``[regex, name]`` pairs, or a mapping ``{name: regex}``. YAML is read with ``yaml.safe_load``.
    Every regex must compile; the error names the bad one. Several patterns may share one group name.
    """
    if isinstance(scheme, Path):
        return _pairs_from_data(_read_scheme_file(scheme), repr(str(scheme)))
    if isinstance(scheme, str):
        if scheme in BUILTIN_SCHEMES:
            return scheme
        path = Path(os.path.expanduser(scheme))
        if path.suffix.lower() in (".json", ".yaml", ".yml") or path.is_file():
            return _pairs_from_data(_read_scheme_file(path), repr(scheme))
        raise HiDLRError(f"Unknown grouping scheme {scheme!r}; {_scheme_help()}.")
    if isinstance(scheme, (list, tuple, dict)):
        return _pairs_from_data(scheme, "the custom scheme")
    raise HiDLRError(f"A grouping scheme cannot be a {type(scheme).__name__}; {_scheme_help()}.")


# ------------------------------------------------------------------------------------ model structure


def _is_norm(module: nn.Module | None) -> bool:
    return module is not None and (isinstance(module, _TORCH_NORMS) or bool(_NORM_CLASS.search(type(module).__name__)))


class _Structure:
    """Paths of the wrapped model and of its base (backbone) inside ``model``."""

    def __init__(self, model: nn.Module):
        self.modules = dict(model.named_modules(remove_duplicate=False))
        inner = unwrap_model(model)
        self.inner_path = next((p for p, m in self.modules.items() if m is inner), "")
        inner_modules = {id(m): p for p, m in inner.named_modules(remove_duplicate=False)}
        # The backbone lives at `base_model_prefix` (roberta, model, transformer, ...) when that submodule exists.
        self.base_path: str | None = None
        prefix = getattr(inner, "base_model_prefix", None)
        if isinstance(prefix, str) and prefix:
            try:
                base = inner.get_submodule(prefix)
            except (AttributeError, TypeError):
                base = None
            if isinstance(base, nn.Module) and base is not inner:
                self.base_path = prefix
        # Without a separate backbone (T5ForConditionalGeneration) an untied output projection is still a head.
        self.output_path: str | None = None
        if self.base_path is None:
            out = _call_quietly(inner, "get_output_embeddings")
            inp = _call_quietly(inner, "get_input_embeddings")
            if isinstance(out, nn.Module) and out is not inp and id(out) in inner_modules:
                self.output_path = inner_modules[id(out)]


def _call_quietly(obj, name):
    """``obj.name()`` when that method exists and works, else None."""
    method = getattr(obj, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:  # models without these hooks raise NotImplementedError or AttributeError
        return None


@dataclass
class _Location:
    """Where a parameter sits once peft wrappers are seen through."""

    logical: list[str]  # module path inside the wrapped model, without base_layer/modules_to_save/lora parts
    modules: list[nn.Module | None]  # the real module at each logical component
    owner: nn.Module | None  # the module that directly holds the parameter
    leaf: str  # the parameter's attribute name
    lora: str | None  # "lora_A" / "lora_B" for adapter parameters
    in_inner: bool  # False for parameters outside the wrapped model (peft prompt encoders)


def _locate(name: str, structure: _Structure) -> _Location:
    """See through peft (:func:`~hidlr_hf.core.wrappers.bare_parts`): ``x.base_layer``, ``x.modules_to_save.<adapter>``
    and ``x.original_module`` are ``x``; ``x.lora_A.<adapter>.weight`` is a LoRA factor of ``x``."""
    parts = name.split(".")
    module_parts = parts[:-1]
    owner = structure.modules.get(".".join(module_parts))
    start = 0
    in_inner = True
    if structure.inner_path:
        inner_parts = structure.inner_path.split(".")
        in_inner = module_parts[: len(inner_parts)] == inner_parts
        if in_inner:
            start = len(inner_parts)
    bare = list(bare_parts(parts, start))
    leaf = parts[-1]
    if bare and ((bare[-1][2] is None and bare[-1][0] == len(parts) - 1) or bare[-1][2] == "bias"):
        leaf = bare.pop()[1]  # the parameter itself; a BEFT bias (`x.beft_bias.<adapter>`) comes back as "bias"
    logical: list[str] = []
    modules: list[nn.Module | None] = []
    lora = None
    for i, part, role in bare:
        if role in ("lora_A", "lora_B"):
            lora = role
            continue
        logical.append(part)
        modules.append(structure.modules.get(".".join(parts[: i + 1])))
    return _Location(logical, modules, owner, leaf, lora, in_inner)


def _block_type(component: str, module: nn.Module | None) -> str | None:
    """attention / mlp / embeddings if this one module (by class, then by path name) says so."""
    cls = type(module).__name__ if module is not None else ""
    if _ATTENTION_CLASS.search(cls) or _ATTENTION_PATH.search(component):
        return "attention"
    if _MLP_CLASS.search(cls) or _MLP_PATH.search(component):
        return "mlp"
    if _EMBEDDING_CLASS.search(cls) or _EMBEDDING_PATH.search(component):
        return "embeddings"
    return None


def _classify(loc: _Location, structure: _Structure) -> tuple[str, list[str]]:
    """module_type group of one parameter, and its path relative to the backbone (for layer indices)."""
    path, modules = loc.logical, loc.modules
    if not loc.in_inner:
        inside_base, rel, rel_modules = False, path, modules
    elif structure.base_path is not None:
        base = structure.base_path.split(".")
        inside_base = path[: len(base)] == base
        rel, rel_modules = (path[len(base) :], modules[len(base) :]) if inside_base else (path, modules)
    else:
        out = structure.output_path.split(".") if structure.output_path else None
        inside_base = out is None or path[: len(out)] != out
        rel, rel_modules = path, modules
    if loc.lora is not None:
        return loc.lora, rel
    if not inside_base:
        return HEAD_GROUP, rel
    if _is_norm(loc.owner):
        return "norm", rel
    if any(_POOLER.search(part) or _POOLER.search(type(m).__name__) for part, m in zip(rel, rel_modules)):
        return "pooler", rel
    if loc.leaf.endswith("bias"):
        return "bias", rel
    # The innermost block that names itself decides: `attention.output.dense` is attention, `output.dense` mlp.
    for part, module in zip(reversed(rel), reversed(rel_modules)):
        found = _block_type(part, module)
        if found is not None:
            return found, rel
    if rel and _ATTENTION_LEAF.match(rel[-1]):
        return "attention", rel
    if rel and _MLP_LEAF.match(rel[-1]):
        return "mlp", rel
    if not rel and _EMBEDDING_PATH.search(loc.leaf):
        return "embeddings", rel  # e.g. a bare position-embedding Parameter on the backbone itself
    return "other", rel


def _layer_slot(rel: list[str]) -> tuple[str, int] | None:
    """(stack path, layer index) from the first integer after a layer container, e.g. encoder.block.3 -> 3."""
    for i in range(len(rel) - 1):
        if rel[i] in _LAYER_CONTAINERS and rel[i + 1].isdigit():
            return ".".join(rel[:i]), int(rel[i + 1])
    return None


# transformers' Trainer.get_decay_parameter_names name patterns, so decay matches the Trainer's exactly.
_NO_DECAY_NAME = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def _is_no_decay(name: str, loc: _Location) -> bool:
    # Norm modules (by class) and names with "bias" or a norm in them skip weight decay, as in the Trainer;
    # this also covers T5's relative_attention_bias table, which the Trainer leaves undecayed.
    return _is_norm(loc.owner) or bool(_NO_DECAY_NAME.search(name.lower()))


# ----------------------------------------------------------------------------------------- grouping


def _selected(model: nn.Module, include_frozen: bool) -> list[tuple[str, nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if include_frozen or p.requires_grad]
    if not named:
        what = "parameters" if include_frozen else "trainable parameters (requires_grad=True)"
        raise HiDLRError(
            f"The model {type(model).__name__} has no {what} to group; unfreeze some parameters "
            "(or attach an adapter) before grouping."
        )
    return named


def _builtin_names(model: nn.Module, named: list[tuple[str, nn.Parameter]], by_layer: bool):
    """Group name, sort key and no-decay flag for each selected parameter under a built-in scheme."""
    structure = _Structure(model)
    # Describe every parameter, frozen ones too, so the stack layout (and thus names) never depends on freezing.
    described = {}
    for name, _ in model.named_parameters():
        loc = _locate(name, structure)
        kind, rel = _classify(loc, structure)
        slot = _layer_slot(rel) if kind in _LAYER_TYPES else None
        described[name] = (kind, slot, _is_no_decay(name, loc))
    others = [n for n, _ in named if described[n][0] == "other"]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        warnings.warn(
            f"{len(others)} parameter(s) fit no built-in group and went to group 'other': {shown}; "
            "pass a custom scheme of (regex, group_name) pairs to place them.",
            stacklevel=3,
        )
    # More than one stack of numbered layers (T5 encoder + decoder) means layer names need the stack path.
    stack_order: list[str] = []
    for _, slot, _ in described.values():
        if slot is not None and slot[0] not in stack_order:
            stack_order.append(slot[0])
    prefixed = len(stack_order) > 1
    names, keys, no_decay = [], [], []
    for name, _ in named:
        kind, slot, nd = described[name]
        no_decay.append(nd)
        if not by_layer:
            names.append(kind)
            keys.append((_TYPE_ORDER.index(kind),))
        elif slot is None:
            names.append(kind)
            # embeddings before every layer, everything else after all layers
            keys.append((0,) if kind == "embeddings" else (2, _TYPE_ORDER.index(kind)))
        else:
            stack, index = slot
            label = f"{stack}.layers.{index}" if prefixed and stack else f"layers.{index}"
            names.append(f"{label}.{kind}")
            keys.append((1, stack_order.index(stack), index, _LAYER_TYPES.index(kind)))
    return names, keys, no_decay


def _custom_names(named: list[tuple[str, nn.Parameter]], pairs: list[tuple[str, str]], include_frozen: bool):
    """Group name and sort key per parameter: the first matching pattern wins; gaps and empty groups raise."""
    compiled = [(re.compile(pattern), group) for pattern, group in pairs]
    group_order: list[str] = []
    for _, group in pairs:
        if group not in group_order:
            group_order.append(group)
    names, unmatched = [], []
    for name, _ in named:
        group = next((g for rx, g in compiled if rx.search(name)), None)
        if group is None:
            unmatched.append(name)
        names.append(group)
    what = "parameter(s)" if include_frozen else "trainable parameter(s)"
    if unmatched:
        shown = ", ".join(repr(n) for n in unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise HiDLRError(
            f"{len(unmatched)} {what} match no pattern of the custom scheme ({shown}); "
            "add a catch-all pattern such as ('.*', 'rest') at the end."
        )
    used = set(names)
    has_lora = any(part in LORA_A or part in LORA_B for name, _ in named for part in name.split("."))
    for group in group_order:
        if group not in used:
            patterns = [p for p, g in pairs if g == group]
            # A LoRA group on a model without adapters: the scheme is fine, the model is not yet.
            fix = (
                "the model has no LoRA adapter: attach one (peft.get_peft_model) before grouping, or drop the pattern"
                if not has_lora and "lora" in (group + "".join(patterns)).lower()
                else "fix or remove the pattern"
            )
            raise HiDLRError(
                f"Group {group!r} of the custom scheme (pattern {' / '.join(repr(p) for p in patterns)}) matches no "
                f"{what.replace('(s)', '')} not already claimed by an earlier pattern; {fix}."
            )
    return names, [group_order.index(g) for g in names]


def group_parameters(
    model: torch.nn.Module, scheme=defaults.GROUPING, *, include_frozen: bool = False
) -> list[ParameterGroup]:
    """Split the model's parameters into ordered, non-empty groups that each get one learning rate.

    Every trainable (``requires_grad``) parameter lands in exactly one group, in ``named_parameters()``
    order inside the group. ``include_frozen=True`` also groups parameters with ``requires_grad=False``
    (to plan what to freeze or unfreeze). ``scheme`` is anything :func:`load_scheme` accepts. Built-in
    schemes put what fits nowhere into ``other`` and warn; custom schemes raise :class:`HiDLRError` for an
    unmatched parameter or an empty group.
    """
    pairs = load_scheme(scheme)
    named = _selected(model, include_frozen)
    if isinstance(pairs, str):
        names, keys, no_decay = _builtin_names(model, named, by_layer=pairs == "module_type_by_layer")
    else:
        names, keys = _custom_names(named, pairs, include_frozen)
        structure = _Structure(model)
        no_decay = [_is_no_decay(n, _locate(n, structure)) for n, _ in named]
    buckets: dict[str, ParameterGroup] = {}
    order: dict[str, object] = {}
    for (pname, param), gname, key, nd in zip(named, names, keys, no_decay):
        group = buckets.get(gname)
        if group is None:
            group = buckets[gname] = ParameterGroup(gname, [], [], [])
            order[gname] = key
        group.param_names.append(pname)
        group.params.append(param)
        group.no_decay.append(nd)
    return [buckets[g] for g in sorted(buckets, key=lambda g: order[g])]


def optimizer_param_groups(groups: list[ParameterGroup], weight_decay: float, lr: float | None = None) -> list[dict]:
    """``torch.optim`` param-group dicts: each group becomes a decay dict and/or a no-decay dict.

    Every dict has ``params``, ``param_names``, ``weight_decay`` (``weight_decay`` or ``0.0`` for
    norm weights and biases) and ``hidlr_group`` (the group's name), plus ``lr`` when ``lr`` is given.
    Empty halves are left out, so a group of only biases gives one dict.
    """
    result = []
    for group in groups:
        for no_decay in (False, True):
            idx = [i for i, nd in enumerate(group.no_decay) if nd == no_decay]
            if not idx:
                continue
            entry = {
                "params": [group.params[i] for i in idx],
                "param_names": [group.param_names[i] for i in idx],
                "weight_decay": 0.0 if no_decay else float(weight_decay),
                "hidlr_group": group.name,
            }
            if lr is not None:
                entry["lr"] = lr
            result.append(entry)
    return result


def group_of_parameter(model: torch.nn.Module, scheme=defaults.GROUPING, *, include_frozen: bool = False) -> dict[str, str]:
    """Map each grouped parameter's name to its group's name (a convenience view of :func:`group_parameters`)."""
    return {
        pname: group.name
        for group in group_parameters(model, scheme, include_frozen=include_frozen)
        for pname in group.param_names
    }
