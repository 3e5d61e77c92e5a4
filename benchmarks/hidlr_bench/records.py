"""Run files and the small statistics over them: JSON without NaN, written atomically; medians and means that skip
missing values; rounding for the summary."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from hidlr_hf.files import write_json_atomic as _write_json_atomic


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename: never a half-written file."""
    _write_json_atomic(path, json_safe(obj), indent=1)


def read_json(path: Path):
    """The JSON in ``path``."""
    with open(path) as fh:
        return json.load(fh)


def json_safe(obj):
    """NaN/inf become None (JSON has no NaN), tuples lists, numpy scalars floats."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    try:
        value = float(obj)
    except (TypeError, ValueError):
        return str(obj)
    return value if math.isfinite(value) else None


def split_csv(text, cast=str) -> tuple:
    """``"a, b,,c"`` -> ``("a", "b", "c")``, each item passed through ``cast``."""
    return tuple(cast(x.strip()) for x in str(text).split(",") if x.strip())


def median_or_none(values):
    """The median of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mean_or_none(values):
    """The mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def rounded(x, digits=6):
    """``round(x, digits)``; None for None, NaN or infinity."""
    return None if x is None or not math.isfinite(x) else round(float(x), digits)
