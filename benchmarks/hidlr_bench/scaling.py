"""Scaling: the time of one probe round against the number of groups K (MiniLM) and against model size.

``HiDLR.step`` with a closure on a fixed batch (8 x 64 tokens), plain PyTorch and AdamW; the second round is timed
(the first also checks linearity). Growth is called linear when a straight line explains at least
:data:`~hidlr_bench.protocol.LINEAR_R2` of the variance.
"""

from __future__ import annotations

import re
import time

from .environment import command_line, machine_info
from .loading import load_classifier, load_task_data, load_tokenizer
from .protocol import LINEAR_R2, TRAINER_DEFAULT_LR, WEIGHT_DECAY


def index_scheme(model, k: int) -> list[tuple[str, str]]:
    """K groups: parameter i (in ``named_parameters`` order) goes to group ``i mod K``, as exact-name regexes."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    k = min(k, len(names))
    return [("^(?:" + "|".join(re.escape(n) for n in names[g::k]) + ")$", f"g{g:03d}") for g in range(k)]


def time_probe_round(model, batch, scheme, rounds: int = 2) -> dict:
    """Seconds of one probe round (``HiDLR.step`` with a closure on a fixed batch, plain PyTorch); the first
    round also checks linearity, so the last of ``rounds`` is reported."""
    import torch

    from hidlr_hf import HiDLR, group_parameters, optimizer_param_groups

    groups = group_parameters(model, scheme)
    optimizer = torch.optim.AdamW(optimizer_param_groups(groups, weight_decay=WEIGHT_DECAY), lr=TRAINER_DEFAULT_LR)
    engine = HiDLR(optimizer, every=1, model=model, seed=0)
    estimate = None
    for _ in range(rounds):
        optimizer.zero_grad()
        model.train()
        model(**batch).loss.backward()
        estimate = engine.step(lambda: model(**batch).loss)
    optimizer.zero_grad(set_to_none=True)
    del optimizer, engine
    return {"groups": len(groups), "seconds": estimate.seconds, "forward_passes": estimate.forward_passes}


def linear_fit(x, y) -> dict:
    """Least-squares line (numpy.polyfit) and its R^2."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - float((residual**2).sum() / total) if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "linear": bool(r2 >= LINEAR_R2)}


SIZE_CONFIGS = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "medium": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 2048},
    "roberta_base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
                     "vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1},
}
SIZE_LABELS = {"tiny": "random BERT, hidden 128, 2 layers", "minilm": "MiniLM-L6 (real weights)",
               "medium": "random BERT, hidden 512, 8 layers", "roberta_base": "random RoBERTa, hidden 768, 12 layers"}


def run_scaling(args) -> dict:
    """Probe-round time vs number of groups K (MiniLM) and vs model size (module_type groups), 8 x 64 tokens."""
    import copy

    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig
    from transformers import RobertaForSequenceClassification

    transformers.logging.set_verbosity_error()
    tokenizer = load_tokenizer()
    task, train, _ = load_task_data("sst2", tokenizer, 8, 1)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in train["input_ids"]]
    batch = dict(tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt"))
    batch["labels"] = torch.tensor(train["labels"])
    torch.manual_seed(0)
    minilm = load_classifier(task, 0)
    initial = copy.deepcopy(minilm.state_dict())
    by_k = []
    for k in args.scaling_groups:
        minilm.load_state_dict(initial)
        result = time_probe_round(minilm, batch, index_scheme(minilm, k))
        result["K"] = k
        by_k.append(result)
        print(f"[scaling] K={k:>3}: {result['seconds']:.2f} s, {result['forward_passes']} forward passes", flush=True)
    del minilm, initial
    by_size = []
    for name in args.scaling_sizes:
        torch.manual_seed(0)
        if name == "minilm":
            model = load_classifier(task, 0)
        elif name == "roberta_base":
            model = RobertaForSequenceClassification(RobertaConfig(num_labels=2, **SIZE_CONFIGS[name]))
        else:
            model = BertForSequenceClassification(BertConfig(num_labels=2, **SIZE_CONFIGS[name]))
        vocab = model.config.vocab_size
        generator = torch.Generator().manual_seed(0)
        sized = {"input_ids": torch.randint(5, vocab, (8, 64), generator=generator),
                 "attention_mask": torch.ones(8, 64, dtype=torch.long), "labels": batch["labels"]}
        if name == "minilm":
            sized = batch
        result = time_probe_round(model, sized, "module_type")
        result.update(model=name, label=SIZE_LABELS[name], params=sum(p.numel() for p in model.parameters()))
        by_size.append(result)
        print(f"[scaling] {name}: {result['params'] / 1e6:.1f} M params, {result['groups']} groups, "
              f"{result['seconds']:.2f} s, {result['forward_passes']} forward passes", flush=True)
        del model
    out = {"batch": "8 x 64 tokens (SST-2 text for MiniLM, random ids for random models)", "by_groups": by_k,
           "by_size": by_size, "command": command_line(), "machine": machine_info(),
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if len(by_k) >= 2:
        out["groups_fit"] = linear_fit([r["K"] for r in by_k], [r["seconds"] for r in by_k])
        out["groups_fit_forward_passes"] = linear_fit([r["K"] for r in by_k], [r["forward_passes"] for r in by_k])
        out["seconds_vs_forward_passes_fit"] = linear_fit([r["forward_passes"] for r in by_k], [r["seconds"] for r in by_k])
    if len(by_size) >= 2:
        out["size_fit"] = linear_fit([r["params"] / 1e6 for r in by_size], [r["seconds"] for r in by_size])
    return out
