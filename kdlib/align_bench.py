"""The projection benchmark (`python -m kdlib bench --only align --json`): how much of an uncased teacher's
certainty survives the projection onto a cased student's vocabulary, per `kdlib.align` projection mode.

Setting, like the cpu profile: the train-split distillation corpus (`kdlib.corpus.build_corpus`), a
cased and an uncased 8k WordPiece tokenizer trained on it (`kdlib.teachers.train_tokenizer`; the cased
one is the cased teacher's own), and a small cased teacher pretrained on it (`pretrain_teacher`, cached:
trained once, then reused). For every word of the RRT dev set (UD Romanian-RRT validation tokens):

* the uncased teacher is given a one-hot prediction on its own correct first piece of the word, and
  that row is projected onto the cased vocabulary (`kdlib.align.oracle_mass`);
* the figure is the mass that lands on the cased tokenizer's correct first piece (1 = lossless);
* for mode "prior" the case variants are weighted by the cased teacher's distribution at the word,
  the word masked (all its pieces; one word per copy of the sentence); for "count" by the variants'
  corpus counts; "split" and "exact_first" need no prior.

Words whose two first pieces do not correspond are left out of the cross-teacher KL by default
(`kdlib.align.first_piece_mismatch`), so the headline figures are over the other words; each mode
also reports "all_with_mismatched" (those words counted as 0) and the mismatched share. "capitalised":
the word's first character is an upper-case letter; "lowercase": every other word.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from kdlib.align import (
    DEFAULT_VOCAB_CASE,
    VOCAB_CASES,
    aligned_words,
    build_vocab_map,
    encode_words,
    first_piece_mismatch,
    oracle_mass,
    token_counts,
)

TOKENIZER_VOCAB = 8000
TEACHER = {
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "intermediate_size": 512,
    "vocab_size": 8000,
    "max_len": 128,
    "batch_size": 32,
    "lr": 7.0e-4,
    "steps": 1200,
    "seed": 0,
}


def default_cache_dir() -> Path:
    """``$KDLIB_ALIGN_CACHE`` or ``~/.cache/kdlib/align-bench`` (tokenizers and the cased teacher)."""
    return Path(os.environ.get("KDLIB_ALIGN_CACHE") or Path.home() / ".cache" / "kdlib" / "align-bench").expanduser()


def prepare(cache_dir: Path, *, steps: int = TEACHER["steps"], progress: bool = False):
    """(cased teacher, its tokenizer, uncased tokenizer, corpus texts, seconds spent training now); cached."""
    from transformers import AutoTokenizer

    from kdlib.corpus import build_corpus
    from kdlib.teachers import (
        TeacherConfig,
        load_teacher,
        pretrain_teacher,
        train_tokenizer,
    )

    corpus = build_corpus("shuffled", seed=0)
    t0 = time.perf_counter()
    teacher_dir = cache_dir / f"cased-teacher-{steps}"
    pretrain_teacher(
        corpus,
        teacher_dir,
        lowercase=False,
        config=TeacherConfig(**{**TEACHER, "steps": steps}),
        progress=progress,
        device="cpu",
    )
    uncased_dir = cache_dir / "uncased-tokenizer"
    if not (uncased_dir / "tokenizer.json").is_file():
        train_tokenizer(corpus["text"], uncased_dir, vocab_size=TOKENIZER_VOCAB, lowercase=True)
    model, cased = load_teacher(str(teacher_dir), device="cpu")
    return model, cased, AutoTokenizer.from_pretrained(uncased_dir), corpus["text"], time.perf_counter() - t0


def from_run(teachers_json: str | os.PathLike):
    """(cased teacher, its tokenizer, the uncased teacher's tokenizer, corpus texts, the cased teacher's
    pretraining steps) from a run's teachers/teachers.json (notebook 01): its first cased and uncased teacher."""
    from transformers import AutoTokenizer

    from kdlib.corpus import build_corpus
    from kdlib.teachers import load_teacher

    path = Path(teachers_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such teachers file (a run's teachers/teachers.json)")
    entries = json.loads(path.read_text(encoding="utf-8"))
    cased = next((e for e in entries.values() if not e.get("lowercase")), None)
    uncased = next((e for e in entries.values() if e.get("lowercase")), None)
    if cased is None or uncased is None:
        raise ValueError(f"{path}: expected one cased and one uncased teacher, got {sorted(entries)}")
    model, tok = load_teacher(cased["path"], device="cpu")
    steps = cased.get("metrics", {}).get("config", {}).get("steps")
    return model, tok, AutoTokenizer.from_pretrained(uncased["path"]), build_corpus("shuffled", seed=0)["text"], steps


def dev_words(data_dir=None) -> list[list[str]]:
    """The word lists of the RRT dev split (UD Romanian-RRT validation)."""
    from kdlib.data import load_task

    return [list(t) for t in load_task("upos", data_dir)["validation"]["tokens"]]


def aligned_first_pieces(
    student_tok, teacher_tok, words: list[list[str]], max_len: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sentence, word) index of every word kept by truncation in both tokenizations, and the two first-piece ids."""
    vs, vt = encode_words(student_tok, words, max_len), encode_words(teacher_tok, words, max_len)
    b, w, sp, tp = aligned_words(vs.first_pos, vt.first_pos)
    return torch.stack([b, w], 1), vs.input_ids[b, sp], vt.input_ids[b, tp]


@torch.inference_mode()
def masked_word_probs(
    model, tokenizer, words: list[list[str]], index: torch.Tensor, *, max_len: int = 128, batch_size: int = 256
) -> torch.Tensor:
    """(N, V) the model's distribution (temperature 1) at the first piece of each indexed word, that word
    masked (every piece), one copy of the sentence per word."""
    from kdlib.mlm import logits_at

    view = encode_words(tokenizer, words, max_len)
    out = []
    for start in range(0, len(index), batch_size):
        b, w = index[start : start + batch_size, 0], index[start : start + batch_size, 1]
        length = int(view.attention_mask[b].sum(1).max())  # this batch's own padding
        ids, am = view.input_ids[b, :length].clone(), view.attention_mask[b, :length]
        wi = view.word_index[b, :length]
        ids[wi == w[:, None]] = tokenizer.mask_token_id
        rows = torch.arange(len(b))
        logits, _ = logits_at(model, ids, am, rows, view.first_pos[b, w])
        out.append(torch.softmax(logits.float(), -1))
    return torch.cat(out)


def summarise(mass: torch.Tensor, mismatch: torch.Tensor, capitalised: torch.Tensor) -> dict[str, float]:
    """The mode's figures: means over words kept for the cross-teacher KL, and over all words."""
    kept = ~mismatch
    mean = lambda sel: round(float(mass[sel].mean()), 4) if sel.any() else float("nan")
    return {
        "all": mean(kept),
        "lowercase": mean(kept & ~capitalised),
        "capitalised": mean(kept & capitalised),
        "all_with_mismatched": round(float(mass.mean()), 4),
        "mismatched": round(float(mismatch.float().mean()), 4),
    }


def bench_align(
    cache_dir: str | os.PathLike | None = None,
    *,
    steps: int = TEACHER["steps"],
    data_dir=None,
    threads: int = 1,
    teachers: str | os.PathLike | None = None,
) -> dict:
    """{mode: {"all", "lowercase", "capitalised", ...} for each of kdlib.align.VOCAB_CASES, "default": mode, "meta"}.

    `teachers`: a run's teachers/teachers.json, whose cased teacher and two tokenizers are measured instead
    of the benchmark's own (cached) ones. Words cut off by truncation at 128 pieces in either tokenization
    are left out (as in distillation)."""
    torch.set_num_threads(threads)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if teachers is not None:
        (model, cased, uncased, texts, steps), train_s = from_run(teachers), 0.0
    else:
        model, cased, uncased, texts, train_s = prepare(cache, steps=steps)
    words = dev_words(data_dir)
    s_index, s_ids, t_ids = aligned_first_pieces(cased, uncased, words)
    t1 = time.perf_counter()
    prior = masked_word_probs(model, cased, words, s_index)
    counts = token_counts(cased, texts)
    capitalised = torch.tensor([words[b][w][:1].isupper() for b, w in s_index.tolist()])
    result: dict = {}
    n_student = model.get_output_embeddings().weight.shape[0]
    # segmentation mismatch is a property of the two tokenizations (normalised first pieces differ), the
    # same for every mode: take it from the "split" map, which links every pair of equal normalised forms
    mismatch = first_piece_mismatch(s_ids, t_ids, build_vocab_map(uncased, cased, case="split", n_student=n_student))
    for mode in VOCAB_CASES:
        vm = build_vocab_map(uncased, cased, case=mode, student_counts=counts, n_student=n_student)
        mass = oracle_mass(t_ids, s_ids, vm, prior=prior if mode == "prior" else None)
        result[mode] = summarise(mass, mismatch, capitalised)
    result["default"] = DEFAULT_VOCAB_CASE
    result["meta"] = {
        "words": len(s_ids),
        "teacher_steps": steps,
        "teachers": str(teachers) if teachers else "trained by the benchmark",
        "teacher_train_s_this_run": round(train_s, 1),
        "measure_s": round(time.perf_counter() - t1, 1),
        "threads": threads,
    }
    return result


def cli(argv: list[str]) -> int:
    """`python -m kdlib bench --only align [--json] [--cache DIR]`: print the figures."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m kdlib bench --only align")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cache", default=None, help=f"cache folder (default {default_cache_dir()})")
    p.add_argument("--steps", type=int, default=TEACHER["steps"], help="pretraining steps of the cased teacher")
    p.add_argument("--teachers", default=None, help="measure a run's teachers instead (its teachers/teachers.json)")
    args = p.parse_args(argv)
    if args.steps <= 0:
        p.error(f"--steps must be positive, got {args.steps}")
    try:
        result = bench_align(args.cache, steps=args.steps, teachers=args.teachers)
    except (ValueError, FileNotFoundError) as exc:
        print(f"kdlib bench --only align: {exc}", file=sys.stderr)
        return 2
    meta = result.pop("meta")
    print(
        f"align bench: {meta['words']} words, cased teacher {meta['teachers']} ({meta['teacher_steps']} steps; "
        f"trained in this run: {meta['teacher_train_s_this_run']} s), measured in {meta['measure_s']} s on "
        f"{meta['threads']} thread(s)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for mode in VOCAB_CASES:
            r = result[mode]
            print(
                f"{mode:<12} all {r['all']:.3f}  lowercase {r['lowercase']:.3f}  capitalised {r['capitalised']:.3f}"
                f"  (with mismatched words: {r['all_with_mismatched']:.3f}; mismatched {r['mismatched']:.1%})"
            )
        print(f"default: {result['default']}")
    return 0
