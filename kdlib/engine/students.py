"""Students: DistilBERT-shaped models built from a BERT teacher (or randomly), and the layer rule.

Initialisation from the teacher follows HF's ``extract_distilbert.py`` (what the paper's authors most likely
used): embeddings, MLM head and the teacher layers chosen by :func:`teacher_layer_map` (0, 2, 4, 7, 9, 11
for a 12-layer teacher) are copied into a DistilBERT with half the teacher's layers.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
from torch import nn

SHAPES = ("distilbert", "bort")
INITS = ("teacher", "random")


def teacher_layer_map(n_teacher_layers: int, n_student_layers: int) -> list[int]:
    """Teacher layer copied into each student layer: round(i·(L−1)/(n−1)) for i = 0..n−1.

    Rounding is half-up on exact fractions (not Python's banker's rounding), so 12→6 gives
    [0, 2, 4, 7, 9, 11] and the first and last teacher layers are always kept. With one student layer
    the formula's i = 0 term applies: [0] (the bottom layer, which reads the embeddings as in the teacher).
    """
    for name, value in (("n_teacher_layers", n_teacher_layers), ("n_student_layers", n_student_layers)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"teacher_layer_map: {name}={value!r}; expected a positive integer")
    if n_student_layers > n_teacher_layers:
        raise ValueError(
            f"teacher_layer_map: a student with {n_student_layers} layers cannot be initialised "
            f"from a teacher with {n_teacher_layers} layers; expected n_student_layers <= "
            f"n_teacher_layers"
        )
    if n_student_layers == 1:
        return [0]
    step = Fraction(n_teacher_layers - 1, n_student_layers - 1)
    return [int(i * step + Fraction(1, 2)) for i in range(n_student_layers)]


def _bort_shape(n_layers: int, n_heads: int, hidden: int) -> tuple[int, int, int]:
    """Shallow-wide Bort-like shape scaled from the teacher: 12 layers / 12 heads -> 4 layers / 8 heads.

    Width (hidden size) stays the teacher's, so the cosine loss on hidden states still applies; the FFN is
    0.75 x hidden as in Bort (1024 wide, 768 FFN). Heads: the largest divisor of hidden <= 2/3 of the
    teacher's heads.
    """
    layers = max(1, int(Fraction(n_layers, 3) + Fraction(1, 2)))
    target = max(1, int(Fraction(2 * n_heads, 3) + Fraction(1, 2)))
    heads = max(h for h in range(1, target + 1) if hidden % h == 0)
    return layers, heads, max(1, (3 * hidden) // 4)


def _is_bert_mlm(teacher: nn.Module) -> bool:
    from transformers import BertForMaskedLM, BertForPreTraining

    return isinstance(teacher, (BertForMaskedLM, BertForPreTraining))


def student_config(teacher: nn.Module, *, shape: str = "distilbert", num_layers: int | None = None):
    """The DistilBertConfig of a student for `teacher`: same vocabulary, width and positions."""
    from transformers import DistilBertConfig

    if shape not in SHAPES:
        raise ValueError(f"make_student: shape={shape!r}; expected one of {SHAPES}")
    tc = teacher.config
    need = (
        "vocab_size",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "num_hidden_layers",
        "max_position_embeddings",
    )
    lacking = [k for k in need if not hasattr(tc, k)]
    if lacking:
        raise ValueError(
            f"make_student: the teacher config ({type(tc).__name__}) lacks {lacking}; expected a "
            f"BERT-like encoder config"
        )
    if shape == "distilbert":
        layers, heads, ffn = max(1, tc.num_hidden_layers // 2), tc.num_attention_heads, tc.intermediate_size
    else:
        layers, heads, ffn = _bort_shape(tc.num_hidden_layers, tc.num_attention_heads, tc.hidden_size)
    if num_layers is not None:
        if not isinstance(num_layers, int) or isinstance(num_layers, bool) or num_layers <= 0:
            raise ValueError(f"make_student: num_layers={num_layers!r}; expected a positive integer or None")
        layers = num_layers
    activation = getattr(tc, "hidden_act", "gelu")
    if activation not in ("gelu", "relu"):
        raise ValueError(f"make_student: teacher activation {activation!r}; DistilBERT supports 'gelu' or 'relu'")
    return DistilBertConfig(
        vocab_size=tc.vocab_size,
        dim=tc.hidden_size,
        n_heads=heads,
        hidden_dim=ffn,
        n_layers=layers,
        max_position_embeddings=tc.max_position_embeddings,
        activation=activation,
        dropout=getattr(tc, "hidden_dropout_prob", 0.1),
        attention_dropout=getattr(tc, "attention_probs_dropout_prob", 0.1),
        pad_token_id=tc.pad_token_id if tc.pad_token_id is not None else 0,
        sinusoidal_pos_embds=False,
        tie_word_embeddings=True,
        architectures=["DistilBertForMaskedLM"],
    )


@torch.no_grad()
def _copy_from_bert(student: nn.Module, teacher: nn.Module, layers: list[int]) -> None:
    """Copy embeddings, the chosen encoder layers and the MLM head of a BERT MLM into a DistilBERT MLM.

    BERT adds token_type_embeddings[0] to every token of segment 0; DistilBERT has no token types, so that
    row is folded into the position embeddings (not the word embeddings: those are tied to the MLM decoder).
    """
    bert, head = teacher.bert, teacher.cls.predictions
    s_emb, t_emb = student.distilbert.embeddings, bert.embeddings
    s_emb.word_embeddings.weight.copy_(t_emb.word_embeddings.weight)
    s_emb.position_embeddings.weight.copy_(t_emb.position_embeddings.weight + t_emb.token_type_embeddings.weight[0])
    s_emb.LayerNorm.load_state_dict(t_emb.LayerNorm.state_dict())
    for s_layer, t_index in zip(student.distilbert.transformer.layer, layers):
        t_layer = bert.encoder.layer[t_index]
        att = t_layer.attention
        pairs = [
            (s_layer.attention.q_lin, att.self.query),
            (s_layer.attention.k_lin, att.self.key),
            (s_layer.attention.v_lin, att.self.value),
            (s_layer.attention.out_lin, att.output.dense),
            (s_layer.sa_layer_norm, att.output.LayerNorm),
            (s_layer.ffn.lin1, t_layer.intermediate.dense),
            (s_layer.ffn.lin2, t_layer.output.dense),
            (s_layer.output_layer_norm, t_layer.output.LayerNorm),
        ]
        for s_mod, t_mod in pairs:
            s_mod.load_state_dict(t_mod.state_dict())
    student.vocab_transform.load_state_dict(head.transform.dense.state_dict())
    student.vocab_layer_norm.load_state_dict(head.transform.LayerNorm.state_dict())
    student.vocab_projector.bias.copy_(head.bias)
    if student.vocab_projector.weight.data_ptr() != student.distilbert.embeddings.word_embeddings.weight.data_ptr():
        student.vocab_projector.weight.copy_(head.decoder.weight)  # untied student: copy the decoder too


def make_student(
    teacher: nn.Module,
    *,
    init: str = "teacher",
    shape: str = "distilbert",
    num_layers: int | None = None,
    seed: int = 0,
):
    """A DistilBertForMaskedLM student for `teacher` (same vocabulary and width).

    shape="distilbert": half the teacher's layers (or `num_layers`), same heads and FFN.
    shape="bort": shallow-wide Bort-like (RobBERTje's comparison): 12 -> 4 layers, 12 -> 8 heads, FFN 0.75 x
    hidden; its heads and FFN differ from the teacher's, so it supports only init="random".
    init="teacher" (BERT teachers only) copies embeddings, MLM head and layers per teacher_layer_map;
    init="random" draws fresh weights with `seed` (the global torch RNG is left untouched).
    """
    from transformers import DistilBertForMaskedLM

    if init not in INITS:
        raise ValueError(f"make_student: init={init!r}; expected one of {INITS}")
    config = student_config(teacher, shape=shape, num_layers=num_layers)
    if init == "teacher":
        if shape != "distilbert":
            raise ValueError(
                f"make_student: shape={shape!r} has {config.n_heads} heads and FFN {config.hidden_dim} "
                f"(teacher: {teacher.config.num_attention_heads} and {teacher.config.intermediate_size}), "
                f"so its layers cannot be copied; use init='random' for shape='bort'"
            )
        if not _is_bert_mlm(teacher):
            raise ValueError(
                f"make_student: init='teacher' needs a BERT masked-LM teacher (BertForMaskedLM or "
                f"BertForPreTraining); got {type(teacher).__name__}. Use init='random' for other "
                f"teachers"
            )
        layers = teacher_layer_map(teacher.config.num_hidden_layers, config.n_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = DistilBertForMaskedLM(config)
    if init == "teacher":
        _copy_from_bert(student, teacher, layers)
        student.config.update({"kdlib_init": "teacher", "kdlib_teacher_layers": layers})
    else:
        student.config.update({"kdlib_init": "random", "kdlib_seed": seed})
    student.config.update({"kdlib_shape": shape})
    param = next(teacher.parameters(), None)
    return student.to(param.device) if param is not None else student


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters of a (BERT or DistilBERT) model, shared tensors counted once.

    embeddings: the embedding block; encoder: the transformer layers; head: everything else (pooler, MLM
    head minus the decoder weight tied to the word embeddings); total = sum of the three.
    """
    seen: set[int] = set()
    counts = {"embeddings": 0, "encoder": 0, "head": 0}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        part = (
            "embeddings"
            if ".embeddings." in f".{name}"
            else ("encoder" if (".encoder." in f".{name}" or ".transformer." in f".{name}") else "head")
        )
        counts[part] += p.numel()
    counts["total"] = sum(counts.values())
    return counts


def describe(model: nn.Module) -> dict[str, Any]:
    """A small JSON-friendly summary of a model's shape and size for tables in the book."""
    c = model.config
    return {
        "class": type(model).__name__,
        "layers": getattr(c, "num_hidden_layers", getattr(c, "n_layers", None)),
        "hidden": getattr(c, "hidden_size", getattr(c, "dim", None)),
        "heads": getattr(c, "num_attention_heads", getattr(c, "n_heads", None)),
        "ffn": getattr(c, "intermediate_size", getattr(c, "hidden_dim", None)),
        "vocab": c.vocab_size,
        **{f"params_{k}": v for k, v in count_parameters(model).items()},
    }
