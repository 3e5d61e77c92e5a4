"""Checkpoints and resume (docs/METHOD.md section 11): hidlr_state.json, its one reader, and runs that continue
exactly where they stopped."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_roberta, toy_dataset

from hidlr_hf import HiDLRError, HiDLRTrainer, HiDLRTrainingArguments
from hidlr_hf.trainer.state import STATE_FORMAT, find_state_file, read_state, write_state

sys.path.insert(0, str(REPO / "tests" / "scripts"))
from train_tiny import final_state  # noqa: E402


def assert_identical(got, want, where="state"):
    """Bit for bit: the same keys and lengths, every tensor ``torch.equal`` with the same dtype, every number equal."""
    assert type(got) is type(want), where
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want), where
    elif isinstance(want, dict):
        assert sorted(got, key=str) == sorted(want, key=str), where
        for key in want:
            assert_identical(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_identical(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert math.isnan(got), where
    else:
        assert got == want, where


def lr_logs(history):
    return [{k: v for k, v in h.items() if k.startswith("hidlr/lr/")} for h in history if "loss" in h]


def run_script(tmp_path, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path), max_steps=8, per_device_train_batch_size=8, logging_steps=2, report_to="none",
        learning_rate=1e-4, seed=0, save_strategy="no", disable_tqdm=True,
    )
    kwargs.update(overrides)
    trainer = HiDLRTrainer(model=tiny_roberta(), args=HiDLRTrainingArguments(**kwargs), train_dataset=toy_dataset())
    trainer.train()
    return trainer


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_matches_uninterrupted_run(tmp_path, accumulation):
    common = dict(
        max_steps=8, per_device_train_batch_size=8, logging_steps=1, report_to="none", learning_rate=1e-4, seed=0,
        save_strategy="steps", save_steps=4, disable_tqdm=True, hidlr_every="auto", hidlr_calibration_rounds=3,
        gradient_accumulation_steps=accumulation, warmup_steps=2,
    )
    straight = HiDLRTrainer(
        model=tiny_roberta(), args=HiDLRTrainingArguments(output_dir=str(tmp_path / "a"), **common), train_dataset=toy_dataset()
    )
    straight.train()
    checkpoint = tmp_path / "a" / "checkpoint-4"
    assert (checkpoint / "hidlr_state.json").is_file()

    resumed = HiDLRTrainer(
        model=tiny_roberta(seed=1), args=HiDLRTrainingArguments(output_dir=str(tmp_path / "b"), **common), train_dataset=toy_dataset()
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # Bit for bit: parameters, every optimizer state tensor, the scheduler, the Hi-DLR state (rates, schedule of
    # rounds, influence, history), and the rates logged after the checkpoint.
    assert_identical(final_state(resumed), final_state(straight))
    assert lr_logs(resumed.state.log_history)[-4:] == lr_logs(straight.state.log_history)[-4:]
    assert resumed.hidlr.num_rounds == straight.hidlr.num_rounds > 4


def test_resume_without_hidlr_state_warns_and_starts_fresh(tmp_path):
    common = dict(max_steps=4, per_device_train_batch_size=8, report_to="none", save_steps=2, disable_tqdm=True, hidlr_every="1")
    t = HiDLRTrainer(model=tiny_roberta(), args=HiDLRTrainingArguments(output_dir=str(tmp_path / "a"), **common), train_dataset=toy_dataset())
    t.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    os.remove(ckpt / "hidlr_state.json")
    r = HiDLRTrainer(model=tiny_roberta(), args=HiDLRTrainingArguments(output_dir=str(tmp_path / "b"), **common), train_dataset=toy_dataset())
    with pytest.warns(UserWarning, match="fresh Hi-DLR state"):
        r.train(resume_from_checkpoint=str(ckpt))


def test_resume_with_corrupt_hidlr_state_is_a_clear_error(tmp_path):
    common = dict(max_steps=4, per_device_train_batch_size=8, report_to="none", save_steps=2, disable_tqdm=True, hidlr_every="1")
    t = HiDLRTrainer(model=tiny_roberta(), args=HiDLRTrainingArguments(output_dir=str(tmp_path / "a"), **common), train_dataset=toy_dataset())
    t.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    (ckpt / "hidlr_state.json").write_text('{"engine": {"base_rates": [1, 2')
    r = HiDLRTrainer(model=tiny_roberta(), args=HiDLRTrainingArguments(output_dir=str(tmp_path / "b"), **common), train_dataset=toy_dataset())
    with pytest.raises(HiDLRError, match="corrupt"):
        r.train(resume_from_checkpoint=str(ckpt))



def test_state_file_is_json(tmp_path):
    run_script(tmp_path, save_strategy="steps", save_steps=4, max_steps=4, hidlr_every="1")
    state = json.loads((tmp_path / "checkpoint-4" / "hidlr_state.json").read_text())
    assert state["format"] == "hidlr-state/1"
    assert len(state["engine"]["base_rates"]) == len(state["groups"])


def test_state_files_are_json_and_checkpoints_load_weights_only(tmp_path):
    args = HiDLRTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none", disable_tqdm=True,
        save_steps=2, hidlr_every="1",
    )
    HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset()).train()
    ckpt = tmp_path / "checkpoint-2"
    json.loads((ckpt / "hidlr_state.json").read_text())  # plain JSON, nothing pickled
    assert not [p for p in os.listdir(ckpt) if p.startswith("hidlr") and not p.endswith(".json")]
    torch.load(ckpt / "optimizer.pt", weights_only=True)  # the optimizer state (with Hi-DLR groups) is safe to load


def test_sigkill_between_checkpoints_then_resume_reproduces_run(tmp_path):
    script = REPO / "tests" / "scripts" / "kill_and_resume.py"
    common = [
        "--use_cpu", "true", "--max_steps", "8", "--per_device_train_batch_size", "8", "--report_to", "none",
        "--learning_rate", "1e-4", "--seed", "0", "--hidlr_every", "auto", "--hidlr_calibration_rounds", "3",
        "--save_strategy", "steps", "--save_steps", "3", "--hidlr_max_probe_scale", "16", "--logging_steps", "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    def run(out, *extra):
        return subprocess.run(
            [sys.executable, str(script), "--output_dir", str(out), *common, *extra],
            env=env, capture_output=True, text=True, timeout=600,
        )

    straight = run(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run(tmp_path / "killed", "--kill_at_step", "5")
    assert killed.returncode == -9  # SIGKILL: no cleanup ran
    assert (tmp_path / "killed" / "checkpoint-3" / "hidlr_state.json").is_file()
    resumed = run(tmp_path / "resumed", "--resume", str(tmp_path / "killed" / "checkpoint-3"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # On CPU with a fixed seed the resumed run is the uninterrupted one, bit for bit: parameters, every optimizer
    # state tensor, the scheduler, and the Hi-DLR state (rates, schedule of rounds, influence, history).
    a = torch.load(tmp_path / "straight" / "final_state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "final_state.pt", weights_only=True)
    assert_identical(b, a)
    assert a["hidlr"]["num_rounds"] > 3 and a["optimizer"]["state"]


def test_state_file_round_trip_and_one_set_of_checks(tmp_path):
    trainer = run_script(tmp_path / "run", max_steps=2, hidlr_every="1")
    state = trainer.hidlr_controller.state()
    path = write_state(str(tmp_path), state)
    assert read_state(path) == json.loads(json.dumps(state))  # what was written is what is read
    assert find_state_file(str(tmp_path)) == path
    broken = [
        {**state, "format": "hidlr-state/0"},
        {k: v for k, v in state.items() if k != "groups"},
        {**state, "groups": state["groups"][:-1]},
        {**state, "engine": {k: v for k, v in state["engine"].items() if k != "influence"}},
    ]
    for i, bad in enumerate(broken):
        folder = tmp_path / f"bad{i}"
        folder.mkdir()
        with pytest.raises(HiDLRError, match=r"hidlr_state\.json is corrupt .*use another checkpoint"):
            read_state(write_state(str(folder), bad))
    assert state["format"] == STATE_FORMAT
