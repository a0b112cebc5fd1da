"""The distillation objective on one batch: where each loss term is computed, teacher outputs, student losses.

Per student: L = alpha_ce * T^2 * KL + alpha_mlm * MLM + alpha_cos * (1 - cos), combined over teachers by
`strategy` ("average": one KL against the weighted average of the teachers' distributions, cosine
weights normalised; "sum": a KL and a cosine term per teacher, weighted as given).

* `student_plan` says, for one student and one batch, at which (row, position) pairs its vocabulary
  logits are needed (the masked positions by default) and, per teacher with another vocabulary, which
  teacher positions (first sub-tokens of the same words) match them;
* `teacher_outputs` runs each teacher once per batch (logits at those positions only, kdlib.mlm);
  every student that learns from it reuses them;
* `student_losses` computes the components; each is normalised by counts over the GLOBAL micro-batch
  (`count_only`), so DDP's averaged gradient equals the single-process one.
"""
from __future__ import annotations

import torch

from kdlib.align import WordView, aligned_words, project_distribution
from kdlib.config import DistillConfig
from kdlib.device import autocast
from kdlib.losses import cosine_loss, kd_kl_loss, mlm_loss, soft_probs
from kdlib.mlm import RowLogits, logits_at
from kdlib.models import Student, Teacher

TeacherOutput = tuple[RowLogits, "torch.Tensor | None"]


def logit_positions(view: WordView, kl_on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of `view` where vocabulary logits are needed: the masked (labelled) positions for
    kl_on="masked", every non-pad position for "all" (a superset of the masked ones)."""
    needed = (view.labels != -100) if kl_on == "masked" else view.attention_mask.bool()
    return torch.nonzero(needed, as_tuple=True)


def student_plan(student: Student, teachers: dict[str, Teacher], views: dict[str, WordView],
                 masked_word: torch.Tensor, kl_on: str) -> dict:
    """Index tensors saying where each loss term of `student` is computed in this batch, and counts.

    kl_b/kl_p are the positions where the student's logits are computed (KL rows; the MLM loss uses the
    labelled ones among them); per cross-vocabulary teacher, "rows" index into them and "tb"/"tp" give
    the teacher-view positions (first sub-tokens of the same words).
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
        b, w, sp, tp = aligned_words(sv.first_pos, views[teachers[tname].view].first_pos)
        sel = masked_word[b, w] if kl_on == "masked" else torch.ones_like(b, dtype=torch.bool)
        rows = row_of[b[sel], sp[sel]]
        covered[rows] = True
        per_teacher[tname] = {"rows": rows, "tb": b[sel], "tp": tp[sel], "cb": b, "csp": sp, "ctp": tp,
                              "n_kl": int(rows.shape[0]), "n_cos": int(b.shape[0])}
    return {"kl_b": kl_b, "kl_p": kl_p, "cos_b": cos_b, "cos_p": cos_p, "teachers": per_teacher,
            "n_mlm": int((sv.labels != -100).sum()), "n_kl": int(covered.sum()),
            "n_tokens": int(sv.attention_mask.sum())}


def count_only(plan: dict) -> dict:
    """The counts of a plan (the loss normalisers), without its index tensors."""
    return {"n_mlm": plan["n_mlm"], "n_kl": plan["n_kl"], "n_tokens": plan["n_tokens"],
            "teachers": {t: {"n_kl": v["n_kl"], "n_cos": v["n_cos"]} for t, v in plan["teachers"].items()}}


def teacher_outputs(teachers: dict[str, Teacher], names: list[str], views: dict[str, WordView],
                    config: DistillConfig, device: torch.device, amp) -> dict[str, TeacherOutput]:
    """Run each named teacher once on its view: (logits at `logit_positions` (none when alpha_ce = 0),
    last hidden state (B, L, H) when alpha_cos > 0, else None)."""
    out = {}
    with torch.inference_mode(), autocast(device, amp):
        for name in names:
            v = views[teachers[name].view]
            b, p = logit_positions(v, config.kl_on)
            if config.alpha_ce == 0:
                b, p = b[:0], p[:0]
            logits, hidden = logits_at(teachers[name].model, v.input_ids.to(device), v.attention_mask.to(device),
                                       b.to(device), p.to(device), output_hidden=config.alpha_cos > 0)
            out[name] = (RowLogits.of(logits, b, p, tuple(v.input_ids.shape)), hidden)
    return out


def _teacher_target(student: Student, tname: str, config: DistillConfig, plan: dict, counts: dict,
                    s_hid: torch.Tensor | None, t_out: TeacherOutput, scale: float,
                    comps: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Teacher `tname`'s softened distribution at the student's KL rows (None when alpha_ce = 0) and the
    student rows it covers (None: all of them, same vocabulary); adds its cos/ and unmapped/ terms."""
    T, dev = config.temperature, None if s_hid is None else s_hid.device
    t_logits, t_hid = t_out
    n_cos = max(counts["teachers"][tname]["n_cos"], 1)
    if tname not in student.cross:   # same vocabulary: same positions
        p = soft_probs(t_logits.at(plan["kl_b"], plan["kl_p"]), T) if config.alpha_ce > 0 else None
        if config.alpha_cos > 0:
            cb, cp = plan["cos_b"].to(dev), plan["cos_p"].to(dev)
            comps[f"cos/{tname}"] = cosine_loss(s_hid[cb, cp], t_hid[cb, cp], normalizer=n_cos) * scale
        return p, None
    tp_ = plan["teachers"][tname]   # other vocabulary: word-aligned first sub-tokens, projected
    p = None
    if config.alpha_ce > 0:
        p, unmapped = project_distribution(soft_probs(t_logits.at(tp_["tb"], tp_["tp"]), T), student.cross[tname])
        comps[f"unmapped/{tname}"] = unmapped.sum() / max(counts["teachers"][tname]["n_kl"], 1) * scale
    if config.alpha_cos > 0:
        cb = tp_["cb"].to(dev)
        comps[f"cos/{tname}"] = cosine_loss(s_hid[cb, tp_["csp"].to(dev)], t_hid[cb, tp_["ctp"].to(dev)],
                                            normalizer=n_cos) * scale
    return p, tp_["rows"]


def student_losses(student: Student, teachers: dict[str, Teacher], config: DistillConfig, plan: dict,
                   counts: dict, view: WordView, s_out: tuple[torch.Tensor, torch.Tensor | None],
                   t_out: dict[str, TeacherOutput], scale: float) -> dict[str, torch.Tensor]:
    """The loss components of one student on its slice of the batch.

    `s_out`: the student's logits at the plan's KL rows (plan["kl_b"], plan["kl_p"]) and its last hidden
    state (or None); `t_out`: `teacher_outputs`. Each term is (sum over this slice) / (count over the
    global micro-batch) * `scale` (= world size, undone by DDP's gradient averaging). Returns {"total",
    "kl", "mlm", "cos", "kl/<t>", "cos/<t>", "unmapped/<t>"}.
    """
    T, average = config.temperature, config.strategy == "average"
    s_rows, s_hid = s_out
    dev = s_rows.device
    zero = s_rows.new_zeros((), dtype=torch.float32)
    kl_b, kl_p = plan["kl_b"], plan["kl_p"]
    # the MLM positions are among the KL rows (all of them for kl_on="masked"); the others carry -100
    comps = {"mlm": mlm_loss(s_rows, view.labels[kl_b, kl_p].to(dev), normalizer=max(counts["n_mlm"], 1)) * scale}
    weights = {t: teachers[t].weight for t in student.teachers}
    acc = s_rows.new_zeros(s_rows.shape, dtype=torch.float32) if average else None  # "average": sum of w * p
    wsum = s_rows.new_zeros(s_rows.shape[0], dtype=torch.float32)                   # and of w, per row
    kl_sum, cos_sum = zero, zero
    for tname in student.teachers:
        w = weights[tname]
        p, rows = _teacher_target(student, tname, config, plan, counts, s_hid, t_out[tname], scale, comps)
        rows = None if rows is None else rows.to(dev)
        if config.alpha_ce > 0 and average:
            if rows is None:
                acc += w * p
                wsum += w
            else:
                acc.index_add_(0, rows, w * p)
                wsum.index_add_(0, rows, torch.full_like(rows, 1, dtype=torch.float32) * w)
        elif config.alpha_ce > 0:
            n_kl = max(counts["teachers"][tname]["n_kl"], 1)
            comps[f"kl/{tname}"] = kd_kl_loss(s_rows if rows is None else s_rows[rows], p, T, normalizer=n_kl) * scale
            kl_sum = kl_sum + w * comps[f"kl/{tname}"]
        if config.alpha_cos > 0:
            cos_sum = cos_sum + w * comps[f"cos/{tname}"]
    if config.alpha_ce > 0 and average:
        keep = wsum > 0
        kl_sum = kd_kl_loss(s_rows[keep], acc[keep] / wsum[keep, None], T, normalizer=max(counts["n_kl"], 1)) * scale
    if average:
        cos_sum = cos_sum / sum(weights.values())
    comps["kl"], comps["cos"] = kl_sum, cos_sum
    comps["total"] = config.alpha_ce * kl_sum + config.alpha_mlm * comps["mlm"] + config.alpha_cos * cos_sum
    return comps
