"""benchmarks/hidlr_bench/realised.py: the dev loop's realised-slope diagnostic records g_{t+j} . u_t exactly."""

import math

import pytest
import torch
from conftest import tiny_roberta, toy_dataset
from transformers import TrainerCallback

from hidlr_bench.realised import RealisedSlope, summarise
from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments


class Recorder(TrainerCallback):
    """An independent record: every parameter before and after each optimizer step, and each step's gradient."""

    def __init__(self, trainer):
        self.trainer, self.before, self.after, self.grads = trainer, [], [], []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        params = dict(self.trainer.model.named_parameters())
        self.before.append({n: p.detach().clone() for n, p in params.items()})
        self.grads.append({n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None})

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.after.append({n: p.detach().clone() for n, p in self.trainer.model.named_parameters()})


def test_slopes_are_the_later_gradients_dotted_with_the_step_a_round_took(tmp_path):
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=8, report_to="none", learning_rate=1e-3,
        seed=0, save_strategy="no", disable_tqdm=True, hidlr_every="3", hidlr_head_phase=0.0, max_grad_norm=0.0,
    )
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    realised = RealisedSlope(trainer, window=2)
    recorder = Recorder(trainer)
    trainer.add_callback(realised)
    trainer.add_callback(recorder)
    trainer.train()

    engine = trainer.hidlr
    rounds = [h["step"] for h in engine.history if h["status"] == "ok"]
    assert [r["step"] for r in realised.rounds] == rounds == [0, 3]
    names = dict(trainer.model.named_parameters())
    owner = {}  # parameter name -> Hi-DLR group name
    for k, indices in enumerate(engine.param_group_indices):
        for i in indices:
            for p in trainer.optimizer.param_groups[i]["params"]:
                owner.update({n: engine.group_names[k] for n, q in names.items() if q is p})
    for entry in realised.rounds:
        t = entry["step"]
        assert len(entry["slopes"]) == 2 and entry["clipped"] == [False, False]
        for j, slopes in enumerate(entry["slopes"], start=1):
            expected = {}
            for n, g in recorder.grads[t + j].items():
                u = (recorder.before[t][n] - recorder.after[t][n]).double()
                expected[owner[n]] = expected.get(owner[n], 0.0) + float((g.double() * u).sum())
            assert set(slopes) == set(expected)
            for group, value in slopes.items():
                assert value == pytest.approx(expected[group], rel=1e-9, abs=1e-15)
            assert any(v != 0 for v in slopes.values())


def test_summary_compares_the_probes_prediction_with_the_realised_mean():
    rounds = [{"step": 10, "phase": "steady", "groups": ["attention", "head"], "b": [2.0, None], "A": [100.0, 1.0],
               "base_rate": [1e-3, 1e-2], "rate_in_force": [5e-4, 5e-3],
               "slopes": [{"attention": 1e-3, "head": 0.5}, {"attention": 3e-3, "head": 0.1},
                          {"attention": -1e-3, "head": 0.2}, {"attention": 1e-3, "head": 0.2}],
               "clipped": [True, False, False, False]}]
    (row,) = summarise(rounds)  # the head has no b this round: no prediction to compare with
    assert row["group"] == "attention" and row["steps"] == 4 and row["clipped"] == 0.25
    assert row["predicted"] == pytest.approx(5e-4 * (2.0 - 5e-4 * 100.0))
    assert row["realised"] == pytest.approx(1e-3)
    assert row["std_error"] == pytest.approx(math.sqrt(((0.0) ** 2 + 2e-3 ** 2 + 2e-3 ** 2 + 0.0) / 3) / 2)
    assert row["first_half"] == pytest.approx(2e-3) and row["second_half"] == pytest.approx(0.0)


def test_a_window_below_one_is_refused():
    with pytest.raises(ValueError, match="window must be >= 1"):
        RealisedSlope(trainer=None, window=0)


def test_no_record_without_hidlr(tmp_path):
    args = HiDLRTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                                  report_to="none", save_strategy="no", disable_tqdm=True, hidlr=False)
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset())
    realised = RealisedSlope(trainer, window=2)
    trainer.add_callback(realised)
    trainer.train()
    assert realised.rounds == [] and torch.is_grad_enabled()
