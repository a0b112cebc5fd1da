"""Teachers: load a masked-LM teacher (hub id or folder), or make a small one from scratch.

No hub is reachable offline, so every offline run uses small teachers trained here: a BERT WordPiece
tokenizer trained with `tokenizers` on the distillation corpus (cased like bert-base-romanian-cased-v1,
or uncased like RoBERT-base: lower-cased, accents kept), then a small BERT pretrained with MLM.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    DataCollatorForLanguageModeling,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from kdlib.device import pick_device
from kdlib.engine.batching import batch_order, load_corpus
from kdlib.engine.mlm import logits_at
from kdlib.engine.optim import make_adamw

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# A hub id is "owner/name" or "name": no leading "/", ".", "~" and at most one "/".
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _check_source(name_or_path: str) -> None:
    """Cheap checks on a teacher path or hub id, before any weights are read."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"teacher folder {path} has no config.json; expected a save_pretrained() folder "
                f"(config.json, model.safetensors, tokenizer files), e.g. one written by "
                f"`python -m kdlib pretrain-teacher --out {path}`"
            )
        return
    if path.exists():
        raise NotADirectoryError(f"teacher {path} is a file; expected a model folder or a hub id")
    looks_like_hub = bool(_HUB_ID.match(name_or_path)) and not name_or_path.startswith((".", "~"))
    if not looks_like_hub:
        raise FileNotFoundError(f"teacher folder {path} does not exist (and it is not a hub id)")


def _mlm_head_missing(model: torch.nn.Module, missing_keys: Sequence[str]) -> list[str]:
    """Keys of the MLM head (outside the base model) that the checkpoint did not provide."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    return [k for k in missing_keys if not k.startswith(prefix) and not k.endswith("position_ids")]


def pin_teacher(hub_id: str, dest: str | os.PathLike, revision: str | None) -> str:
    """The teacher to load: ``hub_id`` itself when no revision is pinned, else its files at ``revision``
    downloaded into ``dest`` (``huggingface_hub.snapshot_download``), so that every later step reads that copy."""
    if not revision:
        return hub_id
    from huggingface_hub import snapshot_download

    return snapshot_download(hub_id, revision=revision, local_dir=str(dest))


def load_teacher(name_or_path: str, *, device: str | torch.device | None = None):
    """Load a masked-LM teacher and its tokenizer; frozen (eval mode, no gradients).

    Works with hub ids (on Colab) and local folders. "Not a masked LM" means: the model type has no
    masked-LM class in transformers, or the checkpoint lacks the MLM head weights (e.g. a saved
    ``BertModel``), which ``AutoModelForMaskedLM`` would otherwise fill with random values.
    """
    name_or_path = str(name_or_path)
    _check_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
    except OSError as err:
        if Path(name_or_path).expanduser().exists():
            raise
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in {"0", "", "false", "False"}
        raise FileNotFoundError(
            f"teacher {name_or_path!r} is not a local folder and looks like a hub id, but it could not "
            f"be loaded from the Hugging Face hub{' (HF_HUB_OFFLINE is set)' if offline else ''} or its "
            f"cache: no hub is reachable offline. Use a local folder (e.g. a teacher made with "
            f"`python -m kdlib pretrain-teacher`) or run where the hub is reachable (Colab). ({err})"
        ) from err
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ValueError(
            f"teacher {name_or_path!r} has model_type {config.model_type!r} (architectures="
            f"{config.architectures}), which has no masked-LM class in transformers; expected a "
            f"masked LM such as BertForMaskedLM"
        )
    model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, trust_remote_code=False, output_loading_info=True)
    missing = _mlm_head_missing(model, info.get("missing_keys", []))
    if missing:
        raise ValueError(
            f"teacher {name_or_path!r} is not a masked LM: its checkpoint (architectures="
            f"{config.architectures}) has no MLM head weights ({', '.join(sorted(missing)[:4])}...); "
            f"they would be random. Expected a *ForMaskedLM or *ForPreTraining checkpoint"
        )
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"teacher {name_or_path!r}: tokenizer has {len(tokenizer)} tokens but the model's "
            f"vocab_size is {model.config.vocab_size}"
        )
    if device is not None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
def _continuing_alphabet(texts: list[str], tok: Tokenizer) -> list[str]:
    """Every "##c" piece of the corpus, sorted: registered first so that training is deterministic.

    `tokenizers`' WordPiece trainer gives these pieces ids in hash-map order, and merge ties are broken by
    id, so two runs on the same text can learn different vocabularies (huggingface/tokenizers#1794; the
    fix proposed upstream, PR #2066, is not released). Giving the pieces fixed ids up front removes the
    only unordered step.
    """
    chars: set[str] = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return ["##" + c for c in sorted(chars)]


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | os.PathLike,
    *,
    vocab_size: int,
    lowercase: bool,
    model_max_length: int = 512,
):
    """Train a BERT WordPiece tokenizer and save it (loadable with AutoTokenizer) into out_dir.

    cased (lowercase=False) mirrors bert-base-romanian-cased-v1; uncased mirrors RoBERT-base
    (do_lower_case=True, accents kept: ș, ț, ă, â, î survive lower-casing).
    """
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size={vocab_size}: expected more than {len(SPECIAL_TOKENS)} (the special tokens)")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_tokenizer: no non-empty texts to train on")
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    trained = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    trained.normalizer, trained.pre_tokenizer = normalizer, pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + _continuing_alphabet(texts, trained),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    trained.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # the "##c" pieces were registered as special only to fix their ids; the saved tokenizer treats them as pieces
    tok = Tokenizer(models.WordPiece(trained.get_vocab(), unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    assert tok.token_to_id("[PAD]") == 0, "[PAD] must be id 0"
    fast = BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        strip_accents=False,
        tokenize_chinese_chars=True,
        model_max_length=model_max_length,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tok-") as tmp:  # then move file by file
        fast.save_pretrained(tmp)
        if not os.path.exists(os.path.join(tmp, "vocab.txt")):  # transformers 5 writes tokenizer.json only
            pieces = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
            Path(tmp, "vocab.txt").write_text("".join(f"{p}\n" for p, _ in pieces), encoding="utf-8")
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), out_dir / name)
    return fast


# --------------------------------------------------------------------------------------------------
# Pretraining a small teacher
# --------------------------------------------------------------------------------------------------
@dataclass
class TeacherConfig:
    """Shape and MLM-pretraining settings of a small BERT teacher (JSON-friendly)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_len: int = 128
    max_position_embeddings: int = 512
    vocab_size: int = 8000
    dropout: float = 0.1
    steps: int = 600
    batch_size: int = 32
    lr: float = 5e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    mask_prob: float = 0.15
    heldout: float = 0.02
    heldout_max: int = 2000  # at most this many held-out sentences (for the MLM loss)
    pppl_texts: int = 200  # held-out sentences scored by pseudo-perplexity
    pppl_max_len: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        positive = [
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_len",
            "vocab_size",
            "steps",
            "batch_size",
            "max_position_embeddings",
            "heldout_max",
            "pppl_texts",
            "pppl_max_len",
        ]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"TeacherConfig.{name}={value!r}: expected a positive integer")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"TeacherConfig: hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.max_len > self.max_position_embeddings:
            raise ValueError(
                f"TeacherConfig: max_len={self.max_len} > max_position_embeddings={self.max_position_embeddings}"
            )
        if not 0 < self.heldout < 1:
            raise ValueError(f"TeacherConfig.heldout={self.heldout}: expected a fraction in (0, 1)")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"TeacherConfig.mask_prob={self.mask_prob}: expected a fraction in (0, 1)")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.weight_decay >= 0 and self.max_grad_norm > 0):
            raise ValueError(
                f"TeacherConfig: expected lr > 0, 0 <= warmup < 1, weight_decay >= 0, "
                f"max_grad_norm > 0; got {self.lr}, {self.warmup}, {self.weight_decay}, "
                f"{self.max_grad_norm}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TeacherConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"TeacherConfig: unknown field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TeacherConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher config file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of TeacherConfig fields")
        return cls.from_dict(data)


def teacher_seeds(seed: int, names: Sequence[str]) -> dict[str, int]:
    """A distinct pretraining seed per local teacher: ``seed + 1000 * i`` for the i-th name.

    `TeacherConfig.seed` drives the weight initialisation, the held-out split (so each tokenizer and
    model sees a slightly different training set), the batch order over the corpus and the MLM
    masks, so teachers with different seeds are as independent as two pretraining runs on one corpus
    can be (two teachers from one seed start from nearly the same weights and stay close).
    """
    if len(set(names)) != len(names):
        raise ValueError(f"teacher_seeds: names must be distinct, got {list(names)}")
    return {name: seed + 1000 * i for i, name in enumerate(names)}


def _split_heldout(texts: list[str], config: TeacherConfig) -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split of the corpus (seeded shuffle of indices)."""
    order = list(range(len(texts)))
    random.Random(config.seed).shuffle(order)
    n_held = min(config.heldout_max, max(1, round(config.heldout * len(texts))))
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [texts[i] for i in train], [texts[i] for i in held]


def _batches(ids: list[list[int]], batch_size: int, steps: int, seed: int, pool: int = 50):
    """Yield `steps` batches of examples, length-bucketed (engine.batching.batch_order), reshuffled every epoch."""
    lengths = [len(x) for x in ids]
    done, epoch = 0, 0
    while True:
        for batch in batch_order(lengths, batch_size, seed, epoch, pool):
            yield [ids[i] for i in batch]
            done += 1
            if done == steps:
                return
        epoch += 1


def masked_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The masked LM's own MLM loss, with the vocabulary head run on masked positions only (kdlib.engine.mlm; same
    value, ~7x less head compute at 15% masking: the head dominates small teachers with an 8k vocabulary)."""
    labels = batch["labels"]
    rows_b, rows_p = torch.nonzero(labels != -100, as_tuple=True)
    logits, _ = logits_at(model, batch["input_ids"], batch["attention_mask"], rows_b, rows_p)
    return torch.nn.functional.cross_entropy(logits.float(), labels[rows_b, rows_p])


@torch.no_grad()
def mlm_loss(model, collator, ids: list[list[int]], *, batch_size: int = 64, seed: int = 0) -> float:
    """Mean MLM loss over masked tokens of `ids`, with masks drawn from a fixed seed (comparable runs)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(ids), batch_size):
            batch = collator([{"input_ids": x} for x in ids[start : start + batch_size]])
            labels = batch["labels"]
            n = int((labels != -100).sum())
            if n == 0:
                continue
            loss = masked_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
            total += float(loss) * n
            count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("mlm_loss: no token was masked; the held-out text is too short")
    return total / count


def _logits_at(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """MLM logits at one position per row; the vocabulary head runs on those positions only (kdlib.engine.mlm)."""
    rows = torch.arange(len(input_ids), device=input_ids.device)
    return logits_at(model, input_ids, attention_mask, rows, positions)[0]


@torch.no_grad()
def pseudo_perplexity(
    model, tokenizer, texts: Sequence[str], *, max_texts: int = 200, max_len: int = 64, batch_size: int = 128
) -> float:
    """Pseudo-perplexity (Salazar et al. 2020): exp of the mean -log p(token | rest), each token masked in turn.

    Special tokens are not scored; each text's masked copies are batched together.
    """
    texts = [t for t in texts if t and t.strip()][:max_texts]
    if not texts:
        raise ValueError("pseudo_perplexity: no non-empty texts")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    mask_id = tokenizer.mask_token_id
    rows, positions, targets = [], [], []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_len)["input_ids"]
        special = set(tokenizer.all_special_ids)
        for pos, tok in enumerate(ids):
            if tok in special:
                continue
            masked = list(ids)
            masked[pos] = mask_id
            rows.append(masked)
            positions.append(pos)
            targets.append(tok)
    if not rows:
        raise ValueError("pseudo_perplexity: the texts have no non-special tokens")
    nll = 0.0
    pad = tokenizer.pad_token_id
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(map(len, chunk))
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, r in enumerate(chunk):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        pos = torch.tensor(positions[start : start + batch_size], device=device)
        tgt = torch.tensor(targets[start : start + batch_size], device=device)
        logp = torch.log_softmax(_logits_at(model, input_ids.to(device), attention.to(device), pos).float(), dim=-1)
        nll -= float(logp[torch.arange(len(chunk), device=device), tgt].sum())
    model.train(was_training)
    return math.exp(nll / len(rows))


def _curve(losses: list[float], points: int = 50) -> list[list[float]]:
    """Downsample a per-step loss list to about `points` [step, mean loss over the window] pairs."""
    window = max(1, len(losses) // points)
    return [
        [start + window, sum(losses[start : start + window]) / len(losses[start : start + window])]
        for start in range(0, len(losses), window)
    ]


def _texts_of(corpus) -> list[str]:
    if "text" not in getattr(corpus, "column_names", []):
        raise ValueError(
            f"pretrain_teacher: the corpus must be a datasets.Dataset with a 'text' column; "
            f"got columns {getattr(corpus, 'column_names', None)}"
        )
    return [t.strip() for t in corpus["text"] if isinstance(t, str) and t.strip()]


def _pretrain_texts(corpus, config: TeacherConfig) -> tuple[list[str], list[str]]:
    """(train, held-out) texts of the corpus; too small a corpus is refused before any training."""
    texts = _texts_of(corpus)
    if len(texts) < 10:
        raise ValueError(f"pretrain_teacher: the corpus has {len(texts)} non-empty texts; expected at least 10")
    train_texts, held_texts = _split_heldout(texts, config)
    if len(train_texts) < config.batch_size:
        raise ValueError(f"pretrain_teacher: {len(train_texts)} training texts < batch_size={config.batch_size}")
    return train_texts, held_texts


def _new_bert(tokenizer, config: TeacherConfig) -> BertForMaskedLM:
    """A randomly initialised BERT masked LM of `config`'s shape (seeded)."""
    torch.manual_seed(config.seed)
    return BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            max_position_embeddings=config.max_position_embeddings,
            hidden_dropout_prob=config.dropout,
            attention_probs_dropout_prob=config.dropout,
            pad_token_id=tokenizer.pad_token_id,
            architectures=["BertForMaskedLM"],
        )
    )


def _train_mlm(
    model, collator, train_ids: list[list[int]], config: TeacherConfig, dev: torch.device, progress: bool
) -> list[float]:
    """MLM pretraining: AdamW + linear warmup/decay, gradient clipping. Returns the loss of every step."""
    optimizer, scheduler = make_adamw(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup * config.steps),
        total_steps=config.steps,
    )
    model.train()
    losses: list[float] = []
    bar = tqdm(
        _batches(train_ids, config.batch_size, config.steps, config.seed),
        total=config.steps,
        desc="pretrain teacher",
        disable=not progress,
    )
    for step, examples in enumerate(bar, start=1):
        batch = collator([{"input_ids": x} for x in examples])
        if not (batch["labels"] != -100).any():
            continue  # nothing masked in this (tiny) batch
        loss = masked_lm_loss(model, {k: v.to(dev) for k, v in batch.items()})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretrain_teacher: loss is {float(loss)} at step {step}; lower lr={config.lr}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    return losses


def _replace_folder(tmp: Path, out_dir: Path) -> None:
    """Move the finished `tmp` folder to `out_dir`; an existing one is moved aside first, then removed."""
    if out_dir.exists():  # overwrite=True: move the old one aside, then swap
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def pretrain_teacher(
    corpus,
    out_dir: str | os.PathLike,
    *,
    lowercase: bool,
    config: TeacherConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Train a tokenizer and a small BERT with MLM on `corpus`; save it atomically into out_dir.

    Writes config.json, model.safetensors, tokenizer files and metrics.json (held-out MLM loss before and
    after training, pseudo-perplexity, loss curve, parameters, wall time). A folder that already holds
    metrics.json is complete: its metrics are returned without retraining unless overwrite=True.
    device: "auto" (cuda, mps, then cpu; kdlib.device.pick_device) or a device name.
    """
    config = config or TeacherConfig()
    out_dir = Path(out_dir)
    if (out_dir / "metrics.json").is_file() and not overwrite:
        return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    if out_dir.exists() and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists but holds no metrics.json (not a complete teacher); remove it or pass overwrite=True"
        )
    train_texts, held_texts = _pretrain_texts(corpus, config)
    dev = pick_device(device)
    t0 = time.time()
    # tokenizer and model are built in a temporary folder, moved into place once complete
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = train_tokenizer(
        train_texts, tmp, vocab_size=config.vocab_size, lowercase=lowercase, model_max_length=config.max_len
    )
    enc = lambda xs: tokenizer(xs, truncation=True, max_length=config.max_len)["input_ids"]  # noqa: E731
    train_ids, held_ids = enc(train_texts), enc(held_texts)
    model = _new_bert(tokenizer, config).to(dev)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mask_prob)
    heldout_init = mlm_loss(model, collator, held_ids, seed=config.seed + 1)
    t_train = time.time()
    try:
        losses = _train_mlm(model, collator, train_ids, config, dev, progress)
    except FloatingPointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    train_seconds = time.time() - t_train
    # held-out quality, then the metrics file that marks the folder complete
    model.eval()
    heldout = mlm_loss(model, collator, held_ids, seed=config.seed + 1)
    pppl = pseudo_perplexity(model, tokenizer, held_texts, max_texts=config.pppl_texts, max_len=config.pppl_max_len)
    tail = losses[-max(1, len(losses) // 10) :]
    metrics = {
        "lowercase": lowercase,
        "config": config.to_dict(),
        "train_sentences": len(train_texts),
        "heldout_sentences": len(held_texts),
        "vocab_size": len(tokenizer),
        "parameters": model.num_parameters(),
        "train_loss_first": losses[0],
        "train_loss_final": sum(tail) / len(tail),
        "train_loss_curve": _curve(losses),
        "heldout_mlm_loss_init": heldout_init,
        "heldout_mlm_loss": heldout,
        "pseudo_perplexity": pppl,
        "pppl_texts": min(config.pppl_texts, len(held_texts)),
        "seconds_per_step": train_seconds / config.steps,
        "wall_seconds": time.time() - t0,
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
    }
    model.save_pretrained(tmp, safe_serialization=True)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    _replace_folder(tmp, out_dir)
    return metrics


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdlib pretrain-teacher",
        description="Train a WordPiece tokenizer and a small BERT teacher with MLM.",
    )
    parser.add_argument(
        "--corpus",
        required=True,
        help="text file or folder, corpus mode (ordered|shuffled|merged) or datasets name (batching.load_corpus)",
    )
    parser.add_argument("--out", required=True, help="output folder (written atomically)")
    parser.add_argument("--lowercase", action="store_true", help="uncased tokenizer (like RoBERT-base; accents kept)")
    parser.add_argument("--config", help="JSON file of TeacherConfig fields; flags below override it")
    parser.add_argument("--max-sentences", type=int, help="use at most this many corpus sentences")
    parser.add_argument("--overwrite", action="store_true", help="retrain even if --out holds a complete teacher")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, mps or cpu")
    for f in fields(TeacherConfig):
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), dest=f.name, default=None)
    args = parser.parse_args(argv)
    try:
        base = TeacherConfig.from_file(args.config).to_dict() if args.config else TeacherConfig().to_dict()
        base.update({f.name: getattr(args, f.name) for f in fields(TeacherConfig) if getattr(args, f.name) is not None})
        config = TeacherConfig.from_dict(base)
        if args.threads:
            torch.set_num_threads(args.threads)
        corpus = load_corpus(args.corpus, max_sentences=args.max_sentences)  # the distillation's reader
        metrics = pretrain_teacher(
            corpus, args.out, lowercase=args.lowercase, config=config, overwrite=args.overwrite, device=args.device
        )
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"pretrain-teacher: error: {err}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in metrics.items() if k not in ("train_loss_curve", "config")}
    print(json.dumps(summary, indent=2))
    return 0
