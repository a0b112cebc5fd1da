"""Task-agnostic distillation of one or several masked-LM teachers into one or several students.

`distill` is a plain PyTorch loop, readable top to bottom; each block calls a named step:

1. validate the config (cheap errors first, `kdlib.engine.config`), check a checkpoint to resume from, load the
   teachers and build the students (`kdlib.engine.models`), one AdamW + schedule per student (`make_optimizers`);
2. every global batch of texts (`kdlib.engine.batching.BatchStream`, which knows its position for resume) is split
   into words, encoded once per distinct tokenizer ("view") and masked at the WORD level (the same words
   in every view, 80/10/10 per word);
3. each teacher runs once per batch under `torch.inference_mode`; its outputs are shared by every student
   that learns from it; teachers and students compute the vocabulary head only at the positions the losses
   read (`kdlib.engine.mlm`: the masked ones by default, ~15%);
4. per student: L = alpha_ce * T^2 * KL + alpha_mlm * MLM + alpha_cos * (1 - cos), combined over teachers
   by `strategy` (`kdlib.engine.objective`);
5. gradient accumulation, DDP under torchrun (`reduce` averages the logged losses over ranks), clipping,
   torch.amp (`optimizer_step`);
6. JSONL log, atomic checkpoints every `save_every` steps (`save`, exact resume), final save_pretrained,
   model card and summary.json (`finish`).

Global batch = batch_size * world_size * grad_accum texts per optimizer step; every rank takes a
disjoint slice of each global micro-batch of batch_size * world_size texts. Losses are normalised by
counts over the global micro-batch, so DDP computes the same gradient as one process.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from kdlib.device import (
    AmpSettings,
    DistEnv,
    amp_settings,
    autocast,
    cleanup,
    grad_scaler,
    init_distributed,
    is_main,
    on_colab,
)
from kdlib.engine import card as kcard
from kdlib.engine import checkpoint as ckpt
from kdlib.engine import cost
from kdlib.engine.batching import (
    BatchStream,
    TextCorpus,
    load_corpus,
    make_batch,
    word_weights,
)
from kdlib.engine.config import (
    DistillConfig,
    StudentSpec,
    TeacherSpec,
    parse_overrides,
)
from kdlib.engine.mlm import SelectedMLM
from kdlib.engine.models import (
    Student,
    Teacher,
    build_students,
    load_teachers,
    teachers_to_half,
    tokenizer_views,
)
from kdlib.engine.objective import student_losses, student_plan, teacher_outputs
from kdlib.engine.optim import make_adamw
from kdlib.engine.tracking import Tracker, check_report_to

# the public names of the distillation API, wherever they are defined
__all__ = [
    "DistillConfig",
    "StudentSpec",
    "TeacherSpec",
    "cli",
    "distill",
    "load_corpus",
    "make_batch",
    "parse_overrides",
    "read_log",
    "student_losses",
    "student_plan",
    "teacher_outputs",
]


# -------------------------------------------------------------------------------------------- output
def _model_card(student: Student, config: DistillConfig, summary: dict, corpus_meta: dict) -> str:
    """The student's card (kdlib.engine.card): its teachers and data with their licences, how it was trained;
    no absolute paths, no measured times. No model-index: distillation losses are not benchmark results."""
    run_dir = Path(config.out_dir)
    teachers = [(t.name, t.path) for t in config.teachers if t.name in student.teachers]
    weights = ", ".join(f"`{t.name}` {t.weight}" for t in config.teachers if t.name in student.teachers)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in summary["final_losses"].items())
    corpus = kcard.shown_path(corpus_meta.get("name") or "in-memory corpus", run_dir)
    tokenizer = student.spec.tokenizer_from or student.teachers[0]
    n_params = sum(p.numel() for p in student.model.parameters())
    body = f"""# {student.spec.name}

A DistilBERT-style student distilled with `kdlib` (reproduction of Avram et al., LREC 2022), loadable with
`transformers.AutoModelForMaskedLM`. Teacher weights in the ensemble: {weights}.

Student vocabulary and tokenizer from teacher `{tokenizer}`; initialisation `{student.spec.init}`, shape
`{student.spec.shape}`, {student.model.config.num_hidden_layers} layer(s), {n_params:,} parameters.

## Training
- multi-teacher strategy: `{config.strategy}`; cross-tokenizer alignment: `{config.cross_tokenizer}`
- loss: {config.alpha_ce} * T^2 * KL (T={config.temperature}, on {config.kl_on} positions)
  + {config.alpha_mlm} * MLM + {config.alpha_cos} * cosine
- corpus: {corpus}: {corpus_meta.get("sentences"):,} sentences, {corpus_meta.get("characters"):,} characters
- steps: {summary["steps"]}; global batch {summary["global_batch"]} texts; lr {config.lr}; seed {config.seed}
  (amp {summary["amp"]}, {summary["world_size"]} process(es))
- final losses (mean of the last logged steps): {losses}
- mean unmapped teacher mass (cross-vocabulary teachers): {summary.get("unmapped") or "n/a"}

Distillation losses are not benchmark results: this card has no evaluation results."""
    return kcard.render(
        body=body,
        models=teachers,
        models_title="Teachers",
        run_dir=run_dir,
        sources=kcard.corpus_sources(corpus_meta.get("name")),
        pipeline_tag="fill-mask",
        tags=["distilbert", "knowledge-distillation", "romanian", "kdlib"],
    )


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
    lines = [line for line in Path(log_path).read_text(encoding="utf-8").splitlines() if line.strip()]
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
    """Final losses (mean over the last `last` logged steps) and, per cross-vocabulary teacher, the mean
    unmapped mass and share of first-piece mismatches over the run, per student."""
    rows = read_log(log_path)
    out = {}
    for s in students:
        tail = [r["students"][s.spec.name] for r in rows[-last:]]
        keys = tail[0].keys() if tail else []
        whole = ("unmapped/", "mismatch/")
        final = {k: float(np.mean([t[k] for t in tail])) for k in keys if not k.startswith(whole)}
        run_mean = {
            k: float(np.mean([r["students"][s.spec.name][k] for r in rows])) for k in keys if k.startswith(whole)
        }
        first = rows[0]["students"][s.spec.name] if rows else {}
        out[s.spec.name] = {
            "final_losses": final,
            "first_losses": first,
            "unmapped": {k: v for k, v in run_mean.items() if k.startswith("unmapped/")},
            "mismatch": {k: v for k, v in run_mean.items() if k.startswith("mismatch/")},
        }
    return out


# -------------------------------------------------------------------------------------------- resume
def _check_resumable(
    path: Path, state: dict, rng_states: list, config: DistillConfig, world_size: int, n_texts: int
) -> None:
    """Raise if checkpoint `path` was written with another world size, corpus size, code or result setting."""
    if len(rng_states) != world_size:
        raise ValueError(
            f"checkpoint {path} was written by {len(rng_states)} process(es); resume with the "
            f"same number (now {world_size}), or start over with --fresh (fresh=True)"
        )
    saved = state.get("config", {})
    changed = [
        f"{k}: {saved[k]!r} -> {v!r}" for k, v in config.result_settings().items() if k in saved and saved[k] != v
    ]
    if state.get("n_texts") is not None and state["n_texts"] != n_texts:
        changed.append(f"corpus texts: {state['n_texts']} -> {n_texts}")
    if state.get("code") is not None and state["code"] != code_fingerprint():
        changed.append(f"kdlib training code: {state['code']} -> {code_fingerprint()}")
    if changed:
        raise ValueError(
            f"cannot resume exactly from {path}: settings differ from the checkpoint's "
            f"({'; '.join(changed)}); restore them, or start over with --fresh (fresh=True), "
            f"which removes its checkpoints and log"
        )


def resume_point(config: DistillConfig, fresh: bool, env: DistEnv, n_texts: int) -> tuple[Path, dict, list] | None:
    """(checkpoint folder, state, rng states) to continue from: the newest checkpoint in out_dir unless `fresh`,
    or None. A checkpoint that cannot continue exactly is refused, before any model is loaded."""
    path = None if fresh else ckpt.latest_checkpoint(config.out_dir)
    if path is None:
        return None
    state, rng_states = ckpt.load_checkpoint(path)
    _check_resumable(path, state, rng_states, config, env.world_size, n_texts)
    return path, state, rng_states


# the modules whose code decides what a run computes: a checkpoint or finished run of other code is not reused
TRAINING_MODULES = (  # relative to the kdlib package
    "engine/align",
    "engine/batching",
    "engine/config",
    "device",
    "engine/distill",
    "engine/losses",
    "engine/mlm",
    "engine/models",
    "engine/objective",
    "engine/optim",
    "engine/students",
    "engine/teachers",
    "data/text",
)


def code_fingerprint() -> str:
    """A hash of the training code (TRAINING_MODULES), stored with checkpoints and finished runs."""
    digest = hashlib.sha256()
    for name in TRAINING_MODULES:
        digest.update((Path(__file__).parents[1] / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]


RUN_FILE = "run.json"  # written last by a finished run: its config and corpus size


def finished_summary(config: DistillConfig, n_texts: int) -> dict | None:
    """The summary of a finished run in out_dir with the same settings and corpus size (its students saved),
    or None. Lets a rerun of a finished step return at once, even after its checkpoints were removed."""
    out_dir = Path(config.out_dir)
    if not (out_dir / RUN_FILE).is_file() or not (out_dir / "summary.json").is_file():
        return None
    done = json.loads((out_dir / RUN_FILE).read_text(encoding="utf-8"))
    now = config.result_settings()  # operational settings (output, logging, device) may differ
    then = {k: v for k, v in done.get("config", {}).items() if k not in DistillConfig.operational_keys()}
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    saved = all((Path(info["out_dir"]) / "config.json").is_file() for info in summary.values())
    same = now == then and done.get("n_texts") == n_texts and done.get("code") == code_fingerprint()
    return summary if same and saved else None


def say(message: str) -> None:
    """A line for the person at the terminal (and on Colab), not for the executed notebooks of the book:
    shown where the progress bar is (TQDM_DISABLE unset) or on Colab; rank 0 only."""
    if is_main() and (on_colab() or os.environ.get("TQDM_DISABLE", "") in ("", "0", "false", "False")):
        print(message, file=sys.stderr, flush=True)


def announce_cost(run: Run, texts: TextCorpus, step: int) -> None:
    """Print the expected time of the remaining steps from their FLOP count (kdlib.engine.cost) and the device."""
    config, env = run.config, run.env
    sample = run.students[0].tokenizer(
        texts.texts(np.arange(min(2000, len(texts)))), truncation=True, max_length=config.max_len
    )["input_ids"]
    seq_len = float(np.mean([len(ids) for ids in sample]))
    texts_per_step = config.batch_size * env.world_size * config.grad_accum
    flops = (config.max_steps - step) * cost.distill_step_flops(
        [cost.EncoderShape.of(run.teachers[n].model) for n in run.used_teachers],
        [cost.EncoderShape.of(s.model) for s in run.students],
        texts=texts_per_step,
        seq_len=seq_len,
        head_share=config.mask_prob if config.kl_on == "masked" else 1.0,
    )
    seconds = cost.expected_seconds(flops / env.world_size, run.device, half=run.amp.dtype is not None)
    say(
        f"distill: {config.max_steps - step} steps x {texts_per_step} texts x {seq_len:.0f} tokens = "
        f"{cost.describe(flops, seconds, run.device)}" + (f" per process ({env.world_size})" if env.distributed else "")
    )


# -------------------------------------------------------------------------------------------- steps
@dataclass
class Run:
    """What every step of a run reads: settings, where it runs, the models and the tokenizer views."""

    config: DistillConfig
    env: DistEnv
    device: torch.device
    amp: AmpSettings
    teachers: dict[str, Teacher]
    students: list[Student]
    views: dict[str, Any]
    token_weights: tuple[str, torch.Tensor] | None
    tracker: Tracker | None = None  # report_to: the log records also go to TensorBoard / trackio (rank 0)

    @property
    def used_teachers(self) -> list[str]:
        return [n for n in self.teachers if any(n in s.teachers for s in self.students)]

    @property
    def log_path(self) -> Path:
        return Path(self.config.out_dir) / "log.jsonl"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizers(students: list[Student], config: DistillConfig, device: torch.device, amp: AmpSettings) -> None:
    """AdamW (engine.optim: no decay on biases and norm weights) + linear warmup/decay + GradScaler, per student."""
    for s in students:
        s.trainable.train()  # the student and its cross-model linear maps
        s.optimizer, s.scheduler = make_adamw(
            s.trainable,
            lr=config.lr,
            weight_decay=config.weight_decay,
            warmup_steps=config.warmup_steps,
            total_steps=config.max_steps,
            betas=(0.9, 0.98),
            eps=config.adam_eps,
        )
        s.scaler = grad_scaler(device, amp)


def restore(run: Run, corpus: TextCorpus, start: tuple[Path, dict, list] | None) -> tuple[int, BatchStream, float]:
    """(step, batch stream, elapsed seconds) of the checkpoint `start` (weights, optimizer state and RNG
    restored), or of a fresh start."""
    config, env = run.config, run.env
    step, position, elapsed = 0, {}, 0.0
    if start is not None:
        path, state, rng_states = start
        for s in run.students:
            ckpt.load_student(path, s.spec.name, s.train_parts)
        step, position = state["step"], {"epoch": state["epoch"], "batch_idx": state["batch_idx"]}
        elapsed = state.get("elapsed", 0.0)
        ckpt.restore_rng(rng_states[env.rank])
    else:
        torch.manual_seed(config.seed + env.rank)  # dropout differs per rank; init was seeded above
    stream = BatchStream(
        corpus, config.batch_size * env.world_size, seed=config.seed, pool=config.bucket_pool, **position
    )
    return step, stream, elapsed


def wrap_for_training(run: Run) -> None:
    """The forward computes logits at the KL rows only (SelectedMLM); DDP wraps it so its hooks see it."""
    for s in run.students:
        selected = SelectedMLM(s.model)
        ids = [run.device.index] if run.device.type == "cuda" else None
        s.wrapped = DistributedDataParallel(selected, device_ids=ids) if run.env.distributed else selected


def start_log(run: Run, step: int, resumed: bool) -> None:
    """Resumed: drop log lines written after the checkpoint. Fresh: nothing of an earlier run in this folder
    may be resumed or kept; its log and checkpoints are removed, and the terminal says so."""
    if not run.env.is_main:
        return
    out_dir = Path(run.config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resumed:
        say(
            f"distill: resuming {out_dir} from step {step} of {run.config.max_steps} (fresh=True / --fresh starts over)"
        )
        if run.log_path.exists():
            kept = [r for r in read_log(run.log_path) if r["step"] <= step]
            run.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        return
    old = [p.name for p in (run.log_path, out_dir / RUN_FILE) if p.exists()] + [
        f"checkpoints/{p.name}" for p in sorted(ckpt.checkpoint_root(out_dir).glob("step-*"))
    ]
    if old:
        say(f"distill: starting over in {out_dir}: removing {', '.join(old)}")
    run.log_path.unlink(missing_ok=True)
    (out_dir / RUN_FILE).unlink(missing_ok=True)  # a finished earlier run no longer stands for this folder
    ckpt.clear_checkpoints(out_dir)


def micro_step(run: Run, texts: list[str], step: int, micro: int, sums: dict[str, dict[str, float]]) -> int:
    """Forward and backward of every student on this rank's slice of one global micro-batch; adds the loss
    components (/ grad_accum) to `sums`. Returns the non-pad tokens of the global micro-batch (first student)."""
    config, env, device = run.config, run.env, run.device
    g = torch.Generator().manual_seed(config.seed * 1_000_000_007 + step * 1_000 + micro)
    gviews, gmasked = make_batch(texts, run.views, config, g, run.token_weights)
    lo, hi = env.rank * config.batch_size, (env.rank + 1) * config.batch_size
    lviews = {k: v.rows(lo, hi) for k, v in gviews.items()}
    plans = {
        s.spec.name: student_plan(s, run.teachers, lviews, gmasked[lo:hi], config.kl_on, config.cross_mismatch)
        for s in run.students
    }
    # counts over the global micro-batch (identical on every rank): the loss normalisers
    counts = {
        s.spec.name: (
            plans[s.spec.name]
            if not env.distributed
            else student_plan(s, run.teachers, gviews, gmasked, config.kl_on, config.cross_mismatch)
        ).counts
        for s in run.students
    }
    # each teacher runs once; its outputs are shared by every student that uses it
    t_out = teacher_outputs(run.teachers, run.used_teachers, lviews, config, device, run.amp)
    last = micro == config.grad_accum - 1
    for s in run.students:
        v, plan = lviews[s.view], plans[s.spec.name]
        with contextlib.nullcontext() if not env.distributed or last else s.wrapped.no_sync():
            with autocast(device, run.amp):
                s_out = s.wrapped(
                    v.input_ids.to(device),
                    v.attention_mask.to(device),
                    plan.kl_b.to(device),
                    plan.kl_p.to(device),
                    output_hidden=config.alpha_cos > 0,
                )
            comps = student_losses(
                s, run.teachers, config, plan, counts[s.spec.name], v, s_out, t_out, scale=float(env.world_size)
            )
            s.scaler.scale(comps["total"] / config.grad_accum).backward()
        for k, val in comps.items():
            sums[s.spec.name][k] = sums[s.spec.name].get(k, 0.0) + float(val.detach()) / config.grad_accum
    return counts[run.students[0].spec.name].n_tokens


def reduce(sums: dict[str, dict[str, float]], env: DistEnv, device: torch.device) -> None:
    """Global values of the logged components, in place (each rank holds its share x world size)."""
    names = [(a, b) for a in sums for b in sorted(sums[a])]
    vec = torch.tensor([sums[a][b] for a, b in names], dtype=torch.float64, device=device)  # NCCL: on device
    if env.distributed:
        dist.all_reduce(vec)
        vec /= env.world_size
    for (a, b), val in zip(names, vec.cpu().tolist()):
        sums[a][b] = val


def check_finite(sums: dict[str, dict[str, float]], step: int, out_dir: Path) -> None:
    """Stop at a non-finite loss, naming the student, the step and the last good checkpoint."""
    for name, comps in sums.items():
        if not math.isfinite(comps["total"]):
            last = ckpt.latest_checkpoint(out_dir)
            raise FloatingPointError(
                f"non-finite loss ({comps['total']}) at step {step + 1} for student {name!r}; training "
                f"stopped, last good checkpoint: {last or 'none written yet'}"
            )


def sync_map_gradients(students: list[Student], env: DistEnv) -> None:
    """Average the cross-model linear maps' gradients over ranks (DDP wraps only the student itself)."""
    if not env.distributed:
        return
    for s in students:
        for p in s.cross_maps.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= env.world_size


def optimizer_step(students: list[Student], config: DistillConfig) -> None:
    """Unscale, clip, step, zero the gradients and advance the schedule of every student."""
    for s in students:
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.trainable.parameters(), config.max_grad_norm)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.step()


def log_step(run: Run, bar, step: int, epoch: int, sums: dict, tokens: int, seconds: float, elapsed: float) -> None:
    """One JSONL record per `log_every` steps (and the last), and the progress bar's figures."""
    tok_s = tokens / max(seconds, 1e-9)  # non-pad tokens of the global batch (first student's view)
    if run.env.is_main and (step % run.config.log_every == 0 or step == run.config.max_steps):
        rec = {
            "step": step,
            "lr": run.students[0].scheduler.get_last_lr()[0],
            "tokens": tokens,
            "tokens_per_s": tok_s,
            "elapsed": elapsed,
            "epoch": epoch,
            "students": {k: {c: round(x, 6) for c, x in v.items()} for k, v in sums.items()},
        }
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        if run.tracker is not None:
            run.tracker.log({k: v for k, v in rec.items() if k != "step"}, step)
        first = sums[run.students[0].spec.name]
        bar.set_postfix(
            {
                "loss": f"{first['total']:.3f}",
                "kl": f"{first['kl']:.3f}",
                "mlm": f"{first['mlm']:.3f}",
                "cos": f"{first['cos']:.3f}",
                "tok/s": f"{tok_s:.0f}",
            }
        )
    bar.update(1)


def save(run: Run, step: int, stream: BatchStream, elapsed: float, n_texts: int) -> Path | None:
    """Checkpoint every student with the data position and every rank's RNG (rank 0 writes)."""
    env, config = run.env, run.config
    rng_all = [ckpt.capture_rng()]
    if env.distributed:
        rng_all = [None] * env.world_size
        dist.all_gather_object(rng_all, ckpt.capture_rng())
    path = None
    if env.is_main:
        state = {
            **stream.position,
            "elapsed": elapsed,
            "n_texts": n_texts,
            "config": config.to_dict(),
            "code": code_fingerprint(),
        }
        path = ckpt.save_checkpoint(
            config.out_dir,
            step,
            {s.spec.name: s.train_parts for s in run.students},
            state,
            rng_all,
            keep=config.checkpoint_policy()[0],
        )
    if env.distributed:
        dist.barrier()
    return path


def finish(run: Run, corpus: TextCorpus, corpus_name: str | None, step: int, wall: float) -> dict:
    """Save every student (weights, tokenizer, model card), summary.json and run.json (rank 0); then remove the
    checkpoints unless the policy keeps the last one. Returns the summary per student."""
    summary: dict[str, Any] = {}
    if run.env.is_main:
        config = run.config
        meta = {"name": corpus_name or "in-memory corpus", **corpus.info()}
        per = _summarise(run.log_path, run.students)
        rows = read_log(run.log_path)
        for s in run.students:
            info = {
                "teachers": s.teachers,
                "tokenizer_from": s.spec.tokenizer_from or s.teachers[0],
                "cross_vocab_teachers": sorted(s.cross),
                "strategy": config.strategy,
                "steps": step,
                "global_batch": config.batch_size * run.env.world_size * config.grad_accum,
                "wall_time_s": wall,
                "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in rows])) if rows else None,
                "device": str(run.device),
                "amp": run.amp.name,
                "world_size": run.env.world_size,
                "out_dir": str(s.out_dir),
                "corpus": meta,
                **per[s.spec.name],
            }
            _save_student(s, config, info, meta)
            summary[s.spec.name] = info
        ckpt.write_json_atomic(Path(config.out_dir) / "summary.json", summary)
        ckpt.write_json_atomic(
            Path(config.out_dir) / RUN_FILE,
            {"config": config.to_dict(), "n_texts": len(corpus), "code": code_fingerprint()},
        )
        if not config.checkpoint_policy()[1] and ckpt.checkpoint_root(config.out_dir).exists():
            ckpt.clear_checkpoints(config.out_dir)
            say(f"distill: students saved; removed the checkpoints of {config.out_dir} (keep_final_checkpoint)")
    if run.env.distributed:
        dist.barrier()
    return summary


# --------------------------------------------------------------------------------------------- loop
def distill(
    config: DistillConfig,
    corpus: Any,
    *,
    fresh: bool = False,
    resume: bool | None = None,
    teachers: dict | None = None,
    students: dict | None = None,
    corpus_name: str | None = None,
) -> dict:
    """Distil the config's teachers into its students on `corpus` (Dataset with "text", or list of str).

    A rerun continues exactly from the newest checkpoint in out_dir when there is one (it must have been
    written with the same data and loss settings, else a one-line error says to pass fresh=True), and
    returns at once when out_dir holds a finished run with the same settings. `fresh=True` starts over,
    removing (and naming) the earlier log and checkpoints. `resume` is accepted for old callers and
    ignored: resuming is the default. `teachers` / `students` optionally pass preloaded objects
    ({name: (model, tokenizer)} / {name: model}) instead of loading them (notebooks, tests). Returns the
    summary per student, also written to out_dir/summary.json (rank 0).
    """
    # cheap checks first: settings, corpus size, a checkpoint that cannot continue exactly
    config.validate()
    check_report_to(config.report_to)  # a missing tracker package fails here, before any work
    texts = TextCorpus(corpus)  # read by index; only word counts in memory
    env, device = init_distributed(config.device)
    if len(texts) < config.batch_size * env.world_size:
        raise ValueError(
            f"corpus has {len(texts)} non-empty texts, fewer than one global micro-batch "
            f"(batch_size {config.batch_size} x world size {env.world_size})"
        )
    amp = amp_settings(device, config.amp)
    if not fresh and (done := finished_summary(config, len(texts))) is not None:  # e.g. made with torchrun
        say(f"distill: {config.out_dir} holds a finished run with these settings; fresh=True / --fresh redoes it")
        return done
    start = resume_point(config, fresh, env, len(texts))

    # models: frozen teachers grouped into tokenizer views, students, their optimizers
    seed_everything(config.seed)
    tmap = load_teachers(config, device, teachers)
    studs = build_students(config, tmap, device, students, texts=texts)
    teachers_to_half(tmap, config, device)  # after the students copied their full-precision weights
    make_optimizers(studs, config, device, amp)
    weights = word_weights(texts, studs[0].tokenizer, config.mlm_smoothing)
    run = Run(
        config,
        env,
        device,
        amp,
        tmap,
        studs,
        tokenizer_views(tmap),
        None if weights is None else (studs[0].view, weights),
    )

    # where we are: step, data position, RNG (from the checkpoint or fresh); the log follows
    step, stream, elapsed_before = restore(run, texts, start)
    wrap_for_training(run)
    start_log(run, step, resumed=start is not None)
    if env.is_main and config.report_to:
        run.tracker = Tracker(
            config.report_to,
            config.out_dir,
            project="kdlib-distill",
            name=Path(config.out_dir).name,
            config=config.to_dict(),
            start_step=step + 1,  # the steps after the checkpoint are logged again
        )
    if env.is_main and step < config.max_steps:
        announce_cost(run, texts, step)

    # the loop: grad_accum micro-batches, reduce over ranks, one optimizer step, log, save
    t0 = time.perf_counter()
    with tqdm(total=config.max_steps, initial=step, disable=not env.is_main, desc="distill", dynamic_ncols=True) as bar:
        while step < config.max_steps:
            t_step = time.perf_counter()
            sums: dict[str, dict[str, float]] = {s.spec.name: {} for s in studs}
            tokens = sum(micro_step(run, stream.next(), step, m, sums) for m in range(config.grad_accum))
            reduce(sums, env, device)
            check_finite(sums, step, Path(config.out_dir))
            sync_map_gradients(studs, env)
            optimizer_step(studs, config)
            step += 1
            now = time.perf_counter()
            log_step(run, bar, step, stream.epoch, sums, tokens, now - t_step, elapsed_before + now - t0)
            if (config.save_every and step % config.save_every == 0) or step == config.max_steps:
                save(run, step, stream, elapsed_before + time.perf_counter() - t0, len(texts))
    if run.tracker is not None:
        run.tracker.close()
    return finish(run, texts, corpus_name, step, elapsed_before + time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kdlib distill",
        description="Distil one or several masked-LM teachers into one or several students.",
    )
    p.add_argument("--config", required=True, help="JSON or YAML DistillConfig file")
    p.add_argument(
        "--corpus",
        help="corpus mode (ordered|shuffled|merged) or a text corpus path/name; default: the config's 'corpus'",
    )
    p.add_argument("--max-steps", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--out", help="output folder (config out_dir)")
    p.add_argument("--device")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: remove out_dir's log and checkpoints (default: continue from a compatible one)",
    )
    p.add_argument("--resume", action="store_true", help="(the default; kept for old scripts)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    p.add_argument(
        "--report-to", nargs="+", metavar="TRACKER", help="also log to tensorboard and/or trackio (config report_to)"
    )
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="upload the saved student to this hub model repository (several students: REPO-<student>)",
    )
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    for key, val in (
        ("max_steps", args.max_steps),
        ("save_every", args.save_every),
        ("out_dir", args.out),
        ("device", args.device),
        ("report_to", args.report_to),
    ):
        if val is not None:
            overrides[key] = val
    try:
        config = DistillConfig.from_file(args.config, overrides)
        config.validate()
        spec = args.corpus or config.corpus
        corpus = load_corpus(spec, seed=config.seed, max_sentences=config.corpus_max_sentences)
        summary = distill(config, corpus, fresh=args.fresh, corpus_name=spec)
    except (ValueError, FileNotFoundError) as err:  # bad settings or input: one line, no traceback
        print(f"kdlib distill: error: {err}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    if summary:
        print(
            json.dumps(
                {k: {"final_losses": v["final_losses"], "out_dir": v["out_dir"]} for k, v in summary.items()}, indent=2
            )
        )
    if summary and args.push_to_hub:
        return push_students(summary, args.push_to_hub)
    return 0


def push_students(summary: dict, repo_id: str) -> int:
    """Upload every saved student of `summary` to the hub (kdlib.engine.card.push_folder); 1 on a failed push."""
    folders = [(name, Path(info["out_dir"])) for name, info in summary.items()]
    try:
        for folder, repo in kcard.push_targets(folders, repo_id):
            print(f"kdlib distill: pushed {folder.name} to {repo}: {kcard.push_folder(folder, repo)}", file=sys.stderr)
    except (OSError, ValueError) as err:  # network, authentication, a bad repository name
        print(f"kdlib distill: error: push to the hub failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
