"""From a Hi-DLR selection to a ``peft`` adapter (docs/METHOD.md section 12).

* :mod:`~hidlr_hf.peft.mask`: the JSON mask of a selection (``hidlr_mask.json``) and its depth-independent form;
* :mod:`~hidlr_hf.peft.config`: the closest faithful ``peft`` config for a mask's kept set, and what it cannot express;
* :mod:`~hidlr_hf.peft.weights`: the trained values of what the config adapts, written by peft itself
  (``adapter_model.safetensors``), and whether they rebuild the trained model on the base;
* :mod:`~hidlr_hf.peft.base_name`: the base model's name the adapter records (never a path inside a package);
* :mod:`~hidlr_hf.peft.adapter`: writing the adapter folder (config, weights, mask);
* :mod:`~hidlr_hf.peft.transfer`: applying a selection to another model of the same family.

Depends on :mod:`hidlr_hf.core` and, inside the functions that need it, on the ``peft`` library; importing this
package imports neither ``peft`` nor ``transformers``. Exporting from a training run (``hidlr_state.json``) is
:mod:`hidlr_hf.trainer.export`.
"""

from hidlr_hf.core.wrappers import canonical_name

from .adapter import export_adapter
from .config import mask_to_peft_config
from .mask import MASK_FORMAT, build_mask, relative_selection
from .transfer import apply_relative_selection, mask_for_model

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
