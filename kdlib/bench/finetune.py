"""Fine-tuning speed: kdlib's own loop against ``transformers.Trainer`` (``python -m kdlib bench --only finetune``).

kdlib writes its own fine-tuning loop (:func:`kdlib.eval.finetune.finetune`); it has to be at least as fast as
``Trainer`` to earn that. For each task (default ``sapn`` classification and ``upos`` tagging, real data from
``$KDLIB_DATA_DIR``) both sides fine-tune the same model on the same examples and report examples/s of training
and of evaluation (prediction on the test examples):

* the model: a small BERT saved like a hub model (``BertForMaskedLM`` with random weights, seed 0, and a WordPiece
  tokenizer trained with :func:`kdlib.engine.teachers.train_tokenizer` on the task's train text), cached in
  ``--cache-dir``; both sides load its encoder with kdlib's :class:`~kdlib.eval.finetune.TaskModel` head;
* the data: a fixed random subset (seed 0) of the train and test splits (validation: ``--validation-examples``;
  kdlib validates after every epoch, outside its timed training), encoded by
  :func:`kdlib.eval.finetune.encode_split` for both (same ``max_len`` truncation; tagging sentences chunked);
* the same :class:`~kdlib.eval.finetune.FinetuneConfig`: batch size, eval batch size, epochs, seed, dropout,
  AdamW (lr, weight decay off biases and LayerNorm, betas, eps), linear warmup then decay, gradient clipping,
  mixed precision (off on CPU); Trainer pads each batch to its longest (``DataCollatorWithPadding`` /
  ``DataCollatorForTokenClassification``), does no evaluation during training, saves nothing, reports nothing,
  loads with ``dataloader_num_workers=0`` and uses its default AdamW implementation (recorded as ``trainer_optim``);
* timing: kdlib's own ``train_seconds`` / ``test_seconds`` (the epoch loops; test prediction and scoring);
  Trainer's training loop (``on_train_begin`` to ``on_train_end``) and ``Trainer.predict`` on the test examples;
* counting: train examples/s = epochs x train examples / seconds; eval examples/s = test examples / seconds
  (examples = rows of the split, for tagging sentences, on both sides).

Each run is a fresh process with the same thread count; the sides alternate kdlib, Trainer, Trainer, kdlib, ...
(ABBA, so a drift in machine load hits both alike). Reported: per side the median, min and max examples/s;
per repeat the ratio kdlib / Trainer, and its median, min and max; the goal is a median ratio >= 1.0 for training
and for evaluation. The JSON (``--out``, written atomically) also records the machine (CPU model, cores, threads,
load average, torch/transformers/accelerate versions, device). Trainer needs ``accelerate``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import inspect
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

SIDES = ("kdlib", "trainer")
GOAL = 1.0
SCHEMA = 1
DEFAULT_OUT = "runs/bench/finetune.json"
MISSING_ACCELERATE = (
    "kdlib bench: the Trainer side needs `accelerate` (transformers' Trainer requires it): "
    "pip install 'accelerate>=0.26'"
)


@dataclass(frozen=True)
class ModelShape:
    """The benchmark model: BERT shape and tokenizer vocabulary."""

    vocab_size: int = 8000
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    ffn: int = 1024


@dataclass(frozen=True)
class Setting:
    """What both sides run: tasks, example caps, loop settings, repeats, threads and device."""

    tasks: tuple[str, ...] = ("sapn", "upos")
    train_examples: int = 2000
    eval_examples: int = 1000
    validation_examples: int = 64
    epochs: int = 1
    batch_size: int = 16
    eval_batch_size: int = 64
    max_len: int = 128
    repeats: int = 3
    threads: int = 0  # 0: this process's torch.get_num_threads()
    device: str = "auto"
    model: ModelShape = ModelShape()


QUICK = Setting(train_examples=300, eval_examples=300, repeats=2, model=ModelShape(4000, 128, 2, 2, 512))
SMALLEST = replace(QUICK, train_examples=16, eval_examples=16, validation_examples=8, repeats=1, max_len=32)


# --------------------------------------------------------------------------------------- model, data
def default_cache_dir() -> Path:
    """``$KDLIB_FINETUNE_BENCH_CACHE`` or ``~/.cache/kdlib/finetune-bench`` (the benchmark models)."""
    env = os.environ.get("KDLIB_FINETUNE_BENCH_CACHE")
    return Path(env or Path.home() / ".cache" / "kdlib" / "finetune-bench").expanduser()


def train_texts(split, kind: str) -> list[str]:
    """The text of a train split: joined tokens for tagging, text_a and text_b otherwise."""
    if kind == "tagging":
        return [" ".join(tokens) for tokens in split["tokens"]]
    texts = list(split["text_a"])
    return texts + [t for t in split["text_b"] if t] if "text_b" in split.column_names else texts


def build_model(task: str, shape: ModelShape, cache_dir: Path) -> Path:
    """A random-weight BertForMaskedLM + WordPiece tokenizer (trained on the task's train text), cached."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from kdlib.data.load import load_task
    from kdlib.engine.teachers import train_tokenizer
    from kdlib.eval.metrics import task_kind_and_metric

    folder = cache_dir / f"{task}-v{shape.vocab_size}-h{shape.hidden}-l{shape.layers}-a{shape.heads}-f{shape.ffn}"
    if (folder / "config.json").is_file():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    kind = task_kind_and_metric(task)[0]
    tmp = tempfile.mkdtemp(dir=cache_dir, prefix=".build-")
    try:
        tokenizer = train_tokenizer(
            train_texts(load_task(task)["train"], kind), tmp, vocab_size=shape.vocab_size, lowercase=False
        )
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=shape.hidden,
            num_hidden_layers=shape.layers,
            num_attention_heads=shape.heads,
            intermediate_size=shape.ffn,
            max_position_embeddings=512,
        )
        torch.manual_seed(0)
        BertForMaskedLM(config).save_pretrained(tmp, safe_serialization=True)
        if not (folder / "config.json").is_file():  # another process may have built it meanwhile
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def task_data(task: str, setting: Setting):
    """The task's DatasetDict capped to fixed random subsets (seed 0): train, validation, test."""
    from datasets import DatasetDict

    from kdlib.data.load import load_task

    ds = load_task(task)
    caps = {"train": setting.train_examples, "validation": setting.validation_examples, "test": setting.eval_examples}
    return DatasetDict(
        {
            name: split.shuffle(seed=0).select(range(caps[name])) if caps[name] < len(split) else split
            for name, split in ds.items()
        }
    )


def finetune_config(setting: Setting, amp: str):
    """The one FinetuneConfig both sides follow."""
    from kdlib.eval.finetune import FinetuneConfig

    return FinetuneConfig(
        epochs=setting.epochs,
        batch_size=setting.batch_size,
        eval_batch_size=setting.eval_batch_size,
        max_len=setting.max_len,
        device=setting.device,
        amp=amp,
    )


def adamw_defaults() -> dict[str, Any]:
    """kdlib's AdamW betas and eps (the defaults of kdlib.engine.optim.make_adamw)."""
    from kdlib.engine.optim import make_adamw

    params = inspect.signature(make_adamw).parameters
    return {"betas": tuple(params["betas"].default), "eps": params["eps"].default}


# ------------------------------------------------------------------------------------------- sides
def _rates(data, epochs: int, train_s: float, eval_s: float, features: int) -> dict[str, Any]:
    """Examples/s of training and evaluation, counted the same way for both sides."""
    train_n, eval_n = epochs * len(data["train"]), len(data["test"])
    return {
        "train_examples": train_n,
        "eval_examples": eval_n,
        "train_features": features,
        "train_s": train_s,
        "eval_s": eval_s,
        "train_eps": train_n / train_s,
        "eval_eps": eval_n / eval_s,
    }


def run_kdlib(model_dir: Path, task: str, data, config, work: Path) -> dict[str, Any]:
    """kdlib.eval.finetune.finetune on `data`; its own train and test timings."""
    from kdlib.eval.finetune import finetune

    result = finetune(str(model_dir), task, work / "kdlib", config=config, dataset=data, progress=False, overwrite=True)
    timing = result["timing"]
    return _rates(
        data, config.epochs, timing["train_seconds"], timing["test_seconds"], result["examples"]["train_features"]
    )


def _loss_model(task_model, kind: str):
    """TaskModel wrapped to return {"loss", "logits"} as Trainer expects (the loss kdlib uses)."""
    from torch import nn

    class LossModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = task_model

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            logits = self.model(input_ids, attention_mask, token_type_ids)
            if labels is None:
                return {"logits": logits}
            if kind == "regression":
                loss = nn.functional.mse_loss(logits.float(), labels.float())
            else:
                flat = logits.float().reshape(-1, logits.shape[-1])
                loss = nn.functional.cross_entropy(flat, labels.reshape(-1), ignore_index=-100)
            return {"loss": loss, "logits": logits}

    return LossModel()


def _features(split, tokenizer, kind: str, max_len: int, labels: bool) -> list[dict[str, Any]]:
    """kdlib's features of a split, without its bookkeeping ("words"; "labels" unless `labels`)."""
    from kdlib.eval.finetune import encode_split

    drop = {"words"} | (set() if labels else {"labels"})
    return [{k: v for k, v in f.items() if k not in drop} for f in encode_split(split, tokenizer, kind, max_len)]


def trainer_args(config, work: Path, total_steps: int, device_type: str):
    """TrainingArguments equivalent to `config`: no evaluation, saving, logging or reporting."""
    from transformers import TrainingArguments

    adamw = adamw_defaults()
    return TrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        adam_beta1=adamw["betas"][0],
        adam_beta2=adamw["betas"][1],
        adam_epsilon=adamw["eps"],
        lr_scheduler_type="linear",
        warmup_steps=int(config.warmup * total_steps),
        max_grad_norm=config.max_grad_norm,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        remove_unused_columns=False,
        seed=config.seed,
        use_cpu=device_type == "cpu",
        bf16=config.amp == "bf16",
        fp16=config.amp == "fp16",
    )


def run_trainer(model_dir: Path, task: str, data, config, work: Path) -> dict[str, Any]:
    """transformers.Trainer on `data`: its training loop timed by callback, then Trainer.predict on test."""
    from transformers import (
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
    )

    from kdlib.device import pick_device
    from kdlib.eval.finetune import TaskModel, set_seed
    from kdlib.eval.metrics import task_kind_and_metric

    kind = task_kind_and_metric(task)[0]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    feats = data["train"].features
    labels = feats["tags"].feature.names if kind == "tagging" else getattr(feats["label"], "names", [0])
    set_seed(config.seed)
    model = _loss_model(TaskModel.from_pretrained(str(model_dir), kind, len(labels), config.dropout), kind)
    train = _features(data["train"], tokenizer, kind, config.max_len, labels=True)
    test = _features(data["test"], tokenizer, kind, config.max_len, labels=False)
    total = math.ceil(len(train) / config.batch_size) * config.epochs
    collator = (DataCollatorForTokenClassification if kind == "tagging" else DataCollatorWithPadding)(tokenizer)
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kwargs):
            marks["begin"] = time.perf_counter()

        def on_train_end(self, *args, **kwargs):
            marks["end"] = time.perf_counter()

    args = trainer_args(config, work, total, pick_device(config.device).type)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    if trainer.state.global_step != total:
        raise RuntimeError(f"Trainer ran {trainer.state.global_step} steps, kdlib runs {total}")
    t0 = time.perf_counter()
    trainer.predict(test)
    row = _rates(data, config.epochs, marks["end"] - marks["begin"], time.perf_counter() - t0, len(train))
    return {**row, "trainer_optim": getattr(args.optim, "value", str(args.optim))}


def resolved_amp(device_name: str) -> str:
    """The mixed precision `amp="auto"` picks on this device, as a FinetuneConfig.amp value."""
    import torch

    from kdlib.device import amp_settings, pick_device

    dtype = amp_settings(pick_device(device_name), "auto").dtype
    return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def run_side(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed fine-tune of one side (`spec`: side, task, model_dir, setting, threads, amp, work_dir)."""
    import torch

    torch.set_num_threads(spec["threads"])
    setting = setting_from_dict(spec["setting"])
    config = finetune_config(setting, spec["amp"])
    data = task_data(spec["task"], setting)
    run = run_kdlib if spec["side"] == "kdlib" else run_trainer
    work = tempfile.TemporaryDirectory(prefix=f"kdlib-ft-{spec['side']}-", dir=spec.get("work_dir"))
    with work as tmp, contextlib.redirect_stdout(sys.stderr):  # Trainer prints its metrics
        row = run(Path(spec["model_dir"]), spec["task"], data, config, Path(tmp))
    return {"side": spec["side"], "threads": torch.get_num_threads(), **row}


def setting_from_dict(d: dict[str, Any]) -> Setting:
    """A Setting back from asdict()."""
    return Setting(**{**d, "tasks": tuple(d["tasks"]), "model": ModelShape(**d["model"])})


_CHILD = (
    "import json, sys\nfrom kdlib.bench.finetune import run_side\n"
    "print('RESULT ' + json.dumps(run_side(json.loads(sys.argv[1]))))"
)


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """run_side in a fresh Python process with the thread count fixed in its environment too."""
    threads = str(spec["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TQDM_DISABLE": "1"}
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{spec['side']} on {spec['task']} failed: {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------------------------------ summary
def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side examples/s spreads and per-repeat kdlib/Trainer ratios of one task's runs."""
    by_side = {side: [r for r in rows if r["side"] == side] for side in SIDES}
    counts = {(r["train_examples"], r["eval_examples"], r["train_features"]) for r in rows}
    if len(counts) != 1:
        raise RuntimeError(f"the sides counted different examples: {sorted(counts)}")
    out: dict[str, Any] = {"examples": dict(zip(("train", "eval", "train_features"), counts.pop()))}
    for side, side_rows in by_side.items():
        out[side] = {phase: spread([r[f"{phase}_eps"] for r in side_rows]) for phase in ("train", "eval")}
    pairs = list(zip(by_side["kdlib"], by_side["trainer"]))
    out["ratio"] = {
        phase: spread([k[f"{phase}_eps"] / t[f"{phase}_eps"] for k, t in pairs]) for phase in ("train", "eval")
    }
    out["meets_goal"] = {phase: out["ratio"][phase]["median"] >= GOAL for phase in ("train", "eval")}
    return out


def _order(repeat: int) -> tuple[str, str]:
    """ABBA: kdlib first on even repeats, Trainer first on odd ones."""
    return SIDES if repeat % 2 == 0 else SIDES[::-1]


def machine_info(device_name: str, threads: int) -> dict[str, Any]:
    """What the figures were measured on (kdlib.bench.speed.device_info) plus the threads and accelerate."""
    from kdlib.bench.speed import device_info, resolve_device

    info = device_info(resolve_device(device_name))
    info["threads_per_run"] = threads
    if importlib.util.find_spec("accelerate") is not None:
        import accelerate

        info["accelerate"] = accelerate.__version__
    return info


def bench_finetune(
    setting: Setting = QUICK, *, cache_dir: Path | None = None, fresh_process: bool = True, work_dir: str | None = None
) -> dict[str, Any]:
    """Interleaved timed fine-tunes of both sides per task; runs, spreads, ratios and the machine."""
    import torch

    threads = setting.threads or torch.get_num_threads()
    info = machine_info(setting.device, threads)
    amp = resolved_amp(setting.device)
    tasks: dict[str, Any] = {}
    for task in setting.tasks:
        model_dir = build_model(task, setting.model, cache_dir or default_cache_dir())
        base = {"task": task, "model_dir": str(model_dir), "setting": asdict(setting), "threads": threads, "amp": amp}
        rows = []
        for repeat in range(setting.repeats):
            for side in _order(repeat):
                spec = {**base, "side": side, "work_dir": work_dir}
                rows.append({"repeat": repeat, **(run_child(spec) if fresh_process else run_side(spec))})
                print(json.dumps({"task": task, **rows[-1]}), file=sys.stderr)
        tasks[task] = {"model_dir": str(model_dir), **summarise(rows), "runs": rows}
    return {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "setting": asdict(setting),
        "amp": amp,
        "adamw": {**adamw_defaults(), **_config_optim(setting, amp)},
        "fresh_process": fresh_process,
        "goal": f"median kdlib/Trainer examples/s ratio >= {GOAL} for train and eval",
        "tasks": tasks,
    }


def _config_optim(setting: Setting, amp: str) -> dict[str, Any]:
    """The optimisation settings of the shared FinetuneConfig."""
    config = finetune_config(setting, amp)
    keys = ("lr", "weight_decay", "warmup", "max_grad_norm", "dropout", "seed")
    return {k: v for k, v in dataclasses.asdict(config).items() if k in keys}


def format_result(result: dict[str, Any]) -> str:
    """Readable lines: the machine, then per task and phase both sides and the ratio."""
    m = result["machine"]
    head = (
        f"machine: {m['cpu']}, {m['cpu_count']} cores, {m['threads_per_run']} threads, torch {m['torch']}, "
        f"transformers {m.get('transformers')}, device {m['type']}{' ' + m['gpu'] if 'gpu' in m else ''}, "
        f"load {m.get('load_average_at_start')} -> {m['load_average_at_end']}"
    )
    lines = [head]
    for task, t in result["tasks"].items():
        ex = t["examples"]
        lines.append(f"{task}: {ex['train']} train examples ({ex['train_features']} features), {ex['eval']} eval")
        for phase in ("train", "eval"):
            k, tr, r = t["kdlib"][phase], t["trainer"][phase], t["ratio"][phase]
            lines.append(
                f"  {phase:5} examples/s  kdlib {k['median']:8.1f} [{k['min']:.1f}-{k['max']:.1f}]  "
                f"Trainer {tr['median']:8.1f} [{tr['min']:.1f}-{tr['max']:.1f}]  "
                f"kdlib/Trainer {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}] "
                f"({'meets' if t['meets_goal'][phase] else 'misses'} >= {GOAL}x)"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"kdlib bench: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m kdlib bench --only finetune`."""
    p = _Parser(prog="python -m kdlib bench --only finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quick", action="store_true", help="few hundred examples, tiny model, 2 repeats")
    p.add_argument("--smallest", action="store_true", help="16 examples, 1 repeat (a smoke test)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the JSON result (default {DEFAULT_OUT})")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default sapn,upos)")
    for name in ("train-examples", "eval-examples", "epochs", "batch-size", "max-len", "repeats", "threads"):
        p.add_argument(f"--{name}", type=_positive, default=None)
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    p.add_argument("--cache-dir", default=None, help="where the benchmark models are cached")
    p.add_argument("--in-process", action="store_true", help="run every fine-tune in this process (no fresh ones)")
    return p


def setting_from_args(args: argparse.Namespace) -> Setting:
    """The Setting the options ask for; ValueError (one line) for unknown tasks or a too short max_len."""
    from kdlib.eval.metrics import task_kind_and_metric

    setting = SMALLEST if args.smallest else QUICK if args.quick else Setting()
    overrides = {
        f: getattr(args, f)
        for f in ("train_examples", "eval_examples", "epochs", "batch_size", "max_len", "repeats", "threads", "device")
        if getattr(args, f) is not None
    }
    if args.tasks is not None:
        overrides["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        if not overrides["tasks"]:
            raise ValueError(f"--tasks {args.tasks!r}: expected comma-separated task names")
    setting = replace(setting, **overrides)
    for task in setting.tasks:
        task_kind_and_metric(task)
    if setting.max_len < 8:
        raise ValueError(f"--max-len {setting.max_len}: expected >= 8")
    return setting


def cli(argv: list[str]) -> int:
    """`python -m kdlib bench --only finetune [--json] [--quick] [--out FILE] ...`."""
    from kdlib.io import write_json_atomic

    args = build_parser().parse_args(argv)
    try:
        setting = setting_from_args(args)
    except ValueError as exc:
        print(f"kdlib bench: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("accelerate") is None:
        print(MISSING_ACCELERATE, file=sys.stderr)
        return 1
    result = bench_finetune(
        setting, cache_dir=Path(args.cache_dir) if args.cache_dir else None, fresh_process=not args.in_process
    )
    write_json_atomic(args.out, result)
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli(sys.argv[1:]))
