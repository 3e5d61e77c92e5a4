"""The private Trainer methods Hi-DLR uses (hidlr_hf/trainer/internals.py) exist, with the parameters it passes.

When transformers renames or removes one, this test names it, and internals.py is the only module to update.
"""

import inspect
import re
from pathlib import Path

import pytest
from transformers import Trainer

import hidlr_hf
from hidlr_hf.trainer import internals


@pytest.mark.parametrize("name", sorted(internals.PRIVATE_TRAINER_METHODS))
def test_private_trainer_method_exists_with_its_parameters(name):
    method = getattr(Trainer, name, None)
    assert callable(method), f"transformers.Trainer.{name} is gone; update hidlr_hf/trainer/internals.py"
    parameters = inspect.signature(method).parameters
    for parameter in internals.PRIVATE_TRAINER_METHODS[name]:
        assert parameter in parameters, f"Trainer.{name} has no parameter {parameter!r}; update internals.py"


@pytest.mark.parametrize("name", sorted(internals.PRIVATE_TRAINER_ATTRIBUTES))
def test_private_trainer_attribute_is_set_by_its_method(name, tmp_path):
    """``_trial``: every ``train()`` sets it through ``_hp_search_setup``; a trial's checkpoint folder depends on it."""
    from conftest import tiny_roberta
    from transformers import TrainingArguments

    setter = internals.PRIVATE_TRAINER_ATTRIBUTES[name]
    trainer = Trainer(model=tiny_roberta(), args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    assert callable(getattr(Trainer, setter, None)), f"transformers.Trainer.{setter} is gone; update internals.py"
    trial = {"learning_rate": 1e-4}
    getattr(trainer, setter)(trial)  # no search backend: it only records the trial
    assert getattr(trainer, name, None) is trial, f"Trainer.{setter} no longer sets self.{name}; update internals.py"
    assert internals.current_trial(trainer) is trial
    getattr(trainer, setter)(None)
    assert internals.current_trial(trainer) is None


def test_no_other_module_uses_a_private_trainer_method():
    package = Path(hidlr_hf.__file__).parent
    used = {}
    for path in package.rglob("*.py"):
        for name in re.findall(r"\b(?:trainer|self)\._(\w+)\b", path.read_text()):
            if callable(getattr(Trainer, "_" + name, None)) or "_" + name in internals.PRIVATE_TRAINER_ATTRIBUTES:
                used.setdefault("_" + name, set()).add(path.relative_to(package).as_posix())
    assert set(used) <= set(internals.PRIVATE_TRAINER_METHODS) | set(internals.PRIVATE_TRAINER_ATTRIBUTES)
    assert set(internals.PRIVATE_TRAINER_METHODS) <= set(used)
    assert all(files == {"trainer/internals.py"} for files in used.values()), used
