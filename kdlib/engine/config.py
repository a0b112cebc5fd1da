"""The settings of a distillation run: who teaches whom (`TeacherSpec`, `StudentSpec`) and how (`DistillConfig`).

A config is a plain dataclass, loadable from JSON or YAML (`DistillConfig.from_file`) and overridable by
``key=value`` strings (`parse_overrides`, the CLI's ``--set``). `DistillConfig.validate` runs the cheap
checks (types, ranges, names) so that a bad setting fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kdlib.device import on_colab, on_drive
from kdlib.engine.align import VOCAB_CASES

STRATEGIES = ("average", "sum")
KL_ON = ("masked", "all")
CROSS_TOKENIZER = ("word", "none")
CROSS_MISMATCH = ("skip", "keep")
CROSS_COSINE = ("linear", "raw", "off")
TEACHER_DTYPES = ("auto", "fp32")


def setting(default: Any = MISSING, *, doc: str, operational: bool = False) -> Any:
    """A DistillConfig field with its documentation and kind (what a checkpoint or finished run depends on).

    An operational setting (where the run writes, how often it logs or saves, on which device) does not
    change what the run computes; every other one does, so it invalidates a checkpoint and a finished run.
    """
    meta = {"doc": doc, "operational": operational}
    if isinstance(default, list):  # a fresh copy per config: a dataclass refuses a shared mutable default
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


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

    Each field's documentation is its `setting(doc=...)`; `DistillConfig.docs()` lists them. Fields are either
    result settings (they decide what the run computes: a checkpoint or finished run made with other values
    is not reused) or operational ones (`operational=True`: output, logging, saving, device); the split is
    `result_settings()` / `operational_settings()`.
    """

    teachers: list[TeacherSpec] = setting(doc="the teachers (name, hub id or folder, ensemble weight)")
    students: list[StudentSpec] = setting(doc="the students: which teachers each learns from, its shape and init")
    strategy: str = setting(
        "average",
        doc="how teachers combine: 'average' (H2: one KL against the weighted mean of the teachers' softened "
        "distributions, cross-vocabulary teachers projected and averaged in at word-aligned first sub-tokens; "
        "cosine weights normalised) or 'sum' (H1: each teacher adds weight * (alpha_ce * KL_t + alpha_cos * "
        "cos_t), weights as given). MLM counts once in both",
    )
    cross_tokenizer: str = setting(
        "word",
        doc="'word': a teacher with another tokenizer is aligned by whitespace words (first sub-tokens) and "
        "its vocabulary projected; 'none': such a teacher is refused",
    )
    vocab_case: str = setting(
        "prior",
        doc="how an uncased teacher token's mass is shared among cased student variants (kdlib.engine.align."
        "build_vocab_map): 'prior' (the co-teacher's probabilities, else corpus counts), 'count', 'split', "
        "'exact_first'",
    )
    case_prior_power: float = setting(
        1.0,
        doc="with vocab_case='prior', the co-teacher's probabilities are raised to this power within each group "
        "of case variants (1 = as they are; more trusts their ranking more; chosen by kdlib bench --only align)",
    )
    cross_mismatch: str = setting(
        "skip",
        doc="'skip': words whose first pieces differ between the two tokenizations get no cross-teacher KL; "
        "'keep': they keep it",
    )
    cross_cosine: str = setting(
        "linear",
        doc="the cosine towards a teacher with another vocabulary: through a learned linear map ('linear'), "
        "raw ('raw') or none ('off'); a same-vocabulary teacher always has the plain cosine",
    )
    alpha_ce: float = setting(5.0, doc="weight of the distillation KL term (times T^2)")
    alpha_mlm: float = setting(2.0, doc="weight of the masked-LM cross-entropy on the true tokens")
    alpha_cos: float = setting(1.0, doc="weight of the 1 - cos(student, teacher last hidden state) term")
    temperature: float = setting(2.0, doc="softmax temperature T of the KL term")
    mask_prob: float = setting(0.15, doc="share of the words masked per batch (80% [MASK], 10% random, 10% kept)")
    kl_on: str = setting("masked", doc="where the KL is taken: 'masked' positions only, or 'all' non-pad ones")
    mlm_smoothing: float | None = setting(
        None, doc="e.g. 0.7: words masked with probability ~ count^-0.7 (rare words more); None: uniform"
    )
    lr: float = setting(5e-4, doc="peak AdamW learning rate")
    warmup: float = setting(0.05, doc="linear warmup: < 1 a share of max_steps, >= 1 a number of steps")
    weight_decay: float = setting(0.0, doc="AdamW weight decay (never on biases and norm weights)")
    adam_eps: float = setting(1e-6, doc="AdamW epsilon")
    max_grad_norm: float = setting(5.0, doc="gradient clipping: max L2 norm of each student's gradient")
    batch_size: int = setting(8, doc="texts per process per micro-batch")
    grad_accum: int = setting(1, doc="micro-batches per optimizer step (gradient accumulation)")
    max_steps: int = setting(100, doc="optimizer steps of the run (also the length of the lr schedule)")
    max_len: int = setting(128, doc="tokens per text at most (longer texts are truncated)")
    bucket_pool: int = setting(50, doc="length bucketing: texts are sorted by length within pools of this many batches")
    save_every: int = setting(0, doc="checkpoint every this many steps; 0: only the final one", operational=True)
    keep_checkpoints: int | None = setting(
        None, doc="checkpoints kept while training; None: 1 on Colab or with out_dir on Drive, else 2", operational=True
    )
    keep_final_checkpoint: bool | None = setting(
        None,
        doc="keep the last checkpoint once the students are saved; None: no on Colab/Drive, else yes",
        operational=True,
    )
    teacher_dtype: str = setting(
        "auto", doc="'auto': teachers in bf16 (fp16 without bf16) on a GPU, fp32 elsewhere; 'fp32': always fp32"
    )
    log_every: int = setting(1, doc="write a log.jsonl record every this many steps", operational=True)
    report_to: list[str] = setting(
        [],
        doc="also send the log.jsonl figures to these trackers (kdlib.engine.tracking): 'tensorboard' (event "
        "files in out_dir/tensorboard) and/or 'trackio'; each needs its package; [] (default): none",
        operational=True,
    )
    seed: int = setting(56, doc="seed of the initialisation, data order, masking and dropout")
    amp: str = setting(
        "auto",
        doc="students' mixed precision: 'auto' (bf16, or fp16 + GradScaler, on a GPU; off on CPU), "
        "'bf16', 'fp16' or 'off'",
    )
    device: str = setting("auto", doc="'auto' (cuda, then mps, then cpu), 'cuda', 'mps' or 'cpu'", operational=True)
    out_dir: str = setting("runs/distill", doc="folder of the log, checkpoints and students", operational=True)
    corpus: str = setting(
        "shuffled",
        doc="the CLI's default corpus: a kdlib.data.corpus mode, or a path / dataset name",
        operational=True,
    )
    corpus_max_sentences: int | None = setting(
        None, doc="the CLI reads at most this many sentences of `corpus`; None: all", operational=True
    )

    @classmethod
    def docs(cls) -> dict[str, str]:
        """{field: its documentation}."""
        return {f.name: f.metadata.get("doc", "") for f in fields(cls)}

    @classmethod
    def operational_keys(cls) -> tuple[str, ...]:
        """The fields that do not change what a run computes (a checkpoint or finished run ignores them)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("operational"))

    @classmethod
    def result_keys(cls) -> tuple[str, ...]:
        """The fields that decide what a run computes: changing one invalidates a checkpoint and a finished run."""
        return tuple(f.name for f in fields(cls) if not f.metadata.get("operational"))

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form (`from_dict`'s input; saved with checkpoints and finished runs)."""
        return asdict(self)

    def result_settings(self) -> dict[str, Any]:
        """The result fields of `to_dict()`: what a checkpoint or finished run must match."""
        return {k: v for k, v in self.to_dict().items() if k in self.result_keys()}

    def operational_settings(self) -> dict[str, Any]:
        """The operational fields of `to_dict()`."""
        return {k: v for k, v in self.to_dict().items() if k in self.operational_keys()}

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
