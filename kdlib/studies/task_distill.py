"""Task-specific distillation: which small student should a fine-tuned Romanian teacher be distilled into?

The question of Nityasya et al. (2022, "Which Student is Best?"), asked of this book's Romanian tasks. A
teacher fine-tuned on one task (a :class:`kdlib.eval.finetune.TaskModel` folder saved with
``finetune(save_model=True)``, or any Hugging Face ``...ForSequenceClassification`` /
``...ForTokenClassification`` folder whose labels are the task's) labels the training examples, plus
unlabeled text for augmentation, with its logits; each student (:mod:`kdlib.studies.task_students`: BiLSTM, Kim-CNN,
small BERTs from random weights or from a task-agnostic student) is trained on those targets:

* ``hard``: cross-entropy on the gold labels only (the baseline; augmentation examples carry no gold label);
* ``kl``: T^2 KL(softmax(t/T) || softmax(s/T)) on every unit (kdlib.engine.losses.kd_kl_loss, Hinton et al. 2015);
* ``mse``: mean squared error between student and teacher logits (Tang et al. 2019);
* ``kl+hard`` / ``mse+hard``: ``alpha`` x soft term + (1 - alpha) x cross-entropy.

A unit is an example (classification) or a word (tagging: the teacher's output at each word's first
sub-token). Augmentation: up to ``augment_examples`` unlabeled texts, first the task's own train examples
left out by ``max_train_examples`` (for the review tasks SAPN/SAR: reviews, labels dropped), then sentences of
the distillation corpus (split into words for the tagging tasks). Each student keeps its best validation epoch.

Measured per student: test score (the paper's metric, predictions saved in the kdlib.eval.loyalty format for the
confidence intervals of kdlib.analysis.stats), label loyalty to the teacher, parameters, safetensors size, peak RAM of
inference (the process's resident memory above its level before, sampled every millisecond while a copy of
the model is made and a batch of 32 test examples runs), CPU latency at batch 1 (one median-length test
example) and throughput at batch 32 (median over repeats with kdlib.bench.speed.time_call, at 1 and 2 threads),
and training time.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import dataclasses
import gc
import json
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from kdlib.analysis import reporting
from kdlib.analysis.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_TESTABLE,
    SUPPORTED,
    THRESHOLDS,
    Claim,
    combine,
    verdict,
)
from kdlib.analysis.stats import Interval, difference_replicates, required_n, score_interval
from kdlib.bench.speed import time_call
from kdlib.data.corpus import load_text_corpus
from kdlib.data.load import load_split, load_task
from kdlib.data.tasks import get_task
from kdlib.engine.losses import kd_kl_loss, soft_probs
from kdlib.eval.finetune import (
    MODEL_DIR,
    TASK_HEAD_FILE,
    FinetuneConfig,
    TaskModel,
    collate_features,
    encode_split,
    feature_batches,
    finetune,
    predict,
    score_outputs,
    set_seed,
    to_predictions,
)
from kdlib.eval.loyalty import Predictions, label_loyalty, load_predictions, save_predictions
from kdlib.eval.metrics import majority_baseline, task_kind_and_metric
from kdlib.io import write_json
from kdlib.studies.task_students import (
    AGNOSTIC,
    EMBEDDINGS,
    STUDENTS,
    WORD_STUDENTS,
    WordStudent,
    WordVocab,
    count_parameters,
    embedding_matrix,
    encode_words,
    fasttext_vectors,
    small_bert,
    split_words,
    word_tokens,
)

LOSSES = ("hard", "kl", "mse", "kl+hard", "mse+hard")
KINDS = ("classification", "tagging")
RESULTS_FILE = "results.json"
AGNOSTIC_FAMILY = "task-agnostic (fine-tuned)"  # the main chapters' students, fine-tuned, on the same axes


class TeacherMismatchError(ValueError):
    """A teacher folder whose head is for another task (or is no task head at all)."""


@dataclass
class TaskDistillConfig:
    """Settings shared by every student of a run (module docstring for the losses and the augmentation).

    epochs / batch_size / lr (word students) / bert_lr (BERT students) / warmup: training; max_len: BERT
    sub-tokens per input (the teacher's too), and words per classification input of the word students (tagging
    sentences keep every word); max_train_examples / max_eval_examples: fixed random subsets
    (seed 0, as in kdlib.eval.finetune); augment_examples: unlabeled texts the teacher labels when augmenting;
    temperature / alpha: the KL temperature and the soft term's weight in the mixes; embedding_dim, hidden
    (BiLSTM, per direction), filters and widths (CNN), dropout: the word students; fasttext_epochs and
    fasttext_max_sentences: the fastText vectors; bench_budget_s / bench_repeats / threads: time_call budget
    per measurement, its cap on repeats, and the torch thread counts timed.
    """

    epochs: int = 3
    batch_size: int = 32
    lr: float = 2e-3
    bert_lr: float = 1e-3
    warmup: float = 0.1
    max_len: int = 128
    max_train_examples: int | None = 1000
    max_eval_examples: int | None = 500
    augment_examples: int = 1000
    temperature: float = 2.0
    alpha: float = 0.5
    embedding_dim: int = 100
    hidden: int = 128
    filters: int = 100
    widths: tuple[int, ...] = (3, 4, 5)
    dropout: float = 0.2
    fasttext_epochs: int = 5
    fasttext_max_sentences: int | None = 50000
    bench_budget_s: float = 1.0
    bench_repeats: int = 20
    threads: tuple[int, ...] = (1, 2)
    seed: int = 0

    def __post_init__(self) -> None:
        self.widths, self.threads = tuple(self.widths), tuple(self.threads)
        for name in (
            "epochs",
            "batch_size",
            "max_len",
            "embedding_dim",
            "hidden",
            "filters",
            "bench_repeats",
            "fasttext_epochs",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"TaskDistillConfig.{name} must be a positive integer, got {v!r}")
        for name in ("max_train_examples", "max_eval_examples", "fasttext_max_sentences"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"TaskDistillConfig.{name} must be None or a positive integer, got {v!r}")
        if not isinstance(self.augment_examples, int) or self.augment_examples < 0:
            raise ValueError(f"TaskDistillConfig.augment_examples must be >= 0, got {self.augment_examples!r}")
        if not (self.lr > 0 and self.bert_lr > 0 and self.temperature > 0 and self.bench_budget_s > 0):
            raise ValueError("TaskDistillConfig.lr, bert_lr, temperature and bench_budget_s must be > 0")
        if not (0 <= self.alpha <= 1 and 0 <= self.warmup < 1 and 0 <= self.dropout < 1):
            raise ValueError("TaskDistillConfig.alpha must be in [0, 1], warmup and dropout in [0, 1)")
        if not self.widths or any(w <= 0 for w in self.widths) or not self.threads or min(self.threads) <= 0:
            raise ValueError("TaskDistillConfig.widths and threads must be non-empty lists of positive integers")


@dataclass(frozen=True)
class StudentSpec:
    """One student to train: its architecture, word embeddings (word students), loss and augmentation."""

    student: str
    embeddings: str = "fasttext"
    loss: str = "kl+hard"
    augment: bool = True

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise ValueError(f"unknown student {self.student!r}; expected one of {list(STUDENTS)}")
        if self.embeddings not in EMBEDDINGS:
            raise ValueError(f"embeddings={self.embeddings!r}; expected one of {list(EMBEDDINGS)}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; expected one of {list(LOSSES)}")
        if self.loss == "hard" and self.augment:
            raise ValueError(
                f"student {self.student}: augmentation needs a soft loss (hard labels only has none "
                "for unlabeled text); set augment false or a loss of kl, mse, kl+hard, mse+hard"
            )

    @property
    def family(self) -> str:
        return "word" if self.student in WORD_STUDENTS else ("agnostic-init" if self.student == AGNOSTIC else "bert")

    @property
    def name(self) -> str:
        """A unique, readable key, e.g. ``bilstm-fasttext-kl+hard-aug`` (embeddings only for word students)."""
        parts = [self.student] + ([self.embeddings] if self.family == "word" else [])
        return "-".join([*parts, self.loss, "aug" if self.augment else "noaug"])

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> StudentSpec:
        if isinstance(data, str):
            return cls(data)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"student entry {data}: unknown keys {sorted(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------- losses
def distill_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    loss: str,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """The loss of one batch of units: (N, C) student and teacher logits, (N,) gold labels (-100 = none).

    ``hard`` = cross-entropy over the labelled units (0 when none is labelled); ``kl`` = T^2 KL(teacher_T ||
    student_T), batch mean over units; ``mse`` = mean over units and classes of (s - t)^2; ``X+hard`` =
    alpha * X + (1 - alpha) * hard. ``teacher_logits`` may be None for ``hard``.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}; expected one of {list(LOSSES)}")
    s = student_logits.float()
    labelled = labels != -100
    hard = F.cross_entropy(s[labelled], labels[labelled]) if labelled.any() else s.sum() * 0.0
    if loss == "hard":
        return hard
    if teacher_logits is None or student_logits.shape != teacher_logits.shape:
        got = None if teacher_logits is None else tuple(teacher_logits.shape)
        raise ValueError(f"loss {loss}: student logits {tuple(student_logits.shape)} vs teacher logits {got}")
    t = teacher_logits.float()
    soft = kd_kl_loss(s, soft_probs(t, temperature), temperature) if loss.startswith("kl") else F.mse_loss(s, t)
    return alpha * soft + (1 - alpha) * hard if loss.endswith("+hard") else soft


# --------------------------------------------------------------------------------------------- teacher
def load_task_teacher(folder: str | Path, task: str) -> tuple[torch.nn.Module, Any, list[str]]:
    """(model in eval mode, tokenizer, label names) of a fine-tuned teacher for ``task``.

    ``folder`` is a TaskModel folder (``task_head.json``) or a Hugging Face sequence/token classification
    folder; a head for another task raises :class:`TeacherMismatchError` naming the folder, its task and
    the expected one.
    """
    from transformers import AutoConfig, AutoTokenizer

    kind, _ = task_kind_and_metric(task)
    if kind not in KINDS:
        raise ValueError(f"task {task!r} is a {kind} task; task-specific distillation covers {KINDS}")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"teacher folder {folder} has no config.json (expected a fine-tuned model folder)")
    head = folder / TASK_HEAD_FILE
    if head.is_file():
        info = json.loads(head.read_text(encoding="utf-8"))
        if info.get("task") != task:
            raise TeacherMismatchError(
                f"teacher folder {folder} has a head for task {info.get('task')!r} "
                f"({info.get('kind')}); expected task {task!r}"
            )
        model, _ = TaskModel.load(folder)
        return model, AutoTokenizer.from_pretrained(folder), info["label_names"]
    config = AutoConfig.from_pretrained(folder)
    arch = (config.architectures or [""])[0]
    want = {"classification": "ForSequenceClassification", "tagging": "ForTokenClassification"}[kind]
    names = [config.id2label[i] for i in range(config.num_labels)]
    expected = _label_names(load_split(task, "validation"))
    if (
        not arch.endswith(want)
        or len(names) != len(expected)
        or (not all(n.startswith("LABEL_") for n in names) and names != expected)
    ):
        raise TeacherMismatchError(
            f"teacher folder {folder} is a {arch or 'model without a task head'} with labels "
            f"{names[:6]}; expected a {want[3:]} head for task {task!r} "
            f"({get_task(task).description}) with labels {expected[:6]}"
        )
    return _HFTaskModel(folder, kind), AutoTokenizer.from_pretrained(folder), expected


def _label_names(split) -> list[str]:
    feats = split.features
    return list(feats["tags"].feature.names if "tags" in feats else feats["label"].names)


class _HFTaskModel(torch.nn.Module):
    """A transformers ...ForSequence/TokenClassification model behind TaskModel's forward interface."""

    def __init__(self, folder: Path, kind: str) -> None:
        import inspect

        from transformers import (
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        super().__init__()
        cls = AutoModelForSequenceClassification if kind == "classification" else AutoModelForTokenClassification
        self.model, self.kind = cls.from_pretrained(folder).eval(), kind
        self._accepts = set(inspect.signature(self.model.forward).parameters)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        extra = (
            {"token_type_ids": token_type_ids}
            if token_type_ids is not None and "token_type_ids" in self._accepts
            else {}
        )
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


def prepare_teacher(
    model_path: str,
    task: str,
    out_dir: str | Path,
    *,
    config: FinetuneConfig,
    data_dir=None,
    max_train_examples: int | None = None,
) -> Path:
    """Fine-tune ``model_path`` on ``task`` with kdlib.eval.finetune and save it (reused when already there)."""
    finetune(
        model_path,
        task,
        out_dir,
        config=config,
        data_dir=data_dir,
        max_train_examples=max_train_examples,
        reuse=True,
        progress=False,
        save_model=True,
    )
    return Path(out_dir) / MODEL_DIR


# ------------------------------------------------------------------- batches, scores and predictions


# ------------------------------------------------------------------------------------------------ data
def _subset(split, n: int | None):
    return split.shuffle(seed=0).select(range(n)) if n and n < len(split) else split


def task_splits(task: str, config: TaskDistillConfig, data_dir=None) -> dict[str, Any]:
    """train / validation / test (capped as in kdlib.eval.finetune) and ``unused``: train rows left out of train."""

    ds = load_task(task, data_dir)
    train = ds["train"].shuffle(seed=0)
    n = config.max_train_examples or len(train)
    return {
        "train": train.select(range(min(n, len(train)))),
        "unused": train.select(range(n, len(train)) if n < len(train) else []),  # an empty range at the end fails
        "validation": _subset(ds["validation"], config.max_eval_examples),
        "test": _subset(ds["test"], config.max_eval_examples),
    }


def augmentation_rows(kind: str, unused, corpus_texts: Sequence[str], n: int, *, seed: int = 0) -> dict[str, list]:
    """Up to ``n`` unlabeled examples in the task's columns: unused train rows first, then corpus sentences."""
    import datasets

    rows: dict[str, list] = {}
    take = min(n, len(unused))
    if take:
        part = unused.select(range(take)).to_dict()
        rows = {
            k: part[k] for k in (("id", "tokens") if kind == "tagging" else ("id", "text_a", "text_b")) if k in part
        }
    rest = n - take
    rng = np.random.default_rng(seed)
    texts = [corpus_texts[i] for i in rng.permutation(len(corpus_texts))[:rest]] if rest > 0 else []
    ids = [f"aug-{i}" for i in range(len(texts))]
    if kind == "tagging":
        words = [split_words(t)[:200] for t in texts]
        keep = [i for i, w in enumerate(words) if w]
        rows = {
            "id": rows.get("id", []) + [ids[i] for i in keep],
            "tokens": rows.get("tokens", []) + [words[i] for i in keep],
        }
        rows["tags"] = [[0] * len(t) for t in rows["tokens"]]
    else:
        rows = {
            "id": rows.get("id", []) + ids,
            "text_a": rows.get("text_a", []) + list(texts),
            **({"text_b": rows["text_b"] + [""] * len(texts)} if "text_b" in rows else {}),
        }
        rows["label"] = [0] * len(rows["id"])
    return datasets.Dataset.from_dict(rows).to_dict() if rows["id"] else {k: [] for k in rows}


def teacher_outputs(
    teacher, tokenizer, rows: dict[str, list], kind: str, max_len: int, *, logits: bool = True, batch_size: int = 64
) -> list[np.ndarray]:
    """The teacher's logits (or probabilities) per example: (classes,) or (words, classes) per sentence."""
    import datasets

    if not rows["id"]:
        return []
    feats = encode_split(datasets.Dataset.from_dict(rows), tokenizer, kind, max_len)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return predict(
        teacher,
        feats,
        len(rows["id"]),
        pad_id=pad,
        batch_size=batch_size,
        device=torch.device("cpu"),
        progress=False,
        logits=logits,
    )


def _attach(feats: list[dict], soft: list[np.ndarray], kind: str, *, labelled: bool) -> list[dict]:
    """Give every feature its teacher logits (``soft``: rows in the order of its units); drop gold if unlabeled."""
    out = []
    for f in feats:
        f = dict(f)
        if kind == "tagging":
            f["soft"] = np.stack([soft[s][w] for _, s, w in f["words"]]).astype(np.float32)
            if not labelled:
                f["labels"] = [-100] * len(f["labels"])
        else:
            f["soft"] = None  # filled below (classification features are one per example, in order)
            if not labelled:
                f["labels"] = -100
        out.append(f)
    if kind != "tagging":
        for f, s in zip(out, soft):
            f["soft"] = np.asarray(s, dtype=np.float32)[None]
    return out


class Inputs:
    """How one student reads text: a tokenizer (BERT students) or a word vocabulary (word students)."""

    def __init__(self, kind: str, *, tokenizer=None, vocab: WordVocab | None = None, max_len: int = 128) -> None:
        self.kind, self.tokenizer, self.vocab, self.max_len = kind, tokenizer, vocab, max_len
        self.pad_id = 0 if tokenizer is None or tokenizer.pad_token_id is None else tokenizer.pad_token_id

    def encode(self, rows: dict[str, list]) -> list[dict[str, Any]]:
        import datasets

        if not rows["id"]:
            return []
        if self.vocab is not None:
            return encode_words(rows, self.vocab, self.kind, max_words=self.max_len)
        return encode_split(datasets.Dataset.from_dict(rows), self.tokenizer, self.kind, self.max_len)


# -------------------------------------------------------------------------------------------- training
def _unit_batch(chunk: list[dict], pad_id: int, kind: str):
    """Inputs, (batch, position) index of every unit (tagging), gold labels (N,), teacher logits (N, C) or None."""
    batch = collate_features(chunk, pad_id, kind)
    labels = batch.pop("labels")
    has_soft = all(f.get("soft") is not None for f in chunk)
    soft = torch.from_numpy(np.concatenate([f["soft"] for f in chunk])) if has_soft else None
    if kind != "tagging":
        return batch, None, labels, soft
    rows = torch.tensor([b for b, f in enumerate(chunk) for _ in f["words"]])
    cols = torch.tensor([pos for f in chunk for pos, _, _ in f["words"]])
    return batch, (rows, cols), labels[rows, cols], soft


def _units(logits: torch.Tensor, index) -> torch.Tensor:
    return logits if index is None else logits[index[0], index[1]]


def train_student(
    model: torch.nn.Module,
    train: list[dict],
    val: list[dict],
    val_split,
    *,
    task: str,
    loss: str,
    lr: float,
    config: TaskDistillConfig,
    pad_id: int,
    label_names,
    progress: bool = False,
) -> dict:
    """Train ``model`` on features with teacher logits; keep the best validation epoch (ties: earliest)."""
    from transformers import get_linear_schedule_with_warmup

    kind = model.kind
    gold = val_split["tags"] if kind == "tagging" else val_split["label"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = math.ceil(len(train) / config.batch_size) * config.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup * steps), steps)
    rng = np.random.default_rng(config.seed)
    best, best_state, history, t0 = None, None, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = rng.permutation(len(train)).tolist()
        for chunk in tqdm(
            feature_batches(train, config.batch_size, order),
            desc=f"{task} epoch {epoch}",
            total=math.ceil(len(train) / config.batch_size),
            disable=not progress,
            leave=False,
        ):
            batch, index, labels, soft = _unit_batch(chunk, pad_id, kind)
            value = distill_loss(
                _units(model(**batch), index), labels, soft, loss, temperature=config.temperature, alpha=config.alpha
            )
            if not torch.isfinite(value):
                raise FloatingPointError(f"{task}: loss {loss} is {value.item()} in epoch {epoch}; lower the lr?")
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        outs = predict(
            model, val, len(val_split), pad_id=pad_id, batch_size=64, device=torch.device("cpu"), progress=False
        )
        score = score_outputs(task, kind, outs, gold, label_names)["score"]
        history.append({"epoch": epoch, "validation": score})
        if best is None or score > best["validation"]:
            best = history[-1]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return {
        "train_seconds": time.perf_counter() - t0,
        "best_epoch": best["epoch"],
        "validation": 100.0 * best["validation"],
        "epochs": history,
    }


# ----------------------------------------------------------------------------------------- measurement
def _malloc_trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so RSS deltas measure this model
    except (OSError, AttributeError):
        pass


def peak_ram_mb(fn) -> float:
    """Peak resident memory (MiB) above the level before ``fn`` runs, sampled every millisecond."""
    import psutil

    _malloc_trim()
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            stop.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
        peak[0] = max(peak[0], proc.memory_info().rss)
    finally:
        stop.set()
        thread.join()
    return (peak[0] - base) / 2**20


def safetensors_bytes(model: torch.nn.Module, path: str | Path) -> int:
    """Save the state dict to ``path`` (safetensors) and return the file size."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.stat().st_size


def inference_figures(model: torch.nn.Module, feats: list[dict], pad_id: int, config: TaskDistillConfig) -> dict:
    """Latency at batch 1 (median-length example), throughput at batch 32 per thread count, peak RAM (batch 32)."""
    kind = model.kind
    by_len = sorted(feats, key=lambda f: len(f["input_ids"]))
    one = {k: v for k, v in collate_features([by_len[len(by_len) // 2]], pad_id, kind).items() if k != "labels"}
    many = {k: v for k, v in collate_features(feats[:32], pad_id, kind).items() if k != "labels"}
    n_many = len(feats[:32])
    model.eval()

    def forward(m, batch):
        with torch.inference_mode():
            m(**batch)

    out: dict[str, float] = {}
    before = torch.get_num_threads()
    try:
        for t in config.threads:
            torch.set_num_threads(t)
            kw = {"budget_s": config.bench_budget_s, "max_repeats": config.bench_repeats}
            out[f"latency_ms_t{t}"] = (
                1000 * time_call(lambda: forward(model, one), torch.device("cpu"), **kw)["median_s"]
            )
            out[f"throughput_t{t}"] = (
                n_many / time_call(lambda: forward(model, many), torch.device("cpu"), **kw)["median_s"]
            )
        torch.set_num_threads(min(config.threads))
        out["ram_mb"] = peak_ram_mb(lambda: forward(copy.deepcopy(model), many))
    finally:
        torch.set_num_threads(before)
    return out


def _evaluate(
    model,
    inputs: Inputs,
    splits: dict,
    teacher_test: list[np.ndarray],
    *,
    task: str,
    label_names,
    name: str,
    out_dir: Path,
    config: TaskDistillConfig,
) -> dict:
    """Test score, loyalty, saved predictions, size and speed of one trained model."""
    kind = model.kind
    test = splits["test"]
    feats = inputs.encode(test.to_dict())
    outs = predict(
        model, feats, len(test), pad_id=inputs.pad_id, batch_size=64, device=torch.device("cpu"), progress=False
    )
    gold = test["tags"] if kind == "tagging" else test["label"]
    metrics = score_outputs(task, kind, outs, gold, label_names)
    pred = to_predictions(task, name, kind, test, outs, label_names)
    save_predictions(pred, out_dir / "predictions.npz")
    teacher_probs = np.concatenate(teacher_test) if kind == "tagging" else np.stack(teacher_test)
    return {
        "score": 100.0 * metrics["score"],
        "metric": metrics["metric"],
        "loyalty": 100.0 * label_loyalty(teacher_probs, pred.probs),
        "parameters": count_parameters(model),
        "disk_bytes": safetensors_bytes(model, out_dir / "model.safetensors"),
        **inference_figures(model, feats, inputs.pad_id, config),
        "predictions": str(out_dir / "predictions.npz"),
    }


# ------------------------------------------------------------------------------------------ the study
def build_student(
    spec: StudentSpec,
    kind: str,
    n_labels: int,
    *,
    teacher_tokenizer,
    vocab: WordVocab,
    vectors,
    agnostic_dir,
    config: TaskDistillConfig,
) -> tuple[torch.nn.Module, Inputs, float]:
    """(model, how it reads text, learning rate) of one student spec."""
    from transformers import AutoTokenizer

    set_seed(config.seed)
    if spec.family == "word":
        emb = embedding_matrix(
            vocab, vectors if spec.embeddings == "fasttext" else None, dim=config.embedding_dim, seed=config.seed
        )
        model = WordStudent(
            spec.student,
            kind,
            n_labels,
            emb,
            hidden=config.hidden,
            filters=config.filters,
            widths=config.widths,
            dropout=config.dropout,
        )
        return model, Inputs(kind, vocab=vocab, max_len=config.max_len), config.lr
    if spec.student == AGNOSTIC:
        model = TaskModel.from_pretrained(str(agnostic_dir), kind, n_labels, 0.1)
        return (
            model,
            Inputs(kind, tokenizer=AutoTokenizer.from_pretrained(agnostic_dir), max_len=config.max_len),
            config.bert_lr,
        )
    model = small_bert(spec.student, kind, n_labels, teacher_tokenizer, max_len=config.max_len, seed=config.seed)
    return model, Inputs(kind, tokenizer=teacher_tokenizer, max_len=config.max_len), config.bert_lr


def check_inputs(
    task: str, teacher_dir: str | Path, specs: Sequence[StudentSpec], *, corpus_texts, agnostic_dir
) -> None:
    """Fail before any training on a bad task, teacher, missing corpus (fastText, augmentation) or student folder."""
    kind, _ = task_kind_and_metric(task)
    if kind not in KINDS:
        raise ValueError(f"task {task!r} is a {kind} task; task-specific distillation covers {KINDS}")
    load_task_teacher(teacher_dir, task)  # raises TeacherMismatchError early
    if not specs:
        raise ValueError("no students to train")
    if not corpus_texts and any(s.family == "word" and s.embeddings == "fasttext" for s in specs):
        raise ValueError("fastText embeddings need the distillation corpus (corpus_texts / --corpus)")
    no_folder = agnostic_dir is None or not (Path(agnostic_dir) / "config.json").is_file()
    if no_folder and any(s.student == AGNOSTIC for s in specs):
        raise FileNotFoundError(
            f"student 'agnostic' needs a task-agnostic student folder with config.json, got {agnostic_dir}"
        )


@dataclasses.dataclass
class _TaskData:
    """What every student of one task shares: splits, the teacher's targets and the majority baseline."""

    task: str
    kind: str
    label_names: list[str]
    splits: dict[str, Any]
    rows_of: dict[str, dict]  # train / validation / test as column dicts
    aug: dict[str, list]  # unlabeled augmentation rows
    soft: dict[str, list]  # the teacher's logits on "train" and "aug"
    teacher_test: list  # the teacher's test predictions (loyalty)
    majority: float  # x100

    def row(self, name: str, student: str, family: str, augment: bool) -> dict:
        """The fields every results row starts with."""
        return {
            "task": self.task,
            "name": name,
            "student": student,
            "family": family,
            "train_examples": len(self.splits["train"]),
            "augment_examples": len(self.aug["id"]) if augment else 0,
            "majority": self.majority,
        }


def _task_data(task: str, teacher, tok, label_names, specs, config: TaskDistillConfig, corpus_texts, data_dir):
    """Splits, augmentation rows, the teacher's soft targets and test predictions, the majority baseline."""
    kind, _ = task_kind_and_metric(task)
    splits = task_splits(task, config, data_dir)
    n = config.augment_examples if any(s.augment for s in specs) else 0
    aug = augmentation_rows(kind, splits["unused"], list(corpus_texts), n, seed=config.seed)
    rows_of = {name: splits[name].to_dict() for name in ("train", "validation", "test")}
    soft = {
        "train": teacher_outputs(teacher, tok, rows_of["train"], kind, config.max_len),
        "aug": teacher_outputs(teacher, tok, aug, kind, config.max_len),
    }
    teacher_test = teacher_outputs(teacher, tok, rows_of["test"], kind, config.max_len, logits=False)
    column = "tags" if kind == "tagging" else "label"
    base = majority_baseline(task, splits["train"][column], splits["test"][column])
    return _TaskData(task, kind, label_names, splits, rows_of, aug, soft, teacher_test, 100.0 * base["score"])


def _word_vocab(data: _TaskData) -> WordVocab:
    """The word students' vocabulary: the lower-cased words of the training examples."""
    train = data.rows_of["train"]
    if data.kind == "tagging":
        words = list(train["tokens"])
    else:
        second = train.get("text_b") or [""] * len(train["id"])
        words = [word_tokens(a) + word_tokens(b or "") for a, b in zip(train["text_a"], second)]
    return WordVocab.build([[w.lower() for w in s] for s in words])


def _fasttext(specs, corpus_texts, cache_dir: Path, config: TaskDistillConfig):
    """fastText vectors trained on the corpus (cached), when a word student asks for them; else None."""
    if not any(s.family == "word" and s.embeddings == "fasttext" for s in specs):
        return None
    texts = list(corpus_texts)[: config.fasttext_max_sentences]
    return fasttext_vectors(
        [word_tokens(t) for t in texts],
        cache_dir,
        dim=config.embedding_dim,
        epochs=config.fasttext_epochs,
        seed=config.seed,
    )


def _student_row(spec: StudentSpec, data: _TaskData, built, out_dir: Path, config: TaskDistillConfig, progress: bool):
    """Train one student on the teacher's targets (plus augmentation when asked) and evaluate it."""
    model, inputs, lr = built
    train = _attach(inputs.encode(data.rows_of["train"]), data.soft["train"], data.kind, labelled=True)
    if spec.augment:
        train += _attach(inputs.encode(data.aug), data.soft["aug"], data.kind, labelled=False)
    fit = train_student(
        model,
        train,
        inputs.encode(data.rows_of["validation"]),
        data.splits["validation"],
        task=data.task,
        loss=spec.loss,
        lr=lr,
        config=config,
        pad_id=inputs.pad_id,
        label_names=data.label_names,
        progress=progress,
    )
    evaluated = _evaluate(
        model,
        inputs,
        data.splits,
        data.teacher_test,
        task=data.task,
        label_names=data.label_names,
        name=spec.name,
        out_dir=out_dir / spec.name,
        config=config,
    )
    return {
        **data.row(spec.name, spec.student, spec.family, spec.augment),
        **dataclasses.asdict(spec),
        **fit,
        **evaluated,
    }


def distill_task(
    task: str,
    teacher_dir: str | Path,
    out_dir: str | Path,
    specs: Sequence[StudentSpec],
    *,
    config: TaskDistillConfig | None = None,
    corpus_texts: Sequence[str] = (),
    cache_dir=None,
    agnostic_dir=None,
    data_dir=None,
    progress: bool = False,
) -> list[dict]:
    """Distil the teacher in ``teacher_dir`` into every student of ``specs`` on ``task``; one row per model.

    Rows (also in ``out_dir/results.json``; each model's predictions and safetensors in ``out_dir/<name>``):
    the teacher, each student, and the majority baseline's score. Scores and loyalty are x100.
    """
    config, specs, out_dir = config or TaskDistillConfig(), list(specs), Path(out_dir)
    check_inputs(task, teacher_dir, specs, corpus_texts=corpus_texts, agnostic_dir=agnostic_dir)
    teacher, tok, label_names = load_task_teacher(teacher_dir, task)
    data = _task_data(task, teacher, tok, label_names, specs, config, corpus_texts, data_dir)
    vocab, vectors = _word_vocab(data), _fasttext(specs, corpus_texts, Path(cache_dir or out_dir / "fasttext"), config)
    teacher_inputs = Inputs(data.kind, tokenizer=tok, max_len=config.max_len)
    evaluated = _evaluate(
        teacher,
        teacher_inputs,
        data.splits,
        data.teacher_test,
        task=task,
        label_names=label_names,
        name="teacher",
        out_dir=out_dir / "teacher",
        config=config,
    )
    results = [{**data.row("teacher", "teacher", "teacher", False), **evaluated}]
    for spec in tqdm(specs, desc=f"{task} students", disable=not progress):
        built = build_student(
            spec,
            data.kind,
            len(label_names),
            teacher_tokenizer=tok,
            vocab=vocab,
            vectors=vectors,
            agnostic_dir=agnostic_dir,
            config=config,
        )
        results.append(_student_row(spec, data, built, out_dir, config, progress))
    write_json(out_dir / RESULTS_FILE, results)
    return results


def measure_agnostic(
    run_dir: str | Path, task: str, names: Sequence[str], *, config: TaskDistillConfig | None = None, data_dir=None
) -> list[dict]:
    """The main chapters' task-agnostic students on the same axes: their fine-tuned test score from the
    evaluation step (run_dir/evaluate) and size / speed measured here exactly as for the task students."""
    from transformers import AutoTokenizer

    config = config or TaskDistillConfig()
    kind, _ = task_kind_and_metric(task)
    zoo = reporting.model_zoo(run_dir)
    results = reporting.collect_results(run_dir)
    splits = task_splits(task, config, data_dir)
    n_labels = len(_label_names(splits["test"]))
    rows = []
    for name in names:
        if name not in zoo:
            raise ValueError(f"no model {name!r} in {run_dir}; the run has {list(zoo)}")
        hit = results[(results["model"] == name) & (results["task"] == task)]
        if hit.empty:
            continue  # not evaluated on this task
        model = TaskModel.from_pretrained(zoo[name]["path"], kind, n_labels, 0.1).eval()
        inputs = Inputs(kind, tokenizer=AutoTokenizer.from_pretrained(zoo[name]["path"]), max_len=config.max_len)
        feats = inputs.encode(splits["test"].to_dict())
        with tempfile.TemporaryDirectory() as tmp:
            size = safetensors_bytes(model, Path(tmp) / "model.safetensors")
        rows.append(
            {
                "task": task,
                "name": name,
                "student": name,
                "family": AGNOSTIC_FAMILY,
                "score": float(hit["mean"].iloc[0]),
                "parameters": count_parameters(model),
                "disk_bytes": size,
                **inference_figures(model, feats, inputs.pad_id, config),
            }
        )
    return rows


def pareto_front(scores: Sequence[float], costs: Sequence[float]) -> list[bool]:
    """True for each point no other point dominates (score >= and cost <=, one of them strictly)."""
    s, c = np.asarray(scores, float), np.asarray(costs, float)
    return [not bool(np.any((s >= s[i]) & (c <= c[i]) & ((s > s[i]) | (c < c[i])))) for i in range(len(s))]


COST_LABELS = {"parameters": "parameters (log)", "latency_ms_t1": "CPU latency at batch 1, 1 thread (ms, log)"}


def plot_tradeoff(rows, *, ax=None, cost: str = "parameters"):
    """Score against a cost (log scale: counted parameters by default) of one task's models, the Pareto front
    drawn as a step line."""
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(rows).dropna(subset=["score", cost])
    ax = ax or plt.subplots(figsize=(6.5, 4))[1]
    for family, part in df.groupby("family", sort=False):
        ax.scatter(part[cost], part["score"], label=family, s=30)
    front = df[pareto_front(df["score"], df[cost])].sort_values(cost)
    ax.step(front[cost], front["score"], where="post", color="grey", lw=1, ls="--", label="Pareto front")
    for _, r in front.iterrows():
        ax.annotate(r["name"], (r[cost], r["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel(COST_LABELS.get(cost, f"{cost} (log)"))
    ax.set_ylabel(
        f"test score ({df['metric'].dropna().iloc[0] if 'metric' in df and df['metric'].notna().any() else 'x100'})"
    )
    ax.set_title(str(df["task"].iloc[0]).upper())
    ax.legend(fontsize=7)
    return ax


# --------------------------------------------------------------------------------------------- the CLI
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"kdlib task-distill: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    ap = _OneLineParser(prog="python -m kdlib task-distill", description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", required=True, help="fine-tuned teacher folder (finetune --save-model, or HF)")
    ap.add_argument("--task", required=True, help="sapn, sar, di (classification) or upos, xpos, ner (tagging)")
    ap.add_argument("--out", required=True, help="output folder (results.json, one folder per student)")
    ap.add_argument("--students", nargs="+", default=["bilstm", "cnn", "bert-tiny"], choices=STUDENTS)
    ap.add_argument("--loss", default="kl+hard", choices=LOSSES)
    ap.add_argument("--embeddings", default="fasttext", choices=EMBEDDINGS)
    ap.add_argument("--no-augment", action="store_true", help="train on the labelled examples only")
    ap.add_argument("--corpus", help="unlabeled text for fastText and augmentation (file, folder or saved dataset)")
    ap.add_argument("--agnostic", help="task-agnostic student folder for the 'agnostic' student")
    ap.add_argument("--data-dir", help="data folder (default: $KDLIB_DATA_DIR)")
    ap.add_argument("--no-progress", action="store_true")
    for f in dataclasses.fields(TaskDistillConfig):
        if f.name not in ("widths", "threads"):
            typ = float if isinstance(f.default, float) else int
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=typ, default=None, help=f"default {f.default}")
    return ap


def cli(argv: list[str]) -> int:
    """`python -m kdlib task-distill --teacher DIR --task sapn --out DIR [--students bilstm cnn ...] ...`."""
    args = _parser().parse_args(argv)
    try:
        overrides = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(TaskDistillConfig)
            if getattr(args, f.name, None) is not None
        }
        config = TaskDistillConfig(**overrides)
        specs = [
            StudentSpec(
                s, embeddings=args.embeddings, loss=args.loss, augment=not args.no_augment and args.loss != "hard"
            )
            for s in args.students
        ]
        texts: list[str] = []
        if args.corpus:
            texts = load_text_corpus(args.corpus)["text"]
        rows = distill_task(
            args.task,
            args.teacher,
            args.out,
            specs,
            config=config,
            corpus_texts=texts,
            agnostic_dir=args.agnostic,
            data_dir=args.data_dir,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdlib task-distill: {exc}", file=sys.stderr)
        return 2
    keys = ("name", "score", "loyalty", "parameters", "disk_bytes", "latency_ms_t1", "throughput_t1", "train_seconds")
    print(json.dumps([{k: r.get(k) for k in keys} for r in rows], indent=2))
    return 0


# ------------------------------------------------------------------------ gated comparisons and claims
SOURCE = "Nityasya et al. 2022, abstract"
ABSTRACT = {  # the seed abstract's own words (arXiv:2201.00558) that each claim reads
    "tradeoff": "using BiLSTM and CNN student models provide the best trade-off between performance and "
    "computational resource (CPU, RAM, and storage) compared to pruned BERT models",
    "quick_wins": "efficient KD training mechanisms involving simple choices of loss functions, word embeddings, "
    "and unlabeled data preparation",
}
TRADEOFF_MARGIN = 2.0  # points: "best trade-off" = a word student at most this far below the best small BERT


def constant_predictor(runs: Sequence[Predictions]) -> bool:
    """True when every run predicts one and the same label (or one constant value) for every unit."""
    values = [np.unique(r.outputs if r.kind == "regression" else r.pred) for r in runs]
    return all(len(v) == 1 for v in values) and len({v[0].item() for v in values}) == 1


def learned_gate(
    models: dict[str, Sequence[Predictions]], majority: float, *, n_resamples: int = 1000, seed: int = 0
) -> str:
    """'' when every model learned the task (score interval above the majority baseline, x100, by the
    THRESHOLDS["learned"] margin); else why a comparison of them is not testable here, with the figures."""
    margin = THRESHOLDS["learned"]["value"]
    if len(models) > 1 and all(constant_predictor(r) for r in models.values()):
        return f"{' and '.join(models)} each predict one constant label: a pair of constant predictors is no evidence"
    ivs = {n: score_interval(r, n_resamples=n_resamples, seed=seed) for n, r in models.items()}
    weak = {n: iv for n, iv in ivs.items() if not iv.low > majority + margin}
    if not weak:
        return ""
    figures = ", ".join(f"{n} {iv.estimate:.1f} [{iv.low:.1f}, {iv.high:.1f}]" for n, iv in weak.items())
    return f"not learned: {figures} against the majority-class baseline's {majority:.1f} (+{margin:g} points needed)"


def power_note(rep, threshold: float, unit: str = "test examples") -> str:
    """What would settle an inconclusive comparison (kdlib.analysis.stats.required_n, 80% power)."""
    need = required_n(rep, threshold)
    if need["scale_both"] == math.inf:
        return "the estimate sits on the threshold: no budget settles it."
    parts = [f"about {need['seeds']} fine-tuning seeds (now {rep.n_seeds})"] if need["seeds"] is not None else []
    if need["test_units"] is not None:
        parts.append(f"about {need['test_units']:,} {unit} (now {rep.n_units:,})")
    if not parts:
        parts.append(f"about {need['scale_both']:.1f} times both the seeds and the {unit}")
    return "to settle it (80% power, if the measured effect is the true one) would take " + " or ".join(parts) + "."


def _two_sided(iv: Interval, margin: float) -> str:
    """'About the same': supported inside +-margin, contradicted wholly outside it, else inconclusive."""
    if -margin < iv.low and iv.high < margin:
        return SUPPORTED
    return CONTRADICTED if iv.low > margin or iv.high < -margin else INCONCLUSIVE


def compare_runs(
    label: str,
    task: str,
    runs_a: Sequence[Predictions],
    runs_b: Sequence[Predictions],
    *,
    gate: dict[str, Sequence[Predictions]],
    majority: float,
    threshold: float = 0.0,
    same_margin: float | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """One comparison: score(a) - score(b) (points, paired bootstrap) and its verdict, if ``gate``'s models
    learned the task; ``same_margin`` reads "about the same" (|a - b| < margin) instead of "a - b > threshold"."""
    row: dict[str, Any] = {"comparison": label, "task": task, "estimate": None, "low": None, "high": None}
    why = learned_gate(gate, majority, n_resamples=n_resamples, seed=seed)
    if why:
        return {**row, "verdict": NOT_TESTABLE, "reason": why}
    rep = difference_replicates(runs_a, runs_b, n_resamples=n_resamples, seed=seed)
    iv = rep.interval()
    result = _two_sided(iv, same_margin) if same_margin else verdict(iv, threshold)
    bound = threshold if not same_margin else (same_margin if iv.estimate >= 0 else -same_margin)
    unit = "test sentences" if runs_a[0].kind == "tagging" else "test examples"
    reason = power_note(rep, bound, unit) if result == INCONCLUSIVE else ""
    return {**row, **iv.as_dict(), "verdict": result, "reason": reason}


def majority_rule(verdicts: Sequence[str]) -> str:
    """The verdict more than half of the comparisons share (not inconclusive), else inconclusive."""
    top, n = Counter(verdicts).most_common(1)[0]
    return top if n > len(verdicts) / 2 and top != INCONCLUSIVE else INCONCLUSIVE


def _figure(d: dict[str, Any]) -> str:
    """'SAPN +1.20 [-0.30, +2.70]' (or the detail's ``label``), or 'SAPN not testable'."""
    name = d.get("label") or d["task"].upper()
    if d["estimate"] is None:
        return f"{name} not testable"
    return f"{name} {d['estimate']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def _why(final: str, tested: list[dict], skipped: list[dict]) -> str:
    """The reason of a claim over comparisons: counts, what was left out and, when open, what would settle it."""
    text = ", ".join(f"{n} {v}" for v, n in Counter(d["verdict"] for d in tested).most_common())
    text = f"{text} (of {len(tested)} tested comparisons)." if tested else "No comparison could be tested."
    text += "".join(f" {d['comparison']} ({d['task'].upper()}): {d['reason'].rstrip('.')}." for d in skipped)
    if final == INCONCLUSIVE:
        open_ = [d for d in tested if d["verdict"] == INCONCLUSIVE]
        text += (
            f" For {open_[0]['comparison']} ({open_[0]['task'].upper()}), {open_[0]['reason']}"
            if open_
            else " The tested comparisons disagree; more tasks would settle the claim."
        )
    return text


def gather_claim(
    cid: str,
    text: str,
    details: list[dict[str, Any]],
    *,
    source: str,
    figure: str,
    threshold: str,
    quote: str = "",
    kind: str = "paper",
    rule: str = "all",
) -> Claim:
    """One claim from its comparisons (``details``): combined over the testable ones (``rule`` "all":
    kdlib.analysis.claims.combine; "most": :func:`majority_rule`), not testable when none is."""
    tested = [d for d in details if d["verdict"] != NOT_TESTABLE]
    skipped = [d for d in details if d["verdict"] == NOT_TESTABLE]
    verdicts = [d["verdict"] for d in tested]
    final = NOT_TESTABLE if not tested else combine(verdicts) if rule == "all" else majority_rule(verdicts)
    shown = next((d for d in tested if d["verdict"] == final), tested[0] if tested else None)
    iv = Interval(shown["estimate"], shown["low"], shown["high"]) if shown else None
    where = f"{figure}: " + "; ".join(_figure(d) for d in details)
    return Claim(cid, text, source, where, iv, threshold, final, _why(final, tested, skipped), details, kind, quote)


def _best(rows: list[dict], **match) -> dict | None:
    """The row with the best validation score among rows matching every ``key=value`` (value may be a tuple)."""
    hits = [r for r in rows if all(r.get(k) in (v if isinstance(v, tuple) else (v,)) for k, v in match.items())]
    return max(hits, key=lambda r: r["validation"]) if hits else None


def _row(rows: list[dict], name: str) -> dict | None:
    return next((r for r in rows if r["name"] == name), None)


def _runs(row: dict) -> list[Predictions]:
    runs = row.get("predictions_runs")  # a list, or NaN in a table row of a model trained once
    return [load_predictions(p) for p in (runs if isinstance(runs, (list, tuple)) and runs else [row["predictions"]])]


def _task_comparison(
    label: str, task_rows: list[dict], a: dict | None, b: dict | None, *, threshold: float = 0.0, **kw
) -> dict[str, Any]:
    """One task's comparison of rows a and b, gated on the teacher and both models having learned the task."""
    task = task_rows[0]["task"]
    if a is None or b is None:
        row = {"comparison": label, "task": task, "estimate": None, "low": None, "high": None}
        return {**row, "verdict": NOT_TESTABLE, "reason": "this run lacks one of the two models"}
    teacher = _row(task_rows, "teacher")
    gate = {"teacher": _runs(teacher)} if teacher else {}
    gate.update({a["name"]: _runs(a), b["name"]: _runs(b)})
    majority = float(task_rows[0]["majority"])
    name = f"{label}: {a['name']} - {b['name']}"
    return compare_runs(name, task, _runs(a), _runs(b), gate=gate, majority=majority, threshold=threshold, **kw)


def _tradeoff(tr: list[dict], main_loss: str) -> dict[str, Any]:
    """Best word student vs best small BERT (on validation): within TRADEOFF_MARGIN points, with fewer
    parameters and a smaller file (counted, not timed; measured latency is an aside)."""
    word = _best(tr, family="word", augment=True, loss=main_loss, embeddings="fasttext")
    bert = _best(tr, family=("bert", "agnostic-init"), loss=main_loss, augment=True)
    d = _task_comparison("trade-off", tr, word, bert, threshold=-TRADEOFF_MARGIN)
    if d["verdict"] in (SUPPORTED, INCONCLUSIVE) and word and bert:
        smaller = word["parameters"] <= bert["parameters"] and word["disk_bytes"] <= bert["disk_bytes"]
        if not smaller:
            d["verdict"], d["reason"] = CONTRADICTED, "the word student is not smaller (parameters and file)"
    if word and bert:
        d["aside"] = f"measured latency at batch 1: {word['latency_ms_t1']:.2f} vs {bert['latency_ms_t1']:.2f} ms"
    return d


def _loss_pair(tr: list[dict], student: str) -> tuple[dict | None, dict | None]:
    """The ablation student's best and worst loss on validation (fastText, no augmentation)."""
    rows = [r for r in tr if r.get("student") == student and r.get("embeddings") == "fasttext" and not r.get("augment")]
    if len(rows) < 2:
        return None, None
    return max(rows, key=lambda r: r["validation"]), min(rows, key=lambda r: r["validation"])


def _task_details(tr: list[dict], ablation_student: str, main_loss: str) -> dict[str, dict[str, Any]]:
    """One task's four comparisons (trade-off, loss, embeddings, augmentation)."""
    base = StudentSpec(ablation_student, "fasttext", main_loss, True)

    def row(**change: Any) -> dict | None:
        return _row(tr, dataclasses.replace(base, **change).name)

    return {
        "tradeoff": _tradeoff(tr, main_loss),
        "loss": _task_comparison("best - worst loss", tr, *_loss_pair(tr, ablation_student)),
        "embeddings": _task_comparison("fastText - random", tr, row(), row(embeddings="random")),
        "augment": _task_comparison("augmented - not", tr, row(), row(augment=False)),
    }


def paper_claims(
    rows: list[dict], *, ablation_student: str = "bilstm", main_loss: str = "kl+hard", figure: str = "07-task-distill"
) -> list[Claim]:
    """The seed abstract's four readings (Nityasya et al. 2022), one Claim each with its per-task comparisons.

    Models are picked on validation and compared on test (paired bootstrap, kdlib.analysis.stats); a task's
    comparison counts only where the teacher and both models learned it (:func:`learned_gate`); a claim is
    supported when every tested task supports it, contradicted when one contradicts it (claims.combine).
    """
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    per_task = [_task_details([r for r in rows if r["task"] == t], ablation_student, main_loss) for t in tasks]
    details = {key: [d[key] for d in per_task] for key in ("tradeoff", "loss", "embeddings", "augment")}
    spec = {
        "tradeoff": (
            "A BiLSTM/CNN student gives the best trade-off: at most "
            f"{TRADEOFF_MARGIN:g} points below the best small BERT, with fewer parameters and a smaller file",
            f"word - BERT > -{TRADEOFF_MARGIN:g} points, and smaller",
            ABSTRACT["tradeoff"],
        ),
        "loss": (f"The choice of distillation loss matters ({ablation_student})", "best - worst loss > 0 points"),
        "embeddings": (f"fastText embeddings beat random ones ({ablation_student})", "fastText - random > 0 points"),
        "augment": (f"Teacher-labelled extra text helps ({ablation_student})", "augmented - not > 0 points"),
    }
    out = []
    for key, (text, threshold, *quote) in spec.items():
        q = quote[0] if quote else ABSTRACT["quick_wins"]
        out.append(
            gather_claim(f"td-{key}", text, details[key], source=SOURCE, figure=figure, threshold=threshold, quote=q)
        )
    return out
