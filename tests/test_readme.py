"""The README's code runs as written."""

import re

import torch
from conftest import REPO, tiny_roberta, toy_dataset


def _blocks():
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_plain_pytorch_loop_snippet_runs():
    snippet = next(b for b in _blocks() if "hidlr.step(" in b)
    data = toy_dataset(n=48)
    batches = [
        {k: torch.tensor(data[i : i + 8][k]) for k in ("input_ids", "attention_mask", "labels")} for i in range(0, 48, 8)
    ]
    model = tiny_roberta()
    scope = {"torch": torch, "model": model, "loader": batches[:4], "probe_batches": iter(batches[2:] * 2)}
    exec(compile(snippet, "README.md", "exec"), scope)
    hidlr = scope["hidlr"]
    assert hidlr.num_steps == 4 and hidlr.num_rounds == 4
    est = hidlr.last_estimate
    assert est.b.shape == (len(hidlr.group_names),) and est.A.shape == (len(hidlr.group_names),) * 2


def test_swap_in_snippet_imports():
    snippet = next(b for b in _blocks() if "HiDLRTrainer as Trainer" in b)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments

    assert scope["Trainer"] is HiDLRTrainer and scope["TrainingArguments"] is HiDLRTrainingArguments
