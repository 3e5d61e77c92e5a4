#!/usr/bin/env python
"""Benchmarks of Hi-DLR on GLUE with real MiniLM weights: quality, overhead, scaling, and a generated report.

The entry point of the benchmark package ``benchmarks/hidlr_bench`` (see its ``cli`` module and benchmarks/README.md)::

    python scripts/benchmark.py --only quality --seeds 0     # seed 0 of the default suite (targets T1-T3)
    python scripts/benchmark.py --only quality --suite ablation
    python scripts/benchmark.py --only overhead              # target T4, on an otherwise idle machine
    python scripts/benchmark.py --only report                # summary.json + docs/BENCHMARKS.md + docs/img/*.png
    python scripts/benchmark.py --quick                      # smoke check, under benchmarks/results/quick/

The order to run them in, and what each costs: benchmarks/README.md.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "benchmarks"):  # this checkout's hidlr_hf and hidlr_bench, installed or not
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from hidlr_bench.cli import main  # noqa: E402  (sets the environment defaults before torch is imported)

if __name__ == "__main__":
    sys.exit(main())
