"""A small Trainer script for the multi-process tests: tiny RoBERTa, toy data, HiDLRTrainer, `--hidlr_*` flags.

Run as ``python train_tiny.py --output_dir D ...``, under ``torchrun``, or under ``accelerate launch``; rank 0
writes ``D/result.json`` with the final rates, influence and a parameter checksum, and ``D/final_state.pt`` with
every parameter, the optimizer's and the scheduler's state and the Hi-DLR state (for bit-for-bit comparisons).
"""

import json
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser, RobertaConfig, RobertaForSequenceClassification

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from conftest import toy_dataset  # noqa: E402

from hidlr_hf import HiDLRTrainer, HiDLRTrainingArguments  # noqa: E402


@dataclass
class ScriptArguments:
    resume: str = field(default=None, metadata={"help": "checkpoint to resume from"})
    rows: int = field(default=128, metadata={"help": "training rows"})


def main():
    script, args = HfArgumentParser((ScriptArguments, HiDLRTrainingArguments)).parse_args_into_dataclasses()
    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=40, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = RobertaForSequenceClassification(cfg)
    trainer = HiDLRTrainer(model=model, args=args, train_dataset=toy_dataset(n=script.rows))
    clipped = record_clipping(trainer)
    trainer.train(resume_from_checkpoint=script.resume)
    engine = trainer.hidlr
    if trainer.is_world_process_zero():
        frozen = trainer.hidlr_controller.freeze_decision
        result = {
            "world_size": args.world_size,
            "group_names": engine.group_names,
            "base_rates": engine.base_rates,
            "influence": engine.influence.mean,
            "rounds": engine.num_rounds,
            "history": [{k: h[k] for k in ("step", "phase", "status", "loss", "factors", "verified", "rates")} for h in engine.history],
            "steps": trainer.state.global_step,
            "clipped": clipped,
            "logged_rate_keys": sorted(k for h in trainer.state.log_history for k in h if k.startswith("hidlr/lr/")),
            "params": {n: p.detach().double().sum().item() for n, p in trainer.model.named_parameters()},
            "kept": frozen["kept"] if frozen else None,
            "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in trainer.model.parameters()),
        }
        with open(os.path.join(args.output_dir, "result.json"), "w") as fh:
            json.dump(result, fh)
        torch.save(final_state(trainer), os.path.join(args.output_dir, "final_state.pt"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every rank waits for rank 0's files: a rank tearing gloo down while another still works aborted now and then.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def record_clipping(trainer) -> list:
    """For each gradient clipping, the number of parameters whose gradient it sees (Hi-DLR wraps the clipping when
    training starts, around this recorder)."""
    counts, clip = [], trainer.accelerator.clip_grad_norm_

    def clip_grad_norm_(parameters, *args, **kwargs):
        parameters = list(parameters)
        counts.append(sum(p.grad is not None for p in parameters))
        return clip(parameters, *args, **kwargs)

    trainer.accelerator.clip_grad_norm_ = clip_grad_norm_
    return counts


def final_state(trainer) -> dict:
    """Everything a resumed run must reproduce exactly: parameters, optimizer and scheduler state, Hi-DLR state."""
    hidlr = trainer.hidlr.state_dict()
    hidlr.pop("probe_seconds")  # wall-clock, the one thing allowed to differ
    return {
        "params": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.lr_scheduler.state_dict(),
        "hidlr": hidlr,
    }


if __name__ == "__main__":
    main()
