"""Fine-tuning and evaluation on a task (`finetune`), its metrics (`metrics`), and loyalty of a student to its
teachers (`loyalty`).
"""
