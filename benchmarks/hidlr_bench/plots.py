"""The report's figures, drawn from ``summary.json`` alone (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from .protocol import ALL_METHODS, HIDLR_STARTS, METHOD_SPECS, SUITES


def lr_points(tasks: dict) -> dict:
    """Per task, ``{"adamw": [...], "hidlr": [...]}`` of ``(learning rate, mean, std, seeds)`` sorted by rate: AdamW
    at each fixed rate, and Hi-DLR (module_type groups) by its *starting* rate. The robust-start claim in one view."""
    out = {}
    for task, entry in tasks.items():
        points = {"adamw": [], "hidlr": []}
        for method, stats in entry["methods"].items():
            kind = "adamw" if method.startswith("adamw_lr") else "hidlr" if method in HIDLR_STARTS else None
            if kind and stats.get("mean") is not None:
                points[kind].append((METHOD_SPECS[method]["lr"], stats["mean"], stats.get("std"), stats["seeds"]))
        if points["adamw"] or points["hidlr"]:
            out[task] = {k: sorted(v) for k, v in points.items()}
    return out


def rate_figure(plt, rates: dict, path: Path) -> bool:
    """One panel per starting rate (``hidlr``, ``hidlr_from_1e-06``, ``hidlr_from_1e-03`` on one task and seed): each
    group's base rate after every probe round on a log axis, with the ends of the head phase and of calibration
    marked. Returns whether anything was drawn."""
    methods = rates.get("methods") or {}
    if not methods:
        return False
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False, sharey=True)
    for ax, (method, r) in zip(axes[0], methods.items()):
        for k, name in enumerate(r["group_names"] or []):
            ys = [row[k] if k < len(row) and row[k] and row[k] > 0 else float("nan") for row in r["rates"]]
            ax.plot(r["steps"], ys, marker=".", markersize=3, linewidth=1.0, label=name)
        ax.axhline(r["start"], color="grey", linewidth=0.6, linestyle=":")
        for step, style, label in ((r.get("head_end"), "--", "head phase ends"),
                                   (r.get("calibration_end"), "-.", "calibration ends")):
            if step:
                ax.axvline(step, color="k", linewidth=0.8, linestyle=style, label=label)
        ax.set_yscale("log")
        ax.set_title(f"{method} (start {r['start']:.0e})")
        ax.set_xlabel("step")
        if r.get("total_steps"):
            ax.set_xlim(0, r["total_steps"])
    axes[0][0].set_ylabel(f"base rate ({rates.get('task')}, seed {rates.get('seed')})")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _grid(plt, panels: int, width: float, height: float):
    """A figure with ``panels`` axes in at most two columns (unused cells blanked), and its axes in reading order."""
    cols = min(2, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    return fig, list(axes.flat)


def write_plots(summary: dict, img_dir: Path) -> list[str]:
    """PNG figures drawn from ``summary``; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # Loss curves of the default suite (the ablation and PEFT runs would crowd the legend).
    curves = {t: {m: c for m, c in methods.items() if m in SUITES["default"]}
              for t, methods in (summary.get("curves") or {}).items()}
    curves = {t: methods for t, methods in curves.items() if methods}
    if curves:
        colors = plt.get_cmap("tab20")
        fig, axes = _grid(plt, len(curves), 6, 4)
        handles = {}
        for ax, (task, methods) in zip(axes, curves.items()):
            for method, c in methods.items():
                if c["steps"]:
                    index = ALL_METHODS.index(method) if method in ALL_METHODS else len(ALL_METHODS)
                    style = "-" if method.startswith("hidlr") or method.startswith("autopeft") else "--"
                    (line,) = ax.plot(c["steps"], c["loss"], style, color=colors(index % 20), linewidth=1.2,
                                      marker=".", markersize=4)
                    handles[method] = line
            ax.set_title(task)
            ax.set_xlabel("step")
            ax.set_ylabel("training loss (mean over seeds)")
        fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=7)
        fig.tight_layout(rect=(0, 0, 0.82, 1))
        fig.savefig(img_dir / "loss_curves.png", dpi=110)
        plt.close(fig)
        written.append("loss_curves.png")
    if rate_figure(plt, summary.get("rates") or {}, img_dir / "hidlr_rates.png"):
        written.append("hidlr_rates.png")
    sensitivity = lr_points(summary.get("tasks") or {})
    if sensitivity:
        fig, axes = _grid(plt, len(sensitivity), 5.5, 3.8)
        for ax, (task, points) in zip(axes, sensitivity.items()):
            for kind, label, style in (("adamw", "AdamW at a fixed rate", "s--"),
                                       ("hidlr", "Hi-DLR started at that rate", "o-")):
                if points[kind]:
                    lr, mean, std, _ = zip(*points[kind])
                    ax.errorbar(lr, mean, yerr=[x or 0.0 for x in std], fmt=style, capsize=3, label=label)
            ax.set_xscale("log")
            ax.set_title(task)
            ax.set_xlabel("learning rate (Hi-DLR: starting rate)")
            ax.set_ylabel(f"{summary['tasks'][task]['metric']} x 100")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img_dir / "lr_sensitivity.png", dpi=110)
        plt.close(fig)
        written.append("lr_sensitivity.png")
    by_task = (summary.get("overhead") or {}).get("tasks") or {}
    if by_task:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = list(by_task)
        lengths = sorted({n for entry in by_task.values() for n in entry.get("projected") or {}}, key=int)
        bars = [("measured (whole run)", lambda e: e.get("wall_clock_ratio"))]
        bars += [(f"projected, {int(n):,} steps", lambda e, n=n: (e.get("projected") or {}).get(n)) for n in lengths]
        width = 0.8 / len(bars)
        shown = []
        for i, (label, get) in enumerate(bars):
            values = [get(by_task[k]) for k in keys]
            shown += [v for v in values if v is not None]
            ax.bar([x - 0.4 + width * (i + 0.5) for x in range(len(keys))],
                   [v if v is not None else float("nan") for v in values], width, label=label)
        ax.set_ylim(min(shown + [1.0]) - 0.03, max(shown + [1.10]) + 0.03)  # the ratios differ in the second digit
        ax.axhline(1.0, color="k", linewidth=0.8)
        for value, style, label in ((1.10, ":", "target 1.10 (measured)"), (1.03, "--", "target 1.03 (2,000 steps)")):
            ax.axhline(value, color="k", linewidth=0.8, linestyle=style, label=label)
        ax.set_xticks(list(range(len(keys))), [f"{k} ({by_task[k].get('steps')} steps)" for k in keys])
        ax.set_ylabel("wall clock, hidlr / AdamW")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img_dir / "overhead.png", dpi=110)
        plt.close(fig)
        written.append("overhead.png")
    sc = summary.get("scaling") or {}
    for key, fname, xkey, xlabel in (("groups", "scaling_groups.png", "K", "number of groups K (MiniLM)"),
                                     ("model_size", "scaling_size.png", "params_millions", "parameters (millions)")):
        data = sc.get(key)
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(data[xkey], data["seconds"], "o", label="measured")
        fit = data.get("fit")
        if fit:
            xs = [min(data[xkey]), max(data[xkey])]
            ax.plot(xs, [fit["slope"] * x + fit["intercept"] for x in xs], "-",
                    label=f"linear fit, R² {fit['r2']:.3f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds per probe round")
        ax.legend()
        fig.tight_layout()
        fig.savefig(img_dir / fname, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written
