"""``Trainer.hyperparameter_search`` (Optuna) with Hi-DLR: each trial its own settings, engine and ``hidlr_state.json``.

A trial's checkpoints go to ``<output_dir>/run-<n>/checkpoint-<step>``; its Hi-DLR state must be there, hold that
trial's settings, and equal the state of a separate run with the same settings (so nothing of an earlier trial's
engine leaks into a later one).
"""

import json
import os

import pytest
from conftest import tiny_roberta, toy_dataset
from transformers import Trainer, TrainingArguments

from hidlr_hf import HiDLRCallback, HiDLRError, HiDLRTrainer, HiDLRTrainingArguments

optuna = pytest.importorskip("optuna")

# Two trials far apart in learning rate and horizon, so a state from the wrong trial cannot pass for the right one.
TRIALS = [{"learning_rate": 1e-3, "hidlr_horizon": 4.0}, {"learning_rate": 1e-5, "hidlr_horizon": 16.0}]
FAST = dict(
    max_steps=4, per_device_train_batch_size=8, per_device_eval_batch_size=16, save_strategy="steps", save_steps=2,
    logging_steps=2, report_to="none", seed=0, disable_tqdm=True,
)


def new_model():
    return tiny_roberta()  # model_init takes no argument (tiny_roberta's are its shape)


def read(folder):
    with open(os.path.join(folder, "hidlr_state.json")) as fh:
        return json.load(fh)


def search(trainer, n_trials=2):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return trainer.hyperparameter_search(
        hp_space=lambda trial: TRIALS[trial.number], n_trials=n_trials, direction="minimize", backend="optuna",
        compute_objective=lambda metrics: metrics["eval_loss"],
    )


def test_each_trial_saves_its_own_hidlr_state_in_its_checkpoints(tmp_path):
    args = HiDLRTrainingArguments(output_dir=str(tmp_path / "search"), hidlr_every="1", hidlr_head_phase=0, **FAST)
    trainer = HiDLRTrainer(model_init=new_model, args=args, train_dataset=toy_dataset(),
                           eval_dataset=toy_dataset(16, seed=1))
    search(trainer)

    for number, chosen in enumerate(TRIALS):
        run = tmp_path / "search" / f"run-{number}"
        # The reference: the same settings in a run of their own, from a fresh Trainer.
        alone = HiDLRTrainer(
            model_init=new_model, train_dataset=toy_dataset(),
            args=HiDLRTrainingArguments(output_dir=str(tmp_path / f"alone-{number}"), hidlr_every="1",
                                        hidlr_head_phase=0, **FAST, **chosen),
        )
        alone.train()
        for step in (2, 4):
            state = read(run / f"checkpoint-{step}")
            assert state["settings"]["hidlr_horizon"] == chosen["hidlr_horizon"]
            engine = state["engine"]
            assert engine["num_steps"] == step  # a later trial does not continue an earlier trial's engine
            reference = read(tmp_path / f"alone-{number}" / f"checkpoint-{step}")["engine"]
            assert engine["base_rates"] == reference["base_rates"]
            assert [r["rates"] for r in engine["history"]] == [r["rates"] for r in reference["history"]]
        # The final state sits beside the trial's checkpoints, not in the search's folder where trials would collide.
        assert read(run)["engine"]["num_steps"] == 4
    assert not (tmp_path / "search" / "hidlr_state.json").exists()
    first, second = (read(tmp_path / "search" / f"run-{n}" / "checkpoint-4")["engine"] for n in (0, 1))
    assert first["base_rates"] != second["base_rates"]


def test_callback_form_saves_each_trials_state(tmp_path):
    """A plain Trainer with ``HiDLRCallback.attach``: trials set ``learning_rate`` (plain ``TrainingArguments`` have
    no ``hidlr_*`` fields), and ``attach``'s keyword settings hold in every trial."""
    args = TrainingArguments(output_dir=str(tmp_path), **{**FAST, "max_steps": 2})
    trainer = Trainer(model_init=new_model, args=args, train_dataset=toy_dataset(),
                      eval_dataset=toy_dataset(16, seed=1))
    HiDLRCallback.attach(trainer, hidlr_every="1", hidlr_horizon=5.0)
    search(trainer)
    states = [read(tmp_path / f"run-{n}" / "checkpoint-2") for n in (0, 1)]
    assert all(s["settings"]["hidlr_horizon"] == 5.0 and s["engine"]["num_steps"] == 2 for s in states)
    assert states[0]["engine"]["base_rates"] != states[1]["engine"]["base_rates"]


def test_a_trial_cannot_turn_hidlr_off(tmp_path):
    """Hi-DLR is on or off when the Trainer is built; a trial that sets ``hidlr`` false is refused, saying what to do."""
    args = HiDLRTrainingArguments(output_dir=str(tmp_path), **FAST)
    trainer = HiDLRTrainer(model_init=new_model, args=args, train_dataset=toy_dataset(),
                           eval_dataset=toy_dataset(16, seed=1))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with pytest.raises(HiDLRError, match="leave `hidlr` out of the hp_space"):
        trainer.hyperparameter_search(hp_space=lambda trial: {"hidlr": False}, n_trials=1, backend="optuna")
