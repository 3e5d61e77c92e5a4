"""Freezing groups (hidlr_hf/core/freezing.py): LR 0, no gradient, no optimizer state, the layout unchanged."""

import pytest
import torch
from conftest import tiny_roberta, toy_dataset
from toy_problems import mse, regression, two_linears

from hidlr_hf import HiDLR, HiDLRError, HiDLRTrainer, HiDLRTrainingArguments
from hidlr_hf.core.freezing import copy_bytes, copy_groups, drop_frozen_grads, freeze_groups


def test_freeze_groups_in_a_plain_loop():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 1e-2,
                                                                      "weight_decay": 0.1}])
    hidlr = HiDLR(opt, every=1)
    opt.zero_grad()
    mse(a, b, X[:8], y[:8]).backward()
    hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    assert b.weight in opt.state
    freeze_groups(hidlr, [True, False])
    assert hidlr.base_rates[1] == 0.0 and hidlr.base_rates[0] > 0
    assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[1]["weight_decay"] == 0.0
    assert all(not p.requires_grad and p.grad is None and p not in opt.state for p in b.parameters())
    assert len(opt.param_groups) == 2  # the layout a checkpoint needs is unchanged
    frozen = [p.detach().clone() for p in b.parameters()]
    for _ in range(3):
        opt.zero_grad()
        mse(a, b, X[:8], y[:8]).backward()
        b.bias.grad = torch.ones_like(b.bias)  # a stray gradient (DDP keeps them) is dropped before the step
        b.bias.requires_grad_(False)
        drop_frozen_grads(hidlr, [True, False])
        hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), frozen))


def test_every_group_frozen_is_refused(tmp_path):
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_strategy="no", hidlr_every="1",
    )
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    trainer.train()
    rates = list(trainer.hidlr.base_rates)
    with pytest.raises(HiDLRError, match="Every group would be frozen"):
        freeze_groups(trainer.hidlr, [False] * trainer.hidlr.num_groups)
    assert trainer.hidlr.base_rates == rates  # nothing changed


def test_freeze_groups_returns_frozen_groups_to_their_initial_values():
    X, y = regression()
    a, b = two_linears()
    opt = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-2}, {"params": b.parameters(), "lr": 1e-2}])
    hidlr = HiDLR(opt, every=1)
    initial = copy_groups(hidlr, [0, 1])
    assert copy_bytes(initial) == 4 * sum(p.numel() for p in [*a.parameters(), *b.parameters()])
    assert all(t.device.type == "cpu" for ts in initial.values() for t in ts)
    for _ in range(3):
        opt.zero_grad()
        mse(a, b, X[:8], y[:8]).backward()
        hidlr.step(lambda: mse(a, b, X[100:132], y[100:132]))
    assert not torch.equal(b.weight, initial[1][0])
    with pytest.raises(HiDLRError, match="No matching initial values"):
        freeze_groups(hidlr, [True, False], initial={0: initial[0]})
    assert hidlr.base_rates[1] > 0 and not torch.equal(b.weight, initial[1][0])  # a refused freeze changes nothing
    trained_a = [p.detach().clone() for p in a.parameters()]
    freeze_groups(hidlr, [True, False], initial=initial)
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), initial[1]))  # bit for bit
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), trained_a))  # the kept group is untouched
