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
    scope = {"torch": torch, "model": model, "loader": batches[:4], "probe_batches": iter(batches[2:] * 2), "num_steps": 4}
    exec(compile(snippet, "README.md", "exec"), scope)
    hidlr = scope["hidlr"]
    assert hidlr.num_steps == 4 and hidlr.num_rounds == 4
    assert [h["phase"] for h in hidlr.history] == ["head", "calibration", "calibration", "calibration"]
    est = hidlr.last_estimate
    assert est.b.shape == (len(hidlr.group_names),) and est.A.shape == (len(hidlr.group_names),) * 2


def test_swap_in_snippet_imports():
    snippet = next(b for b in _blocks() if "HiDLRTrainer as Trainer" in b)
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments

    assert scope["Trainer"] is HiDLRTrainer and scope["TrainingArguments"] is HiDLRTrainingArguments


def test_attach_snippet_runs_on_a_plain_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    snippet = next(b for b in _blocks() if "HiDLRCallback.attach(" in b)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, report_to="none",
                             save_strategy="no", disable_tqdm=True)
    scope = {"Trainer": Trainer, "model": tiny_roberta(), "args": args, "train_dataset": toy_dataset(n=32)}
    exec(compile(snippet, "README.md", "exec"), scope)
    engine = scope["trainer"].callback_handler.callbacks[0].engine
    assert engine.num_steps == 2 and engine.num_rounds == 1  # hidlr_every=10: a round at step 0 only


def test_links_stay_inside_the_repository():
    for doc in ("README.md", "docs/METHOD.md", "benchmarks/README.md", "recipes/README.md"):
        text = (REPO / doc).read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path = (REPO / doc).parent / target
            assert path.resolve().is_relative_to(REPO) and path.exists(), (doc, target)


def test_method_sections_cited_in_the_code_exist():
    headings = set(re.findall(r"(?m)^##+ (\d+(?:\.\d+)?)\.? ", (REPO / "docs" / "METHOD.md").read_text()))
    cited = set()
    for path in [*(REPO / "hidlr_hf").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py"), *(REPO / "tests").glob("*.py")]:
        for refs in re.findall(r"METHOD\.md,? sections? ([\d.,\- and]+\d)", path.read_text()):
            for ref in re.findall(r"\d+(?:\.\d+)?", refs):
                cited.add(ref)
    assert cited and cited <= headings, sorted(cited - headings)
