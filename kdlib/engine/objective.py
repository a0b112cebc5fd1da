"""The distillation objective on one batch: where each loss term is computed, teacher outputs, student losses.

Per student: L = alpha_ce * T^2 * KL + alpha_mlm * MLM + alpha_cos * (1 - cos), combined over teachers by
`strategy` ("average": one KL against the weighted average of the teachers' distributions, cosine
weights normalised; "sum": a KL and a cosine term per teacher, weighted as given).

* `student_plan` says, for one student and one batch (a `StepPlan`), at which (row, position) pairs its
  vocabulary logits are needed (the masked positions by default) and, per teacher with another vocabulary
  (a `CrossPlan`), which teacher positions (first sub-tokens of the same words) match them;
* `teacher_outputs` runs each teacher once per batch (logits at those positions only, kdlib.engine.mlm);
  every student that learns from it reuses them;
* `student_losses` computes the components; each is normalised by counts over the GLOBAL micro-batch
  (`StepCounts`, the plan of the global batch's counts under DDP), so DDP's averaged gradient equals the
  single-process one. Each teacher's part (`TeacherTerms`: its KL target and its cos/, unmapped/ and
  mismatch/ components) comes from `same_vocab_terms` (the plain DistilBERT case, kdlib.engine.reference)
  or `cross_vocab_terms`.

A teacher with another vocabulary (kdlib.engine.align): its rows are projected onto the student's vocabulary,
case variants shared by the same-vocabulary co-teacher's probabilities at the same words
(vocab_case="prior"), and weighted by their mapped mass in the average (an empty row adds nothing;
under "sum" each row's KL is weighted by it); words whose first pieces do not correspond in the two
tokenizations get no KL from it (cross_mismatch="skip"); its cosine term goes through the student's
learned linear map to that teacher's hidden space (cross_cosine="linear"), the raw hidden states
("raw") or is dropped ("off"). A same-vocabulary teacher keeps the plain cosine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kdlib.device import AmpSettings, autocast
from kdlib.engine.align import (
    EnsembleTarget,
    VocabMap,
    WordView,
    aligned_words,
    first_piece_mismatch,
    project_distribution,
)
from kdlib.engine.config import DistillConfig
from kdlib.engine.losses import cosine_loss, kd_kl_loss, mlm_loss, soft_probs
from kdlib.engine.mlm import RowLogits, logits_at
from kdlib.engine.models import Student, Teacher

TeacherOutput = tuple[RowLogits, "torch.Tensor | None"]


# --------------------------------------------------------------------------------------------- plans
@dataclass
class TeacherCounts:
    """How many rows one teacher's terms are averaged over (loss normalisers)."""

    n_kl: int  # KL rows it gives a target for
    n_cos: int  # rows of its cosine term
    n_mismatch: int = 0  # other vocabulary: KL words whose first pieces differ between the tokenizations
    n_candidates: int = 0  # other vocabulary: KL words before mismatches are skipped


@dataclass
class StepCounts:
    """The loss normalisers of one student on one micro-batch (counted over the GLOBAL micro-batch under DDP)."""

    n_mlm: int  # labelled (masked) tokens
    n_kl: int  # KL rows that some teacher gives a target for
    n_tokens: int  # non-pad tokens
    teachers: dict[str, TeacherCounts] = field(default_factory=dict)


@dataclass
class CrossPlan:
    """Where a teacher with another vocabulary meets the student: word-aligned first sub-tokens.

    KL words (those of `rows`): batch row `kl_b`, word `kl_w`, position `kl_tp` in the teacher's view.
    Cosine words (every aligned word): batch row `cos_b`, student position `cos_sp`, teacher position `cos_tp`.
    """

    rows: torch.Tensor  # (n,) index into the student's KL rows (StepPlan.kl_b / kl_p)
    kl_b: torch.Tensor
    kl_w: torch.Tensor
    kl_tp: torch.Tensor
    cos_b: torch.Tensor
    cos_sp: torch.Tensor
    cos_tp: torch.Tensor
    counts: TeacherCounts


@dataclass
class StepPlan:
    """Where each loss term of one student is computed in this (rank's slice of the) batch, and its counts.

    The student's logits are computed at (kl_b[i], kl_p[i]) only (the KL rows; the MLM loss uses the labelled
    ones among them); the cosine terms of same-vocabulary teachers at every non-pad (cos_b, cos_p).
    """

    kl_b: torch.Tensor
    kl_p: torch.Tensor
    cos_b: torch.Tensor
    cos_p: torch.Tensor
    cross: dict[str, CrossPlan]  # teachers with another vocabulary only
    counts: StepCounts


def logit_positions(view: WordView, kl_on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of `view` where vocabulary logits are needed: the masked (labelled) positions for
    kl_on="masked", every non-pad position for "all" (a superset of the masked ones)."""
    needed = (view.labels != -100) if kl_on == "masked" else view.attention_mask.bool()
    return torch.nonzero(needed, as_tuple=True)


def _true_ids(view: WordView) -> torch.Tensor:
    """The unmasked token ids of a view: the MLM labels where a token was masked or replaced."""
    return torch.where(view.labels != -100, view.labels, view.input_ids)


def cross_plan(
    sv: WordView,
    tv: WordView,
    vocab_map: VocabMap,
    masked_word: torch.Tensor,
    row_of: torch.Tensor,
    kl_on: str,
    mismatch_policy: str,
) -> CrossPlan:
    """Word-aligned positions of student view `sv` and teacher view `tv`; `row_of` (B, L) is each student
    position's KL row (-1: none). With mismatch_policy="skip", words whose first pieces do not correspond
    (kdlib.engine.align.first_piece_mismatch) get no KL; n_mismatch / n_candidates count them either way."""
    b, w, sp, tp = aligned_words(sv.first_pos, tv.first_pos)
    sel = masked_word[b, w] if kl_on == "masked" else torch.ones_like(b, dtype=torch.bool)
    mismatch = first_piece_mismatch(_true_ids(sv)[b, sp], _true_ids(tv)[b, tp], vocab_map).cpu() & sel
    n_candidates = int(sel.sum())
    if mismatch_policy == "skip":
        sel = sel & ~mismatch
    rows = row_of[b[sel], sp[sel]]
    counts = TeacherCounts(int(rows.shape[0]), int(b.shape[0]), int(mismatch.sum()), n_candidates)
    return CrossPlan(rows, b[sel], w[sel], tp[sel], b, sp, tp, counts)


def student_plan(
    student: Student,
    teachers: dict[str, Teacher],
    views: dict[str, WordView],
    masked_word: torch.Tensor,
    kl_on: str,
    mismatch_policy: str = "skip",
) -> StepPlan:
    """The `StepPlan` of `student` on this batch: its KL and cosine rows, a `CrossPlan` per teacher with another
    vocabulary, and the counts (a KL row counts in n_kl when at least one teacher gives it a target)."""
    sv = views[student.view]
    kl_b, kl_p = logit_positions(sv, kl_on)
    row_of = torch.full(sv.labels.shape, -1, dtype=torch.long)
    row_of[kl_b, kl_p] = torch.arange(kl_b.shape[0])
    cos_b, cos_p = torch.nonzero(sv.attention_mask.bool(), as_tuple=True)
    covered = torch.zeros(kl_b.shape[0], dtype=torch.bool)
    cross, per_teacher = {}, {}
    for tname in student.teachers:
        if tname not in student.cross:  # same vocabulary: every KL row, every non-pad token
            covered[:] = True
            per_teacher[tname] = TeacherCounts(int(kl_b.shape[0]), int(cos_b.shape[0]))
            continue
        tv = views[teachers[tname].view]
        cross[tname] = cross_plan(sv, tv, student.cross[tname], masked_word, row_of, kl_on, mismatch_policy)
        covered[cross[tname].rows] = True
        per_teacher[tname] = cross[tname].counts
    n_mlm, n_tokens = int((sv.labels != -100).sum()), int(sv.attention_mask.sum())
    return StepPlan(kl_b, kl_p, cos_b, cos_p, cross, StepCounts(n_mlm, int(covered.sum()), n_tokens, per_teacher))


# ------------------------------------------------------------------------------------------- teachers
def teacher_outputs(
    teachers: dict[str, Teacher],
    names: list[str],
    views: dict[str, WordView],
    config: DistillConfig,
    device: torch.device,
    amp: AmpSettings,
) -> dict[str, TeacherOutput]:
    """Run each named teacher once on its view: (logits at `logit_positions` (none when alpha_ce = 0),
    last hidden state (B, L, H) when alpha_cos > 0, else None)."""
    out = {}
    with torch.inference_mode(), autocast(device, amp):
        for name in names:
            v = views[teachers[name].view]
            b, p = logit_positions(v, config.kl_on)
            if config.alpha_ce == 0:
                b, p = b[:0], p[:0]
            logits, hidden = logits_at(
                teachers[name].model,
                v.input_ids.to(device),
                v.attention_mask.to(device),
                b.to(device),
                p.to(device),
                output_hidden=config.alpha_cos > 0,
            )
            out[name] = (RowLogits.of(logits, b, p, tuple(v.input_ids.shape)), hidden)
    return out


# -------------------------------------------------------------------------------------- teacher terms
@dataclass
class StudentBatch:
    """What a teacher's terms read of one student on one micro-batch."""

    student: Student
    config: DistillConfig
    plan: StepPlan
    counts: StepCounts  # over the global micro-batch
    hidden: torch.Tensor | None  # the student's last hidden state (B, L, H), when alpha_cos > 0
    scale: float  # world size (undone by DDP's gradient averaging)

    @property
    def device(self) -> torch.device | None:
        return None if self.hidden is None else self.hidden.device


@dataclass
class TeacherTerms:
    """One teacher's part of a student's loss: its KL target and its own components."""

    probs: torch.Tensor | None  # softened distribution at the KL rows `rows` (None when alpha_ce = 0)
    rows: torch.Tensor | None  # the student's KL rows it covers (None: all of them, same vocabulary)
    mass: torch.Tensor | None  # mapped mass of each row (None: 1, same vocabulary)
    comps: dict[str, torch.Tensor]  # "mismatch/<t>", "unmapped/<t>", "cos/<t>", as they apply


def _cosine_term(
    x: StudentBatch, tname: str, s_hid: torch.Tensor, t_hid: torch.Tensor, n_cos: int
) -> torch.Tensor | None:
    """1 - cos between the student's rows `s_hid` and teacher `tname`'s `t_hid` (None: no cosine term for it).
    A teacher with another vocabulary is a different model: by default the student's rows go through the
    learned linear map to its hidden space first (cross_cosine="linear"); "raw" compares them as they
    are, "off" drops the term."""
    student, config = x.student, x.config
    if config.alpha_cos == 0:
        return None
    if tname in student.cross and config.cross_cosine == "off":
        return None
    if tname in student.cross_maps:
        s_hid = student.cross_maps[tname](s_hid.to(student.cross_maps[tname].weight.dtype))
    return cosine_loss(s_hid, t_hid, normalizer=n_cos) * x.scale


def same_vocab_terms(x: StudentBatch, tname: str, t_out: TeacherOutput) -> TeacherTerms:
    """A teacher with the student's vocabulary: its softened logits at every KL row, the plain cosine."""
    t_logits, t_hid = t_out
    p = soft_probs(t_logits.at(x.plan.kl_b, x.plan.kl_p), x.config.temperature) if x.config.alpha_ce > 0 else None
    comps = {}
    if x.config.alpha_cos > 0:
        cb, cp, n_cos = x.plan.cos_b.to(x.device), x.plan.cos_p.to(x.device), max(x.counts.teachers[tname].n_cos, 1)
        comps[f"cos/{tname}"] = _cosine_term(x, tname, x.hidden[cb, cp], t_hid[cb, cp], n_cos)
    return TeacherTerms(p, None, None, comps)


def cross_vocab_terms(x: StudentBatch, tname: str, t_out: TeacherOutput, prior: torch.Tensor | None) -> TeacherTerms:
    """A teacher with another vocabulary: its rows at word-aligned first sub-tokens projected onto the student's
    vocabulary (case variants shared by `prior`), their mapped mass, its cosine, unmapped and mismatch shares."""
    t_logits, t_hid = t_out
    cp, c, dev = x.plan.cross[tname], x.counts.teachers[tname], x.device
    comps = {f"mismatch/{tname}": torch.tensor(cp.counts.n_mismatch / max(c.n_candidates, 1) * x.scale, device=dev)}
    p = mass = None
    if x.config.alpha_ce > 0:
        rows = cp.rows.to(prior.device) if prior is not None else None
        p, unmapped = project_distribution(
            soft_probs(t_logits.at(cp.kl_b, cp.kl_tp), x.config.temperature),
            x.student.cross[tname],
            prior=None if prior is None else prior[rows],
        )
        mass = 1.0 - unmapped
        comps[f"unmapped/{tname}"] = unmapped.sum() / max(c.n_kl, 1) * x.scale
    if x.config.alpha_cos > 0:
        cb = cp.cos_b.to(dev)
        s_hid, t_rows = x.hidden[cb, cp.cos_sp.to(dev)], t_hid[cb, cp.cos_tp.to(dev)]
        term = _cosine_term(x, tname, s_hid, t_rows, max(c.n_cos, 1))
        if term is not None:
            comps[f"cos/{tname}"] = term
    return TeacherTerms(p, cp.rows, mass, comps)


def _co_teacher_prior(
    student: Student, teachers: dict[str, Teacher], plan: StepPlan, t_out: dict[str, TeacherOutput]
) -> torch.Tensor | None:
    """Temperature-1 probabilities of the same-vocabulary teachers (weighted mean) at the student's KL rows:
    the prior that shares an uncased token's mass among its cased variants; None without such a teacher."""
    same = [t for t in student.teachers if t not in student.cross]
    if not same:
        return None
    total = sum(teachers[t].weight for t in same)
    return sum(teachers[t].weight / total * soft_probs(t_out[t][0].at(plan.kl_b, plan.kl_p), 1.0) for t in same)


# --------------------------------------------------------------------------------------------- losses
def student_losses(
    student: Student,
    teachers: dict[str, Teacher],
    config: DistillConfig,
    plan: StepPlan,
    counts: StepCounts,
    view: WordView,
    s_out: tuple[torch.Tensor, torch.Tensor | None],
    t_out: dict[str, TeacherOutput],
    scale: float,
) -> dict[str, torch.Tensor]:
    """The loss components of one student on its slice of the batch.

    `s_out`: the student's logits at the plan's KL rows (plan.kl_b, plan.kl_p) and its last hidden state
    (or None); `t_out`: `teacher_outputs`. Each term is (sum over this slice) / (count over the global
    micro-batch, `counts`) * `scale` (= world size, undone by DDP's gradient averaging). Returns {"total",
    "kl", "mlm", "cos", "kl/<t>", "cos/<t>", "unmapped/<t>", "mismatch/<t>"}.
    """
    T, average = config.temperature, config.strategy == "average"
    s_rows, s_hid = s_out
    dev = s_rows.device
    zero = s_rows.new_zeros((), dtype=torch.float32)
    # the MLM positions are among the KL rows (all of them for kl_on="masked"); the others carry -100
    labels = view.labels[plan.kl_b, plan.kl_p].to(dev)
    comps = {"mlm": mlm_loss(s_rows, labels, normalizer=max(counts.n_mlm, 1)) * scale}
    use_prior = config.alpha_ce > 0 and config.vocab_case == "prior" and student.cross
    prior = _co_teacher_prior(student, teachers, plan, t_out) if use_prior else None
    target = EnsembleTarget(s_rows.shape[0], s_rows.shape[1], device=dev) if average else None
    x = StudentBatch(student, config, plan, counts, s_hid, scale)
    kl_sum, cos_sum, cos_w = zero, zero, 0.0
    for tname in student.teachers:
        w = teachers[tname].weight
        if tname in student.cross:
            terms = cross_vocab_terms(x, tname, t_out[tname], prior)
        else:
            terms = same_vocab_terms(x, tname, t_out[tname])
        comps.update(terms.comps)
        rows = None if terms.rows is None else terms.rows.to(dev)
        if config.alpha_ce > 0 and average:
            target.add(terms.probs, w, rows=rows, mass=terms.mass)
        elif config.alpha_ce > 0:
            n_kl, s_kl = max(counts.teachers[tname].n_kl, 1), s_rows if rows is None else s_rows[rows]
            comps[f"kl/{tname}"] = kd_kl_loss(s_kl, terms.probs, T, normalizer=n_kl, row_weights=terms.mass) * scale
            kl_sum = kl_sum + w * comps[f"kl/{tname}"]
        if f"cos/{tname}" in comps:
            cos_sum, cos_w = cos_sum + w * comps[f"cos/{tname}"], cos_w + w
    if config.alpha_ce > 0 and average:
        keep, avg = target.result()
        kl_sum = kd_kl_loss(s_rows[keep], avg, T, normalizer=max(counts.n_kl, 1)) * scale
    if average and cos_w > 0:
        cos_sum = cos_sum / cos_w
    comps["kl"], comps["cos"] = kl_sum, cos_sum
    comps["total"] = config.alpha_ce * kl_sum + config.alpha_mlm * comps["mlm"] + config.alpha_cos * cos_sum
    return comps
