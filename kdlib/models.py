"""The models of a distillation run: frozen teachers grouped by tokenizer, and the students built from them.

`load_teachers` loads every teacher of a `DistillConfig` (or takes preloaded ones), freezes it and
assigns it a "view": teachers whose tokenizers have the same vocabulary share one encoding of a batch.
`build_students` makes each student from its `tokenizer_from` teacher (kdlib.students.make_student),
prepares the vocabulary projection for teachers with another vocabulary (kdlib.align) and checks
that vocabulary and hidden sizes fit the losses, before any training starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdlib.align import VocabMap, build_vocab_map, same_vocabulary
from kdlib.config import DistillConfig, StudentSpec
from kdlib.students import make_student
from kdlib.teachers import load_teacher


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

    @property
    def train_parts(self) -> dict[str, Any]:
        """What a checkpoint saves and restores for this student."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "scaler": self.scaler}


def load_teachers(config: DistillConfig, device: torch.device, preloaded: dict | None) -> dict[str, Teacher]:
    """Load every teacher (kdlib.teachers.load_teacher) and group them by tokenizer into views."""
    teachers: dict[str, Teacher] = {}
    views: dict[str, Any] = {}
    for spec in config.teachers:
        if preloaded and spec.name in preloaded:
            model, tok = preloaded[spec.name]
        else:
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


def tokenizer_views(teachers: dict[str, Teacher]) -> dict[str, Any]:
    """{view: tokenizer}: one tokenizer per distinct vocabulary among the teachers."""
    views: dict[str, Any] = {}
    for t in teachers.values():
        views.setdefault(t.view, t.tokenizer)
    return views


def _vocab_size(model: torch.nn.Module) -> int:
    return model.get_output_embeddings().weight.shape[0]


def _cross_maps(config: DistillConfig, spec: StudentSpec, teachers: dict[str, Teacher], src: Teacher,
                device: torch.device) -> dict[str, VocabMap]:
    """Projections onto the student's vocabulary for the teachers that read another vocabulary."""
    cross = {}
    for tname in spec.teachers:
        t = teachers[tname]
        if t.view == src.view:
            continue
        if config.cross_tokenizer == "none":
            raise ValueError(
                f"student {spec.name!r}: teacher {tname!r} has a different vocabulary from "
                f"{src.name!r} (the student's tokenizer) and cross_tokenizer='none'; set the option "
                f"cross_tokenizer='word' to align by words and project the vocabulary")
        cross[tname] = build_vocab_map(t.tokenizer, src.tokenizer, case=config.vocab_case,
                                       n_teacher=_vocab_size(t.model), n_student=_vocab_size(src.model)).to(device)
    return cross


def _check_shapes(config: DistillConfig, spec: StudentSpec, model: torch.nn.Module, teachers: dict[str, Teacher],
                  src: Teacher) -> None:
    """The cosine term needs equal hidden sizes; the KL needs the vocabulary of the tokenizer teacher."""
    if config.alpha_cos > 0:
        for tname in spec.teachers:
            th, sh = teachers[tname].model.config.hidden_size, model.config.hidden_size
            if th != sh:
                raise ValueError(f"student {spec.name!r} (hidden size {sh}) cannot match teacher {tname!r} "
                                 f"(hidden size {th}) in the cosine term; set alpha_cos=0 or use equal widths")
    if _vocab_size(model) != _vocab_size(src.model):
        raise ValueError(f"student {spec.name!r} has {_vocab_size(model)} output tokens but its vocabulary "
                         f"teacher {src.name!r} has {_vocab_size(src.model)}")


def build_students(config: DistillConfig, teachers: dict[str, Teacher], device: torch.device,
                   preloaded: dict | None) -> list[Student]:
    """make_student from the tokenizer_from teacher; check vocabularies and hidden sizes."""
    students = []
    for spec in config.students:
        src = teachers[spec.tokenizer_from or spec.teachers[0]]
        cross = _cross_maps(config, spec, teachers, src, device)
        if preloaded and spec.name in preloaded:
            model = preloaded[spec.name]
        else:
            model = make_student(src.model, init=spec.init, shape=spec.shape, num_layers=spec.num_layers,
                                 seed=config.seed)
        _check_shapes(config, spec, model, teachers, src)
        out_dir = Path(spec.out_dir) if spec.out_dir else Path(config.out_dir) / spec.name
        students.append(Student(spec, model.to(device), src.tokenizer, src.view, list(spec.teachers), cross,
                                out_dir))
    return students
