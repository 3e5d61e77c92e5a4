"""Probe losses across processes (docs/METHOD.md section 10): every rank must set identical rates.

Probe forwards run on the unwrapped model, outside DDP's hooks, so each rank sees its own slice of the probe batch;
their losses are averaged here before any rate is computed. Plain ``torch.distributed``, no launcher assumed.
"""

from __future__ import annotations

import torch


def world_size() -> int:
    """Number of processes of the initialised default group; 1 without ``torch.distributed``."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def device() -> torch.device:
    """Where collectives run: the current CUDA device under NCCL, else the CPU."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def mean_across_ranks(losses: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of ``losses`` (all-reduce in float64)."""
    import torch.distributed as dist

    buffer = losses.to(device(), torch.float64).clone()
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer / dist.get_world_size()


def min_max_across_ranks(values: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Element-wise minimum and maximum over ranks of ``values`` (float64)."""
    import torch.distributed as dist

    values = torch.tensor(values, dtype=torch.float64, device=device())
    low, high = values.clone(), values.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return low, high
