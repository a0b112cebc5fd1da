"""Task-agnostic distillation of one or several masked-LM teachers into one or several students.

A plain PyTorch loop, readable top to bottom (`distill`):

1. validate the config (cheap errors first), load the teachers, build the students;
2. every global batch of texts is split into words, encoded once per distinct tokenizer ("view"),
   and masked at the WORD level (the same words are masked in every view, 80/10/10 per word);
3. each teacher runs once per batch under `torch.inference_mode` and its outputs are shared by
   every student that learns from it; teachers and students compute the vocabulary head only at the
   positions the losses read (`kdlib.mlm`: the masked ones by default, ~15%), not over the whole batch;
4. per student: L = alpha_ce * T^2 * KL + alpha_mlm * MLM + alpha_cos * (1 - cos), combined over
   teachers by `strategy` ("average": one KL against the weighted average of the teachers'
   distributions; "sum": a KL and a cosine term per teacher, weighted);
5. AdamW + linear warmup/decay, gradient accumulation and clipping, torch.amp, DDP under torchrun;
6. JSONL log, atomic checkpoints every `save_every` steps (exact resume), final save_pretrained,
   model card and summary.json.

Global batch = batch_size * world_size * grad_accum texts per optimizer step; every rank takes a
disjoint slice of each global micro-batch of batch_size * world_size texts. Losses are normalised by
counts over the global micro-batch, so DDP computes the same gradient as one process.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from kdlib import checkpoint as ckpt
from kdlib.align import (VocabMap, WordView, aligned_words, build_vocab_map, encode_words,
                         project_distribution, same_vocabulary, split_words)
from kdlib.device import DistEnv, amp_settings, autocast, grad_scaler, init_distributed
from kdlib.losses import (apply_mask_actions, cosine_loss, kd_kl_loss, mlm_loss, sample_mask_actions,
                          smoothing_weights, soft_probs)
from kdlib.mlm import RowLogits, SelectedMLM, logits_at

STRATEGIES = ("average", "sum")
KL_ON = ("masked", "all")
CROSS_TOKENIZER = ("word", "none")
CORPUS_MODES = ("ordered", "shuffled", "merged")


# ------------------------------------------------------------------------------------------- config
@dataclass
class TeacherSpec:
    """A teacher: hub id or local folder, and its weight in the ensemble."""

    name: str
    path: str
    weight: float = 1.0


@dataclass
class StudentSpec:
    """A student: which teachers it learns from and whose tokenizer/vocabulary (and weights) it takes."""

    name: str
    teachers: list[str]
    tokenizer_from: str | None = None  # default: the first of `teachers`
    init: str = "teacher"              # "teacher" | "random"
    shape: str = "distilbert"          # "distilbert" | "bort"
    num_layers: int | None = None
    out_dir: str | None = None         # default: <config.out_dir>/<name>


@dataclass
class DistillConfig:
    """Everything a distillation run needs; JSON/YAML-loadable (`from_file`), overridable by key=value.

    strategy: "average" (H2: KL against the weighted mean of the teachers' softened distributions,
    cross-vocabulary teachers projected onto the student's vocabulary and averaged in at word-aligned
    first sub-tokens; cosine against each teacher, weights normalised) or "sum" (H1: each teacher adds
    weight * (alpha_ce * KL_t + alpha_cos * cos_t); weights used as given). MLM counts once in both.
    cross_tokenizer: "word" aligns a teacher with another tokenizer by whitespace words (first
    sub-tokens) and projects its vocabulary; "none" refuses such a teacher.
    """

    teachers: list[TeacherSpec]
    students: list[StudentSpec]
    strategy: str = "average"
    cross_tokenizer: str = "word"
    vocab_case: str = "split"          # see kdlib.align.build_vocab_map
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    temperature: float = 2.0
    mask_prob: float = 0.15
    kl_on: str = "masked"
    mlm_smoothing: float | None = None  # e.g. 0.7: words masked with probability ~ count^-0.7
    lr: float = 5e-4
    warmup: float = 0.05               # < 1: share of max_steps; >= 1: number of steps
    weight_decay: float = 0.0
    adam_eps: float = 1e-6
    max_grad_norm: float = 5.0
    batch_size: int = 8                # per process, per micro-batch
    grad_accum: int = 1
    max_steps: int = 100
    max_len: int = 128
    bucket_pool: int = 50              # length bucketing: sort within pools of this many batches
    save_every: int = 0                # 0: only the final checkpoint
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 56
    amp: str = "auto"
    device: str = "auto"
    out_dir: str = "runs/distill"
    corpus: str = "shuffled"           # CLI default corpus: a kdlib.corpus mode, or a path / dataset name
    corpus_max_sentences: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DistillConfig keys {unknown}; valid keys: {sorted(known)}")
        for key in ("teachers", "students"):
            if not isinstance(data.get(key), list) or not data[key]:
                raise ValueError(f"DistillConfig: '{key}' must be a non-empty list")
        data["teachers"] = [t if isinstance(t, TeacherSpec) else TeacherSpec(**t) for t in data["teachers"]]
        data["students"] = [s if isinstance(s, StudentSpec) else StudentSpec(**s) for s in data["students"]]
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path, overrides: dict | list[str] | None = None) -> "DistillConfig":
        """Load a JSON or YAML config, then apply overrides ({key: value} or ["key=value", ...])."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"distillation config {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml
            data = yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of DistillConfig keys at the top level")
        data.update(parse_overrides(overrides))
        return cls.from_dict(data)

    def validate(self) -> None:
        """Cheap checks, raised before any model is loaded."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"DistillConfig: {msg}")
        for key in ("max_steps", "batch_size", "grad_accum", "max_len", "bucket_pool", "log_every"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) > 0,
                 f"{key} must be a positive integer, got {getattr(self, key)!r}")
        need(self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}")
        need(self.strategy in STRATEGIES, f"strategy={self.strategy!r}; expected one of {STRATEGIES}")
        need(self.kl_on in KL_ON, f"kl_on={self.kl_on!r}; expected one of {KL_ON}")
        need(self.cross_tokenizer in CROSS_TOKENIZER,
             f"cross_tokenizer={self.cross_tokenizer!r}; expected one of {CROSS_TOKENIZER}")
        need(0 < self.mask_prob < 1, f"mask_prob must be in (0, 1), got {self.mask_prob}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(min(self.alpha_ce, self.alpha_mlm, self.alpha_cos) >= 0 and
             self.alpha_ce + self.alpha_mlm + self.alpha_cos > 0, "alpha_ce/alpha_mlm/alpha_cos must be >= 0, not all 0")
        names = [t.name for t in self.teachers]
        need(len(set(names)) == len(names), f"teacher names must be unique, got {names}")
        need(all(t.weight > 0 for t in self.teachers), "teacher weights must be > 0")
        snames = [s.name for s in self.students]
        need(len(set(snames)) == len(snames), f"student names must be unique, got {snames}")
        for s in self.students:
            need(bool(s.teachers), f"student {s.name!r} lists no teachers")
            for t in s.teachers + ([s.tokenizer_from] if s.tokenizer_from else []):
                need(t in names, f"student {s.name!r} refers to teacher {t!r}; teachers are {names}")


def parse_overrides(overrides: dict | list[str] | None) -> dict:
    """["lr=1e-4", "strategy=sum"] -> {"lr": 0.0001, "strategy": "sum"} (values parsed as YAML scalars)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    import yaml
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


# --------------------------------------------------------------------------------------------- data
def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, pool: int) -> list[list[int]]:
    """Length-bucketed batches for one epoch, a deterministic function of (seed, epoch).

    Shuffle, sort by length within pools of `pool` batches (little padding), cut into full batches,
    then shuffle the batches. The data position (epoch, batch index) is therefore enough to resume.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    chunk = batch_size * pool
    batches: list[list[int]] = []
    for i in range(0, len(perm), chunk):
        part = sorted(perm[i:i + chunk], key=lambda j: lengths[j])
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def corpus_texts(corpus: Any) -> list[str]:
    """Texts of a datasets.Dataset ("text" column) or a list of strings; empty lines dropped."""
    if isinstance(corpus, (list, tuple)):
        texts = list(corpus)
    else:
        cols = getattr(corpus, "column_names", None)
        if cols is None or "text" not in cols:
            raise ValueError(f"corpus must be a list of strings or a datasets.Dataset with a 'text' column; got {cols}")
        texts = corpus["text"]
    return [t for t in texts if isinstance(t, str) and t.split()]


def corpus_info(corpus: Any, texts: list[str]) -> dict:
    from datasets import Dataset
    from kdlib.corpus import corpus_stats
    return dict(corpus_stats(corpus if isinstance(corpus, Dataset) else Dataset.from_dict({"text": texts})))


# ------------------------------------------------------------------------------------- models setup
@dataclass
class Teacher:
    name: str
    model: torch.nn.Module
    tokenizer: Any
    weight: float
    view: str  # key of the tokenizer view it reads


@dataclass
class Student:
    spec: StudentSpec
    model: torch.nn.Module          # unwrapped
    tokenizer: Any
    view: str
    teachers: list[str]
    cross: dict[str, VocabMap]      # cross-vocabulary teachers -> projection onto the student vocab
    out_dir: Path
    wrapped: torch.nn.Module | None = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None


def _load_teachers(config: DistillConfig, device: torch.device, preloaded: dict | None) -> dict[str, Teacher]:
    """Load every teacher (kdlib.teachers.load_teacher) and group them by tokenizer into views."""
    teachers: dict[str, Teacher] = {}
    views: dict[str, Any] = {}
    for spec in config.teachers:
        if preloaded and spec.name in preloaded:
            model, tok = preloaded[spec.name]
        else:
            from kdlib.teachers import load_teacher
            model, tok = load_teacher(spec.path, device=device)
        if model.get_output_embeddings() is None:
            raise ValueError(f"teacher {spec.name!r} ({spec.path}) is not a masked language model (no MLM head)")
        view = next((k for k, vt in views.items() if same_vocabulary(vt, tok)), spec.name)
        views.setdefault(view, tok)
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        teachers[spec.name] = Teacher(spec.name, model, tok, spec.weight, view)
    return teachers


def _build_students(config: DistillConfig, teachers: dict[str, Teacher], device: torch.device,
                    preloaded: dict | None) -> list[Student]:
    """make_student from the tokenizer_from teacher; check vocabularies and hidden sizes."""
    students = []
    for spec in config.students:
        src = teachers[spec.tokenizer_from or spec.teachers[0]]
        cross = {}
        for tname in spec.teachers:
            t = teachers[tname]
            if t.view != src.view:
                if config.cross_tokenizer == "none":
                    raise ValueError(
                        f"student {spec.name!r}: teacher {tname!r} has a different vocabulary from "
                        f"{src.name!r} (the student's tokenizer) and cross_tokenizer='none'; set the option "
                        f"cross_tokenizer='word' to align by words and project the vocabulary")
                cross[tname] = build_vocab_map(t.tokenizer, src.tokenizer, case=config.vocab_case,
                                               n_teacher=t.model.get_output_embeddings().weight.shape[0],
                                               n_student=src.model.get_output_embeddings().weight.shape[0]).to(device)
        if preloaded and spec.name in preloaded:
            model = preloaded[spec.name]
        else:
            from kdlib.students import make_student
            model = make_student(src.model, init=spec.init, shape=spec.shape, num_layers=spec.num_layers,
                                 seed=config.seed)
        if config.alpha_cos > 0:
            for tname in spec.teachers:
                th, sh = teachers[tname].model.config.hidden_size, model.config.hidden_size
                if th != sh:
                    raise ValueError(f"student {spec.name!r} (hidden size {sh}) cannot match teacher {tname!r} "
                                     f"(hidden size {th}) in the cosine term; set alpha_cos=0 or use equal widths")
        if model.get_output_embeddings().weight.shape[0] != src.model.get_output_embeddings().weight.shape[0]:
            raise ValueError(f"student {spec.name!r} has {model.get_output_embeddings().weight.shape[0]} output "
                             f"tokens but its vocabulary teacher {src.name!r} has "
                             f"{src.model.get_output_embeddings().weight.shape[0]}")
        out_dir = Path(spec.out_dir) if spec.out_dir else Path(config.out_dir) / spec.name
        students.append(Student(spec, model.to(device), src.tokenizer, src.view, list(spec.teachers), cross, out_dir))
    return students


def _word_weights(config: DistillConfig, texts: list[str], tokenizer) -> torch.Tensor | None:
    """count^-smoothing per token id of `tokenizer` over the corpus (None without smoothing)."""
    if not config.mlm_smoothing:
        return None
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for i in range(0, len(texts), 1000):
        for ids in tokenizer(texts[i:i + 1000], add_special_tokens=False)["input_ids"]:
            np.add.at(counts, ids, 1)
    return smoothing_weights(torch.from_numpy(counts), config.mlm_smoothing)


# ----------------------------------------------------------------------------------------- batches
def make_batch(texts: list[str], views: dict[str, Any], config: DistillConfig, generator: torch.Generator,
               token_weights: tuple[str, torch.Tensor] | None = None) -> tuple[dict[str, WordView], torch.Tensor]:
    """Encode texts once per view and mask the same 15% of words in every view.

    Returns ({view: WordView with masked input_ids and labels}, masked_word (B, W) bool).
    Candidate words are those whose first sub-token survives truncation in every view.
    """
    words = split_words(texts)
    encoded = {k: encode_words(tok, words, config.max_len) for k, tok in views.items()}
    present = torch.stack([v.first_pos >= 0 for v in encoded.values()]).all(0)  # (B, W)
    weights = present.float()
    if token_weights is not None:
        key, tw = token_weights
        fp = encoded[key].first_pos
        first_ids = encoded[key].input_ids.gather(1, fp.clamp(min=0))
        weights = weights * tw[first_ids]
    n_w = present.shape[1]
    actions = sample_mask_actions(weights.reshape(-1), config.mask_prob, generator)
    out = {}
    for key, v in encoded.items():
        unit = torch.where(v.word_index >= 0, torch.arange(v.input_ids.shape[0])[:, None] * n_w + v.word_index,
                           torch.full_like(v.word_index, -1))
        ids, labels = apply_mask_actions(v.input_ids, unit, actions, views[key].mask_token_id,
                                         len(views[key]), generator)
        out[key] = WordView(ids, v.attention_mask, v.word_index, v.first_pos, labels)
    return out, (actions > 0).reshape(present.shape)


def logit_positions(view: WordView, kl_on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of `view` where vocabulary logits are needed: the masked (labelled) positions for
    kl_on="masked", every non-pad position for "all" (a superset of the masked ones)."""
    needed = (view.labels != -100) if kl_on == "masked" else view.attention_mask.bool()
    return torch.nonzero(needed, as_tuple=True)


def student_plan(student: Student, teachers: dict[str, Teacher], views: dict[str, WordView],
                 masked_word: torch.Tensor, kl_on: str) -> dict:
    """Index tensors saying where each loss term of `student` is computed in this batch, and counts.

    kl_b/kl_p are the positions where the student's logits are computed (KL rows; the MLM loss uses the
    labelled ones among them); per cross-vocabulary teacher, "rows" index into them and "tb"/"tp" give
    the teacher-view positions (first sub-tokens of the same words).
    """
    sv = views[student.view]
    kl_b, kl_p = logit_positions(sv, kl_on)
    row_of = torch.full(sv.labels.shape, -1, dtype=torch.long)
    row_of[kl_b, kl_p] = torch.arange(kl_b.shape[0])
    cos_b, cos_p = torch.nonzero(sv.attention_mask.bool(), as_tuple=True)
    covered = torch.zeros(kl_b.shape[0], dtype=torch.bool)
    per_teacher = {}
    for tname in student.teachers:
        if tname not in student.cross:
            covered[:] = True
            per_teacher[tname] = {"n_kl": int(kl_b.shape[0]), "n_cos": int(cos_b.shape[0])}
            continue
        b, w, sp, tp = aligned_words(sv.first_pos, views[teachers[tname].view].first_pos)
        sel = masked_word[b, w] if kl_on == "masked" else torch.ones_like(b, dtype=torch.bool)
        rows = row_of[b[sel], sp[sel]]
        covered[rows] = True
        per_teacher[tname] = {"rows": rows, "tb": b[sel], "tp": tp[sel], "cb": b, "csp": sp, "ctp": tp,
                              "n_kl": int(rows.shape[0]), "n_cos": int(b.shape[0])}
    return {"kl_b": kl_b, "kl_p": kl_p, "cos_b": cos_b, "cos_p": cos_p, "teachers": per_teacher,
            "n_mlm": int((sv.labels != -100).sum()), "n_kl": int(covered.sum()), "n_tokens": int(sv.attention_mask.sum())}


def teacher_outputs(teachers: dict[str, Teacher], names: list[str], views: dict[str, WordView],
                    config: DistillConfig, device: torch.device, amp) -> dict[str, tuple[RowLogits, torch.Tensor | None]]:
    """Run each named teacher once on its view: (logits at `logit_positions` (none when alpha_ce = 0),
    last hidden state (B, L, H) when alpha_cos > 0, else None)."""
    out = {}
    with torch.inference_mode(), autocast(device, amp):
        for name in names:
            v = views[teachers[name].view]
            b, p = logit_positions(v, config.kl_on)
            if config.alpha_ce == 0:
                b, p = b[:0], p[:0]
            logits, hidden = logits_at(teachers[name].model, v.input_ids.to(device), v.attention_mask.to(device),
                                       b.to(device), p.to(device), output_hidden=config.alpha_cos > 0)
            out[name] = (RowLogits.of(logits, b, p, tuple(v.input_ids.shape)), hidden)
    return out


def student_losses(student: Student, teachers: dict[str, Teacher], config: DistillConfig, plan: dict,
                   counts: dict, view: WordView, s_out: tuple[torch.Tensor, torch.Tensor | None],
                   t_out: dict[str, tuple[RowLogits, torch.Tensor | None]], scale: float) -> dict[str, torch.Tensor]:
    """The loss components of one student on its slice of the batch.

    `s_out`: the student's logits at the plan's KL rows (plan["kl_b"], plan["kl_p"]) and its last hidden
    state (or None); `t_out`: `teacher_outputs`. Each term is (sum over this slice) / (count over the
    global micro-batch) * `scale` (= world size, undone by DDP's gradient averaging). Returns {"total",
    "kl", "mlm", "cos", "kl/<t>", "cos/<t>", "unmapped/<t>"}.
    """
    T = config.temperature
    s_rows, s_hid = s_out
    dev = s_rows.device
    zero = s_rows.new_zeros((), dtype=torch.float32)
    comps: dict[str, torch.Tensor] = {}
    kl_b, kl_p = plan["kl_b"], plan["kl_p"]
    # the MLM positions are among the KL rows (all of them for kl_on="masked"); the others carry -100
    comps["mlm"] = mlm_loss(s_rows, view.labels[kl_b, kl_p].to(dev), normalizer=max(counts["n_mlm"], 1)) * scale
    weights = {t: teachers[t].weight for t in student.teachers}
    acc = s_rows.new_zeros(s_rows.shape, dtype=torch.float32) if config.strategy == "average" else None
    wsum = s_rows.new_zeros(s_rows.shape[0], dtype=torch.float32)
    kl_sum, cos_sum = zero, zero
    for tname in student.teachers:
        tp_ = plan["teachers"][tname]
        t_logits, t_hid = t_out[tname]
        w = weights[tname]
        if tname not in student.cross:   # same vocabulary: same positions
            p = soft_probs(t_logits.at(kl_b, kl_p), T) if config.alpha_ce > 0 else None
            rows = None
            if config.alpha_cos > 0:
                cb, cp = plan["cos_b"].to(dev), plan["cos_p"].to(dev)
                comps[f"cos/{tname}"] = cosine_loss(s_hid[cb, cp], t_hid[cb, cp],
                                                    normalizer=max(counts["teachers"][tname]["n_cos"], 1)) * scale
        else:                            # other vocabulary: word-aligned first sub-tokens, projected
            rows = tp_["rows"].to(dev)
            p = None
            if config.alpha_ce > 0:
                p, unmapped = project_distribution(soft_probs(t_logits.at(tp_["tb"], tp_["tp"]), T),
                                                   student.cross[tname])
                comps[f"unmapped/{tname}"] = unmapped.sum() / max(counts["teachers"][tname]["n_kl"], 1) * scale
            if config.alpha_cos > 0:
                cb = tp_["cb"].to(dev)
                comps[f"cos/{tname}"] = cosine_loss(s_hid[cb, tp_["csp"].to(dev)], t_hid[cb, tp_["ctp"].to(dev)],
                                                    normalizer=max(counts["teachers"][tname]["n_cos"], 1)) * scale
        if config.alpha_ce > 0:
            if config.strategy == "average":
                if rows is None:
                    acc += w * p
                    wsum += w
                else:
                    acc.index_add_(0, rows, w * p)
                    wsum.index_add_(0, rows, torch.full_like(rows, 1, dtype=torch.float32) * w)
            else:
                logits_t = s_rows if rows is None else s_rows[rows]
                comps[f"kl/{tname}"] = kd_kl_loss(logits_t, p, T, normalizer=max(counts["teachers"][tname]["n_kl"], 1)) * scale
                kl_sum = kl_sum + w * comps[f"kl/{tname}"]
        if config.alpha_cos > 0:
            cos_sum = cos_sum + w * comps[f"cos/{tname}"]
    if config.alpha_ce > 0 and config.strategy == "average":
        keep = wsum > 0
        kl_sum = kd_kl_loss(s_rows[keep], acc[keep] / wsum[keep, None], T, normalizer=max(counts["n_kl"], 1)) * scale
    if config.strategy == "average":
        cos_sum = cos_sum / sum(weights.values())
    comps["kl"], comps["cos"] = kl_sum, cos_sum
    comps["total"] = config.alpha_ce * kl_sum + config.alpha_mlm * comps["mlm"] + config.alpha_cos * cos_sum
    return comps


def _count_only(plan: dict) -> dict:
    return {"n_mlm": plan["n_mlm"], "n_kl": plan["n_kl"], "n_tokens": plan["n_tokens"],
            "teachers": {t: {"n_kl": v["n_kl"], "n_cos": v["n_cos"]} for t, v in plan["teachers"].items()}}


# -------------------------------------------------------------------------------------------- output
def _model_card(student: Student, config: DistillConfig, summary: dict, corpus_meta: dict) -> str:
    tlist = "\n".join(f"- `{t.name}`: `{t.path}` (weight {t.weight})" for t in config.teachers
                      if t.name in student.teachers)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in summary["final_losses"].items())
    return f"""---
language: ro
library_name: transformers
tags: [distilbert, knowledge-distillation, romanian, kdlib]
---
# {student.spec.name}

A DistilBERT-style student distilled with `kdlib` (reproduction of Avram et al., LREC 2022).

## Teachers
{tlist}

Student vocabulary and tokenizer from `{student.spec.tokenizer_from or student.teachers[0]}`; initialisation
`{student.spec.init}`, shape `{student.spec.shape}`, {student.model.config.num_hidden_layers} layers,
{sum(p.numel() for p in student.model.parameters()):,} parameters.

## Training
- multi-teacher strategy: `{config.strategy}`; cross-tokenizer alignment: `{config.cross_tokenizer}`
- loss: {config.alpha_ce} * T^2 * KL (T={config.temperature}, on {config.kl_on} positions) + {config.alpha_mlm} * MLM + {config.alpha_cos} * cosine
- corpus: {corpus_meta.get('name')}: {corpus_meta.get('sentences'):,} sentences, {corpus_meta.get('characters'):,} characters
- steps: {summary['steps']}; global batch {summary['global_batch']} texts; lr {config.lr}; seed {config.seed}
- final losses (mean of the last logged steps): {losses}
- mean unmapped teacher mass (cross-vocabulary teachers): {summary.get('unmapped') or 'n/a'}
- wall time: {summary['wall_time_s']:.1f} s on {summary['device']} (amp {summary['amp']}, {summary['world_size']} process(es))
"""


def _save_student(student: Student, config: DistillConfig, summary: dict, corpus_meta: dict) -> None:
    """save_pretrained (safetensors) + tokenizer + README.md, written to a temp dir then renamed."""
    final = student.out_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    student.model.save_pretrained(tmp, safe_serialization=True)
    student.tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(_model_card(student, config, summary, corpus_meta), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def read_log(log_path: str | Path) -> list[dict]:
    """The records of a distillation log.jsonl. A torn LAST line (the process was killed while writing it) is
    skipped, so a crashed run can still resume; a malformed line elsewhere is an error naming the line."""
    lines = [l for l in Path(log_path).read_text(encoding="utf-8").splitlines() if l.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{log_path}, line {i + 1}: not a JSON record ({exc})") from exc
    return rows


def _summarise(log_path: Path, students: list[Student], last: int = 10) -> dict[str, dict]:
    """Final losses (mean over the last `last` logged steps) and mean unmapped mass per student."""
    rows = read_log(log_path)
    out = {}
    for s in students:
        tail = [r["students"][s.spec.name] for r in rows[-last:]]
        keys = tail[0].keys() if tail else []
        final = {k: float(np.mean([t[k] for t in tail])) for k in keys if not k.startswith("unmapped/")}
        all_unm = {k: float(np.mean([r["students"][s.spec.name][k] for r in rows]))
                   for k in keys if k.startswith("unmapped/")}
        first = rows[0]["students"][s.spec.name] if rows else {}
        out[s.spec.name] = {"final_losses": final, "first_losses": first, "unmapped": all_unm}
    return out


# -------------------------------------------------------------------------------------------- loop
# settings that fix the data order and the loss: a resume must use the checkpoint's values
RESUME_KEYS = ("seed", "batch_size", "grad_accum", "bucket_pool", "max_len", "mask_prob", "kl_on", "strategy",
               "temperature", "alpha_ce", "alpha_mlm", "alpha_cos", "max_steps")


def _check_resumable(path: Path, state: dict, rng_states: list, config: DistillConfig, world_size: int,
                     n_texts: int) -> None:
    """Raise if checkpoint `path` was written with another world size, corpus size or data/loss settings."""
    if len(rng_states) != world_size:
        raise ValueError(f"checkpoint {path} was written by {len(rng_states)} process(es); "
                         f"resume with the same number (now {world_size})")
    saved = state.get("config", {})
    changed = [f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in RESUME_KEYS
               if k in saved and saved[k] != getattr(config, k)]
    if state.get("n_texts") is not None and state["n_texts"] != n_texts:
        changed.append(f"corpus texts: {state['n_texts']} -> {n_texts}")
    if changed:
        raise ValueError(f"cannot resume exactly from {path}: settings differ from the checkpoint's "
                         f"({'; '.join(changed)}); restore them or start a fresh run without --resume")


def distill(config: DistillConfig, corpus: Any, *, resume: bool = False, teachers: dict | None = None,
            students: dict | None = None, corpus_name: str | None = None) -> dict:
    """Distil the config's teachers into its students on `corpus` (Dataset with "text", or list of str).

    `teachers` / `students` optionally pass preloaded objects ({name: (model, tokenizer)} /
    {name: model}) instead of loading them (notebooks, tests). Returns the summary per student, also
    written to out_dir/summary.json (rank 0). With `resume=True`, continues exactly from the newest
    checkpoint in out_dir.
    """
    config.validate()
    texts = corpus_texts(corpus)
    env, device = init_distributed(config.device)
    global_micro = config.batch_size * env.world_size
    if len(texts) < global_micro:
        raise ValueError(f"corpus has {len(texts)} non-empty texts, fewer than one global micro-batch "
                         f"(batch_size {config.batch_size} x world size {env.world_size})")
    amp = amp_settings(device, config.amp)
    out_dir = Path(config.out_dir)
    start = ckpt.latest_checkpoint(out_dir) if resume else None
    if start is not None:  # refuse a resume that cannot continue exactly, before any model is loaded
        state, rng_states = ckpt.load_checkpoint(start)
        _check_resumable(start, state, rng_states, config, env.world_size, len(texts))

    # 1. models
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    tmap = _load_teachers(config, device, teachers)
    studs = _build_students(config, tmap, device, students)
    views = {}
    for t in tmap.values():
        views.setdefault(t.view, t.tokenizer)
    used_teachers = [n for n in tmap if any(n in s.teachers for s in studs)]
    warmup = int(config.warmup * config.max_steps) if config.warmup < 1 else int(config.warmup)
    from transformers import get_linear_schedule_with_warmup
    for s in studs:
        s.model.train()
        decay = [p for p in s.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in s.model.parameters() if p.ndim < 2]
        s.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                         {"params": no_decay, "weight_decay": 0.0}],
                                        lr=config.lr, betas=(0.9, 0.98), eps=config.adam_eps)
        s.scheduler = get_linear_schedule_with_warmup(s.optimizer, warmup, config.max_steps)
        s.scaler = grad_scaler(device, amp)
    token_weights = None
    if config.mlm_smoothing:
        token_weights = (studs[0].view, _word_weights(config, texts, studs[0].tokenizer))

    # 2. state: step, data position, RNG
    step, epoch, batch_idx, elapsed_before = 0, 0, 0, 0.0
    if start is not None:
        for s in studs:
            ckpt.load_student(start, s.spec.name, {"model": s.model, "optimizer": s.optimizer,
                                                   "scheduler": s.scheduler, "scaler": s.scaler})
        step, epoch, batch_idx = state["step"], state["epoch"], state["batch_idx"]
        elapsed_before = state.get("elapsed", 0.0)
        ckpt.restore_rng(rng_states[env.rank])
    else:
        torch.manual_seed(config.seed + env.rank)  # dropout differs per rank; init was seeded above
    for s in studs:  # the forward computes logits at the KL rows only; DDP wraps it so its hooks see it
        selected = SelectedMLM(s.model)
        s.wrapped = (DistributedDataParallel(selected, device_ids=[device.index] if device.type == "cuda" else None)
                     if env.distributed else selected)

    log_path = out_dir / "log.jsonl"
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if start is not None and log_path.exists():  # drop lines logged after the checkpoint we resume from
            kept = [r for r in read_log(log_path) if r["step"] <= step]
            log_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        elif start is None:  # a fresh run: nothing of an earlier run in this folder may be resumed or kept
            log_path.unlink(missing_ok=True)
            ckpt.clear_checkpoints(out_dir)
    lengths = [len(t.split()) for t in texts]
    order = batch_order(lengths, global_micro, config.seed, epoch, config.bucket_pool)
    if not order:
        raise ValueError("no full batch could be formed from the corpus")

    def next_texts() -> list[str]:
        nonlocal epoch, batch_idx, order
        if batch_idx >= len(order):
            epoch, batch_idx = epoch + 1, 0
            order = batch_order(lengths, global_micro, config.seed, epoch, config.bucket_pool)
        idx = order[batch_idx]
        batch_idx += 1
        return [texts[i] for i in idx]

    def save(at_step: int, elapsed: float) -> Path | None:
        rng_all = [ckpt.capture_rng()]
        if env.distributed:
            rng_all = [None] * env.world_size
            dist.all_gather_object(rng_all, ckpt.capture_rng())
        path = None
        if env.is_main:
            path = ckpt.save_checkpoint(out_dir, at_step, {s.spec.name: {"model": s.model, "optimizer": s.optimizer,
                                                                        "scheduler": s.scheduler, "scaler": s.scaler}
                                                          for s in studs},
                                        {"epoch": epoch, "batch_idx": batch_idx, "elapsed": elapsed,
                                         "n_texts": len(texts), "config": asdict(config)}, rng_all, keep=config.keep_checkpoints)
        if env.distributed:
            dist.barrier()
        return path

    # 3. the loop
    t0 = time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=step, disable=not env.is_main, desc="distill", dynamic_ncols=True)
    lo, hi = env.rank * config.batch_size, (env.rank + 1) * config.batch_size
    while step < config.max_steps:
        t_step = time.perf_counter()
        sums: dict[str, dict[str, float]] = {s.spec.name: {} for s in studs}
        tokens = 0
        for micro in range(config.grad_accum):
            g = torch.Generator().manual_seed(config.seed * 1_000_000_007 + step * 1_000 + micro)
            gviews, gmasked = make_batch(next_texts(), views, config, g, token_weights)
            lviews = {k: v.rows(lo, hi) for k, v in gviews.items()}
            lmasked = gmasked[lo:hi]
            plans = {s.spec.name: student_plan(s, tmap, lviews, lmasked, config.kl_on) for s in studs}
            # counts over the global micro-batch (identical on every rank): the loss normalisers
            counts = {s.spec.name: _count_only(plans[s.spec.name] if not env.distributed else
                                               student_plan(s, tmap, gviews, gmasked, config.kl_on)) for s in studs}
            tokens += counts[studs[0].spec.name]["n_tokens"]
            # each teacher runs once; its outputs are shared by every student that uses it
            t_out = teacher_outputs(tmap, used_teachers, lviews, config, device, amp)
            for s in studs:
                v, plan = lviews[s.view], plans[s.spec.name]
                sync = (contextlib.nullcontext() if not env.distributed or micro == config.grad_accum - 1
                        else s.wrapped.no_sync())
                with sync:
                    with autocast(device, amp):
                        s_out = s.wrapped(v.input_ids.to(device), v.attention_mask.to(device), plan["kl_b"].to(device),
                                          plan["kl_p"].to(device), output_hidden=config.alpha_cos > 0)
                    comps = student_losses(s, tmap, config, plan, counts[s.spec.name], v, s_out, t_out,
                                           scale=float(env.world_size))
                    s.scaler.scale(comps["total"] / config.grad_accum).backward()
                for k, val in comps.items():
                    sums[s.spec.name][k] = sums[s.spec.name].get(k, 0.0) + float(val.detach()) / config.grad_accum
        # global values of the logged components (each rank holds its share x world size)
        names = [(s.spec.name, k) for s in studs for k in sorted(sums[s.spec.name])]
        vec = torch.tensor([sums[a][b] for a, b in names], dtype=torch.float64, device=device)  # NCCL: on device
        if env.distributed:
            dist.all_reduce(vec)
            vec /= env.world_size
        for (a, b), val in zip(names, vec.cpu().tolist()):
            sums[a][b] = val
        for s in studs:
            if not math.isfinite(sums[s.spec.name]["total"]):
                last = ckpt.latest_checkpoint(out_dir)
                bar.close()
                raise FloatingPointError(
                    f"non-finite loss ({sums[s.spec.name]['total']}) at step {step + 1} for student "
                    f"{s.spec.name!r}; training stopped, last good checkpoint: {last or 'none written yet'}")
        for s in studs:
            s.scaler.unscale_(s.optimizer)
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), config.max_grad_norm)
            s.scaler.step(s.optimizer)
            s.scaler.update()
            s.optimizer.zero_grad(set_to_none=True)
            s.scheduler.step()
        step += 1
        now = time.perf_counter()
        tok_s = tokens / max(now - t_step, 1e-9)  # non-pad tokens of the global batch (first student's view)
        if env.is_main and (step % config.log_every == 0 or step == config.max_steps):
            rec = {"step": step, "lr": studs[0].scheduler.get_last_lr()[0], "tokens": tokens, "tokens_per_s": tok_s,
                   "elapsed": elapsed_before + now - t0, "epoch": epoch,
                   "students": {k: {c: round(x, 6) for c, x in v.items()} for k, v in sums.items()}}
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")
            first = sums[studs[0].spec.name]
            bar.set_postfix({"loss": f"{first['total']:.3f}", "kl": f"{first['kl']:.3f}",
                             "mlm": f"{first['mlm']:.3f}", "cos": f"{first['cos']:.3f}", "tok/s": f"{tok_s:.0f}"})
        bar.update(1)
        if (config.save_every and step % config.save_every == 0) or step == config.max_steps:
            save(step, elapsed_before + time.perf_counter() - t0)
    bar.close()

    # 4. outputs
    wall = elapsed_before + time.perf_counter() - t0
    summary: dict[str, Any] = {}
    if env.is_main:
        meta = {"name": corpus_name or "in-memory corpus", **corpus_info(corpus, texts)}
        per = _summarise(log_path, studs)
        rows = read_log(log_path)
        for s in studs:
            info = {"teachers": s.teachers, "tokenizer_from": s.spec.tokenizer_from or s.teachers[0],
                    "cross_vocab_teachers": sorted(s.cross), "strategy": config.strategy,
                    "steps": step, "global_batch": global_micro * config.grad_accum, "wall_time_s": wall,
                    "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in rows])) if rows else None,
                    "device": str(device), "amp": amp.name, "world_size": env.world_size,
                    "out_dir": str(s.out_dir), "corpus": meta, **per[s.spec.name]}
            _save_student(s, config, info, meta)
            summary[s.spec.name] = info
        ckpt.write_json_atomic(out_dir / "summary.json", summary)
    if env.distributed:
        dist.barrier()
    return summary


# --------------------------------------------------------------------------------------------- CLI
def load_corpus(spec: str, *, seed: int = 0, max_sentences: int | None = None):
    """A kdlib.corpus mode ("ordered"/"shuffled"/"merged") or any text corpus name/path."""
    from kdlib import corpus as kc
    if spec in CORPUS_MODES:
        return kc.build_corpus(spec, seed=seed, max_sentences=max_sentences)
    return kc.load_text_corpus(spec, max_sentences=max_sentences)


def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m kdlib distill",
                                description="Distil one or several masked-LM teachers into one or several students.")
    p.add_argument("--config", required=True, help="JSON or YAML DistillConfig file")
    p.add_argument("--corpus", help="kdlib.corpus mode (ordered|shuffled|merged) or a text corpus path/name; "
                                    "default: the config's 'corpus'")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--out", help="output folder (config out_dir)")
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    for key, val in (("max_steps", args.max_steps), ("save_every", args.save_every), ("out_dir", args.out),
                     ("device", args.device)):
        if val is not None:
            overrides[key] = val
    config = DistillConfig.from_file(args.config, overrides)
    config.validate()
    spec = args.corpus or config.corpus
    corpus = load_corpus(spec, seed=config.seed, max_sentences=config.corpus_max_sentences)
    try:
        summary = distill(config, corpus, resume=args.resume, corpus_name=spec)
    finally:
        from kdlib.device import cleanup
        cleanup()
    if summary:
        print(json.dumps({k: {"final_losses": v["final_losses"], "out_dir": v["out_dir"]} for k, v in summary.items()},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
