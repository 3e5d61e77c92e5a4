"""GLUE support: task definitions (``tasks``), data loading (``data``) and run_glue-style metrics
(``metrics``). Import the submodules directly; this package imports nothing heavy by itself."""
