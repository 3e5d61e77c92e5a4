"""The quality runs aggregated per task and method: scores over seeds, costs, loss curves, rate trajectories, the
ablation; and what the run files cover of each suite's plan.

Scores are points (the task's main metric x 100), as mean and sample standard deviation over seeds; costs are means
or medians over seeds. Missing runs stay missing: the report says "not run yet" rather than guessing.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .protocol import (
    ABLATION_METHODS,
    ABLATION_TASKS,
    ADAMW_GRID,
    ALL_METHODS,
    BUSY_LOAD,
    CLOSE,
    EVERY_SEED,
    FULL,
    HIDLR,
    HIDLR_STARTS,
    METHOD_SPECS,
    SEED0,
    SUITES,
    TASKS,
    TUNING,
    TUNING_SEED,
    method_tasks,
    pick_tuned,
    rival_is_close,
    seed_rule,
)
from .records import mean_or_none, median_or_none, read_json, rounded

RATES_TASK = "mrpc"  # the task of the rate-trajectory figure


def load_runs(out: Path, pattern: str = "runs/*/*/seed*.json") -> list[dict]:
    """Every run file under ``out`` that ``pattern`` matches (by default the quality runs,
    ``runs/<task>/<method>/seed<k>.json``), failed ones included, with their ``error``."""
    runs = []
    for path in sorted(Path(out).glob(pattern)):
        try:
            runs.append(read_json(path))
        except (OSError, ValueError):
            continue
    return runs


def _points(value) -> float:
    return 100.0 * float(value)


def _curve_mean(curves: list[list]) -> dict:
    """Mean loss per logged step over seeds."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, loss in curve:
            if loss is not None:
                by_step.setdefault(int(step), []).append(float(loss))
    steps = sorted(by_step)
    return {"steps": steps, "loss": [rounded(statistics.fmean(by_step[s])) for s in steps]}


def _task_order(task: str) -> int:
    return TASKS.index(task) if task in TASKS else len(TASKS)


def aggregate_tasks(runs: list[dict]) -> tuple[dict, dict, list]:
    """Per task and method: mean/std (points = metric x 100) over seeds and the costs; also the mean loss curves and
    the failed runs."""
    tasks: dict = {}
    curves: dict = {}
    errors = [{k: run.get(k) for k in ("task", "method", "seed", "error")} for run in runs if "error" in run]
    ok = [r for r in runs if "error" not in r]
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    for task in sorted({r["task"] for r in ok}, key=_task_order):
        task_runs = [r for r in ok if r["task"] == task]
        entry = tasks.setdefault(task, {"metric": task_runs[0]["metric"], "unit": "points (metric x 100)", "methods": {}})
        for method in sorted({r["method"] for r in task_runs}, key=lambda m: order.get(m, len(order))):
            mruns = sorted((r for r in task_runs if r["method"] == method), key=lambda r: r["seed"])
            values = [_points(r["value"]) for r in mruns]
            stats = {
                "mean": rounded(statistics.fmean(values), 4),
                "std": rounded(statistics.stdev(values), 4) if len(values) > 1 else None,
                "seeds": len(values),
                "values": [rounded(v, 4) for v in values],
                "seed_ids": [r["seed"] for r in mruns],
                "train_losses": [rounded(r.get("train_loss"), 6) for r in mruns],
                "steps": median_or_none([r.get("steps") for r in mruns]),
                "trainable_params": mruns[0].get("trainable_params"),
                "trainable_params_final": median_or_none([r.get("trainable_params_final") for r in mruns]),
                "total_params": mruns[0].get("total_params"),
                "train_seconds": rounded(mean_or_none([r.get("train_seconds") for r in mruns]), 1),
                "seconds_per_step": rounded(mean_or_none([r.get("seconds_per_step") for r in mruns]), 4),
                "median_step_seconds": rounded(median_or_none([r.get("median_step_seconds") for r in mruns]), 4),
                "peak_rss_mb": rounded(median_or_none([r.get("peak_rss_mb") for r in mruns]), 1),
            }
            if stats["trainable_params_final"] is not None and stats["total_params"]:
                stats["trainable_fraction_final"] = rounded(stats["trainable_params_final"] / stats["total_params"], 6)
            hid = [r["hidlr"] for r in mruns if r.get("hidlr")]
            if hid:
                stats["probe_seconds"] = rounded(mean_or_none([h.get("probe_seconds") for h in hid]), 3)
                stats["rounds"] = rounded(mean_or_none([h.get("rounds") for h in hid]), 2)
                stats["group_names"] = hid[0].get("group_names")
                stats["final_rates"] = [rounded(x, 10) for x in hid[0].get("rates_in_force") or []]
                stats["final_base_rates"] = [rounded(x, 10) for x in hid[0].get("base_rates") or []]
                stats["final_influence"] = [rounded(x, 12) if x is not None else None for x in hid[0].get("influence") or []]
            after = [r.get("median_step_seconds_after_freeze") for r in mruns]
            if any(a is not None for a in after):
                stats["median_step_seconds_after_freeze"] = rounded(median_or_none(after), 4)
            idle = {str(r["seed"]): _timing(r) for r in mruns if _ran_idle(r)}
            if idle:
                stats["idle_timing"] = idle
            entry["methods"][method] = stats
            curves.setdefault(task, {})[method] = _curve_mean([r.get("loss_curve") or [] for r in mruns])
    return tasks, curves, errors


def _ran_idle(run: dict) -> bool:
    """Whether a quality run had the machine to itself (its recorded load of other work at most ``BUSY_LOAD``): only
    such runs' wall clocks may be compared with each other."""
    load = run.get("other_cpu_load")
    return load is not None and load <= BUSY_LOAD and run.get("train_seconds") is not None


def _timing(run: dict) -> dict:
    return {"train_seconds": rounded(run.get("train_seconds"), 2),
            "median_step_seconds": rounded(run.get("median_step_seconds"), 4),
            "median_step_seconds_after_freeze": rounded(run.get("median_step_seconds_after_freeze"), 4),
            "other_cpu_load": rounded(run.get("other_cpu_load"), 3)}


def _phase_ends(history: list, record: dict) -> tuple:
    """(end of the head phase, end of calibration) as steps: the head phase ends at the engine's ``head_steps``;
    calibration ends right after its last round, if a steady phase followed (None otherwise)."""
    head_end = record.get("head_steps")
    if head_end is None:
        head_end = next((h["step"] for h in history if h.get("phase") not in (None, "head")), None)
    calibration = [h["step"] for h in history if h.get("phase") == "calibration"]
    steady = record.get("final_phase") == "steady" or any(h.get("phase") == "steady" for h in history)
    calibration_end = max(calibration) + 1 if calibration and steady else None
    return (head_end or None), calibration_end


def rate_trajectories(runs: list[dict], task: str = RATES_TASK, seed: int = TUNING_SEED) -> dict:
    """Each group's base rate at every probe round of ``hidlr`` from each starting rate (seed ``seed`` on ``task``),
    with the phase of each round and where the head phase and calibration ended: the rate figure's data."""
    out = {}
    for method in HIDLR_STARTS:
        run = next((r for r in runs if r.get("task") == task and r.get("method") == method and r.get("seed") == seed
                    and "error" not in r and r.get("hidlr")), None)
        if run is None:
            continue
        hid = run["hidlr"]
        history = [h for h in hid.get("history") or [] if h.get("rates")]
        head_end, calibration_end = _phase_ends(history, hid)
        out[method] = {
            "start": METHOD_SPECS[method]["lr"],
            "seed": seed,
            "group_names": hid.get("group_names"),
            "steps": [h["step"] for h in history],
            "phases": [h.get("phase") for h in history],
            "rates": [[rounded(x, 12) for x in h["rates"]] for h in history],
            "head_end": head_end,
            "calibration_end": calibration_end,
            "total_steps": run.get("steps"),
        }
    return {"task": task, "seed": seed, "methods": out}


def ablation_rows(runs: list[dict]) -> list[dict]:
    """Per (task, start, variant) on seed 0: the score, final base rates per group, probing seconds and rounds, next to
    the full rate control (``hidlr`` from the same start, seed 0)."""
    seed0 = {(r["task"], r["method"]): r for r in runs
             if r.get("seed") == TUNING_SEED and "error" not in r and r.get("method") in HIDLR_STARTS + ABLATION_METHODS}

    def facts(run):
        if run is None:
            return None
        hid = run.get("hidlr") or {}
        return {"value": rounded(_points(run["value"]), 4), "group_names": hid.get("group_names"),
                "final_base_rates": [rounded(x, 12) for x in hid.get("base_rates") or []],
                "probe_seconds": rounded(hid.get("probe_seconds"), 2), "rounds": hid.get("rounds"),
                "train_seconds": rounded(run.get("train_seconds"), 1)}

    rows = []
    for task in ABLATION_TASKS:
        for base in HIDLR_STARTS:
            full = facts(seed0.get((task, base)))
            variants = [m for m in ABLATION_METHODS if METHOD_SPECS[m]["baseline"] == base]
            for method in (base,) + tuple(variants):
                got = facts(seed0.get((task, method)))
                margin = None if got is None or full is None else rounded(got["value"] - full["value"], 4)
                rows.append({"task": task, "start": METHOD_SPECS[base]["lr"], "method": method,
                             "variant": METHOD_SPECS[method].get("ablation", "full rate control"),
                             "run": got, "margin_vs_full": None if method == base else margin})
    return rows


def task_mean(tasks: dict, task: str, method: str):
    """The mean score (points) of ``method`` on ``task``; None when it did not run there."""
    stats = tasks.get(task, {}).get("methods", {}).get(method)
    return None if stats is None else stats.get("mean")


def seed_value(tasks: dict, task: str, method: str, seed: int):
    """The score (points) of one seed of ``method`` on ``task``; None when that run is missing."""
    stats = tasks.get(task, {}).get("methods", {}).get(method)
    if not stats or seed not in (stats.get("seed_ids") or []):
        return None
    return stats["values"][stats["seed_ids"].index(seed)]


def tuning_scores(tasks: dict, task: str) -> dict:
    """``{AdamW grid method: (score, training loss)}`` of ``task``'s grid on the tuning seed."""
    out = {}
    for method in ADAMW_GRID:
        stats = tasks.get(task, {}).get("methods", {}).get(method)
        if stats and TUNING_SEED in (stats.get("seed_ids") or []):
            i = stats["seed_ids"].index(TUNING_SEED)
            losses = stats.get("train_losses") or [None] * len(stats["seed_ids"])
            out[method] = (stats["values"][i], losses[i])
    return out


def tuned_adamw(tasks: dict, task: str) -> str | None:
    """The AdamW rate tuned on ``task``: best on the tuning seed (the rule the runner follows), among the grid rates
    run so far."""
    return pick_tuned(tuning_scores(tasks, task))


def planned_seeds(tasks: dict, task: str, method: str, seeds: tuple = FULL["seeds"]) -> tuple[int, bool]:
    """How many seeds the protocol gives ``method`` on ``task`` as far as the runs found decide it, and whether that is
    decided: (0, True) off the method's tasks; a grid rate's or a rival's later seeds are undecided (counted as 1 seed)
    until the seed-0 runs that decide them are in."""
    if task not in method_tasks(method):
        return 0, True
    rule = seed_rule(method)
    if rule == EVERY_SEED:
        return len(seeds), True
    if rule == SEED0:
        return 1, True
    if rule == TUNING:
        scores = tuning_scores(tasks, task)
        if len(scores) < len(ADAMW_GRID):
            return 1, False
        return (len(seeds) if pick_tuned(scores) == method else 1), True
    if rule == CLOSE:
        close = rival_is_close(seed_value(tasks, task, method, TUNING_SEED), seed_value(tasks, task, HIDLR, TUNING_SEED))
        return (1, False) if close is None else ((len(seeds) if close else 1), True)
    raise ValueError(f"unknown seed rule {rule!r}")


def coverage(tasks: dict, methods: tuple = SUITES["default"], seeds: tuple = FULL["seeds"],
             task_names: tuple = TASKS) -> dict:
    """What of one suite's plan the runs found cover: counts, per cell (method, task) the seeds it has and the seeds
    the protocol gives it so far, the cells with fewer seeds than planned (the report marks conclusions drawn from
    those), and how many later-seed runs are not decided yet."""
    planned = done = undecided = 0
    cells, short = {}, {}
    for t in task_names:
        for m in methods:
            want, decided = planned_seeds(tasks, t, m, seeds)
            if not want:
                continue
            have = len(tasks.get(t, {}).get("methods", {}).get(m, {}).get("seed_ids") or [])
            planned += want
            done += min(have, want)
            undecided += 0 if decided else len(seeds) - 1
            cells.setdefault(m, {})[t] = {"have": have, "want": want, "decided": decided}
            if have < want:
                short.setdefault(m, {})[t] = have
    return {"planned_runs": planned, "finished_runs": done, "undecided_runs": undecided, "seeds_planned": len(seeds),
            "cells": cells, "cells_with_fewer_seeds": short, "methods_short": len(short),
            "complete": not short and not undecided}


def dev_noise(runs: list[dict]) -> dict:
    """Per accuracy task, the binomial standard error (points) of one dev-set accuracy at the mean accuracy of all
    runs: differences between single runs smaller than about twice this are sampling noise of the dev set."""
    out = {}
    for t in sorted({r["task"] for r in runs if "error" not in r}, key=_task_order):
        accs = [r for r in runs if r.get("task") == t and "error" not in r and r.get("metric") == "accuracy"]
        n = median_or_none([r.get("eval_rows") for r in accs])
        if not accs or not n:
            continue
        p = statistics.fmean(r["value"] for r in accs)
        out[t] = {"eval_rows": int(n), "mean_accuracy": rounded(100 * p, 4),
                  "standard_error_points": rounded(100 * math.sqrt(p * (1 - p) / n), 4)}
    return out


def hidlr_losses(tasks: dict) -> dict:
    """Per task, every default-suite method whose mean beats Hi-DLR's (where Hi-DLR loses)."""
    out = {}
    for t, entry in tasks.items():
        h = task_mean(tasks, t, HIDLR)
        if h is None:
            continue
        better = [{"method": m, "mean": s["mean"], "seeds": s["seeds"], "margin": rounded(s["mean"] - h, 4)}
                  for m, s in entry["methods"].items()
                  if m in SUITES["default"] and m != HIDLR and s["mean"] is not None and s["mean"] > h]
        out[t] = sorted(better, key=lambda b: -b["margin"])
    return out


def quality_memory(tasks: dict) -> dict:
    """Peak RSS of hidlr runs over the median AdamW grid run, per task (each run in its own process)."""
    out = {}
    for t, entry in tasks.items():
        h = entry["methods"].get(HIDLR, {}).get("peak_rss_mb")
        adam = median_or_none([entry["methods"][m].get("peak_rss_mb") for m in ADAMW_GRID if m in entry["methods"]])
        if h and adam:
            out[t] = rounded(h / adam, 4)
    return out


def tied_tasks(tasks: dict) -> dict:
    """Tasks on which every method that ran scored the same (e.g. all predict the majority class): such a task
    ranks nothing, and the report says so."""
    out = {}
    for t, entry in tasks.items():
        means = {s["mean"] for s in entry["methods"].values() if s.get("mean") is not None}
        if len(entry["methods"]) >= 2 and len(means) == 1:
            out[t] = {"value": means.pop(), "methods": len(entry["methods"])}
    return out
