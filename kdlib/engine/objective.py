"""The distillation objective on one batch: where each loss term is computed, teacher outputs, student losses.

Per student: L = alpha_ce * T^2 * KL + alpha_mlm * MLM + alpha_cos * (1 - cos), combined over teachers by
`strategy` ("average": one KL against the weighted average of the teachers' distributions, cosine
weights normalised; "sum": a KL and a cosine term per teacher, weighted as given).

* `student_plan` says, for one student and one batch, at which (row, position) pairs its vocabulary
  logits are needed (the masked positions by default) and, per teacher with another vocabulary, which
  teacher positions (first sub-tokens of the same words) match them;
* `teacher_outputs` runs each teacher once per batch (logits at those positions only, kdlib.engine.mlm);
  every student that learns from it reuses them;
* `student_losses` computes the components; each is normalised by counts over the GLOBAL micro-batch
  (`count_only`), so DDP's averaged gradient equals the single-process one.

A teacher with another vocabulary (kdlib.engine.align): its rows are projected onto the student's vocabulary,
case variants shared by the same-vocabulary co-teacher's probabilities at the same words
(vocab_case="prior"), and weighted by their mapped mass in the average (an empty row adds nothing;
under "sum" each row's KL is weighted by it); words whose first pieces do not correspond in the two
tokenizations get no KL from it (cross_mismatch="skip"); its cosine term goes through the student's
learned linear map to that teacher's hidden space (cross_cosine="linear"), the raw hidden states
("raw") or is dropped ("off"). A same-vocabulary teacher keeps the plain cosine.
"""

from __future__ import annotations

import torch

from kdlib.device import autocast
from kdlib.engine.align import (
    EnsembleTarget,
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


def logit_positions(view: WordView, kl_on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of `view` where vocabulary logits are needed: the masked (labelled) positions for
    kl_on="masked", every non-pad position for "all" (a superset of the masked ones)."""
    needed = (view.labels != -100) if kl_on == "masked" else view.attention_mask.bool()
    return torch.nonzero(needed, as_tuple=True)


def _true_ids(view: WordView) -> torch.Tensor:
    """The unmasked token ids of a view: the MLM labels where a token was masked or replaced."""
    return torch.where(view.labels != -100, view.labels, view.input_ids)


def student_plan(
    student: Student,
    teachers: dict[str, Teacher],
    views: dict[str, WordView],
    masked_word: torch.Tensor,
    kl_on: str,
    mismatch_policy: str = "skip",
) -> dict:
    """Index tensors saying where each loss term of `student` is computed in this batch, and counts.

    kl_b/kl_p are the positions where the student's logits are computed (KL rows; the MLM loss uses the
    labelled ones among them); per cross-vocabulary teacher, "rows" index into them and "tb"/"tp" give
    the teacher-view positions (first sub-tokens of the same words). With mismatch_policy="skip", words
    whose first pieces do not correspond (kdlib.engine.align.first_piece_mismatch) are left out of "rows";
    "n_mismatch" / "n_candidates" count them among the KL words either way.
    """
    sv = views[student.view]
    kl_b, kl_p = logit_positions(sv, kl_on)
    row_of = torch.full(sv.labels.shape, -1, dtype=torch.long)
    row_of[kl_b, kl_p] = torch.arange(kl_b.shape[0])
    cos_b, cos_p = torch.nonzero(sv.attention_mask.bool(), as_tuple=True)
    covered = torch.zeros(kl_b.shape[0], dtype=torch.bool)
    per_teacher = {}
    for tname in student.teachers:
        if tname not in student.cross:
            covered[:] = True
            per_teacher[tname] = {"n_kl": int(kl_b.shape[0]), "n_cos": int(cos_b.shape[0])}
            continue
        tv = views[teachers[tname].view]
        b, w, sp, tp = aligned_words(sv.first_pos, tv.first_pos)
        sel = masked_word[b, w] if kl_on == "masked" else torch.ones_like(b, dtype=torch.bool)
        mismatch = first_piece_mismatch(_true_ids(sv)[b, sp], _true_ids(tv)[b, tp], student.cross[tname]).cpu() & sel
        n_candidates = int(sel.sum())
        if mismatch_policy == "skip":
            sel = sel & ~mismatch
        rows = row_of[b[sel], sp[sel]]
        covered[rows] = True
        per_teacher[tname] = {
            "rows": rows,
            "tb": b[sel],
            "tw": w[sel],
            "tp": tp[sel],
            "cb": b,
            "csp": sp,
            "ctp": tp,
            "n_kl": int(rows.shape[0]),
            "n_cos": int(b.shape[0]),
            "n_mismatch": int(mismatch.sum()),
            "n_candidates": n_candidates,
        }
    return {
        "kl_b": kl_b,
        "kl_p": kl_p,
        "cos_b": cos_b,
        "cos_p": cos_p,
        "teachers": per_teacher,
        "n_mlm": int((sv.labels != -100).sum()),
        "n_kl": int(covered.sum()),
        "n_tokens": int(sv.attention_mask.sum()),
    }


def count_only(plan: dict) -> dict:
    """The counts of a plan (the loss normalisers), without its index tensors."""
    return {
        "n_mlm": plan["n_mlm"],
        "n_kl": plan["n_kl"],
        "n_tokens": plan["n_tokens"],
        "teachers": {
            t: {k: v[k] for k in ("n_kl", "n_cos", "n_mismatch", "n_candidates") if k in v}
            for t, v in plan["teachers"].items()
        },
    }


def teacher_outputs(
    teachers: dict[str, Teacher],
    names: list[str],
    views: dict[str, WordView],
    config: DistillConfig,
    device: torch.device,
    amp,
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


def _cosine_term(
    student: Student,
    tname: str,
    config: DistillConfig,
    s_hid: torch.Tensor,
    t_hid: torch.Tensor,
    n_cos: int,
    scale: float,
) -> torch.Tensor | None:
    """1 - cos between the student's rows `s_hid` and teacher `tname`'s `t_hid` (None: no cosine term for it).
    A teacher with another vocabulary is a different model: by default the student's rows go through the
    learned linear map to its hidden space first (cross_cosine="linear"); "raw" compares them as they
    are, "off" drops the term."""
    if config.alpha_cos == 0:
        return None
    if tname in student.cross and config.cross_cosine == "off":
        return None
    if tname in student.cross_maps:
        s_hid = student.cross_maps[tname](s_hid.to(student.cross_maps[tname].weight.dtype))
    return cosine_loss(s_hid, t_hid, normalizer=n_cos) * scale


def _co_teacher_prior(
    student: Student, teachers: dict[str, Teacher], plan: dict, t_out: dict[str, TeacherOutput]
) -> torch.Tensor | None:
    """Temperature-1 probabilities of the same-vocabulary teachers (weighted mean) at the student's KL rows:
    the prior that shares an uncased token's mass among its cased variants; None without such a teacher."""
    same = [t for t in student.teachers if t not in student.cross]
    if not same:
        return None
    total = sum(teachers[t].weight for t in same)
    return sum(teachers[t].weight / total * soft_probs(t_out[t][0].at(plan["kl_b"], plan["kl_p"]), 1.0) for t in same)


def _teacher_target(
    student: Student,
    tname: str,
    config: DistillConfig,
    plan: dict,
    counts: dict,
    s_hid: torch.Tensor | None,
    t_out: TeacherOutput,
    prior: torch.Tensor | None,
    scale: float,
    comps: dict[str, torch.Tensor],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Teacher `tname`'s softened distribution at the student's KL rows (None when alpha_ce = 0), the student
    rows it covers (None: all of them, same vocabulary) and their mapped mass (None: 1); adds its cos/,
    unmapped/ and mismatch/ terms."""
    T, dev = config.temperature, None if s_hid is None else s_hid.device
    t_logits, t_hid = t_out
    n_cos = max(counts["teachers"][tname]["n_cos"], 1)
    if tname not in student.cross:  # same vocabulary: same positions, plain cosine
        p = soft_probs(t_logits.at(plan["kl_b"], plan["kl_p"]), T) if config.alpha_ce > 0 else None
        if config.alpha_cos > 0:
            cb, cp = plan["cos_b"].to(dev), plan["cos_p"].to(dev)
            comps[f"cos/{tname}"] = _cosine_term(student, tname, config, s_hid[cb, cp], t_hid[cb, cp], n_cos, scale)
        return p, None, None
    tp_ = plan["teachers"][tname]  # other vocabulary: word-aligned first sub-tokens, projected
    p = mass = None
    c = counts["teachers"][tname]
    comps[f"mismatch/{tname}"] = torch.tensor(tp_["n_mismatch"] / max(c["n_candidates"], 1) * scale, device=dev)
    if config.alpha_ce > 0:
        rows = tp_["rows"].to(prior.device) if prior is not None else None
        p, unmapped = project_distribution(
            soft_probs(t_logits.at(tp_["tb"], tp_["tp"]), T),
            student.cross[tname],
            prior=None if prior is None else prior[rows],
        )
        mass = 1.0 - unmapped
        comps[f"unmapped/{tname}"] = unmapped.sum() / max(c["n_kl"], 1) * scale
    if config.alpha_cos > 0:
        cb = tp_["cb"].to(dev)
        term = _cosine_term(
            student, tname, config, s_hid[cb, tp_["csp"].to(dev)], t_hid[cb, tp_["ctp"].to(dev)], n_cos, scale
        )
        if term is not None:
            comps[f"cos/{tname}"] = term
    return p, tp_["rows"], mass


def student_losses(
    student: Student,
    teachers: dict[str, Teacher],
    config: DistillConfig,
    plan: dict,
    counts: dict,
    view: WordView,
    s_out: tuple[torch.Tensor, torch.Tensor | None],
    t_out: dict[str, TeacherOutput],
    scale: float,
) -> dict[str, torch.Tensor]:
    """The loss components of one student on its slice of the batch.

    `s_out`: the student's logits at the plan's KL rows (plan["kl_b"], plan["kl_p"]) and its last hidden
    state (or None); `t_out`: `teacher_outputs`. Each term is (sum over this slice) / (count over the
    global micro-batch) * `scale` (= world size, undone by DDP's gradient averaging). Returns {"total",
    "kl", "mlm", "cos", "kl/<t>", "cos/<t>", "unmapped/<t>", "mismatch/<t>"}.
    """
    T, average = config.temperature, config.strategy == "average"
    s_rows, s_hid = s_out
    dev = s_rows.device
    zero = s_rows.new_zeros((), dtype=torch.float32)
    kl_b, kl_p = plan["kl_b"], plan["kl_p"]
    # the MLM positions are among the KL rows (all of them for kl_on="masked"); the others carry -100
    comps = {"mlm": mlm_loss(s_rows, view.labels[kl_b, kl_p].to(dev), normalizer=max(counts["n_mlm"], 1)) * scale}
    weights = {t: teachers[t].weight for t in student.teachers}
    prior = (
        _co_teacher_prior(student, teachers, plan, t_out)
        if config.alpha_ce > 0 and config.vocab_case == "prior" and student.cross
        else None
    )
    target = EnsembleTarget(s_rows.shape[0], s_rows.shape[1], device=dev) if average else None
    kl_sum, cos_sum, cos_w = zero, zero, 0.0
    for tname in student.teachers:
        w = weights[tname]
        p, rows, mass = _teacher_target(student, tname, config, plan, counts, s_hid, t_out[tname], prior, scale, comps)
        rows = None if rows is None else rows.to(dev)
        if config.alpha_ce > 0 and average:
            target.add(p, w, rows=rows, mass=mass)
        elif config.alpha_ce > 0:
            n_kl = max(counts["teachers"][tname]["n_kl"], 1)
            comps[f"kl/{tname}"] = (
                kd_kl_loss(s_rows if rows is None else s_rows[rows], p, T, normalizer=n_kl, row_weights=mass) * scale
            )
            kl_sum = kl_sum + w * comps[f"kl/{tname}"]
        if f"cos/{tname}" in comps:
            cos_sum, cos_w = cos_sum + w * comps[f"cos/{tname}"], cos_w + w
    if config.alpha_ce > 0 and average:
        keep, avg = target.result()
        kl_sum = kd_kl_loss(s_rows[keep], avg, T, normalizer=max(counts["n_kl"], 1)) * scale
    if average and cos_w > 0:
        cos_sum = cos_sum / cos_w
    comps["kl"], comps["cos"] = kl_sum, cos_sum
    comps["total"] = config.alpha_ce * kl_sum + config.alpha_mlm * comps["mlm"] + config.alpha_cos * cos_sum
    return comps
