"""The Hi-DLR algorithm in plain PyTorch: no ``transformers`` import anywhere in this package.

Usable from any training loop and testable on a quadratic in milliseconds (docs/METHOD.md):

* :mod:`~hidlr_hf.core.grouping`: which parameters share one learning rate (section 9);
* :mod:`~hidlr_hf.core.estimation`: probe designs and the least-squares fit of ``b`` and ``A`` (section 4);
* :mod:`~hidlr_hf.core.rates`: from a fit to new base rates, and when to probe (sections 5 and 7);
* :mod:`~hidlr_hf.core.influence`: how much each group can lower the loss (sections 3 and 8);
* :mod:`~hidlr_hf.core.selection`: which groups automatic PEFT keeps under a budget (section 8);
* :mod:`~hidlr_hf.core.engine`: :class:`~hidlr_hf.core.engine.HiDLR`, one optimizer step with a probe round (section 6).

The Hugging Face layer (:mod:`hidlr_hf.trainer`, :mod:`hidlr_hf.peft`, :mod:`hidlr_hf.glue`) builds on this package;
nothing here imports from it.
"""
