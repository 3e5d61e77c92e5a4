"""The engine on 2 CPU processes (gloo) without a Trainer: ``python engine_ranks.py MODE OUT``.

Each rank trains the toy regression of ``toy_problems`` on its own rows, with gradients averaged as DDP does, and
its own slice of the probe batch; it writes ``OUT/rank<r>.json`` (statuses, rates, parameters, error). MODE:
``ok``; ``one_rank_fails`` (rank 1's closure raises in the round of step 2); ``mismatch`` (rank 1's rates are
changed behind the engine's back before step 2). A collective that waits too long fails after 30 seconds.
"""

import datetime
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from toy_problems import mse, regression, two_linears  # noqa: E402

from hidlr_hf import HiDLR, HiDLRError  # noqa: E402

STEPS = 4


def worker(rank: int, mode: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=2,
        timeout=datetime.timedelta(seconds=30),
    )
    X, y = regression()
    a, b = two_linears()
    params = [*a.parameters(), *b.parameters()]
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 3e-2}])
    hidlr = HiDLR(opt, every=1)
    result = {"statuses": [], "rates": [], "error": None}
    try:
        for step in range(STEPS):
            opt.zero_grad()
            rows = slice(step * 8 + rank * 4, step * 8 + rank * 4 + 4)
            mse(a, b, X[rows], y[rows]).backward()
            for p in params:  # what DDP does
                dist.all_reduce(p.grad)
                p.grad /= 2
            calls = []

            def closure():
                calls.append(1)
                if mode == "one_rank_fails" and rank == 1 and step == 2 and len(calls) == 3:
                    raise RuntimeError("probe batch failed on rank 1 only")
                probe = slice(100 + rank * 16, 116 + rank * 16)
                return mse(a, b, X[probe], y[probe])

            if mode == "mismatch" and rank == 1 and step == 2:
                hidlr.set_base_rates([2 * r for r in hidlr.base_rates])
            result["statuses"].append(hidlr.step(closure).status)
            result["rates"].append(list(hidlr.base_rates))
    except HiDLRError as exc:
        result["error"] = str(exc)
    result["params"] = [p.detach().flatten().tolist() for p in params]
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump(result, fh)
    # Both ranks finish before gloo is torn down, as in train_tiny.py. Even so, about one run in 40 aborted a rank
    # after this point, with its results already written ("terminate called without an active exception": gloo's
    # threads at interpreter exit); the process therefore leaves without the interpreter's finalisation.
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    mp.spawn(worker, args=(sys.argv[1], sys.argv[2]), nprocs=2)
