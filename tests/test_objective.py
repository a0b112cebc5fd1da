"""kdlib.engine.objective: where each loss term is computed (`StepPlan`) and the counts that normalise it."""

from __future__ import annotations

from pathlib import Path

import torch

from kdlib.engine.align import WordView
from kdlib.engine.config import StudentSpec
from kdlib.engine.models import Student
from kdlib.engine.objective import StepPlan, TeacherCounts, logit_positions, student_plan


def _view() -> WordView:
    """Two rows: 5 and 3 real tokens ([CLS] w0 w1 w2 [SEP] / [CLS] w0 [SEP]), masked at (0, 2) and (1, 1)."""
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 3, 0, 0]])
    am = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    words = torch.tensor([[-1, 0, 1, 2, -1], [-1, 0, -1, -1, -1]])
    first = torch.tensor([[1, 2, 3], [1, -1, -1]])
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 1] = 11, 13
    return WordView(ids, am, words, first, labels)


def _student(teachers: list[str]) -> Student:
    spec = StudentSpec("s", teachers)
    return Student(spec, torch.nn.Identity(), None, "v", teachers, {}, Path("unused"))


def test_logit_positions_masked_or_every_token():
    v = _view()
    b, p = logit_positions(v, "masked")
    assert list(zip(b.tolist(), p.tolist())) == [(0, 2), (1, 1)]
    b, p = logit_positions(v, "all")
    assert len(b) == 8 and bool((v.attention_mask[b, p] == 1).all())


def test_same_vocabulary_plan_counts_rows_and_tokens():
    """One same-vocabulary teacher: KL rows = the masked tokens, cosine rows = every real token, no CrossPlan."""
    v = _view()
    masked_word = torch.tensor([[False, True, False], [True, False, False]])
    plan = student_plan(_student(["t"]), {}, {"v": v}, masked_word, "masked")
    assert isinstance(plan, StepPlan) and plan.cross == {}
    assert (plan.kl_b.tolist(), plan.kl_p.tolist()) == ([0, 1], [2, 1])
    assert len(plan.cos_b) == 8
    assert (plan.counts.n_mlm, plan.counts.n_kl, plan.counts.n_tokens) == (2, 2, 8)
    assert plan.counts.teachers == {"t": TeacherCounts(n_kl=2, n_cos=8)}
    everywhere = student_plan(_student(["t"]), {}, {"v": v}, masked_word, "all")
    assert (everywhere.counts.n_kl, everywhere.counts.n_mlm) == (8, 2)
