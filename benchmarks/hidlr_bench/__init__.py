"""The Hi-DLR benchmark: quality, overhead and scaling on GLUE with real MiniLM weights, and the generated report.

Run it as ``python scripts/benchmark.py`` (see :mod:`hidlr_bench.cli` and benchmarks/README.md). The package:

* :mod:`~hidlr_bench.protocol`: tasks and their length, methods, suites, seed rules, the settings every run shares;
* :mod:`~hidlr_bench.loading`: GLUE data and the MiniLM classifier, from :mod:`hidlr_hf.glue`;
* :mod:`~hidlr_bench.methods`: how one (task, method, seed) run trains and what it records;
* :mod:`~hidlr_bench.runner`: plans, the seed rules decided as runs come up, the run cache, one subprocess per run;
* :mod:`~hidlr_bench.overhead` and :mod:`~hidlr_bench.scaling`: whole-run wall clock and memory of Hi-DLR against
  AdamW side by side, projected to longer runs; the cost of a probe round;
* :mod:`~hidlr_bench.summary` and :mod:`~hidlr_bench.targets`: ``summary.json`` from whatever runs exist;
* :mod:`~hidlr_bench.report` and :mod:`~hidlr_bench.plots`: ``docs/BENCHMARKS.md`` and its figures;
* :mod:`~hidlr_bench.records` and :mod:`~hidlr_bench.environment`: JSON files, statistics, machine and code facts.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")
# OpenMP threads that sleep while waiting instead of spinning: on a shared 2-core machine a spinning thread pool slows
# several-fold whenever another process takes a core (measured: a MiniLM step 0.44 s quiet, 1.5 s next to one busy
# process with spinning threads, 0.73 s with passive ones; 0.50 s passive when quiet). Export OMP_WAIT_POLICY=ACTIVE
# to override. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "benchmark.py"
"""The entry point; each quality run and memory measurement runs it again in a subprocess."""
