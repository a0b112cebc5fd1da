"""Task data and distillation text: task declarations (`tasks`), file readers (`readers`), pinned sources
(`sources`), per-language normalisation (`text`), `load` (load_task, the `data` command) and `corpus`.
"""
