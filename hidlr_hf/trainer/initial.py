"""``hidlr_initial.safetensors``: the pretrained values automatic PEFT restores, kept across checkpoints.

Honest freezing (docs/METHOD.md section 8) puts every frozen group back to the value it had when training started.
The controller copies the candidate groups (every group but the task head) to CPU at the start of training; a run
resumed from a checkpoint cannot re-read them from its model (that holds the checkpoint's trained values) nor, in
general, from the base model (a random or locally changed start has no base to re-read), so each checkpoint stores
the copy the controller holds: before the freeze, every candidate group (about the size of the model); after it,
only the kept candidate groups (the budget's size), whose pretrained values an exported BEFT adapter needs for its
additive biases. Frozen groups need no copy after the freeze: the model's own checkpoint holds them at their
pretrained values. Safetensors, keyed by parameter name (``model.named_parameters()``), nothing pickled.
"""

from __future__ import annotations

import os

import torch

from hidlr_hf.errors import HiDLRError

__all__ = ["INITIAL_FILE", "read_initial", "read_initial_by_name", "write_initial"]

INITIAL_FILE = "hidlr_initial.safetensors"


def write_initial(folder: str, values: dict[int, list[torch.Tensor]], group_param_names: list) -> str:
    """Write a copy of groups' initial values (``{group index: tensors}``) to ``<folder>/hidlr_initial.safetensors``."""
    from safetensors.torch import save_file

    tensors = {}
    for k, saved in values.items():
        for name, tensor in zip(group_param_names[k], saved):
            tensors[name] = tensor.detach().to("cpu").contiguous()
    path = os.path.join(folder, INITIAL_FILE)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata={"format": "pt", "hidlr": "initial values of candidate groups"})
    os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous file or none
    return path


def read_initial_by_name(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of the file by parameter name (CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (OSError, SafetensorError) as exc:
        raise HiDLRError(
            f"{path} is corrupt ({type(exc).__name__}: {exc}); resume from another checkpoint, or delete the file to "
            "let frozen groups keep their trained values."
        ) from exc


def read_initial(path: str, group_param_names: list) -> dict[int, list[torch.Tensor]]:
    """The groups whose every parameter is in the file, as ``{group index: tensors}`` (CPU)."""
    tensors = read_initial_by_name(path)
    return {
        k: [tensors[n] for n in names]
        for k, names in enumerate(group_param_names)
        if names and all(n in tensors for n in names)
    }
