"""One module per study chapter on top of the engine: the ensemble ablation (`ablation`), task-specific
students (`task_distill`, `task_students`, `task_study`).
"""
