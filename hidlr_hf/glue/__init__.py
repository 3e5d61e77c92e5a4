"""GLUE with Hi-DLR, in the manner of transformers' ``run_glue.py``: the ``hidlr-glue`` command and its parts.

* :mod:`~hidlr_hf.glue.tasks`: the nine tasks (text columns, labels, metrics);
* :mod:`~hidlr_hf.glue.data`: loading splits (classic files, your own files, the Hub) and tokenizing them;
* :mod:`~hidlr_hf.glue.modeling`: the model, its tokenizer, the classifier head, LoRA;
* :mod:`~hidlr_hf.glue.arguments` and :mod:`~hidlr_hf.glue.recipes`: flags, recipes, mode defaults;
* :mod:`~hidlr_hf.glue.metrics`: run_glue's metrics without ``evaluate``;
* :mod:`~hidlr_hf.glue.report`: the Hi-DLR figure and the final summary;
* :mod:`~hidlr_hf.glue.output`: an output folder holding an earlier run (resumed when asked, otherwise refused);
* :mod:`~hidlr_hf.glue.cli`: ``hidlr-glue`` itself.

Import the submodules directly; this package imports nothing heavy by itself.
"""
