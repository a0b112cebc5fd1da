"""Task-agnostic distillation of one or several masked-LM teachers into one or several students.

`distill` is a plain PyTorch loop, readable top to bottom; each block calls a named step:

1. validate the config (cheap errors first, `kdlib.config`), check a checkpoint to resume from, load the
   teachers and build the students (`kdlib.models`), one AdamW + schedule per student (`make_optimizers`);
2. every global batch of texts (`kdlib.batching.BatchStream`, which knows its position for resume) is split
   into words, encoded once per distinct tokenizer ("view") and masked at the WORD level (the same words
   in every view, 80/10/10 per word);
3. each teacher runs once per batch under `torch.inference_mode`; its outputs are shared by every student
   that learns from it; teachers and students compute the vocabulary head only at the positions the losses
   read (`kdlib.mlm`: the masked ones by default, ~15%);
4. per student: L = alpha_ce * T^2 * KL + alpha_mlm * MLM + alpha_cos * (1 - cos), combined over teachers
   by `strategy` (`kdlib.objective`);
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
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from kdlib import checkpoint as ckpt
from kdlib.batching import BatchStream, TextCorpus, load_corpus, make_batch, word_weights
from kdlib.config import RESUME_KEYS, DistillConfig, StudentSpec, TeacherSpec, parse_overrides
from kdlib.device import AmpSettings, DistEnv, amp_settings, autocast, cleanup, grad_scaler, init_distributed
from kdlib.mlm import SelectedMLM
from kdlib.models import Student, Teacher, build_students, load_teachers, tokenizer_views
from kdlib.objective import count_only, student_losses, student_plan, teacher_outputs

# the public names of the distillation API, wherever they are defined
__all__ = ["DistillConfig", "TeacherSpec", "StudentSpec", "parse_overrides", "distill", "read_log", "load_corpus",
           "make_batch", "student_plan", "teacher_outputs", "student_losses", "cli"]


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


# -------------------------------------------------------------------------------------------- resume
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


def resume_point(config: DistillConfig, resume: bool, env: DistEnv, n_texts: int) -> tuple[Path, dict, list] | None:
    """(checkpoint folder, state, rng states) to continue from, or None; refuses a checkpoint that cannot
    continue exactly, before any model is loaded."""
    path = ckpt.latest_checkpoint(config.out_dir) if resume else None
    if path is None:
        return None
    state, rng_states = ckpt.load_checkpoint(path)
    _check_resumable(path, state, rng_states, config, env.world_size, n_texts)
    return path, state, rng_states


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
    """AdamW (no decay on biases and norm weights) + linear warmup/decay + GradScaler, per student."""
    for s in students:
        s.model.train()
        decay = [p for p in s.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in s.model.parameters() if p.ndim < 2]
        s.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                         {"params": no_decay, "weight_decay": 0.0}],
                                        lr=config.lr, betas=(0.9, 0.98), eps=config.adam_eps)
        s.scheduler = get_linear_schedule_with_warmup(s.optimizer, config.warmup_steps, config.max_steps)
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
    stream = BatchStream(corpus, config.batch_size * env.world_size, seed=config.seed, pool=config.bucket_pool,
                         **position)
    return step, stream, elapsed


def wrap_for_training(run: Run) -> None:
    """The forward computes logits at the KL rows only (SelectedMLM); DDP wraps it so its hooks see it."""
    for s in run.students:
        selected = SelectedMLM(s.model)
        ids = [run.device.index] if run.device.type == "cuda" else None
        s.wrapped = DistributedDataParallel(selected, device_ids=ids) if run.env.distributed else selected


def start_log(run: Run, step: int, resumed: bool) -> None:
    """Resumed: drop log lines written after the checkpoint. Fresh: nothing of an earlier run in this folder
    may be resumed or kept (log and checkpoints removed)."""
    if not run.env.is_main:
        return
    out_dir = Path(run.config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resumed and run.log_path.exists():
        kept = [r for r in read_log(run.log_path) if r["step"] <= step]
        run.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    elif not resumed:
        run.log_path.unlink(missing_ok=True)
        ckpt.clear_checkpoints(out_dir)


def micro_step(run: Run, texts: list[str], step: int, micro: int, sums: dict[str, dict[str, float]]) -> int:
    """Forward and backward of every student on this rank's slice of one global micro-batch; adds the loss
    components (/ grad_accum) to `sums`. Returns the non-pad tokens of the global micro-batch (first student)."""
    config, env, device = run.config, run.env, run.device
    g = torch.Generator().manual_seed(config.seed * 1_000_000_007 + step * 1_000 + micro)
    gviews, gmasked = make_batch(texts, run.views, config, g, run.token_weights)
    lo, hi = env.rank * config.batch_size, (env.rank + 1) * config.batch_size
    lviews = {k: v.rows(lo, hi) for k, v in gviews.items()}
    plans = {s.spec.name: student_plan(s, run.teachers, lviews, gmasked[lo:hi], config.kl_on) for s in run.students}
    # counts over the global micro-batch (identical on every rank): the loss normalisers
    counts = {s.spec.name: count_only(plans[s.spec.name] if not env.distributed else
                                      student_plan(s, run.teachers, gviews, gmasked, config.kl_on))
              for s in run.students}
    # each teacher runs once; its outputs are shared by every student that uses it
    t_out = teacher_outputs(run.teachers, run.used_teachers, lviews, config, device, run.amp)
    last = micro == config.grad_accum - 1
    for s in run.students:
        v, plan = lviews[s.view], plans[s.spec.name]
        with contextlib.nullcontext() if not env.distributed or last else s.wrapped.no_sync():
            with autocast(device, run.amp):
                s_out = s.wrapped(v.input_ids.to(device), v.attention_mask.to(device), plan["kl_b"].to(device),
                                  plan["kl_p"].to(device), output_hidden=config.alpha_cos > 0)
            comps = student_losses(s, run.teachers, config, plan, counts[s.spec.name], v, s_out, t_out,
                                   scale=float(env.world_size))
            s.scaler.scale(comps["total"] / config.grad_accum).backward()
        for k, val in comps.items():
            sums[s.spec.name][k] = sums[s.spec.name].get(k, 0.0) + float(val.detach()) / config.grad_accum
    return counts[run.students[0].spec.name]["n_tokens"]


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
                f"stopped, last good checkpoint: {last or 'none written yet'}")


def optimizer_step(students: list[Student], config: DistillConfig) -> None:
    """Unscale, clip, step, zero the gradients and advance the schedule of every student."""
    for s in students:
        s.scaler.unscale_(s.optimizer)
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), config.max_grad_norm)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.step()


def log_step(run: Run, bar, step: int, epoch: int, sums: dict, tokens: int, seconds: float, elapsed: float) -> None:
    """One JSONL record per `log_every` steps (and the last), and the progress bar's figures."""
    tok_s = tokens / max(seconds, 1e-9)  # non-pad tokens of the global batch (first student's view)
    if run.env.is_main and (step % run.config.log_every == 0 or step == run.config.max_steps):
        rec = {"step": step, "lr": run.students[0].scheduler.get_last_lr()[0], "tokens": tokens,
               "tokens_per_s": tok_s, "elapsed": elapsed, "epoch": epoch,
               "students": {k: {c: round(x, 6) for c, x in v.items()} for k, v in sums.items()}}
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        first = sums[run.students[0].spec.name]
        bar.set_postfix({"loss": f"{first['total']:.3f}", "kl": f"{first['kl']:.3f}",
                         "mlm": f"{first['mlm']:.3f}", "cos": f"{first['cos']:.3f}", "tok/s": f"{tok_s:.0f}"})
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
        state = {**stream.position, "elapsed": elapsed, "n_texts": n_texts, "config": asdict(config)}
        path = ckpt.save_checkpoint(config.out_dir, step, {s.spec.name: s.train_parts for s in run.students},
                                    state, rng_all, keep=config.keep_checkpoints)
    if env.distributed:
        dist.barrier()
    return path


def finish(run: Run, corpus: TextCorpus, corpus_name: str | None, step: int, wall: float) -> dict:
    """Save every student (weights, tokenizer, model card) and summary.json (rank 0); the summary per student."""
    summary: dict[str, Any] = {}
    if run.env.is_main:
        config = run.config
        meta = {"name": corpus_name or "in-memory corpus", **corpus.info()}
        per = _summarise(run.log_path, run.students)
        rows = read_log(run.log_path)
        for s in run.students:
            info = {"teachers": s.teachers, "tokenizer_from": s.spec.tokenizer_from or s.teachers[0],
                    "cross_vocab_teachers": sorted(s.cross), "strategy": config.strategy, "steps": step,
                    "global_batch": config.batch_size * run.env.world_size * config.grad_accum,
                    "wall_time_s": wall,
                    "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in rows])) if rows else None,
                    "device": str(run.device), "amp": run.amp.name, "world_size": run.env.world_size,
                    "out_dir": str(s.out_dir), "corpus": meta, **per[s.spec.name]}
            _save_student(s, config, info, meta)
            summary[s.spec.name] = info
        ckpt.write_json_atomic(Path(config.out_dir) / "summary.json", summary)
    if run.env.distributed:
        dist.barrier()
    return summary


# --------------------------------------------------------------------------------------------- loop
def distill(config: DistillConfig, corpus: Any, *, resume: bool = False, teachers: dict | None = None,
            students: dict | None = None, corpus_name: str | None = None) -> dict:
    """Distil the config's teachers into its students on `corpus` (Dataset with "text", or list of str).

    `teachers` / `students` optionally pass preloaded objects ({name: (model, tokenizer)} /
    {name: model}) instead of loading them (notebooks, tests). Returns the summary per student, also
    written to out_dir/summary.json (rank 0). With `resume=True`, continues exactly from the newest
    checkpoint in out_dir.
    """
    # cheap checks first: settings, corpus size, a checkpoint that cannot continue exactly
    config.validate()
    texts = TextCorpus(corpus)  # read by index; only word counts in memory
    env, device = init_distributed(config.device)
    if len(texts) < config.batch_size * env.world_size:
        raise ValueError(f"corpus has {len(texts)} non-empty texts, fewer than one global micro-batch "
                         f"(batch_size {config.batch_size} x world size {env.world_size})")
    amp = amp_settings(device, config.amp)
    start = resume_point(config, resume, env, len(texts))

    # models: frozen teachers grouped into tokenizer views, students, their optimizers
    seed_everything(config.seed)
    tmap = load_teachers(config, device, teachers)
    studs = build_students(config, tmap, device, students)
    make_optimizers(studs, config, device, amp)
    weights = word_weights(texts, studs[0].tokenizer, config.mlm_smoothing)
    run = Run(config, env, device, amp, tmap, studs, tokenizer_views(tmap),
              None if weights is None else (studs[0].view, weights))

    # where we are: step, data position, RNG (from the checkpoint or fresh); the log follows
    step, stream, elapsed_before = restore(run, texts, start)
    wrap_for_training(run)
    start_log(run, step, resumed=start is not None)

    # the loop: grad_accum micro-batches, reduce over ranks, one optimizer step, log, save
    t0 = time.perf_counter()
    with tqdm(total=config.max_steps, initial=step, disable=not env.is_main, desc="distill",
              dynamic_ncols=True) as bar:
        while step < config.max_steps:
            t_step = time.perf_counter()
            sums: dict[str, dict[str, float]] = {s.spec.name: {} for s in studs}
            tokens = sum(micro_step(run, stream.next(), step, m, sums) for m in range(config.grad_accum))
            reduce(sums, env, device)
            check_finite(sums, step, Path(config.out_dir))
            optimizer_step(studs, config)
            step += 1
            now = time.perf_counter()
            log_step(run, bar, step, stream.epoch, sums, tokens, now - t_step, elapsed_before + now - t0)
            if (config.save_every and step % config.save_every == 0) or step == config.max_steps:
                save(run, step, stream, elapsed_before + time.perf_counter() - t0, len(texts))
    return finish(run, texts, corpus_name, step, elapsed_before + time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------- CLI
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
        cleanup()
    if summary:
        print(json.dumps({k: {"final_losses": v["final_losses"], "out_dir": v["out_dir"]} for k, v in summary.items()},
                         indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
