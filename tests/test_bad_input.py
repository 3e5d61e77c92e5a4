"""Bad input refused before anything is written: training sets Hi-DLR cannot probe, a freeze after the last step,
settings out of range at construction, and ``hidlr export`` with a broken state, budget or output folder.

``hidlr-glue``'s own bad-input cases are in ``test_glue_cli.py``.
"""

import json
import os

import pytest
import torch
from conftest import tiny_roberta, toy_dataset

from hidlr_hf import HiDLR, HiDLRCallback, HiDLRError, HiDLRTrainer, HiDLRTrainingArguments
from hidlr_hf.cli import main as hidlr_main


def files_under(folder) -> set:
    """Every file below ``folder`` (relative paths); empty when the folder does not exist."""
    found = set()
    for root, _dirs, names in os.walk(folder):
        found |= {os.path.relpath(os.path.join(root, n), folder) for n in names}
    return found


def training_args(out, **overrides):
    kwargs = dict(
        output_dir=str(out), max_steps=2, per_device_train_batch_size=8, report_to="none", save_strategy="steps",
        save_steps=1, disable_tqdm=True, hidlr_every="1", hidlr_max_probe_scale=1.0,
    )
    kwargs.update(overrides)
    return HiDLRTrainingArguments(**kwargs)


# ------------------------------------------------------------------------------------- training set


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from toy_dataset(n=16)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: toy_dataset(n=16).select([]), "The training set is empty"),
        (lambda: toy_dataset(n=5), "has 5 rows, fewer than one probe batch .* --hidlr_probe_batch_size 5 "),
        (lambda: toy_dataset(n=16).to_iterable_dataset(), "needs a map-style dataset"),
        (Stream, "Stream; Hi-DLR draws probe batches by index"),
    ],
    ids=["empty", "fewer-rows-than-a-probe-batch", "datasets-iterable", "torch-iterable"],
)
def test_unusable_training_set_is_refused_when_the_trainer_is_built(tmp_path, make, match):
    out = tmp_path / "out"
    with pytest.raises(HiDLRError, match=match) as info:
        HiDLRTrainer(model=tiny_roberta(), args=training_args(out), train_dataset=make())
    assert "\n" not in str(info.value)
    assert files_under(out) == set()


def test_probe_batch_size_counts_not_the_training_batch(tmp_path):
    # 5 rows are enough for probe batches of 4, even with training batches of 8.
    HiDLRTrainer(model=tiny_roberta(), args=training_args(tmp_path, hidlr_probe_batch_size=4), train_dataset=toy_dataset(n=5))
    with pytest.raises(HiDLRError, match="fewer than one probe batch"):
        HiDLRTrainer(model=tiny_roberta(), args=training_args(tmp_path, hidlr_probe_batch_size=6),
                     train_dataset=toy_dataset(n=5))


def test_training_set_given_later_is_checked_when_training_starts(tmp_path):
    out = tmp_path / "out"
    trainer = HiDLRTrainer(model=tiny_roberta(), args=training_args(out), train_dataset=toy_dataset(n=32))
    trainer.train_dataset = toy_dataset(n=3)
    with pytest.raises(HiDLRError, match="has 3 rows, fewer than one probe batch"):
        trainer.train()
    assert files_under(out) == set()


def test_plain_trainer_with_attach_refuses_an_empty_training_set(tmp_path):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", per_device_train_batch_size=8)
    trainer = Trainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(n=16).select([]))
    with pytest.raises(HiDLRError, match="The training set is empty"):
        HiDLRCallback.attach(trainer)


def test_hidlr_off_leaves_the_training_set_to_the_trainer(tmp_path):
    # Hi-DLR off is the plain Trainer: a small training set is fine there.
    HiDLRTrainer(model=tiny_roberta(), args=training_args(tmp_path, hidlr=False), train_dataset=toy_dataset(n=3))


# ------------------------------------------------------------------------------------- freezing after the end


def test_freeze_after_the_last_step_is_refused_when_max_steps_is_given(tmp_path):
    out = tmp_path / "out"
    args = training_args(out, max_steps=4, hidlr_freeze_at="5", hidlr_trainable_budget="top1")
    with pytest.raises(HiDLRError, match=r"--hidlr_freeze_at 5 is after the last optimizer step \(4\)"):
        HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(n=32))
    assert files_under(out) == set()
    # The last step itself is allowed, and so is any fraction.
    HiDLRTrainer(model=tiny_roberta(), args=training_args(out, max_steps=4, hidlr_freeze_at="4",
                                                          hidlr_trainable_budget="top1"), train_dataset=toy_dataset(n=32))


def test_freeze_after_the_last_step_is_refused_at_train_start_with_epochs(tmp_path):
    out = tmp_path / "out"
    # 32 rows, batches of 8, 1 epoch: 4 steps, known only when training starts.
    args = training_args(out, max_steps=-1, num_train_epochs=1, hidlr_freeze_at="9", hidlr_trainable_budget="top1")
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(n=32))
    with pytest.raises(HiDLRError, match=r"--hidlr_freeze_at 9 is after the last optimizer step \(4\)"):
        trainer.train()
    assert files_under(out) == set()


# ------------------------------------------------------------------------------------- settings at construction


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"overhead_budget": 0.0}, "overhead_budget must lie in"),
        ({"overhead_budget": 1.0}, "overhead_budget must lie in"),
        ({"overhead_budget": float("nan")}, "overhead_budget must lie in"),
        ({"trust_region": 0.5}, "trust_region must be >= 1"),
        ({"trust_region": float("nan")}, "trust_region must be >= 1"),
    ],
)
def test_engine_refuses_settings_out_of_range_at_construction(kwargs, match):
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(HiDLRError, match=match):
        HiDLR(optimizer, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidlr_overhead_budget": 0.0}, "--hidlr_overhead_budget must lie in"),
        ({"hidlr_overhead_budget": -0.1}, "--hidlr_overhead_budget must lie in"),
        ({"hidlr_trust_region": 0.9}, "--hidlr_trust_region must be >= 1"),
    ],
)
def test_training_arguments_refuse_settings_out_of_range_at_construction(tmp_path, kwargs, match):
    with pytest.raises(HiDLRError, match=match):
        HiDLRTrainingArguments(output_dir=str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------- hidlr export


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-step run without automatic PEFT: its final model and hidlr_state.json (export needs --budget)."""
    folder = tmp_path_factory.mktemp("run")
    args = training_args(folder, save_strategy="no", hidlr_grouping="module_type_by_layer")
    trainer = HiDLRTrainer(model=tiny_roberta(), args=args, train_dataset=toy_dataset(n=32))
    trainer.train()
    trainer.save_model()
    return folder


def export_error(capsys, argv) -> str:
    assert hidlr_main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hidlr: error: "), err
    assert captured.out == ""
    return err[0]


def _state_variants(finished_run):
    state = json.loads((finished_run / "hidlr_state.json").read_text())
    wrong_length = json.loads(json.dumps(state))
    wrong_length["engine"]["influence"]["total"] = [1.0]
    no_groups = {k: v for k, v in state.items() if k != "groups"}
    bad_total = json.loads(json.dumps(state))
    bad_total["model"]["total_params"] = "many"
    return {
        "truncated": (finished_run / "hidlr_state.json").read_text()[:200],
        "not-an-object": "[1, 2]",
        "other-format": json.dumps({"format": "something/9"}),
        "no-groups": json.dumps(no_groups),
        "influence-of-wrong-length": json.dumps(wrong_length),
        "total-params-not-a-number": json.dumps(bad_total),
    }


@pytest.mark.parametrize(
    "variant",
    ["truncated", "not-an-object", "other-format", "no-groups", "influence-of-wrong-length", "total-params-not-a-number"],
)
def test_export_refuses_a_corrupt_state_file(finished_run, tmp_path, capsys, variant):
    run = tmp_path / "run"
    run.mkdir()
    (run / "hidlr_state.json").write_text(_state_variants(finished_run)[variant])
    out = tmp_path / "adapter"
    line = export_error(capsys, ["export", str(run), "--out", str(out), "--budget", "top1"])
    assert f"{run / 'hidlr_state.json'} is corrupt" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "budget,match",
    [("lots", "is not a number"), ("0", "budget"), ("1.5", "fraction"), ("top0", "budget"),
     ("999999999", "larger than the model")],
)
def test_export_refuses_a_bad_budget_before_writing(finished_run, tmp_path, capsys, budget, match):
    out = tmp_path / "adapter"
    line = export_error(capsys, ["export", str(finished_run), "--out", str(out), "--budget", budget])
    assert match in line
    assert not out.exists()


def test_export_without_a_selection_needs_a_budget(finished_run, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert "pass --budget" in export_error(capsys, ["export", str(finished_run), "--out", str(out)])
    assert not out.exists()


def test_export_refuses_an_unwritable_out(finished_run, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a folder")
    line = export_error(capsys, ["export", str(finished_run), "--out", str(blocker / "adapter"), "--budget", "top1"])
    assert f"cannot write to --out {blocker / 'adapter'}" in line
    assert blocker.read_text() == "a file, not a folder"


def test_export_never_overwrites_an_earlier_export_unless_forced(finished_run, tmp_path, capsys):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")  # files export does not write are no obstacle
    assert hidlr_main(["export", str(finished_run), "--out", str(out), "--budget", "top1"]) == 0
    capsys.readouterr()
    before = {name: (out / name).read_bytes() for name in files_under(out)}
    assert set(before) == {"notes.txt", "adapter_config.json", "adapter_model.safetensors", "README.md", "hidlr_mask.json"}

    line = export_error(capsys, ["export", str(finished_run), "--out", str(out), "--budget", "top2"])
    assert (f"--out {out} already holds adapter_config.json, adapter_model.safetensors, README.md, hidlr_mask.json; "
            "pass --force") in line
    assert {name: (out / name).read_bytes() for name in files_under(out)} == before

    assert hidlr_main(["export", str(finished_run), "--out", str(out), "--budget", "top2", "--force"]) == 0
    mask = json.loads((out / "hidlr_mask.json").read_text())
    assert sum(g["kept"] and not g["is_head"] for g in mask["groups"]) == 2
    assert (out / "notes.txt").read_text() == "the user's own file"
