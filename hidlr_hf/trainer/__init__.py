"""Hi-DLR inside ``transformers.Trainer`` (docs/METHOD.md section 6).

* :mod:`~hidlr_hf.trainer.config`: :class:`HiDLRConfig` / :class:`HiDLRTrainingArguments`, every ``hidlr_*`` setting,
  validated once;
* :mod:`~hidlr_hf.trainer.trainer`: :class:`HiDLRTrainer`, the swap-in for ``Trainer`` that owns the Hi-DLR logic;
* :mod:`~hidlr_hf.trainer.callback`: :class:`HiDLRCallback`, the same logic for a plain ``Trainer`` (``attach``);
* :mod:`~hidlr_hf.trainer.controller`: :class:`~hidlr_hf.trainer.controller.HiDLRController`, that logic;
* :mod:`~hidlr_hf.trainer.optimizer`: the optimizer with one param group per Hi-DLR group;
* :mod:`~hidlr_hf.trainer.state`: ``hidlr_state.json``, its one writer and one reader;
* :mod:`~hidlr_hf.trainer.export`: the adapter a run discovered, from the trainer or from its folder;
* :mod:`~hidlr_hf.trainer.internals`: every use of a private ``Trainer`` method.
"""

from .callback import HiDLRCallback
from .config import HiDLRConfig, HiDLRTrainingArguments
from .trainer import HiDLRTrainer

__all__ = ["HiDLRCallback", "HiDLRConfig", "HiDLRTrainer", "HiDLRTrainingArguments"]
