"""Benchmarks that print figures: speed and size (`speed`), the cross-tokenizer projection (`align`), corpus
preparation (`corpus`), and fine-tuning against `transformers.Trainer` (`finetune`).
"""
