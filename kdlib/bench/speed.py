"""Speed and size benchmark (issue #6): the paper's "about twice as fast, 35% smaller" claim, and
how fast kdlib's distillation loop is against a plain DistilBERT-recipe reference loop.

Parts (``--parts``):

- ``inference``: the two teachers (BERT-base, vocab 50,000 and 37,788) and their 6-layer DistilBERT
  students at the paper's real shapes with random weights (speed does not depend on the weights):
  parameters, safetensors size of the MLM model, median latency of the encoder (AutoModel) and of
  the MLM model for batch 1/32 x length 128/512, student/teacher speed-up. Claim (a)'s setting (encoder,
  batch 32 x 128) is timed for every vocabulary with teacher and student interleaved (teacher, student,
  teacher, ...), at least ``repeats`` (5) runs each: every run's wall and process CPU time, the ratio of each
  round and their spread (``inference.pairs[i].interleaved``); a loaded machine shows as wall >> CPU time.
- ``throughput``: tokens/s of ``kdlib.engine.distill.distill`` against
  :func:`kdlib.engine.reference.distill` (the original DistilBERT recipe: KL over all non-pad
  positions and the full vocabulary, fp32, random batches padded to the longest sequence, no
  bucketing) on the same shapes and data; achieved FLOP rate as a share of the measured fp32 matmul peak.
- ``shared``: the paper's three students (S1<-T1, S2<-T2 with T2's tokenizer, S3<-T1+T2) in one
  ``distill`` call (each teacher run once per batch) against three separate calls.
- ``pipeline``: wall time and peak memory of the runner's ``runs/<profile>/run_summary.json``.

``bench.json`` (written atomically) has the top-level keys ``schema``, ``created``, ``quick``,
``device``, ``parts``, ``targets`` (each measured ratio beside its target), ``target_values`` and
``paper`` (the figures compared against) and one key per part that ran (``inference``, ``matmul_peak``,
``throughput``, ``shared``, ``pipeline``); ``bench.png`` (200 dpi) stacks one panel per idea: latency,
speed-up, loop throughput, the shared run. The report and the figure are drawn by :mod:`kdlib.analysis.reporting`
from that JSON alone (``reporting.format_report``, ``reporting.plot_bench``, ``reporting.bench_tables``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from kdlib.analysis.reporting import format_report, plot_bench, save_figure
from kdlib.engine import reference
from kdlib.io import write_json_atomic

PARTS = ("inference", "throughput", "shared", "pipeline")
SCHEMA = 1

# The paper's figures (paper-spec.md §1, §3, §7.3).
PAPER = {
    "teacher_params_M": {50000: 124.4, 37788: 115.0},  # 115.06 M by the BERT-base formula; card says 114 M
    "student_params_M": {50000: 81.3, 37788: 71.9},  # base model without MLM head
    "teacher_size": {50000: "477.2 MB", 37788: "441 MB"},
    "student_size": {50000: "312.7 MiB", 37788: "282 MB"},
    "size_reduction": 0.35,  # "35% smaller": 312/477 = 0.654
    "speedup": 2.0,  # "twice as fast on a GPU"
}
TARGETS = {"speedup_b32_l128_cpu": 1.8, "kdlib_vs_reference": 1.5, "shared_vs_separate": 1.25}
# claim (a) (kdlib.analysis.claims.claim_speed_size) reads the encoder's latency at batch 32 x length 128 of every
# pair and needs 5 repeats per model: that setting is timed for every vocabulary, teacher and student interleaved
CLAIM_HEAD = "encoder"
CLAIM_SETTING = (32, 128)
CLAIM_REPEATS = 5
CLAIM_KEY = f"b{CLAIM_SETTING[0]}_l{CLAIM_SETTING[1]}"
FLOP_FORMULA = (
    "FLOPs/token = 6*P_student + 2*P_teacher (P = model.num_parameters(): forward+backward of the "
    "student, forward of each teacher; attention's length^2 term ignored)"
)


# ----------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class InferenceShapes:
    """Model shapes and the (batch, length) grid of the inference part; the default is the paper's."""

    vocab_sizes: tuple[int, ...] = (50000, 37788)
    hidden: int = 768
    teacher_layers: int = 12
    student_layers: int = 6
    heads: int = 12
    ffn: int = 3072
    max_positions: int = 512
    type_vocab: int = 2
    settings: tuple[tuple[int, int], ...] = ((1, 128), (32, 128), (1, 512), (32, 512))


@dataclass(frozen=True)
class TrainShapes:
    """Teacher/student shapes, data and steps for the throughput and shared parts."""

    name: str
    vocab_size: int
    hidden: int
    teacher_layers: int
    student_layers: int
    heads: int
    ffn: int
    batch_size: int
    max_len: int
    steps: int
    sentences: int = 4000


PAPER_TRAIN = TrainShapes(
    "paper (12x768 teacher, 6-layer student, vocab 50k)",
    50000,
    768,
    12,
    6,
    12,
    3072,
    batch_size=32,
    max_len=256,
    steps=50,
    sentences=20000,
)
SMALL_TRAIN = TrainShapes(
    "scaled-down (4x256 teacher, 2-layer student, vocab 8k)",
    8000,
    256,
    4,
    2,
    4,
    1024,
    batch_size=32,
    max_len=128,
    steps=40,
)
QUICK_TRAIN = replace(SMALL_TRAIN, steps=15, sentences=2000)


def _check_positive(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"{name}={value!r}: expected a positive number")


def parse_parts(parts: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """'inference,shared' -> ['inference', 'shared']; None -> all parts; unknown names are refused."""
    if parts is None:
        return list(PARTS)
    items = parts.split(",") if isinstance(parts, str) else list(parts)
    items = [p.strip() for p in items if p.strip()]
    bad = [p for p in items if p not in PARTS]
    if bad or not items:
        raise ValueError(f"parts={parts!r}: unknown or empty; expected a comma-separated subset of {PARTS}")
    return [p for p in PARTS if p in items]


# ------------------------------------------------------------------------------------- environment
def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> torch.device (kdlib.device.pick_device does the checking)."""
    from kdlib.device import pick_device

    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={name!r}: expected 'auto', 'cpu' or 'cuda'")
    dev = pick_device(name)
    return torch.device("cpu") if dev.type == "mps" else dev  # the benchmark reports CPU or CUDA only


def device_info(device: torch.device) -> dict:
    """What the figures were measured on: CPU model, threads, load, torch version, GPU name."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "type": device.type,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds (all threads) of one call of `fn`, synchronised on CUDA."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def _more(n: int, elapsed: float, last: float, *, budget_s: float, min_repeats: int, max_repeats: int) -> bool:
    """Whether to time another run: always below `min_repeats`; then 3 if they fit, more while the budget lasts."""
    if n < min_repeats:
        return True
    if n >= max_repeats or elapsed >= budget_s:
        return False
    return n < 3 or elapsed + last <= budget_s  # three runs done: stop if the next one would overrun the budget


def _summary(times: list[float], cpu: list[float]) -> dict:
    """Median, spread and every run of a list of wall times, with the process CPU time of each run beside."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
        "median_cpu_s": statistics.median(cpu),
        "times_s": list(times),
        "cpu_s": list(cpu),
    }


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}={value!r}: expected a positive integer")


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    device: torch.device,
    *,
    budget_s: float,
    max_repeats: int,
    min_repeats: int = 1,
    warmups: dict[str, Callable[[], Any] | None] | None = None,
) -> dict[str, dict]:
    """Time `fns` in turn (a, b, a, b, ...) after one warm-up each; rounds counted as :func:`time_call` counts runs."""
    _check_positive("budget_s", budget_s)
    _check_counts(max_repeats=max_repeats, min_repeats=min_repeats)
    for name, fn in fns.items():
        ((warmups or {}).get(name) or fn)()
    _sync(device)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    start, rounds = time.perf_counter(), 0
    while True:
        r0 = time.perf_counter()
        for name, fn in fns.items():
            w, c = _timed(fn, device)
            wall[name].append(w)
            cpu[name].append(c)
        rounds += 1
        now = time.perf_counter()
        if not _more(
            rounds, now - start, now - r0, budget_s=budget_s, min_repeats=min_repeats, max_repeats=max_repeats
        ):
            return {k: _summary(wall[k], cpu[k]) for k in fns}


def time_call(
    fn: Callable[[], Any],
    device: torch.device,
    *,
    budget_s: float,
    max_repeats: int,
    warmup: Callable[[], Any] | None = None,
    min_repeats: int = 1,
) -> dict:
    """Median wall time of `fn` after one warm-up call: at least `min_repeats` runs (past the budget if need be),
    3 if they fit in `budget_s`, more while the budget lasts, at most max(`max_repeats`, `min_repeats`)."""
    return time_interleaved(
        {"fn": fn},
        device,
        budget_s=budget_s,
        max_repeats=max_repeats,
        min_repeats=min_repeats,
        warmups={"fn": warmup},
    )["fn"]


def matmul_peak(device: torch.device, *, n: int = 2048, repeats: int = 5) -> dict:
    """Measured fp32 matmul rate (best of `repeats` n x n products after a warm-up), in GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.matmul(a, b)
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "dtype": "float32", "repeats": repeats, "best_s": best, "gflops": 2 * n**3 / best / 1e9}


# ------------------------------------------------------------------------------ 1. inference part
def teacher_config(shapes: InferenceShapes, vocab: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab,
        hidden_size=shapes.hidden,
        num_hidden_layers=shapes.teacher_layers,
        num_attention_heads=shapes.heads,
        intermediate_size=shapes.ffn,
        max_position_embeddings=shapes.max_positions,
        type_vocab_size=shapes.type_vocab,
    )


def student_config(shapes: InferenceShapes, vocab: int):
    from transformers import DistilBertConfig

    return DistilBertConfig(
        vocab_size=vocab,
        dim=shapes.hidden,
        n_layers=shapes.student_layers,
        n_heads=shapes.heads,
        hidden_dim=shapes.ffn,
        max_position_embeddings=shapes.max_positions,
        sinusoidal_pos_embds=True,
        tie_weights_=True,
    )


def bert_param_formula(
    vocab: int,
    *,
    hidden: int = 768,
    layers: int = 12,
    ffn: int = 3072,
    positions: int = 512,
    type_vocab: int = 2,
    pooler: bool = True,
) -> int:
    """Parameters of a BertModel: embeddings (+LayerNorm), layers, optional pooler."""
    h = hidden
    emb = (vocab + positions + type_vocab) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h
    return emb + layers * layer + (h * h + h if pooler else 0)


def distilbert_param_formula(
    vocab: int, *, hidden: int = 768, layers: int = 6, ffn: int = 3072, positions: int = 512
) -> int:
    """Parameters of a DistilBertModel (no token types, no pooler, no MLM head)."""
    return bert_param_formula(
        vocab, hidden=hidden, layers=layers, ffn=ffn, positions=positions, type_vocab=0, pooler=False
    )


def _safetensors_size(model) -> int:
    with tempfile.TemporaryDirectory(prefix="kdlib-bench-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))


def _forward(model, ids: torch.Tensor, mask: torch.Tensor) -> None:
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)


def _latencies(
    model,
    device: torch.device,
    settings,
    vocab: int,
    *,
    budget_s: float,
    max_repeats: int,
    big_tokens: int,
    given: dict[str, dict] | None = None,
) -> dict:
    """Median forward latency per (batch, length); large inputs warm up on batch 1 at the same length; settings in
    `given` (timed elsewhere: the claim's, interleaved) are taken from it, in the grid's order."""
    gen = torch.Generator().manual_seed(0)
    given = given or {}
    out = {}
    for batch, length in settings:
        key = f"b{batch}_l{length}"
        if key in given:
            out[key] = given[key]
            continue
        ids = torch.randint(5, vocab, (batch, length), generator=gen).to(device)
        mask = torch.ones_like(ids)
        run = functools.partial(_forward, model, ids, mask)
        warm = functools.partial(_forward, model, ids[:1], mask[:1]) if batch * length >= big_tokens else None
        res = time_call(run, device, budget_s=budget_s, max_repeats=max_repeats, warmup=warm)
        res["warmup"] = f"batch 1 x {length}" if warm else "same input"
        res["tokens_per_s"] = batch * length / res["median_s"]
        out[key] = res
    return {**out, **{k: v for k, v in given.items() if k not in out}}


def claim_setting_fits(shapes: InferenceShapes) -> bool:
    """Whether the claim's setting (batch 32 x length 128) fits the models' position embeddings."""
    return CLAIM_SETTING[1] <= shapes.max_positions


def time_claim_setting(
    teacher,
    student,
    device: torch.device,
    vocab: int,
    *,
    repeats: int,
    budget_s: float,
    max_repeats: int,
    big_tokens: int,
) -> dict[str, dict]:
    """Teacher and student encoders at the claim's setting on the same input, interleaved, >= `repeats` runs each."""
    batch, length = CLAIM_SETTING
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    models = {"teacher": teacher.to(device), "student": student.to(device)}
    big = batch * length >= big_tokens
    res = time_interleaved(
        {k: functools.partial(_forward, m, ids, mask) for k, m in models.items()},
        device,
        budget_s=2 * budget_s,  # each model's budget, as one model after the other had
        max_repeats=max(max_repeats, repeats),
        min_repeats=repeats,
        warmups={k: functools.partial(_forward, m, ids[:1], mask[:1]) for k, m in models.items()} if big else None,
    )
    for r in res.values():
        r.update(warmup=f"batch 1 x {length}" if big else "same input", tokens_per_s=batch * length / r["median_s"])
        r.update(interleaved=True, cpu_per_wall=r["median_cpu_s"] / r["median_s"])
    return res


def paired_ratios(teacher: dict, student: dict) -> dict:
    """The student's speed-up per interleaved round (teacher / student time, paired by position) and its spread."""
    ratios = [t / s for t, s in zip(teacher["times_s"], student["times_s"])]
    cpu = [t / max(s, 1e-9) for t, s in zip(teacher["cpu_s"], student["cpu_s"])]
    return {
        "setting": f"{CLAIM_HEAD} {CLAIM_KEY}",
        "rounds": len(ratios),
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_spread": max(ratios) - min(ratios),
        "speedup_of_medians": teacher["median_s"] / student["median_s"],
        "cpu_ratios": cpu,
        "cpu_ratio_median": statistics.median(cpu),
    }


def _quick_grid(shapes: InferenceShapes, quick: bool) -> tuple[list[tuple[int, int]], list[int], list[str]]:
    """The (batch, length) settings and vocabularies to time, and what --quick leaves out (said in the result)."""
    settings = [tuple(s) for s in shapes.settings]
    timed_vocabs = list(shapes.vocab_sizes)
    skipped: list[str] = []
    if not quick:
        return settings, timed_vocabs, skipped
    longest = max(length for _, length in settings)
    if len({length for _, length in settings}) > 1:
        skipped += [
            f"setting batch {b} x length {n} (--quick drops the longest length)" for b, n in settings if n == longest
        ]
        settings = [(b, n) for b, n in settings if n != longest]
    if len(timed_vocabs) > 1:
        skipped += [
            f"latency of vocab {v} models (--quick times vocab {timed_vocabs[0]} only; "
            "parameters and size still measured)"
            for v in timed_vocabs[1:]
        ]
        timed_vocabs = timed_vocabs[:1]
    return settings, timed_vocabs, skipped


def _measure_model(
    role: str,
    vocab: int,
    shapes: InferenceShapes,
    device: torch.device,
    settings,
    *,
    timed: bool,
    budget_s: float,
    max_repeats: int,
    big_tokens: int,
    encoder=None,
    claim_latency: dict[str, dict] | None = None,
) -> dict:
    """Parameters (encoder and MLM model), safetensors size and, if `timed`, latency of one random-weight model;
    `encoder`: the encoder already built, `claim_latency`: its latency at the claim's setting (timed interleaved)."""
    from transformers import BertForMaskedLM, BertModel, DistilBertForMaskedLM, DistilBertModel

    teacher = role == "teacher"
    cfg = teacher_config(shapes, vocab) if teacher else student_config(shapes, vocab)
    classes = (
        (("encoder", BertModel), ("mlm", BertForMaskedLM))
        if teacher
        else (("encoder", DistilBertModel), ("mlm", DistilBertForMaskedLM))
    )
    entry: dict[str, Any] = {
        "role": role,
        "vocab": vocab,
        "architecture": cfg.model_type,
        "layers": shapes.teacher_layers if teacher else shapes.student_layers,
        "params": {},
    }
    torch.manual_seed(0)
    for head, cls in classes:
        given = claim_latency if head == CLAIM_HEAD else None
        model = encoder if (head == "encoder" and encoder is not None) else cls(cfg).eval()
        encoder = None  # the caller's encoder is freed with `model` below
        entry["params"][head] = model.num_parameters()
        if head == "mlm":
            size = _safetensors_size(model)
            entry["size"] = {"bytes": size, "MB": size / 1e6, "MiB": size / 2**20, "file": "model.safetensors"}
        if timed:
            model.to(device)
            entry.setdefault("latency", {})[head] = _latencies(
                model,
                device,
                settings,
                vocab,
                budget_s=budget_s,
                max_repeats=max_repeats,
                big_tokens=big_tokens,
                given=given,
            )
        elif given:
            entry.setdefault("latency", {})[head] = dict(given)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if teacher:
        entry["formula_params"] = bert_param_formula(
            vocab,
            hidden=shapes.hidden,
            layers=shapes.teacher_layers,
            ffn=shapes.ffn,
            positions=shapes.max_positions,
            type_vocab=shapes.type_vocab,
            pooler=True,
        )
    else:
        entry["formula_params"] = distilbert_param_formula(
            vocab, hidden=shapes.hidden, layers=shapes.student_layers, ffn=shapes.ffn, positions=shapes.max_positions
        )
    entry["paper_params_M"] = PAPER[f"{role}_params_M"].get(vocab)
    entry["paper_size"] = PAPER[f"{role}_size"].get(vocab)
    return entry


def _compare(t: dict, s: dict) -> dict:
    """A teacher and its student: size and parameter ratios and, when timed, speed-ups (wall and CPU time)."""
    pair = {
        "teacher": f"teacher-{t['vocab']}",
        "student": f"student-{s['vocab']}",
        "size_ratio": s["size"]["bytes"] / t["size"]["bytes"],
        "size_reduction": 1 - s["size"]["bytes"] / t["size"]["bytes"],
        "paper_size_reduction": PAPER["size_reduction"],
        "params_ratio_encoder": s["params"]["encoder"] / t["params"]["encoder"],
    }
    if "latency" in t:
        tl, sl = ({h: m["latency"].get(h, {}) for h in ("encoder", "mlm")} for m in (t, s))
        pair["speedup"] = {h: {k: tl[h][k]["median_s"] / sl[h][k]["median_s"] for k in tl[h]} for h in tl}
        # process CPU time (all threads): less sensitive to other processes sharing the cores
        pair["speedup_cpu_time"] = {
            h: {k: tl[h][k]["median_cpu_s"] / max(sl[h][k]["median_cpu_s"], 1e-9) for k in tl[h]} for h in tl
        }
        if tl[CLAIM_HEAD].get(CLAIM_KEY, {}).get("interleaved"):
            pair["interleaved"] = paired_ratios(tl[CLAIM_HEAD][CLAIM_KEY], sl[CLAIM_HEAD][CLAIM_KEY])
    return pair


def _claim_encoders(shapes: InferenceShapes, vocab: int) -> tuple[Any, Any]:
    """The teacher's and the student's random-weight encoders (what claim (a) times)."""
    from transformers import BertModel, DistilBertModel

    torch.manual_seed(0)
    return BertModel(teacher_config(shapes, vocab)).eval(), DistilBertModel(student_config(shapes, vocab)).eval()


def _measure_pair(
    vocab: int, shapes: InferenceShapes, device: torch.device, settings, *, timed: bool, repeats: int, **timing: Any
) -> dict[str, dict]:
    """Teacher and student of one vocabulary: the claim's setting timed interleaved (if it fits), then the rest."""
    encoders: dict[str, Any] = {"teacher": None, "student": None}
    claim: dict[str, dict] = {}
    if claim_setting_fits(shapes):
        encoders = dict(zip(("teacher", "student"), _claim_encoders(shapes, vocab)))
        claim = time_claim_setting(*encoders.values(), device, vocab, repeats=repeats, **timing)
    out = {}
    for role in ("teacher", "student"):
        given = {CLAIM_KEY: claim[role]} if claim else None
        out[f"{role}-{vocab}"] = _measure_model(  # popped: _measure_model holds the only reference and drops it
            role,
            vocab,
            shapes,
            device,
            settings,
            timed=timed,
            encoder=encoders.pop(role),
            claim_latency=given,
            **timing,
        )
    return out


def bench_inference(
    device: torch.device,
    *,
    quick: bool = False,
    shapes: InferenceShapes | None = None,
    budget_s: float | None = None,
    max_repeats: int | None = None,
    repeats: int = CLAIM_REPEATS,
) -> dict:
    """Parameters, safetensors size and latency of teachers and students (random weights); the claim's setting
    (encoder, batch 32 x 128) of every vocabulary timed teacher, student, teacher, ... `repeats` times at least."""
    from tqdm.auto import tqdm

    shapes = shapes or InferenceShapes()
    budget_s = budget_s or (3.0 if quick else 15.0)
    max_repeats = max_repeats or (5 if quick else 20)
    _check_positive("budget_s", budget_s)
    _check_positive("max_repeats", max_repeats)
    _check_counts(repeats=repeats)
    settings, timed_vocabs, skipped = _quick_grid(shapes, quick)
    timing = {"budget_s": budget_s, "max_repeats": max_repeats, "big_tokens": 4096}
    models: dict[str, dict] = {}
    bar = tqdm(shapes.vocab_sizes, desc="inference", unit="pair", leave=False)
    for vocab in bar:
        bar.set_postfix_str(f"vocab {vocab}")
        models |= _measure_pair(vocab, shapes, device, settings, timed=vocab in timed_vocabs, repeats=repeats, **timing)
    pairs = [_compare(models[f"teacher-{v}"], models[f"student-{v}"]) for v in shapes.vocab_sizes]
    return {
        "shapes": asdict(shapes),
        "settings": [list(s) for s in settings],
        "skipped": skipped,
        "timed_vocabs": timed_vocabs,
        "budget_s_per_setting": budget_s,
        "max_repeats": max_repeats,
        "warmup_rule": f"one warm-up call on the same input; inputs of >= {timing['big_tokens']} tokens warm up "
        "on batch 1",
        "inference_mode": True,
        "dtype": "float32",
        "interleaved": claim_setting_fits(shapes),
        "claim_timing": _claim_timing_note(shapes, repeats),
        "models": models,
        "pairs": pairs,
    }


def _claim_timing_note(shapes: InferenceShapes, repeats: int) -> dict:
    """How the claim's setting was timed (or why it was not), for the JSON reader."""
    note = {"head": CLAIM_HEAD, "setting": CLAIM_KEY, "min_repeats": repeats, "order": "teacher, student, ..."}
    if not claim_setting_fits(shapes):
        note["skipped"] = f"length {CLAIM_SETTING[1]} exceeds max_positions {shapes.max_positions}"
    else:
        note["rule"] = (
            "every vocabulary, also those --quick leaves untimed; teacher and student interleaved on the same input, "
            "at least `min_repeats` rounds (past the time budget), more while twice the per-setting budget lasts; "
            "wall time (time.perf_counter) and process CPU time (time.process_time) of every call"
        )
    return note


# ------------------------------------------------------------------- 2. the reference distill loop
# the plain DistilBERT recipe lives in kdlib.engine.reference; the old names stay for callers of this module
reference_ce_loss = reference.ce_loss
reference_losses = reference.losses
_mask_tokens = reference.mask_tokens
reference_distill = reference.distill


# ------------------------------------------------------------------------ assets for parts 2 and 3
def _corpus_texts(n: int, seed: int = 0) -> tuple[list[str], str]:
    """Real Romanian text: the kdlib corpus built from RO-STS's train split (merged consecutive sentences)."""
    from kdlib.data.corpus import build_corpus

    ds = build_corpus("merged", merge_p=0.5, seed=seed, tasks=["sts"], max_sentences=n)
    return list(ds["text"]), f"kdlib.data.corpus.build_corpus('merged', merge_p=0.5, tasks=['sts'], max_sentences={n})"


def make_teachers(root: Path, texts: list[str], shapes: TrainShapes) -> dict[str, Path]:
    """Two random-weight BERT teachers of `shapes`: T1 with a cased, T2 with an uncased WordPiece tokenizer."""
    from transformers import BertConfig, BertForMaskedLM

    from kdlib.engine.teachers import train_tokenizer

    out = {}
    for name, lowercase in (("t1", False), ("t2", True)):
        path = root / name
        tok = train_tokenizer(texts, path, vocab_size=shapes.vocab_size, lowercase=lowercase)
        cfg = BertConfig(
            vocab_size=len(tok),
            hidden_size=shapes.hidden,
            num_hidden_layers=shapes.teacher_layers,
            num_attention_heads=shapes.heads,
            intermediate_size=shapes.ffn,
            max_position_embeddings=max(512, shapes.max_len),
        )
        torch.manual_seed(1 if lowercase else 0)
        BertForMaskedLM(cfg).save_pretrained(path)
        out[name] = path
    return out


def _distill_config(
    root: Path,
    teachers: dict[str, Path],
    students: list[tuple[str, list[str]]],
    shapes: TrainShapes,
    device: torch.device,
    tag: str,
):
    """A kdlib DistillConfig for `students` [(name, [teacher names])]; default losses (KL on masked
    positions), only the final checkpoint."""
    from kdlib.engine.distill import DistillConfig

    used = sorted({t for _, ts in students for t in ts})
    out = root / tag
    return DistillConfig.from_dict(
        dict(
            teachers=[{"name": t, "path": str(teachers[t]), "weight": 1.0} for t in used],
            students=[
                {
                    "name": s,
                    "teachers": ts,
                    "tokenizer_from": ts[0],
                    "init": "teacher",
                    "shape": "distilbert",
                    "num_layers": shapes.student_layers,
                    "out_dir": str(out / s),
                }
                for s, ts in students
            ],
            batch_size=shapes.batch_size,
            max_steps=shapes.steps,
            max_len=shapes.max_len,
            save_every=0,
            grad_accum=1,
            device=device.type,
            out_dir=str(out),
            seed=0,
        )
    )


def _run_kdlib(root: Path, teachers, students, shapes: TrainShapes, device: torch.device, texts, tag: str) -> dict:
    """Time one kdlib.engine.distill.distill call end to end and read its token counts from log.jsonl."""
    import datasets

    from kdlib.engine.distill import distill

    cfg = _distill_config(root, teachers, students, shapes, device, tag)
    corpus = datasets.Dataset.from_dict({"text": texts})
    _sync(device)
    t0 = time.perf_counter()
    summary = distill(cfg, corpus)
    _sync(device)
    total_s = time.perf_counter() - t0
    res = {"total_s": total_s, "steps": shapes.steps, "students": [s for s, _ in students]}
    res.update(_log_tokens(Path(cfg.out_dir) / "log.jsonl"))
    if res.get("real_tokens"):
        res["tokens_per_s"] = res["real_tokens"] / total_s
        res["train_tokens_per_s"] = res["real_tokens"] / res["train_s"]
    res["summary_keys"] = sorted(summary) if isinstance(summary, dict) else None
    return res


def _log_tokens(path: Path) -> dict:
    """Real (non-pad) tokens and steps seen in kdlib's per-step JSONL log, when it records them."""
    if not path.is_file():
        return {"log": "missing"}
    from kdlib.engine.distill import read_log

    rows = [r for r in read_log(path) if isinstance(r.get("tokens_per_s"), (int, float)) and "elapsed" in r]
    out: dict[str, Any] = {"log_rows": len(rows)}
    if rows:  # each row: tokens/s of that step and elapsed loop time at its end -> tokens of the step
        prev, tokens = 0.0, 0.0
        for r in rows:
            tokens += r["tokens_per_s"] * (r["elapsed"] - prev)
            prev = r["elapsed"]
        out.update(
            {
                "real_tokens": tokens,
                "train_s": rows[-1]["elapsed"],
                "real_tokens_source": "log.jsonl: sum of tokens_per_s x step time",
                "log_median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            }
        )
    return out


def _expected_real_tokens(texts: list[str], tokenizer_dir: Path, max_len: int, sentences: int) -> float:
    """Mean non-pad tokens per sentence (after truncation) times the number of sentences drawn."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    lengths = [len(x) for x in tok(texts, truncation=True, max_length=max_len)["input_ids"]]
    return statistics.fmean(lengths) * sentences


def bench_throughput(
    device: torch.device, root: Path, texts: list[str], teachers: dict[str, Path], shapes: TrainShapes, peak: dict
) -> dict:
    """kdlib's distill loop against the reference loop: same teacher, student shape, data and steps."""
    ref = reference_distill(
        teachers["t1"],
        texts,
        student_layers=shapes.student_layers,
        batch_size=shapes.batch_size,
        max_len=shapes.max_len,
        steps=shapes.steps,
        device=device,
        out_dir=root / "reference" / "s1",
    )
    kd = _run_kdlib(root, teachers, [("s1", ["t1"])], shapes, device, texts, "kdlib")
    kd["expected_real_tokens"] = _expected_real_tokens(
        texts, teachers["t1"], shapes.max_len, shapes.steps * shapes.batch_size
    )
    if not kd.get("real_tokens"):  # no usable log: same number of sentences drawn -> same expectation
        kd.update(
            {
                "real_tokens": kd["expected_real_tokens"],
                "train_s": kd["total_s"],
                "real_tokens_source": "expected (mean truncated length x sentences drawn)",
            }
        )
        kd["tokens_per_s"] = kd["train_tokens_per_s"] = kd["real_tokens"] / kd["total_s"]
    flops_per_token = 6 * ref["student_params"] + 2 * sum(ref["teacher_params"])
    out = {
        "reference": ref,
        "kdlib": kd,
        "flops_per_token": flops_per_token,
        "flop_formula": FLOP_FORMULA,
        "ratio_tokens_per_s": kd["train_tokens_per_s"] / ref["train_tokens_per_s"],
        "ratio_end_to_end_tokens_per_s": kd["tokens_per_s"] / ref["tokens_per_s"],
        "ratio_wall_time": ref["total_s"] / kd["total_s"],
        "timing": "ratio_tokens_per_s: the training loops alone (real non-pad tokens / loop seconds); "
        "end to end: load teacher, tokenize, train `steps` steps, save the student",
    }
    for name, r in (("reference", ref), ("kdlib", kd)):
        gflops = r["train_tokens_per_s"] * flops_per_token / 1e9
        out[f"{name}_gflops"] = gflops
        out[f"{name}_share_of_peak"] = gflops / peak["gflops"]
    return out


def bench_shared(
    device: torch.device, root: Path, texts: list[str], teachers: dict[str, Path], shapes: TrainShapes
) -> dict:
    """Three students in one distill call (teachers run once per batch) against three separate calls."""
    students = [("s1", ["t1"]), ("s2", ["t2"]), ("s3", ["t1", "t2"])]
    shared = _run_kdlib(root, teachers, students, shapes, device, texts, "shared")
    separate = {s: _run_kdlib(root, teachers, [(s, ts)], shapes, device, texts, f"separate-{s}") for s, ts in students}
    sep_total = sum(r["total_s"] for r in separate.values())
    return {
        "students": {s: ts for s, ts in students},
        "shared": shared,
        "separate": separate,
        "shared_s": shared["total_s"],
        "separate_s": sep_total,
        "speedup": sep_total / shared["total_s"],
        "teacher_passes_per_batch": {"shared": 2, "separate": 4},
        "timing": "end to end per distill call (load, tokenize, train, save)",
    }


# ------------------------------------------------------------------------------- 4. pipeline part
def bench_pipeline(runs_dir: str | os.PathLike) -> dict:
    """Wall time and peak memory from runs_dir/<profile>/run_summary.json (the runner writes it)."""
    runs_dir = Path(runs_dir)
    out: dict[str, Any] = {"runs_dir": str(runs_dir), "profiles": {}}
    found = sorted(runs_dir.glob("*/run_summary.json")) if runs_dir.is_dir() else []
    for path in found:
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            out["profiles"][path.parent.name] = {"status": f"unreadable: {exc}"}
            continue
        out["profiles"][path.parent.name] = {
            "status": "complete" if s.get("complete") else "incomplete",
            "path": str(path),
            "total_wall_s": s.get("total_wall_s"),
            "peak_rss_mb": s.get("peak_rss_mb"),
            "steps": {
                k: {"wall_s": v.get("wall_s"), "peak_rss_mb": v.get("peak_rss_mb"), "status": v.get("status")}
                for k, v in (s.get("steps") or {}).items()
            },
        }
    for profile in ("smoke", "cpu"):
        out["profiles"].setdefault(profile, {"status": "not run"})
    return out


# ----------------------------------------------------------------------------------- the whole run
def _targets(result: dict) -> list[dict]:
    rows = []
    inf = result.get("inference")
    if inf:
        for pair in inf["pairs"]:
            sp = pair.get("speedup", {}).get("encoder", {}).get("b32_l128")
            if sp is not None:
                rows.append(
                    {
                        "name": f"student/teacher speed-up, encoder, batch 32 x 128, vocab {pair['teacher'][8:]}",
                        "value": sp,
                        "target": TARGETS["speedup_b32_l128_cpu"],
                        "device": result["device"]["type"],
                    }
                )
            sp = pair.get("speedup", {}).get("mlm", {}).get("b32_l128")
            if sp is not None:
                rows.append(
                    {
                        "name": f"student/teacher speed-up, MLM, batch 32 x 128, vocab {pair['teacher'][8:]}",
                        "value": sp,
                        "target": TARGETS["speedup_b32_l128_cpu"],
                        "device": result["device"]["type"],
                    }
                )
    if result.get("throughput", {}).get("ratio_tokens_per_s") is not None:
        rows.append(
            {
                "name": "kdlib loop / reference loop (tokens/s)",
                "value": result["throughput"]["ratio_tokens_per_s"],
                "target": TARGETS["kdlib_vs_reference"],
            }
        )
    if result.get("shared", {}).get("speedup") is not None:
        rows.append(
            {
                "name": "shared teacher passes / separate runs (wall time)",
                "value": result["shared"]["speedup"],
                "target": TARGETS["shared_vs_separate"],
            }
        )
    for r in rows:
        r["met"] = bool(r["value"] >= r["target"])
    return rows


def run_bench(
    out_dir: str | os.PathLike,
    *,
    quick: bool = False,
    device: str = "auto",
    parts: str | list[str] | None = None,
    runs_dir: str | os.PathLike = "runs",
    inference_shapes: InferenceShapes | None = None,
    train_shapes: TrainShapes | None = None,
    budget_s: float | None = None,
    max_repeats: int | None = None,
    repeats: int = CLAIM_REPEATS,
    matmul_n: int = 2048,
    verbose: bool = True,
) -> dict:
    """Run the chosen benchmark parts, write out_dir/bench.json and out_dir/bench.png, return the result."""
    wanted = parse_parts(parts)
    _check_positive("budget_s", budget_s)
    _check_positive("max_repeats", max_repeats)
    _check_positive("matmul_n", matmul_n)
    if max_repeats is not None and not isinstance(max_repeats, int):
        raise ValueError(f"max_repeats={max_repeats!r}: expected a positive integer")
    _check_counts(repeats=repeats)
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "quick": quick,
        "device": device_info(dev),
        "parts": wanted,
        "target_values": dict(TARGETS),
        "paper": {"speedup": PAPER["speedup"], "size_reduction": PAPER["size_reduction"]},
    }
    result["matmul_peak"] = matmul_peak(dev, n=matmul_n)
    if "inference" in wanted:
        result["inference"] = bench_inference(
            dev, quick=quick, shapes=inference_shapes, budget_s=budget_s, max_repeats=max_repeats, repeats=repeats
        )
    if "throughput" in wanted or "shared" in wanted:
        shapes = train_shapes or (
            PAPER_TRAIN if (dev.type == "cuda" and not quick) else QUICK_TRAIN if quick else SMALL_TRAIN
        )
        with tempfile.TemporaryDirectory(prefix="kdlib-bench-") as tmp:
            root = Path(tmp)
            texts, source = _corpus_texts(shapes.sentences)
            teachers = make_teachers(root, texts, shapes)
            common = {"shapes": asdict(shapes), "corpus": source, "texts": len(texts)}
            if "throughput" in wanted:
                result["throughput"] = {
                    **common,
                    **bench_throughput(dev, root, texts, teachers, shapes, result["matmul_peak"]),
                }
            if "shared" in wanted:
                result["shared"] = {**common, **bench_shared(dev, root, texts, teachers, shapes)}
    if "pipeline" in wanted:
        result["pipeline"] = bench_pipeline(runs_dir)
    result["targets"] = _targets(result)
    if hasattr(os, "getloadavg"):
        result["device"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "bench.json", result)
    try:
        save_figure(plot_bench(result), out_dir / "bench.png")
        result["figure"] = str(out_dir / "bench.png")
    except ValueError as exc:  # nothing to plot
        result["figure"] = f"none: {exc}"
    write_json_atomic(out_dir / "bench.json", result)
    if verbose:
        print(format_report(result))
    return result


# ------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kdlib bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench", help="output folder for bench.json and bench.png")
    p.add_argument("--quick", action="store_true", help="fewer repeats, skip the largest setting, tiny steps (CI)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--runs-dir", default="runs", help="folder holding <profile>/run_summary.json of pipeline runs")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed runs per latency setting")
    p.add_argument("--repeats", type=int, default=None, help="most timed runs per latency setting")
    p.add_argument(
        "--claim-repeats",
        type=int,
        default=CLAIM_REPEATS,
        help="least interleaved runs per model at the claim's setting (encoder, batch 32 x 128)",
    )
    return p


# parts run by their own module with their own options: `python -m kdlib bench --only align|corpus|finetune [--json]`
SEPARATE_PARTS = {"align": "kdlib.bench.align", "corpus": "kdlib.bench.corpus", "finetune": "kdlib.bench.finetune"}


def cli(argv: list[str]) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--only", help=f"one part: {','.join(PARTS + tuple(SEPARATE_PARTS))} (same as --parts)")
    known, argv = pre.parse_known_args(argv)
    if known.only in SEPARATE_PARTS:
        import importlib

        return importlib.import_module(SEPARATE_PARTS[known.only]).cli(argv)
    if known.only:
        argv = [*argv, "--parts", known.only]
    args = build_parser().parse_args(argv)
    try:
        parse_parts(args.parts)
        _check_positive("--budget", args.budget)
        _check_positive("--repeats", args.repeats)
        _check_counts(**{"--claim-repeats": args.claim_repeats})
    except ValueError as exc:
        print(f"kdlib bench: {exc}", file=sys.stderr)
        return 2
    run_bench(
        args.out,
        quick=args.quick,
        device=args.device,
        parts=args.parts,
        runs_dir=args.runs_dir,
        budget_s=args.budget,
        max_repeats=args.repeats,
        repeats=args.claim_repeats,
    )
    return 0
