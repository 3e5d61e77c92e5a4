"""The quality runs aggregated per task and method: scores over seeds, costs, loss curves, rate trajectories; and
what the run files cover of the protocol.

Scores are points (the task's main metric x 100), as mean and sample standard deviation over seeds; costs are means
or medians over seeds. Missing runs stay missing: the report says "not run" rather than guessing.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from .protocol import ADAMW_METHODS, ALL_METHODS, FULL, METHODS, TASKS, TUNING_SEED, pick_tuned, runs_every_seed
from .records import mean_or_none, median_or_none, read_json, rounded


def load_runs(out: Path) -> list[dict]:
    """Every finished run file under ``<out>/runs`` (failed ones included, with their ``error``)."""
    runs = []
    for path in sorted((Path(out) / "runs").glob("*/*/seed*.json")):
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


def aggregate_tasks(runs: list[dict]) -> tuple[dict, dict, dict, list]:
    """Per task and method: mean/std (points = metric x 100) over seeds and the costs; also loss curves, Hi-DLR rate
    trajectories, and the failed runs."""
    tasks: dict = {}
    curves: dict = {}
    rates: dict = {}
    errors = []
    for run in runs:
        if "error" in run:
            errors.append({k: run.get(k) for k in ("task", "method", "seed", "error")})
    ok = [r for r in runs if "error" not in r]
    for task in sorted({r["task"] for r in ok}, key=lambda t: (TASKS + (t,)).index(t)):
        task_runs = [r for r in ok if r["task"] == task]
        entry = tasks.setdefault(task, {"metric": task_runs[0]["metric"], "unit": "points (metric x 100)", "methods": {}})
        order = {m: i for i, m in enumerate(ALL_METHODS)}
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
                "trainable_params": mruns[0].get("trainable_params"),
                "trainable_params_final": median_or_none([r.get("trainable_params_final") for r in mruns]),
                "total_params": mruns[0].get("total_params"),
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
            entry["methods"][method] = stats
            curves.setdefault(task, {})[method] = _curve_mean([r.get("loss_curve") or [] for r in mruns])
            if method == "hidlr" and hid:
                first = mruns[0]["hidlr"]
                rates.setdefault(task, {})["hidlr"] = {
                    "seed": mruns[0]["seed"],
                    "group_names": first.get("group_names"),
                    "steps": [h.get("step") for h in first.get("history") or []],
                    "rates": [[rounded(x, 10) for x in (h.get("rates") or [])] for h in first.get("history") or []],
                }
    return tasks, curves, rates, errors


def task_mean(tasks: dict, task: str, method: str):
    """The mean score (points) of ``method`` on ``task``; None when it did not run there."""
    stats = tasks.get(task, {}).get("methods", {}).get(method)
    return None if stats is None else stats.get("mean")


def tuning_scores(tasks: dict, task: str) -> dict:
    """``{AdamW method: (score, training loss)}`` of ``task``'s grid on the tuning seed, from the aggregated stats."""
    out = {}
    for method in ADAMW_METHODS:
        stats = tasks.get(task, {}).get("methods", {}).get(method)
        if stats and TUNING_SEED in (stats.get("seed_ids") or []):
            i = stats["seed_ids"].index(TUNING_SEED)
            losses = stats.get("train_losses") or [None] * len(stats["seed_ids"])
            out[method] = (stats["values"][i], losses[i])
    return out


def tuned_adamw(tasks: dict, task: str) -> str | None:
    """The AdamW rate tuned on ``task``: best on the tuning seed (the rule the runner follows)."""
    return pick_tuned(tuning_scores(tasks, task))


def hidlr_losses(tasks: dict) -> dict:
    """Per task, every method whose mean beats Hi-DLR's (where Hi-DLR loses)."""
    out = {}
    for t, entry in tasks.items():
        h = task_mean(tasks, t, "hidlr")
        if h is None:
            continue
        better = [{"method": m, "mean": s["mean"], "margin": rounded(s["mean"] - h, 4)}
                  for m, s in entry["methods"].items() if m != "hidlr" and s["mean"] is not None and s["mean"] > h]
        out[t] = sorted(better, key=lambda b: -b["margin"])
    return out


def quality_memory(tasks: dict) -> dict:
    """Peak RSS of hidlr runs over the median AdamW run, per task (each run in its own process)."""
    out = {}
    for t, entry in tasks.items():
        h = entry["methods"].get("hidlr", {}).get("peak_rss_mb")
        adam = median_or_none([entry["methods"][m].get("peak_rss_mb") for m in ADAMW_METHODS if m in entry["methods"]])
        if h and adam:
            out[t] = rounded(h / adam, 4)
    return out


def coverage(tasks: dict, seeds: tuple = FULL["seeds"]) -> dict:
    """What of the default protocol the runs found cover: counts, and per method the tasks it ran on with fewer seeds
    than the protocol gives it (the report marks conclusions drawn from those)."""
    planned = done = 0
    short = {}
    for t in TASKS:
        # An AdamW rate no target names gets the tuning seed only, unless it is the tuned one.
        scores = tuning_scores(tasks, t)
        tuned = pick_tuned(scores) if len(scores) == len(ADAMW_METHODS) else None
        if tuned is None:
            planned += len(seeds) - 1  # the later seeds of the rate this grid will pick (at most)
        for m in METHODS:
            want = len(seeds) if runs_every_seed(m) or m == tuned else 1
            have = len(tasks.get(t, {}).get("methods", {}).get(m, {}).get("seed_ids") or [])
            planned += want
            done += min(have, want)
            if have < want:
                short.setdefault(m, {})[t] = have
    return {"planned_runs": planned, "finished_runs": done, "seeds_planned": len(seeds),
            "cells_with_fewer_seeds": short, "complete": not short}


def dev_noise(runs: list[dict]) -> dict:
    """Per accuracy task, the binomial standard error (points) of one dev-set accuracy at the mean accuracy of all
    runs: differences between single runs smaller than about twice this are sampling noise of the dev set."""
    out = {}
    for t in sorted({r["task"] for r in runs if "error" not in r}):
        accs = [r for r in runs if r.get("task") == t and "error" not in r and r.get("metric") == "accuracy"]
        n = median_or_none([r.get("eval_rows") for r in accs])
        if not accs or not n:
            continue
        p = statistics.fmean(r["value"] for r in accs)
        out[t] = {"eval_rows": int(n), "mean_accuracy": rounded(100 * p, 4),
                  "standard_error_points": rounded(100 * math.sqrt(p * (1 - p) / n), 4)}
    return out


def tied_tasks(tasks: dict) -> dict:
    """Tasks on which every method that ran scored the same (e.g. all predict the majority class): such a task
    ranks nothing at this step budget, and the report says so."""
    out = {}
    for t, entry in tasks.items():
        means = {s["mean"] for s in entry["methods"].values() if s.get("mean") is not None}
        if len(entry["methods"]) >= 2 and len(means) == 1:
            out[t] = {"value": means.pop(), "methods": len(entry["methods"])}
    return out
