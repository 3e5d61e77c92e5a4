"""The report's figures, drawn from ``summary.json`` alone (matplotlib, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

from .protocol import ALL_METHODS, METHOD_SPECS


def lr_points(tasks: dict) -> dict:
    """Per task, ``{"adamw": [...], "hidlr": [...]}`` of ``(learning rate, mean, std, seeds)`` sorted by rate: AdamW
    at each fixed rate, and Hi-DLR (module_type groups) by its *starting* rate. The robust-start claim in one view."""
    hidlr_family = ("hidlr", "hidlr_from_1e-06", "hidlr_from_1e-03")
    out = {}
    for task, entry in tasks.items():
        points = {"adamw": [], "hidlr": []}
        for method, stats in entry["methods"].items():
            kind = "adamw" if method.startswith("adamw_lr") else "hidlr" if method in hidlr_family else None
            if kind and stats.get("mean") is not None:
                points[kind].append((METHOD_SPECS[method]["lr"], stats["mean"], stats.get("std"), stats["seeds"]))
        if points["adamw"] or points["hidlr"]:
            out[task] = {k: sorted(v) for k, v in points.items()}
    return out


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
    curves = summary.get("curves") or {}
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
    rates = summary.get("rates") or {}
    if rates:
        fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 4), squeeze=False)
        for ax, (task, entry) in zip(axes[0], rates.items()):
            r = entry["hidlr"]
            for k, name in enumerate(r["group_names"] or []):
                ys = [row[k] if k < len(row) and row[k] and row[k] > 0 else float("nan") for row in r["rates"]]
                ax.plot(r["steps"], ys, marker=".", label=name)
            ax.set_yscale("log")
            ax.set_title(f"{task} (seed {r['seed']})")
            ax.set_xlabel("step")
            ax.set_ylabel("base rate")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img_dir / "hidlr_rates.png", dpi=110)
        plt.close(fig)
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
    by_every = (summary.get("overhead") or {}).get("by_every") or {}
    if by_every:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = list(by_every)
        xs = range(len(keys))
        bars = [("measured mean", lambda v: v["step_time_ratio_mean"]),
                ("measured median", lambda v: v["step_time_ratio_median"])]
        # The measured window is short; the projections show where the same per-round costs lead in longer runs.
        for n in (1000, 10000):
            if all(str(n) in (by_every[k].get("projected_ratio") or {}) for k in keys):
                bars.append((f"projected, {n} steps", lambda v, n=n: v["projected_ratio"][str(n)]))
        width = 0.8 / len(bars)
        for i, (label, get) in enumerate(bars):
            ax.bar([x - 0.4 + width * (i + 0.5) for x in xs], [get(by_every[k]) for k in keys], width, label=label)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.axhline(1.05, color="k", linewidth=0.8, linestyle=":", label="target 1.05 at auto")
        ax.set_xticks(list(xs), keys)
        ax.set_xlabel("hidlr_every")
        ax.set_ylabel("step time, Hi-DLR / plain")
        ax.legend()
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
