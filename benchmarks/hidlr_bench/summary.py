"""``summary.json``: everything the report states, computed from whatever run files and sections exist."""

from __future__ import annotations

import time

from .aggregate import aggregate_tasks, coverage, dev_noise, hidlr_losses, quality_memory, tied_tasks
from .environment import code_versions, command_line
from .protocol import ALL_METHODS, LINEAR_R2, METHOD_SPECS
from .records import rounded
from .targets import check_targets


def summarize_overhead(overhead: dict | None) -> tuple[dict, dict]:
    """The overhead section's step-time ratios per ``hidlr_every``, and its peak-memory comparison."""
    if not overhead:
        return {}, {}
    settings = overhead.get("settings", {})
    auto = settings.get("auto", {})
    summary = {
        "step_time_ratio_default": rounded(auto.get("step_time_ratio_mean"), 4),
        "step_time_ratio_median_default": rounded(auto.get("step_time_ratio_median"), 4),
        "steps_per_run": overhead.get("steps_per_run"),
        "reps": overhead.get("reps"),
        "by_every": {k: {kk: (rounded(vv, 4) if not isinstance(vv, dict) else {a: rounded(b, 4) for a, b in vv.items()})
                         for kk, vv in v.items()} for k, v in settings.items()},
        "command": overhead.get("command"),
    }
    for k, v in settings.items():
        if k != "auto":
            summary[f"step_time_ratio_every_{k}"] = rounded(v.get("step_time_ratio_mean"), 4)
            summary[f"step_time_ratio_median_every_{k}"] = rounded(v.get("step_time_ratio_median"), 4)
    mem = overhead.get("memory", {})
    memory = {}
    plain, hid = mem.get("plain", {}), mem.get("hidlr", {})
    if plain.get("peak_rss_mb") and hid.get("peak_rss_mb"):
        memory = {
            "peak_ratio_full_ft": rounded(hid["peak_rss_mb"] / plain["peak_rss_mb"], 4),
            "plain_peak_rss_mb": rounded(plain["peak_rss_mb"], 1),
            "hidlr_peak_rss_mb": rounded(hid["peak_rss_mb"], 1),
            "plain_rss_before_train_mb": rounded(plain.get("rss_before_train_mb"), 1),
            "hidlr_rss_before_train_mb": rounded(hid.get("rss_before_train_mb"), 1),
            "how": hid.get("how"),
        }
        if plain.get("peak_rss_after_first_step_mb") and hid.get("peak_rss_after_first_step_mb"):
            memory["peak_ratio_after_first_step"] = rounded(
                hid["peak_rss_after_first_step_mb"] / plain["peak_rss_after_first_step_mb"], 4)
            memory["plain_peak_rss_after_first_step_mb"] = rounded(plain["peak_rss_after_first_step_mb"], 1)
            memory["hidlr_peak_rss_after_first_step_mb"] = rounded(hid["peak_rss_after_first_step_mb"], 1)
        if plain.get("rss_before_train_mb") and hid.get("rss_before_train_mb"):
            grow_p = plain["peak_rss_mb"] - plain["rss_before_train_mb"]
            grow_h = hid["peak_rss_mb"] - hid["rss_before_train_mb"]
            memory["training_growth_ratio"] = rounded(grow_h / grow_p, 4) if grow_p > 0 else None
    return summary, memory


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


def build_summary(runs: list[dict], overhead: dict | None = None, scaling: dict | None = None,
                  machine: dict | None = None, commands: list | None = None, command: str | None = None) -> dict:
    """Everything the report states, computed from whatever runs and sections exist."""
    tasks, curves, rates, errors = aggregate_tasks(runs)
    overhead_summary, memory = summarize_overhead(overhead)
    memory["peak_ratio_hidlr_vs_adamw_quality_runs"] = quality_memory(tasks)
    protocols = []
    for r in runs:
        p = r.get("protocol")
        if p and p not in protocols:
            protocols.append(p)
    if machine is None:
        machine = next((r["machine"] for r in runs if r.get("machine")), None) or {}
    return {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "protocol": protocols[0] if len(protocols) == 1 else protocols,
        "coverage": coverage(tasks),
        "code_versions": code_versions(runs),
        "ties": tied_tasks(tasks),
        "dev_noise": dev_noise(runs),
        "methods": {m: METHOD_SPECS[m]["desc"] for m in ALL_METHODS},
        "tasks": tasks,
        "targets": check_targets(tasks),
        "hidlr_losses": hidlr_losses(tasks),
        "errors": errors,
        "overhead": overhead_summary,
        "memory": memory,
        "scaling": summarize_scaling(scaling),
        "curves": curves,
        "rates": rates,
        "machine": machine,
        "commands": commands or [],
        "command": command or command_line(),
    }
