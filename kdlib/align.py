"""Cross-tokenizer support: word alignment between tokenizations and vocabulary projection.

Every batch is a list of texts split on whitespace into words; each tokenizer encodes the *words*
(``is_split_into_words=True``), so each view knows which word every sub-token belongs to. Positions
are paired across views at the first sub-token of each word. A teacher whose vocabulary differs from
the student's has its output distribution projected onto the student's vocabulary by normalised
token strings (`build_vocab_map`); the probability mass that has no counterpart is reported.
"""
from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass

import torch

from kdlib.text import normalize_romanian

SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")


def split_words(texts: list[str]) -> list[list[str]]:
    """Whitespace words of each text (the unit shared by every tokenizer)."""
    return [t.split() for t in texts]


@dataclass
class WordView:
    """One tokenizer's encoding of a batch of word lists (padded to the longest row)."""

    input_ids: torch.Tensor       # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64
    word_index: torch.Tensor      # (B, L) word number of each token, -1 for special tokens / padding
    first_pos: torch.Tensor       # (B, W) position of each word's first sub-token, -1 if truncated away
    labels: torch.Tensor | None = None  # (B, L) MLM labels (-100 = not predicted), set after masking

    def rows(self, start: int, stop: int) -> "WordView":
        """Rows start:stop, with the padding columns that became empty trimmed (dynamic padding)."""
        am = self.attention_mask[start:stop]
        length = max(int(am.sum(1).max()) if am.numel() else 1, 1)
        labels = None if self.labels is None else self.labels[start:stop, :length]
        return WordView(self.input_ids[start:stop, :length], am[:, :length],
                        self.word_index[start:stop, :length], self.first_pos[start:stop], labels)


def encode_words(tokenizer, words: list[list[str]], max_len: int) -> WordView:
    """Encode word lists with a fast tokenizer; record word index per token and first sub-token per word."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer; word alignment needs word_ids()")
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_len, padding=True,
                    return_tensors="pt")
    n_rows, length = enc["input_ids"].shape
    n_words = max((len(w) for w in words), default=0)
    word_index = torch.full((n_rows, length), -1, dtype=torch.long)
    first_pos = torch.full((n_rows, max(n_words, 1)), -1, dtype=torch.long)
    for b in range(n_rows):
        for pos, w in enumerate(enc.word_ids(b)):
            if w is None:
                continue
            word_index[b, pos] = w
            if first_pos[b, w] < 0:
                first_pos[b, w] = pos
    return WordView(enc["input_ids"], enc["attention_mask"], word_index, first_pos)


def aligned_words(student_first: torch.Tensor, teacher_first: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, word, student position, teacher position) for every word present in both views.

    Words truncated away in either view are dropped.
    """
    n_w = min(student_first.shape[1], teacher_first.shape[1])
    s, t = student_first[:, :n_w], teacher_first[:, :n_w]
    b, w = torch.nonzero((s >= 0) & (t >= 0), as_tuple=True)
    return b, w, s[b, w], t[b, w]


def same_vocabulary(tok_a, tok_b) -> bool:
    """True when both tokenizers map the same strings to the same ids and lowercase alike."""
    return (tok_a.get_vocab() == tok_b.get_vocab()
            and bool(getattr(tok_a, "do_lower_case", False)) == bool(getattr(tok_b, "do_lower_case", False)))


# ------------------------------------------------------------------------------------ vocab projection
def token_key(token: str) -> tuple[bool, str]:
    """Normalised form of a WordPiece token: (is continuation '##', NFC comma-below lowercase text)."""
    cont = token.startswith("##") and len(token) > 2
    text = token[2:] if cont else token
    return cont, normalize_romanian(unicodedata.normalize("NFC", text)).lower()


@dataclass
class VocabMap:
    """Sparse (V_teacher x V_student) projection: row t spreads teacher token t over student tokens."""

    teacher_ids: torch.Tensor  # (nnz,) int64
    student_ids: torch.Tensor  # (nnz,) int64
    values: torch.Tensor       # (nnz,) float32, each mapped teacher row sums to 1
    n_teacher: int
    n_student: int
    mapped_teacher: torch.Tensor  # (k,) unique teacher ids that have a counterpart

    def to(self, device) -> "VocabMap":
        return VocabMap(self.teacher_ids.to(device), self.student_ids.to(device), self.values.to(device),
                        self.n_teacher, self.n_student, self.mapped_teacher.to(device))

    def sparse(self) -> torch.Tensor:
        """The projection as a torch sparse COO matrix (V_teacher, V_student)."""
        idx = torch.stack([self.teacher_ids, self.student_ids])
        return torch.sparse_coo_tensor(idx, self.values, (self.n_teacher, self.n_student), check_invariants=True).coalesce()

    @property
    def coverage(self) -> float:
        """Share of the teacher vocabulary that has at least one student counterpart."""
        return len(self.mapped_teacher) / self.n_teacher


def build_vocab_map(teacher_tokenizer, student_tokenizer, *, case: str = "split", n_teacher: int | None = None,
                    n_student: int | None = None) -> VocabMap:
    """Map each teacher token to the student tokens with the same normalised string.

    Normalisation: '##' continuation marker kept as a flag (a word-initial piece never maps to a
    continuation piece), NFC, cedilla ş/ţ -> comma-below ș/ț, lowercase. Special tokens map by role
    ([CLS]->[CLS], ...). `case` decides what happens when several student tokens share the form:
    "split" (default) spreads the teacher's mass evenly over all of them (an uncased teacher's "masa"
    goes 1/3 each to a cased student's "masa", "Masa", "MASA"); "exact_first" sends it only to the
    student token spelled exactly like the teacher's when one exists, else splits. Teacher tokens with
    no counterpart are unmapped: `project_distribution` reports their mass. `n_teacher` / `n_student`
    are the models' output sizes when they exceed the tokenizers' lengths (padded vocabularies).
    """
    if case not in ("split", "exact_first"):
        raise ValueError(f"case={case!r}: expected 'split' or 'exact_first'")
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    t_special = {getattr(teacher_tokenizer, r): r for r in SPECIAL_ROLES if getattr(teacher_tokenizer, r, None)}
    s_special = {r: getattr(student_tokenizer, r) for r in SPECIAL_ROLES if getattr(student_tokenizer, r, None)}
    all_special_s = set(getattr(student_tokenizer, "all_special_tokens", []))
    groups: dict[tuple[bool, str], list[int]] = defaultdict(list)
    for tok, sid in s_vocab.items():
        if tok not in all_special_s:
            groups[token_key(tok)].append(sid)
    rows_t, rows_s, vals = [], [], []
    for tok, tid in t_vocab.items():
        if tok in t_special:
            role = t_special[tok]
            targets = [s_vocab[s_special[role]]] if role in s_special else []
        else:
            targets = groups.get(token_key(tok), [])
            if case == "exact_first" and tok in s_vocab and s_vocab[tok] in targets:
                targets = [s_vocab[tok]]
        for sid in targets:
            rows_t.append(tid)
            rows_s.append(sid)
            vals.append(1.0 / len(targets))
    t_ids = torch.tensor(rows_t, dtype=torch.long)
    return VocabMap(t_ids, torch.tensor(rows_s, dtype=torch.long), torch.tensor(vals, dtype=torch.float32),
                    n_teacher or len(teacher_tokenizer), n_student or len(student_tokenizer), torch.unique(t_ids))


def project_distribution(teacher_probs: torch.Tensor, vocab_map: VocabMap
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (N, V_teacher) distributions to (N, V_student); return (renormalised probs, unmapped mass).

    The unmapped mass (probability on teacher tokens with no student counterpart) is returned per row,
    never silently dropped: the caller logs it. Rows whose mass is entirely unmapped come back uniform.
    """
    p = teacher_probs.float()
    if p.shape[-1] != vocab_map.n_teacher:
        raise ValueError(f"teacher_probs has {p.shape[-1]} columns; the vocabulary map expects {vocab_map.n_teacher}")
    out = torch.zeros(p.shape[0], vocab_map.n_student, dtype=p.dtype, device=p.device)
    out.index_add_(1, vocab_map.student_ids, p[:, vocab_map.teacher_ids] * vocab_map.values)
    mapped = out.sum(-1)
    unmapped = (1.0 - mapped).clamp(min=0.0)
    empty = mapped <= 1e-12
    out = torch.where(empty[:, None], torch.full_like(out, 1.0 / vocab_map.n_student),
                      out / mapped.clamp(min=1e-12)[:, None])
    return out, unmapped
