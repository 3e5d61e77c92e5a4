"""Probe losses across processes (docs/METHOD.md section 10): every rank must set identical rates.

Probe forwards run on the unwrapped model, outside DDP's hooks, so each rank sees its own slice of the probe batch;
their losses are averaged here before any rate is computed. Plain ``torch.distributed``, no launcher assumed.
"""

from __future__ import annotations

import torch

from hidlr_hf.errors import HiDLRError


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


def reduce_losses(losses: torch.Tensor, loss_reduce) -> torch.Tensor:
    """``losses`` averaged over ranks with ``loss_reduce`` (``"auto"``: :func:`mean_across_ranks` when there are
    several, a callable, or None), as float64 on the CPU."""
    losses = losses.detach()
    reduce = loss_reduce
    if reduce == "auto":
        reduce = mean_across_ranks if world_size() > 1 else None
    if reduce is not None:
        losses = reduce(losses)
    return losses.to("cpu", torch.float64)


def check_same_rates(rates: list[float], loss_reduce, step: int) -> None:
    """All ranks must hold identical rates after a round; a mismatch is a :class:`HiDLRError`, never ignored.

    Checked only where the engine reduces losses itself (``loss_reduce="auto"``) over several ranks."""
    if loss_reduce != "auto" or world_size() <= 1:
        return
    low, high = min_max_across_ranks(rates)
    if not torch.equal(low, high):
        raise HiDLRError(
            f"Hi-DLR rates differ across ranks after step {step} (min {low.tolist()}, max {high.tolist()}); every "
            "rank must run the same probe rounds."
        )
