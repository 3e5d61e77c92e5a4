"""The core is plain PyTorch: no module under hidlr_hf/core imports transformers or peft."""

import subprocess
import sys
from pathlib import Path

import hidlr_hf.core

CORE = Path(hidlr_hf.core.__file__).parent


def core_modules():
    return sorted("hidlr_hf.core." + p.stem for p in CORE.glob("*.py") if p.stem != "__init__")


def test_core_has_the_modules_of_the_method():
    assert {"hidlr_hf.core.engine", "hidlr_hf.core.estimation", "hidlr_hf.core.rates", "hidlr_hf.core.influence",
            "hidlr_hf.core.grouping", "hidlr_hf.core.selection"} <= set(core_modules())


def test_importing_every_core_module_imports_neither_transformers_nor_peft():
    # A fresh interpreter: this test process has imported transformers long ago.
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        "import hidlr_hf\n"
        "hidlr_hf.HiDLR, hidlr_hf.group_parameters, hidlr_hf.select\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'peft')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
