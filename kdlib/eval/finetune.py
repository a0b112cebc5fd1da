"""Fine-tune any encoder (teacher or student) on one of the seven tasks, pick the best epoch, score the test set.

One head per task kind, identical hyperparameters (:class:`FinetuneConfig`) for every model:

* tagging (UPOS, XPOS, NER): linear layer on every token; each word is labelled on its FIRST sub-token
  (``word_ids``), the other sub-tokens get -100 and are ignored. Sentences longer than ``max_len``
  sub-tokens are split into consecutive word chunks, so every word of every sentence is trained on and
  predicted (teacher and student predictions then cover the same words, whatever their tokenizers).
* classification (SAPN, SAR, DI): linear layer on the first token ([CLS]) of the last hidden state; no pooler,
  so DistilBERT-shaped students work; cross-entropy.
* regression (STS): same first-token head with one output; mean squared error on the 0-5 score.

Sentence pairs (LaRoSeDa title + content, STS) are encoded as ``tokenizer(text_a, text_b,
truncation="longest_first")``; only inputs the encoder's ``forward`` accepts are passed (DistilBERT takes no
``token_type_ids``). Training: AdamW (no decay on biases and LayerNorm weights, kdlib.engine.optim), linear warmup
then decay, gradient
clipping; validation after every epoch; the best epoch's weights (headline metric on validation, ties ->
earliest) are kept in memory and scored on test. ``out_dir`` receives ``predictions.npz`` (test predictions,
format in :mod:`kdlib.eval.loyalty`) and then ``metrics.json`` (with a collapse check of the test predictions,
:func:`kdlib.eval.metrics.prediction_collapse`; written last, atomically: its presence marks a
finished run).

A finished fine-tune is kept: a rerun (after a Colab disconnect) returns its ``metrics.json`` at once, its files
untouched, when its recorded settings match (:func:`unit_settings`: model name and files, task, config but the
device, the data actually used, the fine-tuning code); one with other settings is refused with a one-line error
unless ``overwrite=True`` (CLI ``--overwrite``). A ``metrics.json`` without recorded settings (older kdlib) is
redone.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import fnmatch
import functools
import hashlib
import inspect
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from kdlib.data.load import load_task
from kdlib.device import AMP_MODES, amp_settings, autocast, grad_scaler, pick_device
from kdlib.engine import card as kcard
from kdlib.engine.optim import make_adamw
from kdlib.engine.tracking import Tracker, check_report_to
from kdlib.eval.loyalty import PREDICTIONS_FILE, Predictions, save_predictions
from kdlib.eval.metrics import compute_metrics, prediction_collapse, task_kind_and_metric
from kdlib.io import write_json_atomic

METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"
MODEL_DIR = "model"  # finetune(save_model=True): the best epoch's TaskModel, in out_dir/model
TASK_HEAD_FILE = "task_head.json"  # what the saved head is for: task, kind, label names
HEAD_WEIGHTS_FILE = "head.safetensors"
# the modules whose code decides what a fine-tune computes (relative to the kdlib package): a finished fine-tune
# of other code is not reused
FINETUNE_MODULES = ("eval/finetune", "eval/metrics", "eval/loyalty", "engine/optim", "device")
# FinetuneConfig fields that do not change what a finished fine-tune computed
OPERATIONAL_KEYS = ("device", "report_to")
# what a model folder's fingerprint reads: the files that define the model, not what a run wrote beside them
MODEL_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "*.safetensors", "*.bin", "*.model",
)  # fmt: skip


@dataclass
class FinetuneConfig:
    """Fine-tuning hyperparameters, the same for every model so scores are comparable.

    epochs: passes over the training set; the best one on validation is kept.
    lr: peak AdamW learning rate. batch_size / eval_batch_size: examples (sentences) per step.
    max_len: sub-tokens per input incl. special tokens (longer tagging sentences are chunked,
    longer texts truncated longest-first). warmup: fraction of steps with linear warmup.
    weight_decay: AdamW decay (not on biases/LayerNorm weights: engine.optim). dropout: head dropout, also set as the
    encoder's hidden and attention dropout. seed: python/numpy/torch seed (head init, shuffling, dropout).
    max_grad_norm: gradient clipping. max_train_examples / max_eval_examples: optional caps for quick
    runs (a fixed random subset, seed 0, the same for every model and seed).
    device: "auto" (cuda > mps > cpu) or a torch device string. amp: "auto" (bf16 autocast on a CUDA
    GPU that supports it, fp16 + GradScaler on older GPUs, fp32 on CPU), "bf16", "fp16" or "off"
    (kdlib.device.amp_settings). report_to: also log each epoch's figures to "tensorboard" (event files in
    out_dir/tensorboard) and/or "trackio" (kdlib.engine.tracking; each needs its package); [] (default): none.
    """

    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    max_len: int = 128
    warmup: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    max_grad_norm: float = 1.0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    device: str = "auto"
    amp: str = "auto"
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"FinetuneConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.max_len < 8:
            raise ValueError(f"FinetuneConfig.max_len must be >= 8, got {self.max_len}")
        if not self.lr > 0:
            raise ValueError(f"FinetuneConfig.lr must be > 0, got {self.lr}")
        for name in ("warmup", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise ValueError("FinetuneConfig.weight_decay must be >= 0 and max_grad_norm > 0")
        for name in ("max_train_examples", "max_eval_examples"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ValueError(f"FinetuneConfig.{name} must be None or a positive integer, got {v!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"FinetuneConfig.amp must be one of {AMP_MODES}, got {self.amp!r}")


# ---------------------------------------------------------------------------------------------- model
class TaskModel(nn.Module):
    """Encoder (AutoModel) + dropout + linear head for tagging, classification or regression."""

    def __init__(self, encoder: nn.Module, kind: str, num_labels: int, dropout: float) -> None:
        super().__init__()
        if kind not in ("tagging", "classification", "regression"):
            raise ValueError(f"kind must be tagging, classification or regression, got {kind!r}")
        self.encoder, self.kind = encoder, kind
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, 1 if kind == "regression" else num_labels)
        nn.init.normal_(self.head.weight, std=getattr(encoder.config, "initializer_range", 0.02))
        nn.init.zeros_(self.head.bias)
        self._accepts = set(inspect.signature(encoder.forward).parameters)

    @classmethod
    def from_pretrained(cls, name_or_path: str, kind: str, num_labels: int, dropout: float = 0.1) -> TaskModel:
        """Load the encoder of any (masked-LM) checkpoint, with its dropout set to ``dropout``."""
        config = AutoConfig.from_pretrained(name_or_path)
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, attr) and isinstance(getattr(config, attr), float):
                setattr(config, attr, dropout)
        kwargs: dict[str, Any] = {}
        model_cls = MODEL_MAPPING.get(type(config), None)
        if model_cls is not None and "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
            kwargs["add_pooling_layer"] = False  # the head pools the first token itself
        encoder = AutoModel.from_pretrained(name_or_path, config=config, **kwargs)
        return cls(encoder, kind, num_labels, dropout)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (batch, tokens, labels) for tagging, (batch, labels) or (batch,) otherwise."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self._accepts:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        if self.kind != "tagging":
            hidden = hidden[:, 0]
        out = self.head(self.dropout(hidden))
        return out.squeeze(-1) if self.kind == "regression" else out

    def save(self, folder: str | Path, tokenizer, *, task: str, label_names: list[str] | None) -> Path:
        """Save encoder + tokenizer (save_pretrained, safetensors), the head and ``task_head.json``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, folder / HEAD_WEIGHTS_FILE
        )
        write_json_atomic(
            folder / TASK_HEAD_FILE,
            {
                "task": task,
                "kind": self.kind,
                "num_labels": self.head.out_features,
                "label_names": label_names,
                "dropout": self.dropout.p,
            },
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> tuple[TaskModel, dict[str, Any]]:
        """A TaskModel saved by :meth:`save` (eval mode) and its ``task_head.json``."""
        from safetensors.torch import load_file

        folder = Path(folder)
        info = json.loads((folder / TASK_HEAD_FILE).read_text(encoding="utf-8"))
        model = cls.from_pretrained(str(folder), info["kind"], info["num_labels"], info.get("dropout", 0.1))
        model.head.load_state_dict(load_file(folder / HEAD_WEIGHTS_FILE))
        return model.eval(), info


# ---------------------------------------------------------------------------------------------- data
def _check_columns(ds, kind: str) -> None:
    need = {
        "tagging": ("id", "tokens", "tags"),
        "classification": ("id", "text_a", "label"),
        "regression": ("id", "text_a", "text_b", "label"),
    }[kind]
    for split in ("train", "validation", "test"):
        if split not in ds:
            raise ValueError(f"dataset has splits {list(ds)}; expected train, validation and test")
        missing = [c for c in need if c not in ds[split].column_names]
        if missing:
            raise ValueError(f"{split} split lacks columns {missing} needed for {kind} (has {ds[split].column_names})")
        if len(ds[split]) == 0:
            raise ValueError(f"{split} split is empty")


def _label_names(ds, kind: str) -> list[str] | None:
    feats = ds["train"].features
    if kind == "tagging":
        return list(feats["tags"].feature.names)
    if kind == "classification":
        return list(feats["label"].names)
    return None


def _encode_tagging(rows: dict[str, list], tokenizer, max_len: int) -> list[dict[str, Any]]:
    """One feature per word chunk that fits ``max_len``; ``words`` = (sentence index, word index) per first
    sub-token."""
    sents = [[w if w.strip() else tokenizer.unk_token for w in toks] for toks in rows["tokens"]]
    counts_enc = tokenizer(sents, is_split_into_words=True, add_special_tokens=False)
    budget = max_len - tokenizer.num_special_tokens_to_add(pair=False)
    chunks: list[tuple[int, list[int]]] = []  # (sentence index, word indices)
    for s, words in enumerate(sents):
        counts = np.bincount([w for w in counts_enc.word_ids(s) if w is not None], minlength=len(words))
        for w in np.flatnonzero(counts == 0):  # a word the tokenizer maps to nothing: use [UNK]
            words[w] = tokenizer.unk_token
        cur: list[int] = []
        used = 0
        for w, c in enumerate(np.maximum(counts, 1)):
            c = min(int(c), budget)
            if cur and used + c > budget:
                chunks.append((s, cur))
                cur, used = [], 0
            cur.append(w)
            used += c
        if cur:
            chunks.append((s, cur))
    enc = tokenizer(
        [[sents[s][w] for w in ws] for s, ws in chunks], is_split_into_words=True, truncation=True, max_length=max_len
    )
    feats = []
    for k, (s, ws) in enumerate(chunks):
        tags = rows["tags"][s]
        labels, words, seen = [], [], set()
        for pos, w in enumerate(enc.word_ids(k)):
            if w is None or w in seen:
                labels.append(-100)
                continue
            seen.add(w)
            labels.append(int(tags[ws[w]]))
            words.append((pos, s, ws[w]))
        if len(seen) != len(ws):
            raise RuntimeError(f"sentence {rows['id'][s]}: {len(ws) - len(seen)} words lost in tokenisation")
        feat = {key: enc[key][k] for key in enc.keys()}
        feats.append({**feat, "labels": labels, "words": words})
    return feats


def _encode_sequences(rows: dict[str, list], tokenizer, max_len: int, kind: str) -> list[dict[str, Any]]:
    pair = rows.get("text_b")
    enc = tokenizer(rows["text_a"], pair, truncation="longest_first", max_length=max_len)
    dtype = float if kind == "regression" else int
    return [{**{key: enc[key][i] for key in enc.keys()}, "labels": dtype(y)} for i, y in enumerate(rows["label"])]


def encode_split(split, tokenizer, kind: str, max_len: int) -> list[dict[str, Any]]:
    """Tokenise one split into features: input_ids, attention_mask[, token_type_ids], labels[, words]."""
    rows = split.to_dict()
    if kind == "tagging":
        return _encode_tagging(rows, tokenizer, max_len)
    return _encode_sequences(rows, tokenizer, max_len, kind)


def collate_features(feats: list[dict[str, Any]], pad_id: int, kind: str) -> dict[str, torch.Tensor]:
    """Pad a list of encoded features into tensors (labels padded with -100 for tagging)."""
    width = max(len(f["input_ids"]) for f in feats)
    batch: dict[str, torch.Tensor] = {}
    for key, pad in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in feats[0]:
            batch[key] = torch.tensor([f[key] + [pad] * (width - len(f[key])) for f in feats])
    if kind == "tagging":
        batch["labels"] = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in feats])
    else:
        batch["labels"] = torch.tensor(
            [f["labels"] for f in feats], dtype=torch.float32 if kind == "regression" else torch.long
        )
    return batch


# ----------------------------------------------------------------------------------------- training
def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "regression":
        return nn.functional.mse_loss(logits.float(), labels)
    return nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def feature_batches(feats: list[dict[str, Any]], size: int, order: Sequence[int]):
    """The features in ``order``, ``size`` at a time."""
    for i in range(0, len(order), size):
        yield [feats[j] for j in order[i : i + size]]


@torch.inference_mode()
def predict(
    model: TaskModel,
    feats: list[dict[str, Any]],
    n_examples: int,
    *,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    amp: str = "off",
    desc: str = "eval",
    progress: bool = True,
    logits: bool = False,
) -> list[Any]:
    """Per example: softmax probabilities (tagging: a (words, classes) array per sentence) or a float.

    ``logits=True`` returns the raw logits instead of probabilities (task-specific distillation reads them).
    """
    model.eval()
    kind = model.kind
    out: list[Any] = [None] * n_examples
    words: dict[int, dict[int, np.ndarray]] = {}
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))  # less padding
    bar = tqdm(total=len(feats), desc=desc, disable=not progress, leave=False)
    for chunk_ids in feature_batches(list(range(len(feats))), batch_size, order):
        chunk = [feats[i] for i in chunk_ids]
        batch = {k: v.to(device) for k, v in collate_features(chunk, pad_id, kind).items() if k != "labels"}
        with autocast(device, amp_settings(device, amp)):
            out_logits = model(**batch).float()
        if kind == "regression" or logits:
            vals = out_logits.cpu().numpy()
        else:
            vals = torch.softmax(out_logits, dim=-1).cpu().numpy()
        for i, f, v in zip(chunk_ids, chunk, vals):
            if kind == "tagging":
                for pos, s, w in f["words"]:
                    words.setdefault(s, {})[w] = v[pos]
            else:
                out[i] = float(v) if kind == "regression" else v
        bar.update(len(chunk))
    bar.close()
    if kind == "tagging":
        for s, ws in words.items():
            out[s] = np.stack([ws[w] for w in range(len(ws))])
    return out


def score_outputs(task: str, kind: str, outputs: list[Any], gold: list[Any], label_names) -> dict[str, Any]:
    """The task's metrics of the model's outputs (class probabilities, per-word arrays, or regression values)."""
    if kind == "regression":
        pred: list[Any] = list(outputs)
    elif kind == "tagging":
        pred = [o.argmax(axis=1).tolist() for o in outputs]
    else:
        pred = [int(o.argmax()) for o in outputs]
    return compute_metrics(task, gold, pred, label_names=label_names)


def to_predictions(task: str, model: str, kind: str, split, outputs, label_names) -> Predictions:
    """Test predictions in the kdlib.eval.loyalty format (tagging: one row per word, id '<sentence>:<word>')."""
    if kind == "tagging":
        ids = [f"{sid}:{w}" for sid, toks in zip(split["id"], split["tokens"]) for w in range(len(toks))]
        gold = np.array([t for tags in split["tags"] for t in tags], dtype=np.int64)
        probs = np.concatenate(outputs).astype(np.float32)
        return Predictions(task, model, kind, "test", label_names, ids, gold, probs.argmax(1), probs=probs)
    ids = [str(i) for i in split["id"]]
    if kind == "regression":
        vals = np.asarray(outputs, dtype=np.float32)
        return Predictions(
            task, model, kind, "test", None, ids, np.asarray(split["label"], np.float32), vals, outputs=vals
        )
    probs = np.stack(outputs).astype(np.float32)
    return Predictions(
        task, model, kind, "test", label_names, ids, np.asarray(split["label"], np.int64), probs.argmax(1), probs=probs
    )


def _check_model_path(name_or_path: str) -> None:
    """Fail early on a local model folder that is missing or not a save_pretrained folder."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {name_or_path} has no config.json (save it with save_pretrained)")
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"model path {name_or_path} does not exist (give a local folder or a hub id)")


def code_fingerprint() -> str:
    """A hash of the fine-tuning code (FINETUNE_MODULES), recorded with every finished fine-tune."""
    digest = hashlib.sha256()
    for name in FINETUNE_MODULES:
        digest.update((Path(__file__).parents[1] / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


def data_fingerprint(splits: Sequence[Any]) -> str:
    """A hash of the examples actually used (after the max_*_examples caps) and their features."""
    digest = hashlib.sha256()
    for split in splits:
        digest.update(str(split.features).encode())
        digest.update(json.dumps(split.to_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=64)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def model_label(name_or_path: str) -> str:
    """How results name a model: a local folder by its name (the fingerprint tells identity), a hub id as is."""
    return Path(name_or_path).name if Path(name_or_path).expanduser().is_dir() else name_or_path


def model_fingerprint(name_or_path: str) -> str:
    """A local model folder: a hash of its config, weight and tokenizer files; a hub id: the id itself."""
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return name_or_path
    files = sorted(p for p in path.iterdir() if p.is_file() and any(fnmatch.fnmatch(p.name, m) for m in MODEL_FILES))
    return _hash_files(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def unit_settings(model_name_or_path: str, task: str, config: FinetuneConfig, splits: Sequence[Any]) -> dict:
    """What decides a fine-tune's result, recorded in its metrics.json: a rerun with the same ones reuses it."""
    return {
        "model": model_label(model_name_or_path),
        "model_files": model_fingerprint(model_name_or_path),  # the folder's content: a moved run still matches
        "task": task,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in OPERATIONAL_KEYS},
        "data": data_fingerprint(splits),
        "code": code_fingerprint(),
    }


def finished(out_dir: Path, settings: dict, *, overwrite: bool = False, save_model: bool = False) -> dict | None:
    """The metrics of the finished fine-tune in `out_dir` made with `settings`, None when there is none to reuse
    (or `overwrite`); raises ValueError (one line) for one made with other settings."""
    path = out_dir / METRICS_FILE
    if overwrite or not path.is_file():
        return None
    old = json.loads(path.read_text(encoding="utf-8"))
    then = old.get("settings")
    if then is None:  # written before kdlib recorded settings: redo it
        return None
    if then == settings:
        return old if not save_model or (out_dir / MODEL_DIR / TASK_HEAD_FILE).is_file() else None
    changed = [k for k in settings if then.get(k) != settings[k]]
    raise ValueError(
        f"{out_dir} holds a finished fine-tune made with other settings ({', '.join(changed)} differ); restore "
        f"them, use another folder, or pass overwrite=True (--overwrite) to redo it"
    )


def _splits(task: str, kind: str, dataset, data_dir, config: FinetuneConfig):
    """(label names, train, validation, test) of the task, capped by max_train/eval_examples (fixed subsets)."""
    if dataset is None:
        if task in ("tagging", "classification", "regression"):
            raise ValueError(
                f"task {task!r} is a kind, not a task name: pass dataset= or a task of kdlib.data.load.TASKS"
            )
        dataset = load_task(task, data_dir)
    _check_columns(dataset, kind)
    train = dataset["train"]
    if config.max_train_examples and config.max_train_examples < len(train):
        train = train.shuffle(seed=0).select(range(config.max_train_examples))
    val, test = dataset["validation"], dataset["test"]
    if config.max_eval_examples:
        val, test = (
            split.shuffle(seed=0).select(range(config.max_eval_examples))
            if config.max_eval_examples < len(split)
            else split
            for split in (val, test)
        )
    return _label_names(dataset, kind), train, val, test


def _train_epoch(
    model: TaskModel,
    train_feats: list[dict[str, Any]],
    order: list[int],
    parts: dict,
    *,
    config: FinetuneConfig,
    pad_id: int,
    step: int,
    desc: str,
    progress: bool,
) -> tuple[list[float], int]:
    """One pass over the training features in `order`; (losses per step, global step after the epoch).

    `parts`: optimizer, scheduler, scaler, device, amp."""
    model.train()
    kind, device, optimizer, scaler = model.kind, parts["device"], parts["optimizer"], parts["scaler"]
    losses = []
    bar = tqdm(
        feature_batches(train_feats, config.batch_size, order),
        total=math.ceil(len(order) / config.batch_size),
        desc=desc,
        disable=not progress,
        leave=False,
    )
    for chunk in bar:
        batch = {k: v.to(device) for k, v in collate_features(chunk, pad_id, kind).items()}
        labels = batch.pop("labels")
        with autocast(device, parts["amp"]):
            loss = _loss(model(**batch), labels, kind)
        step += 1
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step} ({desc}); lower lr?")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        parts["scheduler"].step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return losses, step


def _fit(
    model: TaskModel,
    feats: dict,
    val,
    gold: dict,
    label_names,
    *,
    task: str,
    config: FinetuneConfig,
    pad_id: int,
    device: torch.device,
    progress: bool,
    tracker: Tracker | None = None,
) -> tuple[list[dict], dict, float]:
    """Train `config.epochs` epochs, validating after each; load the best epoch's weights (ties -> earliest).
    Each epoch's record also goes to `tracker` (report_to). Returns (history, best epoch's record, training
    seconds)."""
    amp = amp_settings(device, config.amp)
    total = math.ceil(len(feats["train"]) / config.batch_size) * config.epochs
    optimizer, scheduler = make_adamw(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup * total),
        total_steps=total,
    )
    parts = {
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": grad_scaler(device, amp),
        "device": device,
        "amp": amp,
    }
    rng = np.random.default_rng(config.seed)
    pkw = {
        "pad_id": pad_id,
        "batch_size": config.eval_batch_size,
        "device": device,
        "amp": config.amp,
        "progress": progress,
    }
    history, best, best_state, step, t_train = [], None, None, 0, 0.0
    for epoch in range(1, config.epochs + 1):
        te = time.perf_counter()
        order = rng.permutation(len(feats["train"])).tolist()
        losses, step = _train_epoch(
            model,
            feats["train"],
            order,
            parts,
            config=config,
            pad_id=pad_id,
            step=step,
            desc=f"{task} epoch {epoch}/{config.epochs}",
            progress=progress,
        )
        t_train += time.perf_counter() - te
        outs = predict(model, feats["validation"], len(val), desc=f"{task} validation", **pkw)
        val_metrics = score_outputs(task, model.kind, outs, gold["validation"], label_names)
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "validation": val_metrics,
                "seconds": time.perf_counter() - te,
            }
        )
        if tracker is not None:
            tracker.log({k: v for k, v in history[-1].items() if k != "epoch"}, epoch)
        if best is None or val_metrics["score"] > best["validation"]["score"]:
            best = history[-1]
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return history, best, t_train


def task_model_card(
    model_name_or_path: str, task: str, out_dir: Path, config: FinetuneConfig, best: dict, test: dict
) -> str:
    """The saved task model's card (kdlib.engine.card): base model and task data with their licences, the
    settings, and the test metrics as model-index results; no absolute paths, no measured times."""
    kind, metric = task_kind_and_metric(task)
    base = kcard.shown_path(model_name_or_path, out_dir)
    scores = "\n".join(f"| {k} | {v:.4f} |" for k, v in test.items() if k != "score" and isinstance(v, (int, float)))
    body = f"""# {Path(base).name} fine-tuned on {task}

`{base}` fine-tuned with `kdlib` on the task `{task}` ({kind}; headline metric {metric}): the encoder (loadable
with `transformers.AutoModel`) plus a linear head (`{HEAD_WEIGHTS_FILE}`, described by `{TASK_HEAD_FILE}`); load both
with `kdlib.eval.finetune.TaskModel.load(folder)`.

## Training
- epochs {config.epochs} (best on validation: {best["epoch"]}); lr {config.lr}; batch {config.batch_size};
  max_len {config.max_len}; warmup {config.warmup}; weight decay {config.weight_decay}; dropout {config.dropout};
  seed {config.seed}; amp {config.amp}
- examples: max_train_examples {config.max_train_examples}, max_eval_examples {config.max_eval_examples}

## Test results
| metric | value |
| --- | --- |
{scores}"""
    return kcard.render(
        body=body,
        models=[(Path(base).name, model_name_or_path)],
        models_title="Base model",
        run_dir=out_dir,
        sources=[kcard.task_source(task)],
        pipeline_tag=kcard.PIPELINE_TAGS.get(kind, "text-classification"),
        tags=["kdlib", "romanian", task],
        model_name=f"{Path(base).name}-{task}",
        eval_results=kcard.eval_results(task, kind, test),
    )


def finetune(
    model_name_or_path: str,
    task: str,
    out_dir: str | Path,
    *,
    config: FinetuneConfig | None = None,
    data_dir: str | Path | None = None,
    max_train_examples: int | None = None,
    dataset=None,
    reuse: bool | None = None,
    progress: bool = True,
    save_model: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``model_name_or_path`` on ``task``, keep the best validation epoch, score test.

    ``save_model`` also saves the best epoch's model to ``out_dir/model`` (:meth:`TaskModel.save`), e.g. to
    serve as the teacher of task-specific distillation (kdlib.studies.task_distill).
    ``dataset`` (a DatasetDict with the kdlib.data.load schema) replaces ``kdlib.data.load.load_task(task, data_dir)``;
    with it ``task`` may also be a bare kind ("tagging", "classification", "regression").
    ``max_train_examples`` overrides ``config.max_train_examples``. A finished fine-tune in ``out_dir`` with the
    same settings is returned without training (:func:`finished`); one with other settings is refused unless
    ``overwrite``. ``reuse`` is accepted for old callers and ignored: reusing is the default.
    Returns the content of ``out_dir/metrics.json``.
    """
    config = copy.deepcopy(config) if config is not None else FinetuneConfig()
    if max_train_examples is not None:
        config = dataclasses.replace(config, max_train_examples=max_train_examples)
    kind, metric = task_kind_and_metric(task)
    out_dir = Path(out_dir)
    check_report_to(config.report_to)  # a missing tracker package fails here, before any work
    _check_model_path(model_name_or_path)
    label_names, train, val, test = _splits(task, kind, dataset, data_dir, config)
    settings = unit_settings(model_name_or_path, task, config, (train, val, test))
    if (done := finished(out_dir, settings, overwrite=overwrite, save_model=save_model)) is not None:
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    # model, features; then train with validation after every epoch
    t0 = time.perf_counter()
    set_seed(config.seed)
    device = pick_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    model = TaskModel.from_pretrained(model_name_or_path, kind, len(label_names or [0]), config.dropout).to(device)
    splits = {"train": train, "validation": val, "test": test}
    feats = {name: encode_split(split, tokenizer, kind, config.max_len) for name, split in splits.items()}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    gold = {name: splits[name]["tags" if kind == "tagging" else "label"] for name in ("validation", "test")}
    tracker = Tracker(config.report_to, out_dir, project="kdlib-finetune", name=out_dir.name, config=settings)
    history, best, t_train = _fit(
        model,
        feats,
        val,
        gold,
        label_names,
        task=task,
        config=config,
        pad_id=pad_id,
        device=device,
        progress=progress,
        tracker=tracker,
    )
    tracker.close()
    # the best epoch on test: predictions, then metrics.json (written last: marks a finished run)
    if save_model:
        model.save(out_dir / MODEL_DIR, tokenizer, task=task, label_names=label_names)
    te = time.perf_counter()
    outs = predict(
        model,
        feats["test"],
        len(test),
        pad_id=pad_id,
        batch_size=config.eval_batch_size,
        device=device,
        amp=config.amp,
        desc=f"{task} test",
        progress=progress,
    )
    test_metrics, t_test = score_outputs(task, kind, outs, gold["test"], label_names), time.perf_counter() - te
    test_pred = to_predictions(task, model_label(model_name_or_path), kind, test, outs, label_names)
    save_predictions(test_pred, out_dir / PREDICTIONS_FILE)
    if save_model:
        kcard.write_card(
            out_dir / MODEL_DIR, task_model_card(model_name_or_path, task, out_dir, config, best, test_metrics)
        )
    result = {
        "model": model_name_or_path,
        "task": task,
        "kind": kind,
        "metric": metric,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "report_to" or v},
        "device": str(device),
        "parameters": sum(p.numel() for p in model.encoder.parameters()),
        "label_names": label_names,
        "examples": {**{name: len(split) for name, split in splits.items()}, "train_features": len(feats["train"])},
        "epochs": history,
        "best_epoch": best["epoch"],
        "validation": best["validation"],
        "test": test_metrics,
        "collapse": prediction_collapse(kind, test_pred.gold, test_pred.pred),
        "timing": {"train_seconds": t_train, "test_seconds": t_test, "total_seconds": time.perf_counter() - t0},
        "predictions": PREDICTIONS_FILE,
        "settings": settings,
    }
    write_json_atomic(out_dir / METRICS_FILE, result)
    return result


def finetune_seeds(
    model_name_or_path: str,
    task: str,
    out_dir: str | Path,
    seeds: Sequence[int] = (1, 2, 3),
    *,
    config: FinetuneConfig | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run :func:`finetune` once per seed into ``out_dir/seed-<s>`` and summarise test/validation metrics.

    ``summary.json`` holds, per numeric metric (the headline ``score`` and the alternates of
    kdlib.eval.metrics.ALTERNATES), the mean, the sample standard deviation (ddof=1; 0 for one seed) and the
    per-seed values, and ``collapsed_seeds``: the seeds whose test predictions collapsed to one class or a
    constant (kdlib.eval.metrics.prediction_collapse; each run's metrics.json holds the evidence under "collapse").
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    config = config or FinetuneConfig()
    out_dir = Path(out_dir)
    runs = [
        finetune(model_name_or_path, task, out_dir / f"seed-{s}", config=dataclasses.replace(config, seed=s), **kwargs)
        for s in seeds
    ]

    def summarise(split: str) -> dict[str, dict[str, Any]]:
        keys = [k for k, v in runs[0][split].items() if isinstance(v, (int, float))]
        out = {}
        for k in keys:
            vals = [float(r[split][k]) for r in runs]
            out[k] = {
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                "values": vals,
            }
        return out

    summary = {
        "model": model_name_or_path,
        "task": task,
        "metric": runs[0]["metric"],
        "seeds": seeds,
        "runs": [str(out_dir / f"seed-{s}") for s in seeds],
        "test": summarise("test"),
        "validation": summarise("validation"),
        "best_epochs": [r["best_epoch"] for r in runs],
        "collapsed_seeds": [s for s, r in zip(seeds, runs) if r.get("collapse", {}).get("collapsed")],
    }
    write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary


def cli(argv: list[str]) -> int:
    """`python -m kdlib finetune --model M --task T --out DIR [--seeds 1 2 3] [--epochs N] ...`."""
    ap = argparse.ArgumentParser(prog="python -m kdlib finetune", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="hub id or local folder (save_pretrained)")
    ap.add_argument("--task", required=True, help="task name (upos, xpos, ner, sapn, sar, di, sts)")
    ap.add_argument("--out", required=True, help="output folder (metrics.json, predictions.npz)")
    ap.add_argument("--data-dir", help="data folder (default: $KDLIB_DATA_DIR)")
    ap.add_argument("--seeds", type=int, nargs="+", help="run several seeds into OUT/seed-<s> with a summary")
    ap.add_argument("--reuse", action="store_true", help="ignored: finished runs with the same settings are reused")
    ap.add_argument("--overwrite", action="store_true", help="redo finished runs made with other settings")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--save-model", action="store_true", help="also save the best model to OUT/model (a teacher)")
    ap.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="upload the saved model (implies --save-model) to this hub model repository (--seeds: REPO-seed-<s>)",
    )
    ap.add_argument(
        "--report-to", nargs="+", metavar="TRACKER", help="also log each epoch to tensorboard and/or trackio"
    )
    for f in dataclasses.fields(FinetuneConfig):
        if f.name == "report_to":
            continue
        typ = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], int)
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=typ, default=None, help=f"default {f.default}")
    args = ap.parse_args(argv)
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig) if getattr(args, f.name) is not None
    }
    try:
        config = FinetuneConfig(**overrides)
        kw = {
            "config": config,
            "data_dir": args.data_dir,
            "overwrite": args.overwrite,
            "progress": not args.no_progress,
            "save_model": args.save_model or bool(args.push_to_hub),
        }
        if args.seeds:
            result = finetune_seeds(args.model, args.task, args.out, args.seeds, **kw)
            collapsed = result["collapsed_seeds"]
        else:
            result = finetune(args.model, args.task, args.out, **kw)
            collapsed = [config.seed] if result["collapse"]["collapsed"] else []
        print(json.dumps(result["test"], indent=2))
        if collapsed:
            print(
                f"kdlib finetune: seed(s) {collapsed} collapsed to one class or a constant output "
                "(see 'collapse' in their metrics.json)",
                file=sys.stderr,
            )
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdlib finetune: {exc}", file=sys.stderr)
        return 2
    if args.push_to_hub:
        runs = (
            [(f"seed-{s}", Path(args.out) / f"seed-{s}") for s in args.seeds] if args.seeds else [("", Path(args.out))]
        )
        return push_models(runs, args.push_to_hub)
    return 0


def push_models(runs: list[tuple[str, Path]], repo_id: str) -> int:
    """Upload the saved model of each (name, fine-tune folder) to the hub (kdlib.engine.card); 1 on a failed push."""
    try:
        for folder, repo in kcard.push_targets([(name, out / MODEL_DIR) for name, out in runs], repo_id):
            print(f"kdlib finetune: pushed {folder} to {repo}: {kcard.push_folder(folder, repo)}", file=sys.stderr)
    except (OSError, ValueError) as exc:  # network, authentication, a bad repository name
        print(f"kdlib finetune: push to the hub failed: {exc}", file=sys.stderr)
        return 1
    return 0
