"""GLUE tasks and data loading: the shared classic files, every task's classic format, own files, the Hub."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from hidlr_hf.errors import HiDLRError  # noqa: E402
from hidlr_hf.glue import data as glue_data  # noqa: E402
from hidlr_hf.glue.data import default_glue_data_dir, load_glue, read_classic_split  # noqa: E402
from hidlr_hf.glue.tasks import GLUE_TASKS, GlueTask, get_task  # noqa: E402

# The official splits live outside the repository (never copied into it): ../shared/data/glue.
GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(
    not (GLUE_DIR / "SST-2" / "train.tsv").is_file(), reason=f"GLUE files not found under {GLUE_DIR}"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # Nothing here may touch the network; the Hub tests undo this where they need to.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_tsv(path: Path, rows: list[list[str]], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join("\t".join(row) + "\n" for row in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- tasks


def test_task_table_matches_the_hub():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]
    expected_keys = {
        "cola": ("sentence",),
        "sst2": ("sentence",),
        "mrpc": ("sentence1", "sentence2"),
        "qqp": ("question1", "question2"),
        "stsb": ("sentence1", "sentence2"),
        "mnli": ("premise", "hypothesis"),
        "qnli": ("question", "sentence"),
        "rte": ("sentence1", "sentence2"),
        "wnli": ("sentence1", "sentence2"),
    }
    for name, task in GLUE_TASKS.items():
        assert task.name == name
        assert task.text_keys == expected_keys[name]
        assert task.main_metric in task.metric_names
        assert task.is_pair == (len(task.text_keys) == 2)
        if task.is_regression:
            assert task.label_names is None and task.num_labels == 1 and task.id2label is None
        else:
            assert task.num_labels == len(task.label_names)
            assert task.label2id == {n: i for i, n in enumerate(task.label_names)}
    assert GLUE_TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["wnli"].label_names == ("not_entailment", "entailment")
    assert GLUE_TASKS["rte"].label_names == ("entailment", "not_entailment")
    assert GLUE_TASKS["mnli"].eval_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].main_metric == "pearson"
    assert GLUE_TASKS["cola"].main_metric == "matthews_correlation"
    assert GLUE_TASKS["sst2"].dir_name == "SST-2" and GLUE_TASKS["stsb"].dir_name == "STS-B"
    with pytest.raises(Exception):  # frozen
        GLUE_TASKS["rte"].name = "x"


@pytest.mark.parametrize(
    "alias, name",
    [("CoLA", "cola"), ("SST-2", "sst2"), ("sst-2", "sst2"), ("sst2", "sst2"), ("STS-B", "stsb"),
     ("sts_b", "stsb"), ("MNLI", "mnli"), ("  Rte ", "rte"), ("QQP", "qqp"), ("glue/mrpc", "mrpc")],
)
def test_task_aliases(alias, name):
    assert get_task(alias) is GLUE_TASKS[name]


def test_get_task_accepts_a_task():
    assert get_task(GLUE_TASKS["qnli"]) is GLUE_TASKS["qnli"]
    assert isinstance(get_task("qnli"), GlueTask)


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(HiDLRError, match="Unknown GLUE task 'squad'") as info:
        get_task("squad")
    for name in GLUE_TASKS:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(HiDLRError, match="by name"):
        get_task(3)


# --------------------------------------------------------------------------------- shared classic data


SHARED = {
    # task: (train rows, dev rows, first train row, first dev row)
    "SST-2": (67349, 872, {"sentence": "hide new secretions from the parental units ", "label": 0},
              {"sentence": "it 's a charming and often affecting journey . ", "label": 1}),
    "CoLA": (8551, 1043,
             {"sentence": "Our friends won't buy this analysis, let alone the next one we propose.", "label": 1},
             {"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1}),
    "MRPC": (3668, 408,
             {"sentence1": 'Amrozi accused his brother, whom he called "the witness", of deliberately '
                           "distorting his evidence.",
              "sentence2": 'Referring to him as only "the witness", Amrozi accused his brother of deliberately '
                           "distorting his evidence.",
              "label": 1},
             {"sentence1": "He said the foodservice pie business doesn't fit the company's long-term growth "
                           "strategy.",
              "label": 1}),
    "RTE": (2490, 277,
            {"sentence1": "No Weapons of Mass Destruction Found in Iraq Yet.",
             "sentence2": "Weapons of Mass Destruction Found in Iraq.", "label": 1},
            {"sentence2": "Christopher Reeve had an accident.", "label": 1}),
}


@needs_glue
@pytest.mark.parametrize("dir_name", list(SHARED))
def test_shared_classic_files(dir_name):
    n_train, n_dev, first_train, first_dev = SHARED[dir_name]
    task = get_task(dir_name)
    dd = load_glue(dir_name, data_dir=GLUE_DIR)
    assert list(dd) == ["train", "validation"]
    assert (dd["train"].num_rows, dd["validation"].num_rows) == (n_train, n_dev)
    for split in dd.values():
        assert split.column_names == list(task.text_keys) + ["label", "idx"]
        assert split.features["label"].names == list(task.label_names)
        assert split.features["idx"].dtype == "int32"
        assert sorted(split.unique("label")) == [0, 1]
        assert list(split["idx"][:3]) == [0, 1, 2]
    for split, first in (("train", first_train), ("validation", first_dev)):
        row = dd[split][0]
        for key, value in first.items():
            assert row[key] == value, (split, key)


@needs_glue
def test_shared_rte_labels_map_strings_in_hub_order():
    rte = read_classic_split("rte", "validation", GLUE_DIR)
    raw = (GLUE_DIR / "RTE" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    names = [line.rsplit("\t", 1)[1] for line in raw]
    assert [rte.features["label"].names[i] for i in rte["label"]] == names


@needs_glue
def test_shared_unbalanced_quotes_stay_on_their_line():
    # MRPC and RTE contain rows with an odd number of double quotes; QUOTE_NONE keeps them one row each.
    for dir_name in ("MRPC", "RTE"):
        lines = (GLUE_DIR / dir_name / "train.tsv").read_text(encoding="utf-8-sig").splitlines()
        odd = [i for i, line in enumerate(lines[1:]) if line.count('"') % 2]
        assert odd, dir_name
        ds = read_classic_split(dir_name, "train", GLUE_DIR)
        i = odd[0]
        fields = lines[i + 1].split("\t")
        assert ds[i]["sentence1"] in fields and ds[i]["sentence2"] in fields


@needs_glue
def test_shared_sst2_train_reads_fast():
    start = time.perf_counter()
    ds = read_classic_split("SST-2", "train", GLUE_DIR)
    elapsed = time.perf_counter() - start
    assert ds.num_rows == 67349
    assert elapsed < 5.0, f"reading SST-2 train took {elapsed:.2f} s"


@needs_glue
def test_task_folder_itself_is_accepted_as_data_dir():
    ds = read_classic_split("RTE", "validation", GLUE_DIR / "RTE")
    assert ds.num_rows == 277


# --------------------------------------------------------------------- other tasks' classic formats


QQP_HEADER = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
               "score"]
MNLI_COMMON = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def mnli_row(i, premise, hypothesis, labels):
    return [str(i), "31193", f"{i}n", "government", "( ( x ) )", "( ( y ) )", "(ROOT (S x))", "(ROOT (S y))",
            premise, hypothesis, *labels]


def test_qqp_classic_format(tmp_path):
    rows = [QQP_HEADER,
            ["133273", "213221", "213222", "How is the life of a math student?", "Which level of math?", "0"],
            ["402555", "536040", "536041", 'How do I "control" my horny emotions?', "How do you control it?", "1"]]
    write_tsv(tmp_path / "QQP" / "train.tsv", rows)
    write_tsv(tmp_path / "QQP" / "dev.tsv", rows[:2])
    dd = load_glue("QQP", data_dir=tmp_path)
    assert dd["train"].column_names == ["question1", "question2", "label", "idx"]
    assert dd["train"]["label"] == [0, 1]
    assert dd["train"][1]["question1"] == 'How do I "control" my horny emotions?'
    assert dd["validation"].num_rows == 1
    assert dd["train"].features["label"].names == ["not_duplicate", "duplicate"]


def test_stsb_classic_format(tmp_path):
    rows = [STSB_HEADER,
            ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
             "An air plane is taking off.", "5.000"],
            ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a flute.",
             "A man is playing a bamboo flute.", "3.800"]]
    write_tsv(tmp_path / "STS-B" / "train.tsv", rows)
    write_tsv(tmp_path / "STS-B" / "dev.tsv", rows)
    dd = load_glue("sts-b", data_dir=tmp_path)
    ds = dd["validation"]
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds.features["label"].dtype == "float32"
    assert ds["label"] == pytest.approx([5.0, 3.8])
    assert ds[0]["sentence2"] == "An air plane is taking off."


def test_mnli_classic_format_and_two_eval_splits(tmp_path):
    train = [MNLI_COMMON + ["label1", "gold_label"],
             mnli_row(0, "Conceptually cream skimming has two basic dimensions.", "Product and geography.",
                      ["neutral", "neutral"]),
             mnli_row(1, "you know during the season", "You lose the things.", ["entailment", "entailment"]),
             mnli_row(2, "One of our number will carry out", "A member will do it.", ["neutral", "contradiction"])]
    dev_header = MNLI_COMMON + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    matched = [dev_header,
               mnli_row(0, "The new rights are nice enough", "Everyone really likes the newest benefits",
                        ["neutral", "entailment", "neutral", "neutral", "neutral", "neutral"]),
               mnli_row(1, "This site includes a list", "The site has no list.",
                        ["contradiction"] * 5 + ["contradiction"])]
    mismatched = [dev_header,
                  mnli_row(0, "Your contribution helped make it possible", "Your contribution was ignored.",
                           ["contradiction"] * 5 + ["contradiction"])]
    write_tsv(tmp_path / "MNLI" / "train.tsv", train)
    write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", matched)
    write_tsv(tmp_path / "MNLI" / "dev_mismatched.tsv", mismatched)
    dd = load_glue("MNLI", data_dir=tmp_path)
    assert list(dd) == ["train", "validation_matched", "validation_mismatched"]
    assert dd["train"].column_names == ["premise", "hypothesis", "label", "idx"]
    # gold_label (the last column), not label1, and in the Hub's order entailment/neutral/contradiction.
    assert dd["train"]["label"] == [1, 0, 2]
    assert dd["validation_matched"]["label"] == [1, 2]
    assert dd["validation_mismatched"]["label"] == [2]
    assert dd["validation_matched"][1]["hypothesis"] == "The site has no list."
    with pytest.raises(HiDLRError, match="no split 'validation'"):
        read_classic_split("mnli", "validation", tmp_path)


def test_qnli_classic_format(tmp_path):
    rows = [["index", "question", "sentence", "label"],
            ["0", "When did the third Digimon series begin?", "Unlike the two seasons before it.", "not_entailment"],
            ["1", "Which missile batteries often have individual launchers?", "When MANPADS is operated.",
             "entailment"]]
    write_tsv(tmp_path / "QNLI" / "train.tsv", rows)
    write_tsv(tmp_path / "QNLI" / "dev.tsv", rows)
    dd = load_glue("qnli", data_dir=tmp_path)
    assert dd["train"].column_names == ["question", "sentence", "label", "idx"]
    assert dd["train"]["label"] == [1, 0]


def test_wnli_classic_format(tmp_path):
    rows = [["index", "sentence1", "sentence2", "label"],
            ["0", "I stuck a pin through a carrot.", "The carrot had a hole.", "1"],
            ["1", "John couldn't see the stage with Billy in front of him.", "John is so short.", "0"]]
    write_tsv(tmp_path / "WNLI" / "train.tsv", rows)
    write_tsv(tmp_path / "WNLI" / "dev.tsv", rows)
    ds = load_glue("WNLI", data_dir=tmp_path)["validation"]
    assert ds["label"] == [1, 0]
    assert ds.features["label"].int2str(1) == "entailment"


def test_mrpc_bom_header_and_cola_without_header(tmp_path):
    write_tsv(tmp_path / "MRPC" / "train.tsv",
              [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["0", "1", "2", "a", "b"]], bom=True)
    assert read_classic_split("mrpc", "train", tmp_path)[0] == {"sentence1": "a", "sentence2": "b", "label": 0,
                                                                 "idx": 0}
    write_tsv(tmp_path / "CoLA" / "dev.tsv", [["gj04", "0", "*", "Him left."], ["gj04", "1", "", "He left."]])
    ds = read_classic_split("cola", "validation", tmp_path)
    assert ds["sentence"] == ["Him left.", "He left."] and ds["label"] == [0, 1]


def test_unbalanced_double_quote_is_one_row(tmp_path):
    rows = [["index", "sentence1", "sentence2", "label"],
            ["0", 'He said "stop and left.', "He left.", "entailment"],
            ["1", "Second row.", 'Quote " here', "not_entailment"],
            ["2", "Third row.", "Plain.", "entailment"]]
    write_tsv(tmp_path / "RTE" / "train.tsv", rows)
    ds = read_classic_split("rte", "train", tmp_path)
    assert ds.num_rows == 3
    assert ds["sentence1"] == ['He said "stop and left.', "Second row.", "Third row."]
    assert ds["label"] == [0, 1, 0]


# --------------------------------------------------------------------------------------- bad input


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(HiDLRError) as info:
        load_glue("rte", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "RTE" / "train.tsv") in message
    assert "--data_dir" in message and "RTE/train.tsv" in message and "dev.tsv" in message


def test_unknown_split(tmp_path):
    with pytest.raises(HiDLRError, match="no split 'test'"):
        read_classic_split("rte", "test", tmp_path)


RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


@pytest.mark.parametrize(
    "bad_row, match",
    [(["1", "only two"], "expected 4 tab-separated fields, found 2"),
     (["1", "a", "b", "maybe"], "label 'maybe'"),
     (["1", "a", "b", "2"], "label '2'")],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_row, match):
    path = write_tsv(tmp_path / "RTE" / "train.tsv",
                     [RTE_HEADER, ["0", "a", "b", "entailment"], bad_row, ["2", "c", "d", "entailment"]])
    with pytest.raises(HiDLRError, match=match) as info:
        read_classic_split("rte", "train", tmp_path)
    assert f"{path}, line 3" in str(info.value)


def test_non_numeric_score_names_the_line(tmp_path):
    good = ["0", "g", "f", "2012", "1", "none", "none", "a", "b", "1.5"]
    bad = ["1", "g", "f", "2012", "2", "none", "none", "a", "b", "high"]
    write_tsv(tmp_path / "STS-B" / "train.tsv", [STSB_HEADER, good, good, bad])
    with pytest.raises(HiDLRError, match=r"line 4: score 'high' is not a number"):
        read_classic_split("stsb", "train", tmp_path)


def test_cola_wrong_width_names_the_line(tmp_path):
    write_tsv(tmp_path / "CoLA" / "train.tsv", [["gj04", "1", "", "Fine."], ["gj04", "1", "Broken."]])
    with pytest.raises(HiDLRError, match="line 2: expected 4"):
        read_classic_split("cola", "train", tmp_path)


def test_empty_and_header_only_files(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text("", encoding="utf-8")
    with pytest.raises(HiDLRError, match="is empty"):
        read_classic_split("rte", "train", tmp_path)
    write_tsv(tmp_path / "RTE" / "train.tsv", [RTE_HEADER])
    with pytest.raises(HiDLRError, match="no data rows"):
        read_classic_split("rte", "train", tmp_path)
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("\n", encoding="utf-8")
    with pytest.raises(HiDLRError, match="no data rows"):
        read_classic_split("cola", "train", tmp_path)


def test_header_without_the_needed_columns(tmp_path):
    write_tsv(tmp_path / "QNLI" / "train.tsv", [["index", "question", "text", "label"], ["0", "q", "s", "0"]])
    with pytest.raises(HiDLRError, match="no column 'sentence'"):
        read_classic_split("qnli", "train", tmp_path)


# ---------------------------------------------------------------------------------------- own files


def test_explicit_classic_tsv_files(tmp_path):
    rows = [RTE_HEADER, ["0", "a", "b", "entailment"], ["1", "c", 'd "', "not_entailment"]]
    train = write_tsv(tmp_path / "mine" / "rte_train.tsv", rows)
    dev = write_tsv(tmp_path / "mine" / "rte_dev.tsv", rows[:2])
    dd = load_glue("rte", train_file=train, validation_file=str(dev))
    assert list(dd) == ["train", "validation"]
    assert dd["train"]["label"] == [0, 1] and dd["train"][1]["sentence2"] == 'd "'
    assert dd["validation"].num_rows == 1


def test_explicit_hub_style_tsv_csv_and_json(tmp_path):
    cache = tmp_path / "cache"
    # A tab-separated file with the Hub's column names (not the classic MNLI header), string labels.
    tsv = write_tsv(tmp_path / "train.tsv", [["premise", "hypothesis", "label"],
                                             ["A man eats.", 'He "eats', "entailment"],
                                             ["A dog runs.", "A cat sleeps.", "contradiction"]])
    csv_file = tmp_path / "dev_m.csv"
    csv_file.write_text("premise,hypothesis,label\nIt rains.,It is wet.,0\nIt snows.,It is hot.,2\n", encoding="utf-8")
    json_file = tmp_path / "dev_mm.jsonl"
    json_file.write_text("\n".join(json.dumps(r) for r in [
        {"premise": "x", "hypothesis": "y", "label": "neutral", "extra": 1}]) + "\n", encoding="utf-8")
    dd = load_glue("mnli", train_file=tsv, cache_dir=cache,
                   validation_file={"validation_matched": csv_file, "validation_mismatched": json_file})
    assert list(dd) == ["train", "validation_matched", "validation_mismatched"]
    assert dd["train"]["label"] == [0, 2] and dd["train"][0]["hypothesis"] == 'He "eats'
    assert dd["validation_matched"]["label"] == [0, 2]
    assert dd["validation_mismatched"].column_names == ["premise", "hypothesis", "label", "idx"]
    assert dd["validation_mismatched"]["label"] == [1]
    assert dd["train"].features == dd["validation_matched"].features


def test_explicit_file_errors(tmp_path):
    with pytest.raises(HiDLRError, match="Data file not found"):
        load_glue("rte", train_file=tmp_path / "nope.tsv")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,0\n", encoding="utf-8")
    with pytest.raises(HiDLRError, match="no column 'sentence1', 'sentence2'"):
        load_glue("rte", train_file=bad, cache_dir=tmp_path / "cache")
    bad_label = tmp_path / "bad_label.csv"
    bad_label.write_text("sentence,label\nhello,0\nbye,7\n", encoding="utf-8")
    with pytest.raises(HiDLRError, match="data row 2: label 7"):
        load_glue("sst2", train_file=bad_label, cache_dir=tmp_path / "cache")
    with pytest.raises(HiDLRError, match="use a .tsv, .csv, .json"):
        (tmp_path / "x.parquet").write_bytes(b"")
        load_glue("sst2", train_file=tmp_path / "x.parquet")
    with pytest.raises(HiDLRError, match="split 'validation'"):
        load_glue("mnli", validation_file={"validation": bad})
    (tmp_path / "empty.tsv").write_text("", encoding="utf-8")
    with pytest.raises(HiDLRError, match="empty.tsv is empty"):
        load_glue("rte", train_file=tmp_path / "empty.tsv")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(HiDLRError, match="Could not read .*broken.json as JSON"):
        load_glue("rte", train_file=broken, cache_dir=tmp_path / "cache")


def test_explicit_file_with_data_dir_fills_the_other_split(tmp_path):
    rows = [RTE_HEADER, ["0", "a", "b", "entailment"]]
    write_tsv(tmp_path / "glue" / "RTE" / "dev.tsv", rows + [["1", "c", "d", "entailment"]])
    own = write_tsv(tmp_path / "own.tsv", rows)
    dd = load_glue("rte", train_file=own, data_dir=tmp_path / "glue")
    assert (dd["train"].num_rows, dd["validation"].num_rows) == (1, 2)
    assert list(load_glue("rte", validation_file=own)) == ["validation"]


# --------------------------------------------------------------------------------------------- Hub


def fake_hub(calls):
    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        split = {"sentence1": ["a"], "sentence2": ["b"], "label": [0], "idx": [0]}
        return datasets.DatasetDict({
            "train": datasets.Dataset.from_dict(split),
            "validation": datasets.Dataset.from_dict(split),
            "test": datasets.Dataset.from_dict({**split, "label": [-1]}),
        })
    return load_dataset


def test_hub_path_when_online(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_hub(calls))
    dd = load_glue("RTE", cache_dir=tmp_path)
    assert [(path, name) for path, name, _ in calls] == [("nyu-mll/glue", "rte")]
    assert calls[0][2]["cache_dir"] == tmp_path
    assert list(dd) == ["train", "validation"]  # the unlabelled test split is dropped
    assert dd["train"][0]["sentence1"] == "a"


def test_hub_forced_while_offline_and_refused_when_disabled(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_hub(calls))
    assert list(load_glue("rte", use_hub=True)) == ["train", "validation"]  # a cached copy may serve
    assert len(calls) == 1
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(HiDLRError, match="use_hub=False"):
        load_glue("rte", use_hub=False)
    assert len(calls) == 1


def test_offline_with_nothing_given_says_what_to_pass(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_hub(calls))
    with pytest.raises(HiDLRError) as info:
        load_glue("rte")
    message = str(info.value)
    assert "--data_dir" in message and "../shared/data/glue" in message and "RTE/train.tsv" in message
    assert "online" in message
    assert calls == []
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # either variable is enough
    with pytest.raises(HiDLRError, match="--data_dir"):
        load_glue("rte")


def test_hub_failure_becomes_a_clear_error(monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(HiDLRError, match="Could not load 'nyu-mll/glue' config 'mnli'.*--data_dir"):
        load_glue("mnli", use_hub=True)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_hub(calls))
    with pytest.raises(HiDLRError, match="no split validation_matched"):
        load_glue("mnli", use_hub=True)


# ------------------------------------------------------------------------------------ default dir


def test_default_glue_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HIDLR_GLUE_DIR", str(tmp_path / "anywhere"))
    assert default_glue_data_dir() == tmp_path / "anywhere"
    monkeypatch.delenv("HIDLR_GLUE_DIR")

    # Relative to the working directory.
    (tmp_path / "shared" / "data" / "glue").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(glue_data, "__file__", str(tmp_path / "elsewhere" / "repo" / "hidlr_hf" / "glue" / "data.py"))
    assert default_glue_data_dir() == (tmp_path / "shared" / "data" / "glue").resolve()

    # Relative to the repository (the package's parent), from any working directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(glue_data, "__file__", str(tmp_path / "work" / "hidlr_hf" / "glue" / "data.py"))
    assert default_glue_data_dir() == (tmp_path / "shared" / "data" / "glue").resolve()

    # Neither: None.
    monkeypatch.setattr(glue_data, "__file__", str(tmp_path / "a" / "b" / "hidlr_hf" / "glue" / "data.py"))
    assert default_glue_data_dir() is None


@needs_glue
def test_default_glue_data_dir_finds_the_shared_folder(monkeypatch):
    monkeypatch.delenv("HIDLR_GLUE_DIR", raising=False)
    assert default_glue_data_dir() == GLUE_DIR.resolve()
