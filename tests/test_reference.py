"""kdlib.engine.reference (the plain DistilBERT recipe) against kdlib's optimised objective: on one teacher and
one student with the same vocabulary, the same batch, weights and masking give the same loss and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_tokenizer, ro_sentences, tiny_teacher

from kdlib.device import amp_settings
from kdlib.engine import reference
from kdlib.engine.batching import make_batch
from kdlib.engine.config import DistillConfig
from kdlib.engine.mlm import logits_at
from kdlib.engine.models import build_students, load_teachers
from kdlib.engine.objective import student_losses, student_plan, teacher_outputs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """Real sentences, a WordPiece tokenizer and a tiny random teacher, saved to disk."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reference")
    sents = ro_sentences(data_dir, 300)
    tok = make_tokenizer(sents, root / "tok", lowercase=False)
    teacher = tiny_teacher(tok, seed=0)
    teacher.save_pretrained(root / "t")
    tok.save_pretrained(root / "t")
    return {"sents": sents, "teacher": str(root / "t"), "root": root}


def _optimised_and_reference(setup, kl_on: str) -> tuple[dict, dict, torch.nn.Module, torch.nn.Module]:
    """One step of both on the same masked batch: (kdlib's components, the reference's, both students)."""
    cfg = DistillConfig.from_dict(
        {
            "teachers": [{"name": "t", "path": setup["teacher"]}],
            "students": [{"name": "s", "teachers": ["t"], "num_layers": 1, "init": "random"}],
            "kl_on": kl_on,
            "max_len": 48,
            "out_dir": str(setup["root"] / "unused"),
        }
    )
    tm = load_teachers(cfg, CPU, None)
    [st] = build_students(cfg, tm, CPU, None, texts=setup["sents"])
    st.model.eval()  # no dropout: both forwards see the same activations
    ref_student = copy.deepcopy(st.model)
    views, masked = make_batch(setup["sents"][:16], {"t": tm["t"].tokenizer}, cfg, torch.Generator().manual_seed(1))
    v = views["t"]
    plan = student_plan(st, tm, views, masked, kl_on)
    s_out = logits_at(st.model, v.input_ids, v.attention_mask, plan.kl_b, plan.kl_p, output_hidden=True)
    t_out = teacher_outputs(tm, ["t"], views, cfg, CPU, amp_settings(CPU, "off"))
    ours = student_losses(st, tm, cfg, plan, plan.counts, v, s_out, t_out, scale=1.0)
    ours["total"].backward()
    batch = {"input_ids": v.input_ids, "attention_mask": v.attention_mask, "labels": v.labels}
    alphas = (cfg.alpha_ce, cfg.alpha_mlm, cfg.alpha_cos)
    ref = reference.step_loss(
        ref_student, tm["t"].model, batch, temperature=cfg.temperature, alphas=alphas, kl_on=kl_on
    )
    ref["loss"].backward()
    return ours, ref, st.model, ref_student


@pytest.mark.parametrize("kl_on", ["masked", "all"])
def test_optimised_objective_equals_reference_loss_and_gradients(setup, kl_on):
    """Same KL, MLM, cosine and total, and the same gradient on every student parameter."""
    ours, ref, student, ref_student = _optimised_and_reference(setup, kl_on)
    tight = {"rtol": 1e-5, "atol": 1e-6}
    assert float(ref["ce"].detach()) > 1e-3  # the KL term is not trivially zero
    for mine, theirs in (("kl", "ce"), ("mlm", "mlm"), ("cos", "cos"), ("total", "loss")):
        torch.testing.assert_close(ours[mine].detach(), ref[theirs].detach(), **tight)
    grads = dict(ref_student.named_parameters())
    for name, p in student.named_parameters():
        assert p.grad is not None and grads[name].grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-7)


def test_kl_on_all_is_the_recipe_and_differs_from_masked(setup):
    """The recipe's KL (every non-pad position) is a different number from kdlib's default (masked only)."""
    ours_all, _, _, _ = _optimised_and_reference(setup, "all")
    ours_masked, _, _, _ = _optimised_and_reference(setup, "masked")
    assert not torch.isclose(ours_all["kl"], ours_masked["kl"])
    torch.testing.assert_close(ours_all["mlm"], ours_masked["mlm"])


def test_ce_loss_counts_only_the_given_rows():
    """L_ce is the batchmean KL over the selected positions: other positions' logits change nothing."""
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    rows = torch.tensor([[1, 0, 1], [1, 1, 0]])
    kl_sum = sum(
        float((p * (p.log() - torch.log_softmax(s[b, i] / 2, -1))).sum())
        for b, i in [(0, 0), (0, 2), (1, 0), (1, 1)]
        for p in [torch.softmax(t[b, i] / 2, -1)]
    )
    expected = kl_sum / 4 * 2.0**2  # batchmean over the 4 selected positions, times T^2
    assert float(reference.ce_loss(s, t, rows, 2.0)) == pytest.approx(expected, rel=1e-5)
    s[0, 1] += 50
    assert float(reference.ce_loss(s, t, rows, 2.0)) == pytest.approx(expected, rel=1e-5)


def test_padded_pads_to_the_longest_row():
    ids, attn = reference.padded([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and attn.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_reference_loop_runs_and_saves_the_student(setup, tmp_path):
    """Two steps of the plain loop: finite losses, token counts, a loadable student."""
    from transformers import AutoModelForMaskedLM

    out = reference.distill(
        setup["teacher"],
        setup["sents"][:64],
        student_layers=1,
        batch_size=4,
        max_len=32,
        steps=2,
        device=CPU,
        out_dir=tmp_path / "s",
    )
    assert out["steps"] == 2 and 0 < out["real_tokens"] <= out["padded_tokens"]
    assert torch.isfinite(torch.tensor([out["first_loss"], out["last_loss"]])).all()
    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "s").config.n_layers == 1
    with pytest.raises(ValueError, match="steps"):
        reference.distill(setup["teacher"], ["a b"], student_layers=1, batch_size=1, max_len=8, steps=0, device=CPU)
