"""The models of a distillation run: frozen teachers grouped by tokenizer, and the students built from them.

`load_teachers` loads every teacher of a `DistillConfig` (or takes preloaded ones), freezes it and
assigns it a "view": teachers whose tokenizers have the same vocabulary share one encoding of a batch.
`build_students` makes each student from its `tokenizer_from` teacher (kdlib.engine.students.make_student),
prepares the vocabulary projection for teachers with another vocabulary (kdlib.engine.align; the corpus counts
of the student's tokens are its case prior) and, for those teachers' cosine term, a learned linear map
from the student's hidden space to theirs (trained with the student, checkpointed with it, never saved
in the student itself), and checks that vocabulary and hidden sizes fit the losses, before any
training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from kdlib.device import half_dtype
from kdlib.engine.align import VocabMap, build_vocab_map, same_vocabulary, token_counts
from kdlib.engine.config import DistillConfig, StudentSpec
from kdlib.engine.students import make_student
from kdlib.engine.teachers import load_teacher


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
    model: torch.nn.Module  # unwrapped
    tokenizer: Any
    view: str
    teachers: list[str]
    cross: dict[str, VocabMap]  # cross-vocabulary teachers -> projection onto the student vocab
    out_dir: Path
    cross_maps: torch.nn.ModuleDict = field(
        default_factory=torch.nn.ModuleDict
    )  # teacher -> Linear(student, teacher hidden)
    wrapped: torch.nn.Module | None = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None

    @property
    def trainable(self) -> torch.nn.Module:
        """What the optimizer trains: the student and its cross-model linear maps (these only during training)."""
        if not len(self.cross_maps):
            return self.model
        return torch.nn.ModuleDict({"student": self.model, "cross_maps": self.cross_maps})

    @property
    def train_parts(self) -> dict[str, Any]:
        """What a checkpoint saves and restores for this student (its linear maps included)."""
        return {
            "model": self.trainable,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }


def load_teachers(config: DistillConfig, device: torch.device, preloaded: dict | None) -> dict[str, Teacher]:
    """Load every teacher (kdlib.engine.teachers.load_teacher) and group them by tokenizer into views."""
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


def teachers_to_half(teachers: dict[str, Teacher], config: DistillConfig, device: torch.device) -> str:
    """Frozen teachers only run forwards: on a GPU keep them in half precision (bf16 where supported, else
    fp16; kdlib.device.half_dtype) unless teacher_dtype="fp32": half the memory, faster forwards. On CPU
    they stay fp32. Call it after `build_students`, which copies teacher weights at full precision.
    Returns the teachers' precision ("fp32", "bf16" or "fp16")."""
    dtype = half_dtype(device) if config.teacher_dtype == "auto" else None
    if dtype is None:
        return "fp32"
    for t in teachers.values():
        t.model.to(dtype)
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def tokenizer_views(teachers: dict[str, Teacher]) -> dict[str, Any]:
    """{view: tokenizer}: one tokenizer per distinct vocabulary among the teachers."""
    views: dict[str, Any] = {}
    for t in teachers.values():
        views.setdefault(t.view, t.tokenizer)
    return views


def _vocab_size(model: torch.nn.Module) -> int:
    return model.get_output_embeddings().weight.shape[0]


def _cross_maps(
    config: DistillConfig,
    spec: StudentSpec,
    teachers: dict[str, Teacher],
    src: Teacher,
    device: torch.device,
    counts: torch.Tensor | None,
) -> dict[str, VocabMap]:
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
                f"cross_tokenizer='word' to align by words and project the vocabulary"
            )
        cross[tname] = build_vocab_map(
            t.tokenizer,
            src.tokenizer,
            case=config.vocab_case,
            prior_power=config.case_prior_power,
            student_counts=counts,
            n_teacher=_vocab_size(t.model),
            n_student=_vocab_size(src.model),
        ).to(device)
    return cross


def _linear_maps(
    config: DistillConfig, cross: dict[str, VocabMap], model: torch.nn.Module, teachers: dict[str, Teacher], seed: int
) -> torch.nn.ModuleDict:
    """Linear(student hidden -> teacher hidden) per cross-vocabulary teacher, for cross_cosine="linear"."""
    maps = torch.nn.ModuleDict()
    if config.alpha_cos == 0 or config.cross_cosine != "linear":
        return maps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for tname in cross:
            maps[tname] = torch.nn.Linear(model.config.hidden_size, teachers[tname].model.config.hidden_size)
    return maps


def _check_shapes(
    config: DistillConfig,
    spec: StudentSpec,
    model: torch.nn.Module,
    teachers: dict[str, Teacher],
    src: Teacher,
    cross: dict[str, VocabMap],
) -> None:
    """The plain cosine term needs equal hidden sizes (a linear map bridges other widths); the KL needs the
    vocabulary of the tokenizer teacher."""
    if config.alpha_cos > 0:
        for tname in spec.teachers:
            if tname in cross and config.cross_cosine != "raw":
                continue
            th, sh = teachers[tname].model.config.hidden_size, model.config.hidden_size
            if th != sh:
                raise ValueError(
                    f"student {spec.name!r} (hidden size {sh}) cannot match teacher {tname!r} "
                    f"(hidden size {th}) in the cosine term; set alpha_cos=0 or use equal widths"
                )
    if _vocab_size(model) != _vocab_size(src.model):
        raise ValueError(
            f"student {spec.name!r} has {_vocab_size(model)} output tokens but its vocabulary "
            f"teacher {src.name!r} has {_vocab_size(src.model)}"
        )


def _student_counts(config: DistillConfig, tokenizer, texts: Iterable[str] | None) -> torch.Tensor | None:
    """Corpus counts of the student tokenizer's tokens: the case prior of vocab_case "count", and the fallback
    of "prior" (without texts, e.g. a preloaded test set-up, "prior" falls back to even shares)."""
    if config.vocab_case not in ("prior", "count"):
        return None
    if texts is None and config.vocab_case == "count":
        raise ValueError("vocab_case='count' needs the corpus texts to count the student's tokens")
    return None if texts is None else token_counts(tokenizer, texts)


def build_students(
    config: DistillConfig,
    teachers: dict[str, Teacher],
    device: torch.device,
    preloaded: dict | None,
    texts: Iterable[str] | None = None,
) -> list[Student]:
    """make_student from the tokenizer_from teacher; projections and linear maps for the other-vocabulary
    teachers (`texts`: the corpus, for the case prior); check vocabularies and hidden sizes."""
    students, counts = [], {}
    for spec in config.students:
        src = teachers[spec.tokenizer_from or spec.teachers[0]]
        needs_counts = any(teachers[t].view != src.view for t in spec.teachers)
        if needs_counts and src.view not in counts:
            counts[src.view] = _student_counts(config, src.tokenizer, texts)
        cross = _cross_maps(config, spec, teachers, src, device, counts.get(src.view))
        if preloaded and spec.name in preloaded:
            model = preloaded[spec.name]
        else:
            model = make_student(
                src.model, init=spec.init, shape=spec.shape, num_layers=spec.num_layers, seed=config.seed
            )
        _check_shapes(config, spec, model, teachers, src, cross)
        maps = _linear_maps(config, cross, model, teachers, config.seed).to(device)
        out_dir = Path(spec.out_dir) if spec.out_dir else Path(config.out_dir) / spec.name
        students.append(
            Student(spec, model.to(device), src.tokenizer, src.view, list(spec.teachers), cross, out_dir, maps)
        )
    return students
