"""The distillation loop on tiny models and real Romanian sentences (RO-STS): losses, ensembles, the
cross-tokenizer path, shared teacher passes, outputs, exact kill-and-resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from helpers import make_tokenizer, ro_sentences, tiny_teacher
from safetensors.torch import load_file

from kdlib.device import amp_settings
from kdlib.engine.align import aligned_words, project_distribution
from kdlib.engine.distill import DistillConfig, distill, make_batch, student_losses, student_plan, teacher_outputs
from kdlib.engine.losses import cosine_loss, kd_kl_loss, mlm_loss, soft_probs
from kdlib.engine.mlm import logits_at

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """Real sentences, a cased and an uncased tokenizer, and three tiny teachers saved to disk."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("distill")
    sents = ro_sentences(data_dir, 800)
    # the main teacher is genuinely MLM-pretrained (kdlib.engine.teachers), so distilling from it means something
    import datasets
    from transformers import AutoTokenizer

    from kdlib.engine.teachers import TeacherConfig, pretrain_teacher

    tcfg = TeacherConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_len=48,
        max_position_embeddings=64,
        vocab_size=600,
        dropout=0.0,
        steps=150,
        batch_size=32,
        lr=1e-2,
        warmup=0.1,
        pppl_texts=5,
        seed=0,
    )
    metrics = pretrain_teacher(
        datasets.Dataset.from_dict({"text": sents}), root / "cased", lowercase=False, config=tcfg, progress=False
    )
    cased = AutoTokenizer.from_pretrained(root / "cased")
    uncased = make_tokenizer(sents, root / "tok_uncased", lowercase=True)
    paths = {"cased": str(root / "cased")}
    for name, tok, seed, hidden, drop in (
        ("cased2", cased, 1, 32, 0.0),
        ("uncased", uncased, 2, 32, 0.0),
        ("wide", cased, 3, 48, 0.0),
        ("dropout", cased, 4, 32, 0.1),
    ):
        model = tiny_teacher(tok, hidden=hidden, seed=seed, dropout=drop)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        paths[name] = str(root / name)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(sents) + "\n", encoding="utf-8")
    return {"root": root, "sents": sents, "paths": paths, "corpus": str(corpus), "teacher_metrics": metrics}


def config(setup, out: Path, teachers: list[str], students: list[dict], **kw) -> DistillConfig:
    base = dict(
        teachers=[{"name": t, "path": setup["paths"][t]} for t in teachers],
        students=students,
        batch_size=8,
        max_len=48,
        max_steps=4,
        lr=1e-3,
        warmup=0.1,
        out_dir=str(out),
        device="cpu",
        amp="off",
        seed=3,
    )
    base.update(kw)
    return DistillConfig.from_dict(base)


def read_log(out: Path) -> list[dict]:
    from kdlib.engine.distill import read_log as read_records

    return read_records(out / "log.jsonl")


def test_ensemble_target_is_weighted_average(setup):
    from kdlib.engine.models import build_students as _build_students
    from kdlib.engine.models import load_teachers as _load_teachers

    cfg = config(setup, setup["root"] / "unused", ["cased", "cased2"], [{"name": "s", "teachers": ["cased", "cased2"]}])
    cfg.teachers[0].weight, cfg.teachers[1].weight = 3.0, 1.0
    tm = _load_teachers(cfg, torch.device("cpu"), None)
    [st] = _build_students(cfg, tm, torch.device("cpu"), None)
    views = {tm["cased"].view: tm["cased"].tokenizer}
    assert tm["cased2"].view == tm["cased"].view  # same tokenizer -> one view, one encoding
    bv, masked = make_batch(setup["sents"][:8], views, cfg, torch.Generator().manual_seed(0))
    v = bv[st.view]
    plan = student_plan(st, tm, bv, masked, "masked")
    with torch.no_grad():
        outs = {
            n: tm[n].model(input_ids=v.input_ids, attention_mask=v.attention_mask, output_hidden_states=True)
            for n in ("cased", "cased2")
        }
        s_out = st.model(input_ids=v.input_ids, attention_mask=v.attention_mask, output_hidden_states=True)
        s_sel = logits_at(st.model, v.input_ids, v.attention_mask, plan.kl_b, plan.kl_p, output_hidden=True)
    t_out = teacher_outputs(
        tm, ["cased", "cased2"], bv, cfg, torch.device("cpu"), amp_settings(torch.device("cpu"), "off")
    )
    comps = student_losses(st, tm, cfg, plan, plan.counts, v, s_sel, t_out, scale=1.0)
    rows = v.labels != -100
    T = cfg.temperature
    target = 0.75 * soft_probs(outs["cased"].logits[rows], T) + 0.25 * soft_probs(outs["cased2"].logits[rows], T)
    assert torch.allclose(comps["kl"], kd_kl_loss(s_out.logits[rows], target, T), atol=1e-6)
    # cosine: weighted mean over teachers, on every non-pad position
    am = v.attention_mask.bool()
    cos = [
        1 - torch.cosine_similarity(s_out.hidden_states[-1][am], outs[n].hidden_states[-1][am], dim=-1).mean()
        for n in ("cased", "cased2")
    ]
    assert torch.allclose(comps["cos"], 0.75 * cos[0] + 0.25 * cos[1], atol=1e-6)
    # "sum": one KL per teacher, weighted as given
    cfg.strategy = "sum"
    comps_sum = student_losses(st, tm, cfg, plan, plan.counts, v, s_sel, t_out, scale=1.0)
    kl_each = [kd_kl_loss(s_out.logits[rows], soft_probs(outs[n].logits[rows], T), T) for n in ("cased", "cased2")]
    assert torch.allclose(comps_sum["kl"], 3 * kl_each[0] + 1 * kl_each[1], atol=1e-5)
    assert torch.allclose(comps_sum["mlm"], comps["mlm"])


@pytest.mark.parametrize("cross", [("prior", "skip", "linear"), ("split", "keep", "raw")], ids=["defaults", "plain"])
@pytest.mark.parametrize("kl_on", ["masked", "all"])
@pytest.mark.parametrize("strategy", ["average", "sum"])
def test_selected_rows_losses_equal_dense_computation(setup, strategy, kl_on, cross):
    """One step's kl/mlm/cos with logits at the needed rows only equal the same terms computed from the
    full (B, L, V) logits, with a same-vocabulary and a cross-vocabulary teacher: the projection (case
    prior from the co-teacher, or split), mass-weighted rows, first-piece mismatches skipped or kept, and
    the cosine through the linear map or raw."""
    from kdlib.engine.align import first_piece_mismatch
    from kdlib.engine.models import build_students as _build_students
    from kdlib.engine.models import load_teachers as _load_teachers

    vocab_case, mismatch, cross_cosine = cross
    names = ["cased", "uncased"]
    cfg = config(
        setup,
        setup["root"] / "unused",
        names,
        [{"name": "s", "teachers": names}],
        strategy=strategy,
        kl_on=kl_on,
        vocab_case=vocab_case,
        cross_mismatch=mismatch,
        cross_cosine=cross_cosine,
    )
    cfg.teachers[0].weight, cfg.teachers[1].weight = 2.0, 1.0
    cpu = torch.device("cpu")
    tm = _load_teachers(cfg, cpu, None)
    [st] = _build_students(cfg, tm, cpu, None, texts=setup["sents"])
    st.model.eval()  # no dropout: the selected and the full forward see the same activations
    bv, masked = make_batch(
        setup["sents"][8:24], {tm[n].view: tm[n].tokenizer for n in names}, cfg, torch.Generator().manual_seed(1)
    )
    sv, tv = bv[tm["cased"].view], bv[tm["uncased"].view]
    plan = student_plan(st, tm, bv, masked, kl_on, mismatch)
    with torch.no_grad():
        s_sel = logits_at(st.model, sv.input_ids, sv.attention_mask, plan.kl_b, plan.kl_p, output_hidden=True)
        comps = student_losses(
            st,
            tm,
            cfg,
            plan,
            plan.counts,
            sv,
            s_sel,
            teacher_outputs(tm, names, bv, cfg, cpu, amp_settings(cpu, "off")),
            scale=1.0,
        )
        s = st.model(input_ids=sv.input_ids, attention_mask=sv.attention_mask, output_hidden_states=True)
        t1 = tm["cased"].model(input_ids=sv.input_ids, attention_mask=sv.attention_mask, output_hidden_states=True)
        t2 = tm["uncased"].model(input_ids=tv.input_ids, attention_mask=tv.attention_mask, output_hidden_states=True)
        # dense reference: full logits, KL rows as a (B, L) mask
        T, w1, w2 = cfg.temperature, 2.0, 1.0
        rows = (sv.labels != -100) if kl_on == "masked" else sv.attention_mask.bool()
        b, w, sp, tp = aligned_words(sv.first_pos, tv.first_pos)
        sel = masked[b, w] if kl_on == "masked" else torch.ones_like(b, dtype=torch.bool)
        true_s, true_t = (torch.where(v.labels != -100, v.labels, v.input_ids) for v in (sv, tv))
        bad = first_piece_mismatch(true_s[b, sp], true_t[b, tp], st.cross["uncased"])
        if mismatch == "skip":
            sel = sel & ~bad
        bs, ss, ts = b[sel], sp[sel], tp[sel]
        p1 = soft_probs(t1.logits, T)  # (B, L, V)
        prior = torch.softmax(t1.logits[bs, ss], -1) if vocab_case == "prior" else None
        p2, unmapped = project_distribution(soft_probs(t2.logits[bs, ts], T), st.cross["uncased"], prior=prior)
        m = 1 - unmapped  # mapped mass of each projected row
        if strategy == "average":
            acc, wsum = w1 * p1, torch.full(rows.shape, w1)
            acc[bs, ss] += w2 * m[:, None] * p2
            wsum[bs, ss] += w2 * m
            kl = kd_kl_loss(s.logits[rows], acc[rows] / wsum[rows][:, None], T)
        else:
            log_q = torch.log_softmax(s.logits[bs, ss] / T, -1)
            kl2 = (m * (p2 * (torch.log(p2.clamp(min=1e-30)) - log_q)).sum(-1)).sum() * T**2 / len(bs)
            kl = w1 * kd_kl_loss(s.logits[rows], p1[rows], T) + w2 * kl2
        am = sv.attention_mask.bool()
        hs, h1, h2 = s.hidden_states[-1], t1.hidden_states[-1], t2.hidden_states[-1]
        hs2 = st.cross_maps["uncased"](hs[b, sp]) if cross_cosine == "linear" else hs[b, sp]
        cos = w1 * cosine_loss(hs[am], h1[am]) + w2 * cosine_loss(hs2, h2[b, tp])
        if strategy == "average":
            cos = cos / (w1 + w2)
    assert int(sel.sum()) > 0 and int(rows.sum()) > int(sel.sum()) // 2
    torch.testing.assert_close(comps["kl"], kl, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(comps["mlm"], mlm_loss(s.logits, sv.labels), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(comps["cos"], cos, atol=1e-5, rtol=1e-5)


def test_only_students_learn_and_outputs_load(setup, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    from kdlib.engine.teachers import load_teacher

    teacher, tok = load_teacher(setup["paths"]["cased"])
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    out = tmp_path / "run"
    cfg = config(setup, out, ["cased"], [{"name": "s", "teachers": ["cased"]}], max_steps=3)
    from kdlib.engine.students import make_student

    student = make_student(teacher, seed=3)
    init = {k: v.clone() for k, v in student.state_dict().items()}
    summary = distill(cfg, setup["sents"], teachers={"cased": (teacher, tok)}, students={"s": student})
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(v, init[k]) for k, v in student.state_dict().items())
    sdir = Path(summary["s"]["out_dir"])
    assert (sdir / "model.safetensors").is_file() and (sdir / "README.md").is_file()
    card = (sdir / "README.md").read_text()
    assert "cased" in card and "steps: 3" in card and "sentences" in card
    m = AutoModelForMaskedLM.from_pretrained(sdir)
    assert torch.equal(m.state_dict()["vocab_transform.weight"], student.state_dict()["vocab_transform.weight"])
    AutoModel.from_pretrained(sdir)
    assert AutoTokenizer.from_pretrained(sdir).get_vocab() == tok.get_vocab()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["s"]["steps"] == 3 and saved["s"]["corpus"]["sentences"] == len(setup["sents"])


def test_loss_falls_on_tiny_model(setup, tmp_path):
    out = tmp_path / "run"
    # a randomly initialised student, so the KL term starts far from the teacher and must fall too
    cfg = config(
        setup,
        out,
        ["cased"],
        [{"name": "s", "teachers": ["cased"], "init": "random"}],
        max_steps=200,
        lr=3e-3,
        batch_size=16,
        max_len=32,
    )
    t0 = time.perf_counter()
    summary = distill(cfg, setup["sents"])
    wall = time.perf_counter() - t0
    log = read_log(out)
    first = sum(r["students"]["s"]["total"] for r in log[:10]) / 10
    last = sum(r["students"]["s"]["total"] for r in log[-10:]) / 10
    part = {
        c: [sum(r["students"]["s"][c] for r in rows) / 10 for rows in (log[:10], log[-10:])]
        for c in ("mlm", "kl", "cos")
    }
    print(
        f"\nteacher held-out MLM {setup['teacher_metrics']['heldout_mlm_loss']:.3f}\nloss {first:.3f} -> {last:.3f}; "
        f"components first/last 10 steps {part}; "
        f"{summary['s']['tokens_per_s']:.0f} tokens/s; {wall:.1f} s for 200 steps"
    )
    assert last < 0.8 * first
    assert all(b < a for a, b in part.values())
    assert log[-1]["step"] == 200 and log[-1]["lr"] == 0.0


def test_cross_tokenizer_two_teachers_both_strategies(setup, tmp_path):
    results = {}
    for strategy in ("average", "sum"):
        out = tmp_path / strategy
        cfg = config(
            setup,
            out,
            ["cased", "uncased"],
            [{"name": "multi", "teachers": ["cased", "uncased"], "tokenizer_from": "cased"}],
            strategy=strategy,
            max_steps=3,
        )
        summary = distill(cfg, setup["sents"])
        rec = read_log(out)[-1]["students"]["multi"]
        assert {"kl", "mlm", "cos", "total", "cos/cased", "cos/uncased", "unmapped/uncased"} <= set(rec)
        assert all(torch.isfinite(torch.tensor(v)) for v in rec.values())
        unm = summary["multi"]["unmapped"]["unmapped/uncased"]
        assert 0.0 < unm < 1.0
        assert summary["multi"]["cross_vocab_teachers"] == ["uncased"]
        results[strategy] = unm
    print(f"\nunmapped mass, cased student <- uncased teacher: {results}")


def test_three_students_share_teacher_passes(setup, tmp_path):
    out = tmp_path / "run"
    cfg = config(
        setup,
        out,
        ["cased", "uncased"],
        [
            {"name": "distil-cased", "teachers": ["cased"]},
            {"name": "distil-uncased", "teachers": ["uncased"]},
            {"name": "distil-multi", "teachers": ["cased", "uncased"], "tokenizer_from": "cased"},
        ],
        max_steps=3,
        grad_accum=2,
    )
    from kdlib.engine.teachers import load_teacher

    loaded = {n: load_teacher(setup["paths"][n]) for n in ("cased", "uncased")}
    calls = {n: 0 for n in loaded}
    for n, (m, _) in loaded.items():  # the vocabulary head runs once per teacher pass (on the selected rows)
        m.get_output_embeddings().register_forward_hook(lambda *_a, n=n: calls.__setitem__(n, calls[n] + 1))
    summary = distill(cfg, setup["sents"], teachers=loaded)
    assert calls == {"cased": 3 * 2, "uncased": 3 * 2}  # once per micro-batch, not once per student
    assert set(summary) == {"distil-cased", "distil-uncased", "distil-multi"}
    assert summary["distil-uncased"]["cross_vocab_teachers"] == []


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "kdlib", "distill", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kw,
    )


def test_kill_and_resume_is_bit_exact(setup, tmp_path):
    """SIGKILL a CLI run once a checkpoint at step >= 20 exists, resume it to 40, compare with 40 straight steps."""
    import yaml

    from kdlib.engine.distill import load_corpus

    # the student inherits dropout 0.1 from this teacher, so resuming must restore the torch RNG too
    cfg = {
        "teachers": [{"name": "cased", "path": setup["paths"]["dropout"]}],
        "students": [{"name": "s", "teachers": ["cased"]}],
        "batch_size": 4,
        "max_len": 32,
        "lr": 2e-3,
        "device": "cpu",
        "amp": "off",
        "seed": 5,
        "max_steps": 40,
        "save_every": 10,
        "corpus_max_sentences": 400,
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    common = ["--config", str(cfg_path), "--corpus", setup["corpus"]]
    killed = _run_cli(common + ["--out", str(tmp_path / "killed")])
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline:
        if latest.is_file() and int(latest.read_text().split("-")[1]) >= 20:
            break
        assert killed.poll() is None, killed.stdout.read().decode()[-3000:]
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    step_at_kill = int(latest.read_text().split("-")[1])
    assert 20 <= step_at_kill < 40 and not (tmp_path / "killed" / "summary.json").exists()
    resumed = _run_cli(common + ["--out", str(tmp_path / "killed"), "--resume"])
    # meanwhile, the uninterrupted run, in this process (same code path as the CLI, one thread each)
    full_cfg = DistillConfig.from_file(cfg_path, {"out_dir": str(tmp_path / "full")})
    distill(full_cfg, load_corpus(setup["corpus"], max_sentences=400))
    out_r = resumed.communicate(timeout=180)[0].decode()
    assert resumed.returncode == 0, out_r[-3000:]
    a = load_file(tmp_path / "full" / "s" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "s" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = read_log(tmp_path / "killed")
    assert [r["step"] for r in log] == list(range(1, 41))
    assert log == [
        dict(r, tokens_per_s=x["tokens_per_s"], elapsed=x["elapsed"]) for r, x in zip(read_log(tmp_path / "full"), log)
    ]


# ---------------------------------------------------------------------------------------- bad input
def test_bad_config_values_fail_fast(setup, tmp_path):
    for kw, word in (
        ({"max_steps": 0}, "max_steps"),
        ({"batch_size": -1}, "batch_size"),
        ({"strategy": "max"}, "strategy"),
        ({"kl_on": "some"}, "kl_on"),
    ):
        with pytest.raises(ValueError, match=word):
            distill(config(setup, tmp_path, ["cased"], [{"name": "s", "teachers": ["cased"]}], **kw), setup["sents"])
    with pytest.raises(ValueError, match="unknown DistillConfig keys"):
        DistillConfig.from_dict(
            {
                "teachers": [{"name": "a", "path": "x"}],
                "students": [{"name": "s", "teachers": ["a"]}],
                "learning_rate": 1,
            }
        )
    with pytest.raises(ValueError, match="refers to teacher 'nope'"):
        distill(config(setup, tmp_path, ["cased"], [{"name": "s", "teachers": ["nope"]}]), setup["sents"])


def test_bad_teachers_fail_fast(setup, tmp_path):
    cfg = config(setup, tmp_path, ["cased"], [{"name": "s", "teachers": ["cased"]}])
    cfg.teachers[0].path = str(tmp_path / "missing-teacher")
    with pytest.raises((FileNotFoundError, OSError), match="missing-teacher"):
        distill(cfg, setup["sents"])
    from transformers import BertModel

    tok_dir = setup["paths"]["cased"]
    enc = BertModel(tiny_teacher(__import__("transformers").AutoTokenizer.from_pretrained(tok_dir)).config)
    enc.save_pretrained(tmp_path / "encoder")
    cfg.teachers[0].path = str(tmp_path / "encoder")
    with pytest.raises(ValueError, match="not a masked LM"):
        distill(cfg, setup["sents"])
    # hidden sizes 32 vs 48 cannot meet in the cosine term
    cfg = config(setup, tmp_path, ["cased", "wide"], [{"name": "s", "teachers": ["cased", "wide"]}])
    with pytest.raises(ValueError, match="alpha_cos"):
        distill(cfg, setup["sents"])
    # a different vocabulary without an alignment strategy
    cfg = config(
        setup, tmp_path, ["cased", "uncased"], [{"name": "s", "teachers": ["cased", "uncased"]}], cross_tokenizer="none"
    )
    with pytest.raises(ValueError, match="cross_tokenizer"):
        distill(cfg, setup["sents"])


def test_nan_loss_stops_and_keeps_last_checkpoint(setup, tmp_path):
    from kdlib.engine.teachers import load_teacher

    teacher, tok = load_teacher(setup["paths"]["cased"])
    calls = {"n": 0}

    def poison(_mod, _inp, out):  # on the vocabulary head: the teacher's logits turn NaN from its 7th pass
        calls["n"] += 1
        if calls["n"] >= 7:
            out.fill_(float("nan"))
        return out

    teacher.get_output_embeddings().register_forward_hook(poison)
    out = tmp_path / "run"
    cfg = config(setup, out, ["cased"], [{"name": "s", "teachers": ["cased"]}], max_steps=10, save_every=5)
    with pytest.raises(FloatingPointError, match=r"step 7 for student 's'.*step-00000005"):
        distill(cfg, setup["sents"], teachers={"cased": (teacher, tok)})
    assert (out / "checkpoints" / "latest").read_text() == "step-00000005"
    assert not (out / "s").exists()


# ------------------------------------------------------------------------------- reruns and resumes
def test_fresh_run_clears_old_checkpoints_and_resume_checks_settings(setup, tmp_path):
    """A fresh run never keeps (or later resumes) an earlier run's checkpoints; a resume with other
    data/loss settings is refused; a torn last log line does not block a resume."""
    from kdlib.engine.checkpoint import latest_checkpoint
    from kdlib.engine.distill import read_log as read_records

    out = tmp_path / "run"
    students = [{"name": "s", "teachers": ["cased"]}]
    distill(config(setup, out, ["cased"], students, max_steps=6, save_every=2), setup["sents"])
    assert latest_checkpoint(out).name == "step-00000006"
    # a shorter fresh run into the same folder: its own checkpoints only, none pruned away
    distill(
        config(setup, out, ["cased"], students, max_steps=4, save_every=2, keep_checkpoints=2),
        setup["sents"],
        fresh=True,
    )
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000004"]
    assert latest_checkpoint(out).name == "step-00000004"
    with pytest.raises(ValueError, match=r"cannot resume exactly .*batch_size: 8 -> 4"):
        distill(config(setup, out, ["cased"], students, max_steps=4, batch_size=4), setup["sents"], resume=True)
    with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 5, "lr"')  # killed mid-write
    assert [r["step"] for r in read_records(out / "log.jsonl")] == [1, 2, 3, 4]
    summary = distill(config(setup, out, ["cased"], students, max_steps=4, save_every=2), setup["sents"], resume=True)
    assert summary["s"]["steps"] == 4


# ------------------------------------------------------------------ the two-tokenizer ensemble (issue 10)
def _cross_setup(setup, **kw):
    from kdlib.engine.models import build_students as _build_students
    from kdlib.engine.models import load_teachers as _load_teachers

    names = ["cased", "uncased"]
    cfg = config(setup, setup["root"] / "unused", names, [{"name": "s", "teachers": names}], **kw)
    cpu = torch.device("cpu")
    tm = _load_teachers(cfg, cpu, None)
    [st] = _build_students(cfg, tm, cpu, None, texts=setup["sents"])
    bv, masked = make_batch(
        setup["sents"][8:40], {tm[n].view: tm[n].tokenizer for n in names}, cfg, torch.Generator().manual_seed(1)
    )
    return cfg, tm, st, bv, masked


def test_first_piece_mismatches_get_no_cross_kl(setup):
    from kdlib.engine.align import token_key

    _, tm, st, bv, masked = _cross_setup(setup, cross_mismatch="keep", kl_on="all")
    keep = student_plan(st, tm, bv, masked, "all", "keep").cross["uncased"]
    skip = student_plan(st, tm, bv, masked, "all", "skip").cross["uncased"]
    sv, tv = bv[st.view], bv[tm["uncased"].view]
    true = {k: torch.where(v.labels != -100, v.labels, v.input_ids) for k, v in (("s", sv), ("t", tv))}
    s_tok = st.tokenizer.convert_ids_to_tokens(true["s"][keep.kl_b, sv.first_pos[keep.kl_b, keep.kl_w]].tolist())
    t_tok = tm["uncased"].tokenizer.convert_ids_to_tokens(true["t"][keep.kl_b, keep.kl_tp].tolist())
    differ = [token_key(a) != token_key(b) and not a == b == "[UNK]" for a, b in zip(s_tok, t_tok)]
    assert 0 < sum(differ) < len(differ) / 5
    kc, sc = keep.counts, skip.counts
    assert sc.n_kl == kc.n_kl - sum(differ) and sc.n_mismatch == kc.n_mismatch == sum(differ)
    assert kc.n_candidates == sc.n_candidates == len(differ)
    kept = set(zip(skip.kl_b.tolist(), skip.kl_w.tolist()))
    assert all(((b, w) in kept) != d for b, w, d in zip(keep.kl_b.tolist(), keep.kl_w.tolist(), differ))


def test_linear_map_learns_and_is_not_saved(setup, tmp_path):
    cfg, tm, st, bv, masked = _cross_setup(setup)
    assert set(st.cross_maps) == {"uncased"}  # only the other-tokenizer teacher gets a map
    sv = bv[st.view]
    plan = student_plan(st, tm, bv, masked, "masked")
    s_out = logits_at(st.model, sv.input_ids, sv.attention_mask, plan.kl_b, plan.kl_p, output_hidden=True)
    t_out = teacher_outputs(
        tm, ["cased", "uncased"], bv, cfg, torch.device("cpu"), amp_settings(torch.device("cpu"), "off")
    )
    comps = student_losses(st, tm, cfg, plan, plan.counts, sv, s_out, t_out, scale=1.0)
    comps["total"].backward()
    lin = st.cross_maps["uncased"]
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    out = tmp_path / "run"
    run = config(
        setup,
        out,
        ["cased", "uncased"],
        [{"name": "s", "teachers": ["cased", "uncased"]}],
        max_steps=2,
        save_every=1,
        kl_on="all",
    )
    summary = distill(run, setup["sents"])
    saved = load_file(str(Path(summary["s"]["out_dir"]) / "model.safetensors"))
    assert not [k for k in saved if "cross" in k]
    from transformers import AutoModelForMaskedLM

    _, info = AutoModelForMaskedLM.from_pretrained(summary["s"]["out_dir"], output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    ck = load_file(str(out / "checkpoints" / "step-00000002" / "s" / "model.safetensors"))
    assert [k for k in ck if k.startswith("cross_maps.uncased")]  # resumable: the map is in the checkpoint
    assert "mismatch/uncased" in read_log(out)[-1]["students"]["s"]
    assert 0 < summary["s"]["mismatch"]["mismatch/uncased"] < 0.2


def test_cross_cosine_off_and_raw(setup):
    for mode in ("off", "raw"):
        cfg, tm, st, bv, masked = _cross_setup(setup, cross_cosine=mode)
        assert not st.cross_maps
        sv = bv[st.view]
        plan = student_plan(st, tm, bv, masked, "masked")
        with torch.no_grad():
            s_out = logits_at(st.model, sv.input_ids, sv.attention_mask, plan.kl_b, plan.kl_p, output_hidden=True)
            comps = student_losses(
                st,
                tm,
                cfg,
                plan,
                plan.counts,
                sv,
                s_out,
                teacher_outputs(
                    tm, ["cased", "uncased"], bv, cfg, torch.device("cpu"), amp_settings(torch.device("cpu"), "off")
                ),
                scale=1.0,
            )
        assert ("cos/uncased" in comps) == (mode == "raw")
        if mode == "off":  # only the same-model teacher's plain cosine remains, weight normalised over it
            torch.testing.assert_close(comps["cos"], comps["cos/cased"])


def _interrupt_after(teacher, passes: int):
    """Make `teacher` raise on its (passes + 1)-th vocabulary-head call, as a disconnect would stop a run."""
    calls = {"n": 0}

    def stop(_mod, _inp, out):
        calls["n"] += 1
        if calls["n"] > passes:
            raise KeyboardInterrupt("session disconnected")
        return out

    teacher.get_output_embeddings().register_forward_hook(stop)


def test_rerun_after_interruption_continues_without_resume(setup, tmp_path, capsys, monkeypatch):
    """Interrupted at step 5 with checkpoints every 2 steps, a plain rerun continues from step 4 and ends with
    the weights of an uninterrupted run; an incompatible rerun is refused with a pointer to fresh/--fresh."""
    from safetensors.torch import load_file

    from kdlib.engine.distill import cli
    from kdlib.engine.teachers import load_teacher

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    students = [{"name": "s", "teachers": ["cased"]}]
    straight = distill(config(setup, tmp_path / "straight", ["cased"], students, max_steps=6), setup["sents"])
    out = tmp_path / "run"
    teacher, tok = load_teacher(setup["paths"]["cased"])
    _interrupt_after(teacher, 4)
    with pytest.raises(KeyboardInterrupt):
        distill(
            config(setup, out, ["cased"], students, max_steps=6, save_every=2),
            setup["sents"],
            teachers={"cased": (teacher, tok)},
        )
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4]
    capsys.readouterr()
    summary = distill(config(setup, out, ["cased"], students, max_steps=6, save_every=2), setup["sents"])
    assert "resuming" in capsys.readouterr().err
    assert [r["step"] for r in read_log(out)] == [1, 2, 3, 4, 5, 6]
    assert summary["s"]["final_losses"] == straight["s"]["final_losses"]
    a, b = load_file(tmp_path / "straight" / "s" / "model.safetensors"), load_file(out / "s" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"batch_size: 8 -> 4.*--fresh \(fresh=True\)"):
        distill(config(setup, out, ["cased"], students, max_steps=6, batch_size=4), setup["sents"])
    import kdlib.engine.distill

    with monkeypatch.context() as m:  # other training code: its checkpoint does not continue this run
        m.setattr(kdlib.engine.distill, "code_fingerprint", lambda: "other code")
        with pytest.raises(ValueError, match=r"kdlib training code: \w+ -> other code.*--fresh"):
            distill(config(setup, out, ["cased"], students, max_steps=6, save_every=2), setup["sents"])
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps({**{k: v for k, v in asdict(config(setup, out, ["cased"], students)).items()}, "max_steps": 3})
    )
    assert cli(["--config", str(cfg), "--corpus", setup["corpus"]]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # not datasets' progress
    assert len(err) == 1 and "max_steps: 6 -> 3" in err[0] and "--fresh" in err[0] and "Traceback" not in err[0]


def test_fresh_starts_over_and_says_what_it_removes(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = tmp_path / "run"
    students = [{"name": "s", "teachers": ["cased"]}]
    distill(config(setup, out, ["cased"], students, max_steps=4, save_every=2), setup["sents"])
    capsys.readouterr()
    distill(config(setup, out, ["cased"], students, max_steps=2, lr=2e-3), setup["sents"], fresh=True)
    err = capsys.readouterr().err
    assert "removing log.jsonl, run.json, checkpoints/step-00000002, checkpoints/step-00000004" in err
    assert [r["step"] for r in read_log(out)] == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-00000002"]


def test_keep_one_checkpoint_policy_on_colab(setup, tmp_path, monkeypatch, capsys):
    """On Colab (or with out_dir on Drive): one checkpoint while training, none once the students are saved,
    and a rerun of the finished step returns its summary without training again."""
    import kdlib.engine.config
    from kdlib.engine.teachers import load_teacher

    assert DistillConfig.from_dict(
        {
            **asdict(config(setup, tmp_path, ["cased"], [{"name": "s", "teachers": ["cased"]}])),
            "out_dir": "/content/drive/MyDrive/run",
        }
    ).checkpoint_policy() == (1, False)
    monkeypatch.setattr(kdlib.engine.config, "on_colab", lambda: False)
    assert config(setup, tmp_path, ["cased"], [{"name": "s", "teachers": ["cased"]}]).checkpoint_policy() == (2, True)
    monkeypatch.setattr(kdlib.engine.config, "on_colab", lambda: True)
    out = tmp_path / "run"
    students = [{"name": "s", "teachers": ["cased"]}]
    teacher, tok = load_teacher(setup["paths"]["cased"])
    _interrupt_after(teacher, 3)
    with pytest.raises(KeyboardInterrupt):
        distill(
            config(setup, out, ["cased"], students, max_steps=5, save_every=1),
            setup["sents"],
            teachers={"cased": (teacher, tok)},
        )
    assert [p.name for p in (out / "checkpoints").glob("step-*")] == ["step-00000003"]
    summary = distill(config(setup, out, ["cased"], students, max_steps=5, save_every=1), setup["sents"])
    assert summary["s"]["steps"] == 5 and not (out / "checkpoints").exists()
    log = (out / "log.jsonl").read_text()
    again = distill(config(setup, out, ["cased"], students, max_steps=5, save_every=2, device="cpu"), setup["sents"])
    assert again == json.loads(json.dumps(summary)) and (out / "log.jsonl").read_text() == log
    import kdlib.engine.distill

    monkeypatch.setattr(kdlib.engine.distill, "code_fingerprint", lambda: "other code")  # a finished run of other code
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    distill(config(setup, out, ["cased"], students, max_steps=5), setup["sents"])
    assert "starting over" in capsys.readouterr().err and len(read_log(out)) == 5


def test_teachers_stay_fp32_on_cpu_and_go_half_on_gpu(setup):
    from kdlib.engine.models import teachers_to_half

    cfg = config(setup, Path("unused"), ["cased"], [{"name": "s", "teachers": ["cased"]}])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in devices:
        device = torch.device(name)
        tm = _load_teachers_for(cfg, device)
        got = teachers_to_half(tm, cfg, device)
        dtype = next(tm["cased"].model.parameters()).dtype
        if name == "cpu":
            assert got == "fp32" and dtype == torch.float32
        else:
            assert got in ("bf16", "fp16") and dtype in (torch.bfloat16, torch.float16)


def _load_teachers_for(cfg, device):
    from kdlib.engine.models import load_teachers

    return load_teachers(cfg, device, None)
