"""Cross-tokenizer support: word alignment, vocabulary projection, and the ensemble target.

Every batch is a list of texts split on whitespace into words; each tokenizer encodes the *words*
(``is_split_into_words=True``), so each view knows which word every sub-token belongs to. Positions
are paired across views at the first sub-token of each word.

A teacher whose vocabulary differs from the student's has its output distribution projected onto the
student's vocabulary by normalised token strings (`build_vocab_map`, `project_distribution`). The
normalisation (lowercase, comma-below) makes one uncased teacher token stand for several cased
student tokens ("de" -> "de", "De", "DE"); `case` decides how its mass is shared among them:

* ``"prior"`` (default): in proportion to a prior over the variants. At training time the prior is
  the cased co-teacher's own probabilities (temperature 1) on those variants at the same word, when
  the ensemble has a teacher that shares the student's vocabulary; otherwise, and wherever that
  teacher gives the variants no mass, the variants' counts in the distillation corpus (`token_counts`,
  add-one smoothed).
* ``"count"``: always the corpus-count prior (a fixed map).
* ``"split"``: evenly; ``"exact_first"``: all to the identically spelled variant when there is one.

Teacher tokens with no counterpart keep their mass unmapped: the projected row then carries only the
mapped mass ``m`` (reported per row). `EnsembleTarget` averages the teachers' rows weighted by
``weight * m``, so an empty row (m = 0) adds nothing and a half-mapped row counts half; nothing is
renormalised into a full-weight target, and no row is ever made uniform.

Where the two tokenizers cut a word into first pieces that do not correspond (``"Bucureștiul"`` ->
``"București" "##ul"`` vs ``"bucu" "##reș..."``), the projected target has no mass on the student's
true first piece; `first_piece_mismatch` finds these words so the loop can leave them out of the
cross-teacher KL. `oracle_mass` is the diagnostic behind the projection choice: a teacher that is
certain of its own correct first piece, projected, and the mass that lands on the student's correct
first piece (1.0 = a perfect projection); `kdlib.bench.align` measures it on the RRT dev words.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from kdlib.data.text import normalize_romanian

SPECIAL_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")


def split_words(texts: list[str]) -> list[list[str]]:
    """Whitespace words of each text (the unit shared by every tokenizer)."""
    return [t.split() for t in texts]


@dataclass
class WordView:
    """One tokenizer's encoding of a batch of word lists (padded to the longest row)."""

    input_ids: torch.Tensor  # (B, L) int64
    attention_mask: torch.Tensor  # (B, L) int64
    word_index: torch.Tensor  # (B, L) word number of each token, -1 for special tokens / padding
    first_pos: torch.Tensor  # (B, W) position of each word's first sub-token, -1 if truncated away
    labels: torch.Tensor | None = None  # (B, L) MLM labels (-100 = not predicted), set after masking

    def rows(self, start: int, stop: int) -> WordView:
        """Rows start:stop, with the padding columns that became empty trimmed (dynamic padding)."""
        am = self.attention_mask[start:stop]
        length = max(int(am.sum(1).max()) if am.numel() else 1, 1)
        labels = None if self.labels is None else self.labels[start:stop, :length]
        return WordView(
            self.input_ids[start:stop, :length],
            am[:, :length],
            self.word_index[start:stop, :length],
            self.first_pos[start:stop],
            labels,
        )


def encode_words(tokenizer, words: list[list[str]], max_len: int) -> WordView:
    """Encode word lists with a fast tokenizer; record word index per token and first sub-token per word."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer; word alignment needs word_ids()")
    enc = tokenizer(
        words, is_split_into_words=True, truncation=True, max_length=max_len, padding=True, return_tensors="pt"
    )
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


def aligned_words(
    student_first: torch.Tensor, teacher_first: torch.Tensor
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
    return tok_a.get_vocab() == tok_b.get_vocab() and bool(getattr(tok_a, "do_lower_case", False)) == bool(
        getattr(tok_b, "do_lower_case", False)
    )


# ------------------------------------------------------------------------------------ vocab projection
VOCAB_CASES = ("prior", "count", "split", "exact_first")
DEFAULT_VOCAB_CASE = "prior"


def token_key(token: str) -> tuple[bool, str]:
    """Normalised form of a WordPiece token: (is continuation '##', NFC comma-below lowercase text)."""
    cont = token.startswith("##") and len(token) > 2
    text = token[2:] if cont else token
    return cont, normalize_romanian(unicodedata.normalize("NFC", text)).lower()


def token_counts(tokenizer, texts: Iterable[str], *, chunk: int = 1000) -> torch.Tensor:
    """How often each token id of `tokenizer` occurs in `texts` (no special tokens), as an int64 tensor.

    For a word-initial (non-'##') piece this is its frequency as the first piece of a pre-tokenized
    word, the corpus prior of the case-aware projection (and the count behind MLM smoothing).
    """
    counts = torch.zeros(len(tokenizer), dtype=torch.long)
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
            counts.index_add_(0, torch.tensor(ids, dtype=torch.long), torch.ones(len(ids), dtype=torch.long))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    return counts


@dataclass
class VocabMap:
    """Sparse (V_teacher x V_student) projection: row t spreads teacher token t over student tokens.

    `ambiguous` marks the entries of teacher tokens with several student counterparts (case
    variants): with case="prior", `project_distribution` re-weights those entries by a per-row prior.
    """

    teacher_ids: torch.Tensor  # (nnz,) int64
    student_ids: torch.Tensor  # (nnz,) int64
    values: torch.Tensor  # (nnz,) float32, each mapped teacher row sums to 1
    n_teacher: int
    n_student: int
    mapped_teacher: torch.Tensor  # (k,) unique teacher ids that have a counterpart
    case: str = "split"
    ambiguous: torch.Tensor | None = None  # (nnz,) bool
    prior_power: float = 1.0  # case="prior": variants weighted by prior**power (>1 trusts the prior's ranking more)

    def to(self, device) -> VocabMap:
        amb = None if self.ambiguous is None else self.ambiguous.to(device)
        return VocabMap(
            self.teacher_ids.to(device),
            self.student_ids.to(device),
            self.values.to(device),
            self.n_teacher,
            self.n_student,
            self.mapped_teacher.to(device),
            self.case,
            amb,
            self.prior_power,
        )

    def sparse(self) -> torch.Tensor:
        """The projection as a torch sparse COO matrix (V_teacher, V_student)."""
        idx = torch.stack([self.teacher_ids, self.student_ids])
        return torch.sparse_coo_tensor(
            idx, self.values, (self.n_teacher, self.n_student), check_invariants=True
        ).coalesce()

    @property
    def coverage(self) -> float:
        """Share of the teacher vocabulary that has at least one student counterpart."""
        return len(self.mapped_teacher) / self.n_teacher

    def maps_to(self, teacher_ids: torch.Tensor, student_ids: torch.Tensor) -> torch.Tensor:
        """Elementwise: does teacher token teacher_ids[i] have student token student_ids[i] as a counterpart?"""
        pairs = self.teacher_ids * self.n_student + self.student_ids
        return torch.isin(teacher_ids.to(pairs.device) * self.n_student + student_ids.to(pairs.device), pairs)


def _case_groups(student_tokenizer) -> dict[tuple[bool, str], list[int]]:
    all_special_s = set(getattr(student_tokenizer, "all_special_tokens", []))
    groups: dict[tuple[bool, str], list[int]] = defaultdict(list)
    for tok, sid in student_tokenizer.get_vocab().items():
        if tok not in all_special_s:
            groups[token_key(tok)].append(sid)
    return groups


def _shares(targets: list[int], case: str, counts: torch.Tensor | None) -> list[float]:
    """How one teacher token's mass is split over its student `targets` by the static part of the map."""
    if case in ("prior", "count") and counts is not None and len(targets) > 1:
        c = [float(counts[s]) + 1.0 for s in targets]  # add-one: an unseen variant keeps a little mass
        return [x / sum(c) for x in c]
    return [1.0 / len(targets)] * len(targets)


def build_vocab_map(
    teacher_tokenizer,
    student_tokenizer,
    *,
    case: str = "split",
    student_counts: torch.Tensor | None = None,
    n_teacher: int | None = None,
    n_student: int | None = None,
    prior_power: float = 1.0,
) -> VocabMap:
    """Map each teacher token to the student tokens with the same normalised string.

    Normalisation: '##' continuation marker kept as a flag (a word-initial piece never maps to a
    continuation piece), NFC, cedilla ş/ţ -> comma-below ș/ț, lowercase. Special tokens map by role
    ([CLS]->[CLS], ...). `case` (see the module docstring) decides how the mass of a teacher token is
    shared when several student tokens have its form: "prior" and "count" in proportion to
    `student_counts` (`token_counts` of the student tokenizer on the distillation corpus; required for
    "count", and "prior" without them falls back to even shares), "prior" further re-weighted per row
    by `project_distribution(prior=...)`; "split"
    evenly, "exact_first" to the identically spelled one when it exists. Teacher tokens with no
    counterpart are unmapped. `n_teacher` / `n_student` are the models' output sizes when they exceed
    the tokenizers' lengths (padded vocabularies). `prior_power` (case="prior"): the per-row prior is
    raised to this power within each group of variants before sharing (1 = the prior as it is).
    """
    if case not in VOCAB_CASES:
        raise ValueError(f"vocab_case={case!r}: expected one of {VOCAB_CASES}")
    if not prior_power > 0:
        raise ValueError(f"case_prior_power={prior_power!r}: expected a positive number")
    if case == "count" and student_counts is None:
        raise ValueError(
            "vocab_case='count' needs student_counts (kdlib.engine.align.token_counts of the student "
            "tokenizer on the distillation corpus)"
        )
    t_vocab, s_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    t_special = {getattr(teacher_tokenizer, r): r for r in SPECIAL_ROLES if getattr(teacher_tokenizer, r, None)}
    s_special = {r: getattr(student_tokenizer, r) for r in SPECIAL_ROLES if getattr(student_tokenizer, r, None)}
    groups = _case_groups(student_tokenizer)
    rows_t, rows_s, vals, amb = [], [], [], []
    for tok, tid in t_vocab.items():
        if tok in t_special:
            role = t_special[tok]
            targets = [s_vocab[s_special[role]]] if role in s_special else []
        else:
            targets = groups.get(token_key(tok), [])
            if case == "exact_first" and tok in s_vocab and s_vocab[tok] in targets:
                targets = [s_vocab[tok]]
        if not targets:
            continue
        rows_t += [tid] * len(targets)
        rows_s += targets
        vals += _shares(targets, case, student_counts)
        amb += [len(targets) > 1] * len(targets)
    t_ids = torch.tensor(rows_t, dtype=torch.long)
    return VocabMap(
        t_ids,
        torch.tensor(rows_s, dtype=torch.long),
        torch.tensor(vals, dtype=torch.float32),
        n_teacher or len(teacher_tokenizer),
        n_student or len(student_tokenizer),
        torch.unique(t_ids),
        case,
        torch.tensor(amb, dtype=torch.bool),
        float(prior_power),
    )


def _entry_values(vocab_map: VocabMap, prior: torch.Tensor | None, n_rows: int) -> torch.Tensor:
    """(N, nnz) or (1, nnz) weight of every map entry per row: the static values, or for case="prior" the
    prior's share of each variant among its teacher token's variants (static values where the prior is 0)."""
    vals = vocab_map.values[None, :]
    if prior is None or vocab_map.case != "prior" or vocab_map.ambiguous is None or not vocab_map.ambiguous.any():
        return vals
    if prior.shape != (n_rows, vocab_map.n_student):
        raise ValueError(f"prior has shape {tuple(prior.shape)}; expected ({n_rows}, {vocab_map.n_student})")
    idx = torch.nonzero(vocab_map.ambiguous, as_tuple=True)[0]
    groups, group_of = torch.unique(vocab_map.teacher_ids[idx], return_inverse=True)  # one group per teacher token
    q = prior.float()[:, vocab_map.student_ids[idx]]  # (N, n_ambiguous)
    if vocab_map.prior_power != 1.0:  # relative to the group's top variant first, so no variant underflows
        top = torch.zeros(n_rows, len(groups), dtype=q.dtype, device=q.device)
        top = top.scatter_reduce(1, group_of.expand(n_rows, -1), q, reduce="amax")
        q = (q / top[:, group_of].clamp(min=1e-30)) ** vocab_map.prior_power
    denom = torch.zeros(n_rows, len(groups), dtype=q.dtype, device=q.device).index_add_(1, group_of, q)
    d = denom[:, group_of]
    share = torch.where(d > 1e-12, q / d.clamp(min=1e-12), vocab_map.values[idx][None, :])
    out = vals.expand(n_rows, -1).clone()
    out[:, idx] = share
    return out


def project_distribution(
    teacher_probs: torch.Tensor, vocab_map: VocabMap, *, prior: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project (N, V_teacher) distributions to (N, V_student); return (probs, unmapped mass per row).

    `probs` is the projection renormalised over its mapped mass where that mass is positive, and all
    zeros for a row with nothing mapped (never uniform); its weight in an ensemble is the mapped mass
    ``1 - unmapped`` (`EnsembleTarget`). `prior` (N, V_student), for case="prior" maps: the co-teacher's
    probabilities at the same words, which share each uncased token's mass among its cased variants.
    """
    p = teacher_probs.float()
    if p.shape[-1] != vocab_map.n_teacher:
        raise ValueError(f"teacher_probs has {p.shape[-1]} columns; the vocabulary map expects {vocab_map.n_teacher}")
    vals = _entry_values(vocab_map, prior, p.shape[0])
    out = torch.zeros(p.shape[0], vocab_map.n_student, dtype=p.dtype, device=p.device)
    out.index_add_(1, vocab_map.student_ids, p[:, vocab_map.teacher_ids] * vals)
    mapped = out.sum(-1)
    unmapped = (1.0 - mapped).clamp(min=0.0)
    out = out / mapped.clamp(min=1e-12)[:, None] * (mapped > 1e-12)[:, None]
    return out, unmapped


def first_piece_mismatch(student_ids: torch.Tensor, teacher_ids: torch.Tensor, vocab_map: VocabMap) -> torch.Tensor:
    """True where a word's first pieces in the two tokenizations do not correspond (the teacher's first
    piece has not the student's among its counterparts): the projected target cannot name the
    student's piece there. Ids are the *unmasked* first-piece ids of the same words."""
    return ~vocab_map.maps_to(teacher_ids, student_ids)


def oracle_mass(
    teacher_ids: torch.Tensor,
    student_ids: torch.Tensor,
    vocab_map: VocabMap,
    *,
    prior: torch.Tensor | None = None,
    chunk: int = 512,
) -> torch.Tensor:
    """Per word: a one-hot teacher prediction on its own correct first piece `teacher_ids[i]`, projected
    (with `prior` rows for case="prior"), and the probability that lands on the student's correct first
    piece `student_ids[i]`. 1.0 everywhere = a lossless projection; 0 on a first-piece mismatch."""
    out = []
    for i in range(0, teacher_ids.shape[0], chunk):  # (chunk, nnz) intermediates: bounded memory
        t, s = teacher_ids[i : i + chunk], student_ids[i : i + chunk]
        onehot = torch.zeros(t.shape[0], vocab_map.n_teacher, device=vocab_map.values.device)
        onehot[torch.arange(t.shape[0]), t.to(onehot.device)] = 1.0
        probs, _ = project_distribution(onehot, vocab_map, prior=None if prior is None else prior[i : i + chunk])
        out.append(probs[torch.arange(t.shape[0]), s.to(probs.device)])
    return torch.cat(out) if out else torch.zeros(0)


# ----------------------------------------------------------------------------------- ensemble target
class EnsembleTarget:
    """The weighted mean of the teachers' distributions over a student's KL rows (strategy "average").

    Each teacher adds ``weight * mass * probs`` to its rows and ``weight * mass`` to their weight,
    where `mass` is 1 for a teacher with the student's vocabulary and the mapped mass of a projected
    row otherwise: an empty projected row adds nothing, a partly mapped one counts by what it maps.
    """

    def __init__(self, n_rows: int, n_vocab: int, device=None):
        self.acc = torch.zeros(n_rows, n_vocab, dtype=torch.float32, device=device)
        self.wsum = torch.zeros(n_rows, dtype=torch.float32, device=device)

    def add(
        self, probs: torch.Tensor, weight: float, rows: torch.Tensor | None = None, mass: torch.Tensor | None = None
    ) -> None:
        """Add a teacher's (n, V) rows; `rows` (n,) index the KL rows (None = all, in order)."""
        w = torch.full((probs.shape[0],), float(weight), dtype=torch.float32, device=probs.device)
        if mass is not None:
            w = w * mass.float()
        if rows is None:
            self.acc += w[:, None] * probs.float()
            self.wsum += w
        else:
            self.acc.index_add_(0, rows, w[:, None] * probs.float())
            self.wsum.index_add_(0, rows, w)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keep, target): the rows that received any weight, and their averaged distributions."""
        keep = self.wsum > 0
        return keep, self.acc[keep] / self.wsum[keep, None]


# ------------------------------------------------------------------------------ teacher agreement
@torch.inference_mode()
def word_hidden_states(
    model, tokenizer, words: list[list[str]], *, max_len: int = 128, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """(first_pos (B, W) of every word, last hidden state at each word's first piece (B, W, H), 0 where absent)."""
    from kdlib.engine.mlm import logits_at

    view = encode_words(tokenizer, words, max_len)
    hidden = torch.zeros(*view.first_pos.shape, model.config.hidden_size)
    for i in range(0, len(words), batch_size):
        sl = slice(i, i + batch_size)
        length = int(view.attention_mask[sl].sum(1).max())
        empty = torch.zeros(0, dtype=torch.long)
        _, h = logits_at(
            model, view.input_ids[sl, :length], view.attention_mask[sl, :length], empty, empty, output_hidden=True
        )
        fp = view.first_pos[sl]
        hidden[sl] = h.float().gather(1, fp.clamp(min=0)[..., None].expand(-1, -1, h.shape[-1]))
    return view.first_pos, hidden


def _lstsq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least squares x @ coef ~ y in float64 with the SVD driver (gelsd): torch's default CPU driver (gelsy) gives
    answers that differ from call to call in the sixth digit on identical input, so two equal runs would differ."""
    return torch.linalg.lstsq(x.double(), y.double(), driver="gelsd").solution.float()


def hidden_agreement(model_a, tok_a, model_b, tok_b, words: list[list[str]], *, max_len: int = 128) -> dict:
    """How alike two models' last hidden states are at the first pieces of the same words.

    "cosine": mean cosine of the raw vectors (meaningful only when both live in one coordinate
    system, e.g. two models grown from the same initialisation); "cosine_linear": mean cosine after
    the least-squares linear map a -> b, fitted on one half of the words and measured on the other
    (cross-fitted, both ways averaged): the agreement a learned linear map can reach. Needs equal
    hidden sizes for "cosine" (NaN otherwise).
    """
    fa, ha = word_hidden_states(model_a, tok_a, words, max_len=max_len)
    fb, hb = word_hidden_states(model_b, tok_b, words, max_len=max_len)
    b, w, _, _ = aligned_words(fa, fb)
    xa, xb = ha[b, w], hb[b, w]
    cos = lambda x, y: float(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean())
    raw = cos(xa, xb) if xa.shape[-1] == xb.shape[-1] else float("nan")
    half = torch.arange(len(b)) % 2 == 0
    lin = []
    for fit, test in ((half, ~half), (~half, half)):
        ones = torch.ones(int(fit.sum()), 1)
        coef = _lstsq(torch.cat([xa[fit], ones], 1), xb[fit])
        lin.append(cos(torch.cat([xa[test], torch.ones(int(test.sum()), 1)], 1) @ coef, xb[test]))
    return {"words": len(b), "cosine": raw, "cosine_linear": sum(lin) / 2}
