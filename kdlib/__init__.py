"""kdlib: distil Romanian BERTs from one or several teachers, evaluate them, and measure loyalty.

The library behind the reproducibility book for Avram et al. (LREC 2022). Modules, one concept each:
``data`` (evaluation tasks), ``corpus`` (distillation text), ``teachers``, ``students``, ``losses``,
``align`` (cross-tokenizer), ``distill`` (the training loop), ``finetune``, ``metrics``, ``loyalty``,
``bench`` and ``runner`` (papermill pipeline).
"""

__version__ = "0.1.0"
