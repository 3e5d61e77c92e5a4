"""hidlr-hf: Hessian-informed differential learning rates (Hi-DLR) for PyTorch and Hugging Face.

The core (:mod:`hidlr_hf.core`: grouping, estimation, rate control, influence, selection, the :class:`HiDLR`
engine) is plain PyTorch. The Hugging Face layer (:mod:`hidlr_hf.trainer`: ``HiDLRTrainer``,
``HiDLRTrainingArguments``, ``HiDLRCallback``; :mod:`hidlr_hf.peft`: the adapter export) is imported lazily, so
``import hidlr_hf`` never pulls in ``transformers``. The method is described in docs/METHOD.md.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "HiDLR": "hidlr_hf.core.engine",
    "Estimate": "hidlr_hf.core.engine",
    "HiDLRError": "hidlr_hf.errors",
    "group_parameters": "hidlr_hf.core.grouping",
    "optimizer_param_groups": "hidlr_hf.core.grouping",
    "ParameterGroup": "hidlr_hf.core.grouping",
    "select": "hidlr_hf.core.selection",
    "parse_budget": "hidlr_hf.core.selection",
    "build_mask": "hidlr_hf.peft",
    "export_adapter": "hidlr_hf.peft",
    "mask_to_peft_config": "hidlr_hf.peft",
    "mask_for_model": "hidlr_hf.peft",
    "HiDLRConfig": "hidlr_hf.trainer.config",
    "HiDLRTrainingArguments": "hidlr_hf.trainer.config",
    "HiDLRTrainer": "hidlr_hf.trainer.trainer",
    "HiDLRCallback": "hidlr_hf.trainer.callback",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hidlr_hf' has no attribute {name!r}")
