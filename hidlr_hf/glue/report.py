"""What a ``hidlr-glue`` run reports: the Hi-DLR figure and the summary printed at the end.

:func:`write_report` draws how each group's base rate moved and how influential each group was; it works from plain
lists (``engine.history``, ``engine.group_names``, ``engine.influence.mean``), so it needs no Trainer and can redraw a
figure from a saved ``hidlr_state.json``. :func:`summary_text` is the table of final metrics and of each group's
rate and influence.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Optional

from hidlr_hf.glue.tasks import GlueTask

__all__ = ["REPORT_FILE", "group_rows", "metrics_table", "rate_trajectories", "summary_text", "write_report"]

REPORT_FILE = "hidlr_report.png"


def _number(x) -> float:
    """``x`` as a float; NaN for None (how NaN travels through JSON) or anything non-numeric."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return math.nan
    return value


def rate_trajectories(history: Sequence[Mapping], num_groups: int) -> tuple[list[int], list[list[float]]]:
    """Steps of the probe rounds and, per group, the base rate set at each; NaN where not plottable on a log axis.

    Rounds are taken as recorded (a discarded round keeps the rates it leaves in force); a rate of 0 (a frozen
    group) or a missing value becomes NaN, which matplotlib leaves as a gap.
    """
    steps: list[int] = []
    rates: list[list[float]] = [[] for _ in range(num_groups)]
    for entry in history:
        values = list(entry.get("rates") or [])
        steps.append(int(entry.get("step", len(steps))))
        for k in range(num_groups):
            value = _number(values[k]) if k < len(values) else math.nan
            rates[k].append(value if math.isfinite(value) and value > 0 else math.nan)
    return steps, rates


def write_report(
    history: Sequence[Mapping],
    group_names: Sequence[str],
    influence: Sequence[Optional[float]],
    path: str | os.PathLike,
    *,
    title: Optional[str] = None,
    kept: Optional[Sequence[bool]] = None,
    freeze_step: Optional[int] = None,
) -> str:
    """Write a two-panel PNG to ``path`` and return its path.

    Left: each group's base rate at every probe round (``history`` entries ``{"step", "rates", ...}``), log y.
    Right: mean influence per group as horizontal bars, log x; groups never measured (NaN / None) or with zero
    influence are listed as such instead of drawn. With automatic PEFT, ``kept`` (one flag per group) marks frozen
    groups and ``freeze_step`` draws the step at which they were frozen.
    """
    import matplotlib

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [str(n) for n in group_names]
    k_groups = len(names)
    values = [_number(x) for x in influence]
    if len(values) != k_groups:
        raise ValueError(f"influence has {len(values)} entries but there are {k_groups} groups; pass one per group.")
    if kept is not None and len(kept) != k_groups:
        raise ValueError(f"kept has {len(kept)} entries but there are {k_groups} groups; pass one per group.")
    labels = [n if kept is None or kept[i] else f"{n} (frozen)" for i, n in enumerate(names)]

    steps, rates = rate_trajectories(history, k_groups)
    height = max(4.5, 0.28 * k_groups + 1.5)
    fig = Figure(figsize=(13, height), layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, set on this figure only: pyplot's global backend is left alone
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])

    colors = matplotlib.colormaps["tab20" if k_groups > 10 else "tab10"]
    drawn = 0
    for k, name in enumerate(names):
        series = rates[k]
        if not any(math.isfinite(v) for v in series):
            continue
        left.plot(steps, series, marker="o" if len(steps) < 30 else None, markersize=3, linewidth=1.2,
                  color=colors(k % colors.N), label=name)
        drawn += 1
    if freeze_step is not None:
        # Frozen after step index freeze_step - 1 completed: the line sits between that round and the next.
        left.axvline(freeze_step - 0.5, color="0.3", linestyle="--", linewidth=1, label="groups frozen")
    if drawn:
        left.set_yscale("log")
        left.legend(fontsize=7 if k_groups > 12 else 8, ncol=2 if k_groups > 16 else 1, loc="best", framealpha=0.8)
    else:
        left.text(0.5, 0.5, "no probe rounds recorded", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("optimizer step")
    left.set_ylabel("base learning rate")
    left.set_title("Hi-DLR base rate per group")
    left.grid(True, which="both", alpha=0.3)

    positions = list(range(k_groups))
    shown = [v if math.isfinite(v) and v > 0 else math.nan for v in values]
    measured = [i for i, v in enumerate(shown) if math.isfinite(v)]
    if measured:
        # Bars start a decade below the smallest value: on a log axis a bar cannot start at 0.
        base = 10 ** math.floor(math.log10(min(shown[i] for i in measured)) - 1)
        bars = right.barh([positions[i] for i in measured], [shown[i] - base for i in measured], left=base,
                          color=[colors(i % colors.N) for i in measured])
        if kept is not None:
            for bar, i in zip(bars, measured):
                if not kept[i]:
                    bar.set_alpha(0.35)
                    bar.set_hatch("//")
        right.set_xscale("log")
        right.set_xlim(left=base)
        for i, v in enumerate(values):
            if i not in measured:
                note = "0 (step went uphill)" if v == 0 else "not measured"
                right.text(base, i, f" {note}", va="center", fontsize=7, color="0.4")
    else:
        right.text(0.5, 0.5, "no influence measured", ha="center", va="center", transform=right.transAxes)
    right.set_yticks(positions, labels, fontsize=7 if k_groups > 12 else 8)
    right.invert_yaxis()
    right.set_xlabel("mean influence (loss decrease per parameter)")
    right.set_title("Influence per group")
    right.grid(True, axis="x", which="major", alpha=0.3)

    if title:
        fig.suptitle(title)
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------ console summary


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value == 0:
            return "0"
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


_SKIP_METRIC = ("_runtime", "_samples_per_second", "_steps_per_second", "total_flos")


def metrics_table(metrics: dict) -> str:
    """The metrics as a two-column table, run times last (throughput and FLOP counts left out)."""
    rows = [[k, _fmt(v)] for k, v in metrics.items() if not k.endswith(_SKIP_METRIC) and k not in ("epoch",)]
    runtime = [[k + " (s)", _fmt(float(v))] for k, v in metrics.items() if k.endswith("_runtime")]
    return _table(["metric", "value"], rows + runtime, right={1})


def group_rows(engine, freeze_decision: Optional[dict]) -> tuple[list[str], list[list[str]]]:
    """Per-group rows: name, parameters, rate in force, base rate, influence (and kept/frozen)."""
    header = ["group", "params", "lr in force", "base rate", "influence"]
    kept = freeze_decision.get("kept") if freeze_decision else None
    if kept is not None:
        header.append("status")
    rows = []
    sizes = [sum(p.numel() for i in m for p in engine.optimizer.param_groups[i]["params"]) for m in engine.param_group_indices]
    for k, name in enumerate(engine.group_names):
        row = [
            name,
            _count(sizes[k]),
            _fmt(float(engine.rates_in_force()[k])),
            _fmt(float(engine.base_rates[k])),
            _fmt(float(engine.influence.mean[k])),
        ]
        if kept is not None:
            row.append("kept" if kept[k] else "frozen")
        rows.append(row)
    return header, rows


def summary_text(task: GlueTask, metrics: dict, trainer) -> str:
    """The final metrics (the task's own first) and, when Hi-DLR ran, each group's rates and influence."""
    def task_metric_first(key):
        bare = key.removeprefix("eval_").removesuffix("_mm")
        return (0, task.metric_names.index(bare)) if key.startswith("eval_") and bare in task.metric_names else (1, 0)

    ordered = {k: metrics[k] for k in sorted(metrics, key=task_metric_first)}  # stable: keeps the rest in order
    parts = [f"Final metrics ({task.name})", metrics_table(ordered)]
    engine = getattr(trainer, "hidlr", None)
    if engine is None:
        parts.append("Hi-DLR: off or not run (no training); no per-group rates to show.")
    else:
        header, rows = group_rows(engine, trainer.hidlr_controller.freeze_decision)
        parts.append(
            f"Hi-DLR groups ({len(rows)} groups, {engine.num_rounds} probe rounds, "
            f"{engine.discarded_rounds} discarded)"
        )
        parts.append(_table(header, rows, right={1, 2, 3, 4}))
    return "\n".join(parts)
