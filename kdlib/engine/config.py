"""The settings of a distillation run: who teaches whom (`TeacherSpec`, `StudentSpec`) and how (`DistillConfig`).

A config is a plain dataclass, loadable from JSON or YAML (`DistillConfig.from_file`) and overridable by
``key=value`` strings (`parse_overrides`, the CLI's ``--set``). `DistillConfig.validate` runs the cheap
checks (types, ranges, names) so that a bad setting fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from kdlib.device import on_colab, on_drive
from kdlib.engine.align import VOCAB_CASES

STRATEGIES = ("average", "sum")
KL_ON = ("masked", "all")
CROSS_TOKENIZER = ("word", "none")
CROSS_MISMATCH = ("skip", "keep")
CROSS_COSINE = ("linear", "raw", "off")
TEACHER_DTYPES = ("auto", "fp32")
# settings that fix the data order and the loss: a resumed run must use the checkpoint's values
RESUME_KEYS = (
    "seed",
    "batch_size",
    "grad_accum",
    "bucket_pool",
    "max_len",
    "mask_prob",
    "kl_on",
    "strategy",
    "temperature",
    "alpha_ce",
    "alpha_mlm",
    "alpha_cos",
    "max_steps",
    "vocab_case",
    "case_prior_power",
    "cross_mismatch",
    "cross_cosine",
)


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
    init: str = "teacher"  # "teacher" | "random"
    shape: str = "distilbert"  # "distilbert" | "bort"
    num_layers: int | None = None
    out_dir: str | None = None  # default: <config.out_dir>/<name>


@dataclass
class DistillConfig:
    """Everything a distillation run needs; JSON/YAML-loadable (`from_file`), overridable by key=value.

    strategy: "average" (H2: KL against the weighted mean of the teachers' softened distributions,
    cross-vocabulary teachers projected onto the student's vocabulary and averaged in at word-aligned
    first sub-tokens; cosine against each teacher, weights normalised) or "sum" (H1: each teacher adds
    weight * (alpha_ce * KL_t + alpha_cos * cos_t); weights used as given). MLM counts once in both.
    cross_tokenizer: "word" aligns a teacher with another tokenizer by whitespace words (first
    sub-tokens) and projects its vocabulary; "none" refuses such a teacher.
    vocab_case: how an uncased token's mass is shared among cased variants (kdlib.engine.align: "prior" =
    the co-teacher's probabilities, else corpus counts; "count"; "split"; "exact_first").
    case_prior_power: with vocab_case="prior", the co-teacher's probabilities are raised to this power
    within each group of case variants before they share the mass (1 = as they are; more trusts their
    ranking of the variants more; chosen by `python -m kdlib bench --only align`).
    cross_mismatch: "skip" gives words whose first pieces differ between the two tokenizations no
    cross-teacher KL; "keep" keeps them. cross_cosine: the cosine towards a teacher with another
    vocabulary (another model) through a learned linear map ("linear"), raw ("raw") or none ("off");
    a same-vocabulary teacher always has the plain cosine.
    """

    teachers: list[TeacherSpec]
    students: list[StudentSpec]
    strategy: str = "average"
    cross_tokenizer: str = "word"
    vocab_case: str = "prior"  # see kdlib.engine.align.build_vocab_map
    case_prior_power: float = 1.0
    cross_mismatch: str = "skip"
    cross_cosine: str = "linear"
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    temperature: float = 2.0
    mask_prob: float = 0.15
    kl_on: str = "masked"
    mlm_smoothing: float | None = None  # e.g. 0.7: words masked with probability ~ count^-0.7
    lr: float = 5e-4
    warmup: float = 0.05  # < 1: share of max_steps; >= 1: number of steps
    weight_decay: float = 0.0
    adam_eps: float = 1e-6
    max_grad_norm: float = 5.0
    batch_size: int = 8  # per process, per micro-batch
    grad_accum: int = 1
    max_steps: int = 100
    max_len: int = 128
    bucket_pool: int = 50  # length bucketing: sort within pools of this many batches
    save_every: int = 0  # 0: only the final checkpoint
    keep_checkpoints: int | None = None  # None: 1 on Colab or when out_dir is on Drive, else 2
    keep_final_checkpoint: bool | None = None  # after the students are saved; None: no on Colab/Drive, else yes
    teacher_dtype: str = "auto"  # "auto": bf16 (fp16 without bf16) on a GPU, fp32 elsewhere; "fp32"
    log_every: int = 1
    seed: int = 56
    amp: str = "auto"
    device: str = "auto"
    out_dir: str = "runs/distill"
    corpus: str = "shuffled"  # CLI default corpus: a kdlib.data.corpus mode, or a path / dataset name
    corpus_max_sentences: int | None = None

    @classmethod
    def from_dict(cls, data: dict) -> DistillConfig:
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
    def from_file(cls, path: str | Path, overrides: dict | list[str] | None = None) -> DistillConfig:
        """Load a JSON or YAML config, then apply overrides ({key: value} or ["key=value", ...])."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"distillation config {path} does not exist")
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of DistillConfig keys at the top level")
        data.update(parse_overrides(overrides))
        return cls.from_dict(data)

    def checkpoint_policy(self) -> tuple[int, bool]:
        """(checkpoints kept while training, keep the last one once the students are saved).

        Automatic values save space where it is scarce: on Colab, or with out_dir on Google Drive (15 GB
        free; a checkpoint of two BERT-base-sized students with optimiser state is ~1.8 GB), one checkpoint
        is kept and removed once the students are saved; elsewhere two, and the last one stays.
        """
        scarce = on_colab() or on_drive(self.out_dir)
        keep = self.keep_checkpoints if self.keep_checkpoints is not None else (1 if scarce else 2)
        final = self.keep_final_checkpoint if self.keep_final_checkpoint is not None else not scarce
        return keep, final

    @property
    def warmup_steps(self) -> int:
        """`warmup` as a number of optimizer steps."""
        return int(self.warmup * self.max_steps) if self.warmup < 1 else int(self.warmup)

    def validate(self) -> None:
        """Cheap checks, raised before any model is loaded."""

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"DistillConfig: {msg}")

        for key in ("max_steps", "batch_size", "grad_accum", "max_len", "bucket_pool", "log_every"):
            need(
                isinstance(getattr(self, key), int) and getattr(self, key) > 0,
                f"{key} must be a positive integer, got {getattr(self, key)!r}",
            )
        need(self.save_every >= 0, f"save_every must be >= 0, got {self.save_every}")
        need(
            self.keep_checkpoints is None or (isinstance(self.keep_checkpoints, int) and self.keep_checkpoints >= 1),
            f"keep_checkpoints must be null (automatic) or an integer >= 1, got {self.keep_checkpoints!r}",
        )
        need(
            self.teacher_dtype in TEACHER_DTYPES,
            f"teacher_dtype={self.teacher_dtype!r}; expected one of {TEACHER_DTYPES}",
        )
        need(self.strategy in STRATEGIES, f"strategy={self.strategy!r}; expected one of {STRATEGIES}")
        need(self.kl_on in KL_ON, f"kl_on={self.kl_on!r}; expected one of {KL_ON}")
        need(
            self.cross_tokenizer in CROSS_TOKENIZER,
            f"cross_tokenizer={self.cross_tokenizer!r}; expected one of {CROSS_TOKENIZER}",
        )
        need(self.vocab_case in VOCAB_CASES, f"vocab_case={self.vocab_case!r}; expected one of {VOCAB_CASES}")
        need(
            isinstance(self.case_prior_power, (int, float)) and self.case_prior_power > 0,
            f"case_prior_power={self.case_prior_power!r}; expected a positive number",
        )
        need(
            self.cross_mismatch in CROSS_MISMATCH,
            f"cross_mismatch={self.cross_mismatch!r}; expected one of {CROSS_MISMATCH}",
        )
        need(self.cross_cosine in CROSS_COSINE, f"cross_cosine={self.cross_cosine!r}; expected one of {CROSS_COSINE}")
        need(0 < self.mask_prob < 1, f"mask_prob must be in (0, 1), got {self.mask_prob}")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(
            min(self.alpha_ce, self.alpha_mlm, self.alpha_cos) >= 0
            and self.alpha_ce + self.alpha_mlm + self.alpha_cos > 0,
            "alpha_ce/alpha_mlm/alpha_cos must be >= 0, not all 0",
        )
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
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
