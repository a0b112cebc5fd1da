"""The distillation engine: the loop (`distill`), its step (`objective`, `losses`, `mlm`, `align` for teachers
with other tokenizers), models (`teachers`, `students`, `models`), `batching`, `optim`, `checkpoint` (exact
resume), `cost` (FLOP estimate) and `config`. It imports nothing above `kdlib.data`.
"""
