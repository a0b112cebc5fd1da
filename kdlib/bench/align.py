"""The projection benchmark (`python -m kdlib bench --only align --json`): how much of an uncased teacher's
certainty survives the projection onto a cased student's vocabulary, per `kdlib.engine.align` projection mode.

Setting, like the cpu profile: the train-split distillation corpus (`kdlib.data.corpus.build_corpus`), a
cased and an uncased 8k WordPiece tokenizer trained on it (`kdlib.engine.teachers.train_tokenizer`; the cased
one is the cased teacher's own), and a small cased teacher pretrained on it (`pretrain_teacher`, cached:
trained once, then reused). For every word of the RRT dev set (UD Romanian-RRT validation tokens):

* the uncased teacher is given a one-hot prediction on its own correct first piece of the word, and
  that row is projected onto the cased vocabulary (`kdlib.engine.align.oracle_mass`);
* the figure is the mass that lands on the cased tokenizer's correct first piece (1 = lossless);
* for mode "prior" the case variants are weighted by the cased teacher's distribution at the word,
  the word masked (all its pieces; one word per copy of the sentence); for "count" by the variants'
  corpus counts; "split" and "exact_first" need no prior.

Words whose two first pieces do not correspond are left out of the cross-teacher KL by default
(`kdlib.engine.align.first_piece_mismatch`), so the headline figures are over the other words; each mode
also reports "all_with_mismatched" (those words counted as 0) and the mismatched share. "capitalised":
the word's first character is an upper-case letter ("capitalised_initial": the sentence's first word,
"capitalised_inner": the others); "lowercase": every other word.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from kdlib.engine.align import (
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

    from kdlib.data.corpus import build_corpus
    from kdlib.engine.teachers import (
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


def from_run(teachers_json: str | os.PathLike, texts: list[str] | None = None, device: str = "cpu"):
    """(cased teacher, its tokenizer, the uncased teacher's tokenizer, corpus texts, the cased teacher's
    pretraining steps) from a run's teachers/teachers.json (notebook 01): its first cased and uncased teacher.
    `texts`: the run's distillation corpus (default: the train-split corpus, rebuilt); `device`: the cased
    teacher's (a real BERT-base reads 17k sentence copies far faster on a GPU)."""
    from transformers import AutoTokenizer

    from kdlib.data.corpus import build_corpus
    from kdlib.engine.teachers import load_teacher

    path = Path(teachers_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such teachers file (a run's teachers/teachers.json)")
    entries = json.loads(path.read_text(encoding="utf-8"))
    cased = next((e for e in entries.values() if not e.get("lowercase")), None)
    uncased = next((e for e in entries.values() if e.get("lowercase")), None)
    if cased is None or uncased is None:
        raise ValueError(f"{path}: expected one cased and one uncased teacher, got {sorted(entries)}")
    model, tok = load_teacher(cased["path"], device=device)
    steps = cased.get("metrics", {}).get("config", {}).get("steps")
    if texts is None:
        texts = build_corpus("shuffled", seed=0)["text"]
    return model, tok, AutoTokenizer.from_pretrained(uncased["path"]), texts, steps


def dev_words(data_dir=None, max_words: int | None = None) -> list[list[str]]:
    """The word lists of the RRT dev split (UD Romanian-RRT validation); with `max_words`, its first
    sentences up to that many words (a cheaper measurement on the same words every time)."""
    from kdlib.data.load import load_task

    sentences, total = [], 0
    for tokens in load_task("upos", data_dir)["validation"]["tokens"]:
        if max_words is not None and total + len(tokens) > max_words:
            break
        sentences.append(list(tokens))
        total += len(tokens)
    return sentences


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
    from kdlib.engine.mlm import logits_at

    view = encode_words(tokenizer, words, max_len)
    dev = next(model.parameters()).device
    out = []
    for start in range(0, len(index), batch_size):
        b, w = index[start : start + batch_size, 0], index[start : start + batch_size, 1]
        length = int(view.attention_mask[b].sum(1).max())  # this batch's own padding
        ids, am = view.input_ids[b, :length].clone(), view.attention_mask[b, :length]
        wi = view.word_index[b, :length]
        ids[wi == w[:, None]] = tokenizer.mask_token_id
        rows = torch.arange(len(b), device=dev)
        logits, _ = logits_at(model, ids.to(dev), am.to(dev), rows, view.first_pos[b, w].to(dev))
        out.append(torch.softmax(logits.float(), -1).cpu())
    return torch.cat(out)


def summarise(
    mass: torch.Tensor, mismatch: torch.Tensor, capitalised: torch.Tensor, initial: torch.Tensor
) -> dict[str, float]:
    """The mode's figures: means over words kept for the cross-teacher KL, and over all words.

    Capitalised words are also split by position: a sentence's first word (`initial`), whose capital the
    co-teacher can read from the position, and the others (mostly names), whose capital it must guess
    from the context of a masked word."""
    kept = ~mismatch
    mean = lambda sel: round(float(mass[sel].mean()), 4) if sel.any() else float("nan")
    return {
        "all": mean(kept),
        "lowercase": mean(kept & ~capitalised),
        "capitalised": mean(kept & capitalised),
        "capitalised_initial": mean(kept & capitalised & initial),
        "capitalised_inner": mean(kept & capitalised & ~initial),
        "all_with_mismatched": round(float(mass.mean()), 4),
        "mismatched": round(float(mismatch.float().mean()), 4),
    }


def measure_projection(model, cased, uncased, texts: list[str], words: list[list[str]]) -> dict:
    """{mode: summarise(...)} for every projection mode on `words`, the cased `model` giving the prior."""
    s_index, s_ids, t_ids = aligned_first_pieces(cased, uncased, words)
    prior = masked_word_probs(model, cased, words, s_index)
    counts = token_counts(cased, texts)
    capitalised = torch.tensor([words[b][w][:1].isupper() for b, w in s_index.tolist()])
    initial = s_index[:, 1] == 0
    n_student = model.get_output_embeddings().weight.shape[0]
    # segmentation mismatch is a property of the two tokenizations (normalised first pieces differ), the
    # same for every mode: take it from the "split" map, which links every pair of equal normalised forms
    mismatch = first_piece_mismatch(s_ids, t_ids, build_vocab_map(uncased, cased, case="split", n_student=n_student))
    result: dict = {}
    for mode in VOCAB_CASES:
        vm = build_vocab_map(uncased, cased, case=mode, student_counts=counts, n_student=n_student)
        mass = oracle_mass(t_ids, s_ids, vm, prior=prior if mode == "prior" else None)
        result[mode] = summarise(mass, mismatch, capitalised, initial)
    result["default"] = DEFAULT_VOCAB_CASE
    result["meta"] = {
        "words": len(s_ids),
        "capitalised_words": int(capitalised.sum()),
        "capitalised_initial_words": int((capitalised & initial).sum()),
    }
    return result


def bench_align(
    cache_dir: str | os.PathLike | None = None,
    *,
    steps: int = TEACHER["steps"],
    data_dir=None,
    threads: int = 1,
    teachers: str | os.PathLike | None = None,
    texts: list[str] | None = None,
    max_words: int | None = None,
    device: str = "cpu",
) -> dict:
    """{mode: {"all", "lowercase", "capitalised", ...} for each of align.VOCAB_CASES, "default": mode, "meta"}.

    `teachers`: a run's teachers/teachers.json, whose cased teacher and two tokenizers are measured instead
    of the benchmark's own (cached) ones (`texts`: that run's corpus). Words cut off by truncation at 128
    pieces in either tokenization are left out (as in distillation). `max_words`: see `dev_words` (the
    prior is a words x vocabulary matrix: 17k dev words x a 50k vocabulary is 3.4 GB). `device`: the run's
    cased teacher's."""
    torch.set_num_threads(threads)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if teachers is not None:
        (model, cased, uncased, texts, steps), train_s = from_run(teachers, texts, device), 0.0
    else:
        model, cased, uncased, texts, train_s = prepare(cache, steps=steps)
    t1 = time.perf_counter()
    result = measure_projection(model, cased, uncased, texts, dev_words(data_dir, max_words))
    result["meta"].update(
        teacher_steps=steps,
        teachers=str(teachers) if teachers else "trained by the benchmark",
        teacher_train_s_this_run=round(train_s, 1),
        measure_s=round(time.perf_counter() - t1, 1),
        threads=threads,
    )
    return result


def measure_run(run: str | os.PathLike, texts: list[str], *, max_words: int | None, device: str = "cpu") -> dict:
    """The projection measure of a run's own teachers (<run>/teachers/teachers.json) on its corpus `texts`,
    written to <run>/distill/projection.json; {"skipped": why} when there is nothing to measure."""
    from kdlib.device import pick_device
    from kdlib.io import write_json_atomic

    if max_words == 0:
        return {"skipped": "The projection measure is switched off (`projection_words = 0`)."}
    run = Path(run)
    entries = json.loads((run / "teachers" / "teachers.json").read_text(encoding="utf-8"))
    if len({bool(e.get("lowercase")) for e in entries.values()}) < 2:
        return {"skipped": "This run's teachers are all cased or all uncased: there is no case projection to measure."}
    result = bench_align(
        teachers=run / "teachers" / "teachers.json",
        texts=texts,
        max_words=max_words,
        device=str(pick_device(device)),
        threads=torch.get_num_threads(),
    )
    write_json_atomic(run / "distill" / "projection.json", result)
    return result


COLUMNS = {  # summarise() key -> the table's column
    "all": "all words",
    "lowercase": "lowercase",
    "capitalised": "capitalised",
    "capitalised_initial": "capitalised, first word",
    "capitalised_inner": "capitalised, inside",
    "mismatched": "cut differently",
}


def projection_table(result: dict):
    """The figures as a DataFrame: one row per projection mode (the default marked), in % of the mass (the
    last column: % of the words)."""
    import pandas as pd

    rows = {
        (f"{mode} (default)" if mode == result["default"] else mode): {
            c: round(100 * result[mode][k], 1) for k, c in COLUMNS.items()
        }
        for mode in VOCAB_CASES
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def projection_sentence(result: dict) -> str:
    """Two or three sentences that read the table, every number from `result`."""
    d, meta = result[result["default"]], result["meta"]
    count, exact = result["count"], result["exact_first"]
    better = "more" if d["capitalised"] > count["capitalised"] else "no more"
    return (
        f"Over {meta['words']:,} RRT dev words ({meta['capitalised_words']:,} capitalised, "
        f"{meta['capitalised_initial_words']:,} of them a sentence's first word), the default `{result['default']}` "
        f"projection puts {d['all']:.1%} of a certain uncased teacher's mass on the student's correct first piece: "
        f"{d['lowercase']:.1%} on lowercase words, {d['capitalised_initial']:.1%} on capitalised words that open a "
        + (
            f"sentence, where the position tells the co-teacher a capital is due, but {d['capitalised_inner']:.1%} on "
            "capitalised words inside a sentence, whose capital only the context of the masked word can tell. "
            if d["capitalised_initial"] > d["capitalised_inner"] + 0.05
            else f"sentence and {d['capitalised_inner']:.1%} on those inside one: this co-teacher has not yet learned "
            "that a sentence opens with a capital. "
        )
        + f"On capitalised words the co-teacher's prior does {better} than the corpus counts "
        f"({d['capitalised']:.1%} against {count['capitalised']:.1%}); `exact_first` gets lowercase words right "
        f"({exact['lowercase']:.1%}) and capitalised ones wrong ({exact['capitalised']:.1%}). The two tokenizers cut "
        f"{d['mismatched']:.1%} of the words into first pieces that do not correspond; those get no cross-teacher KL."
    )


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
                f" (sentence-initial {r['capitalised_initial']:.3f}, inner {r['capitalised_inner']:.3f})"
                f"  (with mismatched words: {r['all_with_mismatched']:.3f}; mismatched {r['mismatched']:.1%})"
            )
        print(f"default: {result['default']}")
    return 0
