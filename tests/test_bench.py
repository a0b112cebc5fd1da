"""Tests of kdlib.bench.speed: the inference part on tiny shapes, parameter formulas at the paper's shapes,
the reference loop's KL over all non-pad positions, and refusal of bad arguments."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from kdlib.bench import speed as bench

TINY = bench.InferenceShapes(
    vocab_sizes=(500, 300),
    hidden=32,
    teacher_layers=2,
    student_layers=1,
    heads=2,
    ffn=64,
    max_positions=64,
    settings=((1, 16), (4, 32), (8, 64)),
)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bench")
    res = bench.run_bench(
        out,
        quick=True,
        device="cpu",
        parts="inference,pipeline",
        runs_dir=out / "no-runs",
        inference_shapes=TINY,
        budget_s=0.05,
        max_repeats=3,
        matmul_n=256,
        verbose=False,
    )
    return out, res


def test_quick_inference_writes_json_and_figure(tiny_result):
    out, res = tiny_result
    data = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 1000 and (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    for key in ("schema", "created", "quick", "device", "parts", "matmul_peak", "inference", "pipeline", "targets"):
        assert key in data, key
    assert data["parts"] == ["inference", "pipeline"] and "throughput" not in data
    assert data["device"]["type"] == "cpu" and data["device"]["torch"] == torch.__version__
    assert data["matmul_peak"]["gflops"] > 0
    inf = data["inference"]
    assert set(inf["models"]) == {"teacher-500", "student-500", "teacher-300", "student-300"}
    # --quick drops the largest setting and times only the first vocabulary, and says so
    assert inf["settings"] == [[1, 16], [4, 32]] and len(inf["skipped"]) == 2
    assert "latency" in inf["models"]["teacher-500"] and "latency" not in inf["models"]["teacher-300"]
    lat = inf["models"]["student-500"]["latency"]["mlm"]["b4_l32"]
    assert 1 <= lat["repeats"] <= 3 and lat["min_s"] <= lat["median_s"] <= lat["max_s"]
    pair = inf["pairs"][0]
    t, s = inf["models"]["teacher-500"], inf["models"]["student-500"]
    assert pair["speedup"]["encoder"]["b4_l32"] == pytest.approx(
        t["latency"]["encoder"]["b4_l32"]["median_s"] / s["latency"]["encoder"]["b4_l32"]["median_s"]
    )
    # safetensors of float32 weights: 4 bytes per stored parameter plus a small header
    for m in inf["models"].values():
        assert 4 * m["params"]["mlm"] <= m["size"]["bytes"] < 4 * m["params"]["mlm"] + 100_000
        assert m["size"]["MiB"] == pytest.approx(m["size"]["bytes"] / 2**20)
    assert data["pipeline"]["profiles"]["cpu"] == {"status": "not run"}
    assert data["targets"] == []  # the target setting (batch 32 x 128) is not in the tiny grid
    # nor does it fit the tiny models (64 positions): no interleaved timing, and the JSON says why
    assert inf["interleaved"] is False and "max_positions 64" in inf["claim_timing"]["skipped"]


def test_param_counts_match_models_and_formula(tiny_result):
    from transformers import BertModel, DistilBertModel

    _, res = tiny_result
    for name, m in res["inference"]["models"].items():
        vocab = m["vocab"]
        if m["role"] == "teacher":
            model = BertModel(bench.teacher_config(TINY, vocab))
        else:
            model = DistilBertModel(bench.student_config(TINY, vocab))
        assert m["params"]["encoder"] == model.num_parameters() == m["formula_params"], name


def test_paper_shape_param_counts():
    from transformers import BertForMaskedLM, BertModel, DistilBertModel

    shapes = bench.InferenceShapes()
    assert bench.bert_param_formula(50000) == 124_441_344  # BERT-base-ro with pooler (paper: 124.4 M)
    assert bench.distilbert_param_formula(50000) == 81_321_984  # paper: 81.3 M
    assert bench.distilbert_param_formula(37788) == 71_943_168  # paper: 72 M
    with torch.device("meta"):  # shapes only, no weights allocated
        assert BertModel(bench.teacher_config(shapes, 50000)).num_parameters() == 124_441_344
        assert DistilBertModel(bench.student_config(shapes, 50000)).num_parameters() == 81_321_984
        assert DistilBertModel(bench.student_config(shapes, 37788)).num_parameters() == 71_943_168
        # the MLM model has no pooler but a transform layer and decoder bias (decoder tied to the embeddings)
        assert (
            BertForMaskedLM(bench.teacher_config(shapes, 50000)).num_parameters()
            == 124_441_344 - (768 * 768 + 768) + (768 * 768 + 768 + 2 * 768) + 50000
        )


def test_reference_ce_is_kl_over_all_non_pad_positions():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    temp = 2.0
    kls = []
    for b in range(2):
        for i in range(3):
            if mask[b, i]:
                p = torch.softmax(t[b, i] / temp, -1)
                logq = torch.log_softmax(s[b, i] / temp, -1)
                kls.append(float((p * (p.log() - logq)).sum()))
    expected = sum(kls) / 5 * temp**2  # batchmean over the 5 real positions, times T^2
    got = bench.reference_ce_loss(s, t, mask, temp)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # the padded position does not count: changing its logits changes nothing
    s2 = s.clone()
    s2[1, 2] += 100
    assert float(bench.reference_ce_loss(s2, t, mask, temp)) == pytest.approx(expected, rel=1e-5)


def test_masking_only_touches_real_tokens():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (8, 40))
    attn = torch.ones_like(ids)
    attn[:, 30:] = 0
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    masked, labels = bench._mask_tokens(ids, attn, special, 100, gen, prob=0.5, mask_id=4)
    chosen = labels != -100
    assert not chosen[:, 30:].any() and not chosen[:, 0].any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])
    assert 0.3 < chosen[:, 1:30].float().mean() < 0.7
    assert (masked[chosen] == 4).float().mean() > 0.6  # about 80% become [MASK]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"parts": "inference,speed"}, "unknown"),
        ({"parts": ""}, "unknown or empty"),
        ({"max_repeats": 0}, "max_repeats"),
        ({"budget_s": -1.0}, "budget_s"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_arguments_rejected(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.run_bench(tmp_path / "out", verbose=False, **kwargs)
    assert not (tmp_path / "out" / "bench.json").exists()


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert bench.cli(["--out", str(tmp_path), "--parts", "inference,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert bench.cli(["--out", str(tmp_path), "--repeats", "0"]) == 2
    with pytest.raises(SystemExit):
        bench.cli(["--device", "tpu"])
    assert not (tmp_path / "bench.json").exists()


def test_pipeline_reads_run_summary(tmp_path):
    run = tmp_path / "smoke"
    run.mkdir()
    (run / "run_summary.json").write_text(
        json.dumps(
            {
                "complete": True,
                "total_wall_s": 123.4,
                "peak_rss_mb": 987.0,
                "steps": {"01-teachers": {"status": "ok", "wall_s": 100.0, "peak_rss_mb": 987.0}},
            }
        )
    )
    res = bench.bench_pipeline(tmp_path)
    assert res["profiles"]["smoke"]["total_wall_s"] == 123.4 and res["profiles"]["smoke"]["status"] == "complete"
    assert res["profiles"]["smoke"]["steps"]["01-teachers"]["wall_s"] == 100.0
    assert res["profiles"]["cpu"]["status"] == "not run"


def test_throughput_and_shared_parts_run_on_tiny_models(tmp_path):
    """Both loops train a tiny student on real RO-STS text; the shared run trains all three students."""
    from kdlib.data.load import load_task

    torch.set_num_threads(1)
    train = load_task("sts")["train"]
    texts = list(train["text_a"][:150]) + list(train["text_b"][:150])
    shapes = bench.TrainShapes("tiny", 400, 32, 2, 1, 2, 64, batch_size=8, max_len=48, steps=3)
    teachers = bench.make_teachers(tmp_path, texts, shapes)
    peak = {"gflops": 10.0}
    th = bench.bench_throughput(torch.device("cpu"), tmp_path, texts, teachers, shapes, peak)
    ref, kd = th["reference"], th["kdlib"]
    assert ref["steps"] == 3 and 0 < ref["real_tokens"] <= ref["padded_tokens"] <= 3 * 8 * 48
    assert kd["log_rows"] == 3 and kd["real_tokens"] > 0
    assert th["ratio_tokens_per_s"] == pytest.approx(kd["train_tokens_per_s"] / ref["train_tokens_per_s"])
    assert th["flops_per_token"] == 6 * ref["student_params"] + 2 * ref["teacher_params"][0]
    assert th["reference_share_of_peak"] == pytest.approx(th["reference_gflops"] / 10.0)
    assert (tmp_path / "reference" / "s1" / "config.json").is_file()
    sh = bench.bench_shared(torch.device("cpu"), tmp_path, texts, teachers, shapes)
    assert set(sh["separate"]) == {"s1", "s2", "s3"} and sh["shared"]["students"] == ["s1", "s2", "s3"]
    assert sh["speedup"] == pytest.approx(sh["separate_s"] / sh["shared_s"])
    for s in ("s1", "s2", "s3"):
        assert (tmp_path / "shared" / s / "config.json").is_file()


# ------------------------------------------------------------- claim (a): interleaved, repeated timing
TINY128 = bench.InferenceShapes(**{**bench.asdict(TINY), "max_positions": 128})  # the claim's 32 x 128 fits


def test_time_interleaved_alternates_and_repeats_past_the_budget():
    calls: list[str] = []
    fns = {"t": lambda: calls.append("t"), "s": lambda: calls.append("s")}
    warm = {"t": lambda: calls.append("warm-t"), "s": None}
    res = bench.time_interleaved(fns, torch.device("cpu"), budget_s=1e-9, max_repeats=2, min_repeats=5, warmups=warm)
    assert calls == ["warm-t", "s"] + ["t", "s"] * 5  # one warm-up each, then teacher, student, teacher, ...
    for r in res.values():
        assert r["repeats"] == len(r["times_s"]) == len(r["cpu_s"]) == 5
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["median_s"] == pytest.approx(sorted(r["times_s"])[2])


def test_time_call_min_repeats():
    cpu = torch.device("cpu")
    assert bench.time_call(lambda: None, cpu, budget_s=1e-9, max_repeats=20)["repeats"] == 1
    assert bench.time_call(lambda: None, cpu, budget_s=1e-9, max_repeats=20, min_repeats=5)["repeats"] == 5
    assert bench.time_call(lambda: None, cpu, budget_s=10.0, max_repeats=4)["repeats"] == 4
    with pytest.raises(ValueError, match="min_repeats"):
        bench.time_call(lambda: None, cpu, budget_s=1.0, max_repeats=3, min_repeats=0)


@pytest.fixture(scope="module")
def claim_run(tmp_path_factory):
    """A run folder holding only bench/bench.json, written by run_bench on tiny models at the claim's setting."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("claim") / "run"
    res = bench.run_bench(
        run / "bench",
        quick=True,
        device="cpu",
        parts="inference",
        inference_shapes=TINY128,
        budget_s=1e-3,
        max_repeats=2,
        matmul_n=64,
        verbose=False,
    )
    return run, res


def test_claim_setting_timed_interleaved_for_every_vocabulary(claim_run):
    run, res = claim_run
    inf = json.loads((run / "bench" / "bench.json").read_text())["inference"]
    assert inf["interleaved"] is True and inf["claim_timing"]["min_repeats"] == bench.CLAIM_REPEATS == 5
    for pair in inf["pairs"]:  # also vocab 300, which --quick leaves out of the rest of the grid
        t, s = (inf["models"][pair[k]]["latency"]["encoder"]["b32_l128"] for k in ("teacher", "student"))
        for r in (t, s):
            assert r["interleaved"] and r["repeats"] == len(r["times_s"]) == len(r["cpu_s"]) >= 5
            assert min(r["times_s"]) > 0 and min(r["cpu_s"]) >= 0 and r["median_cpu_s"] > 0
            assert r["median_s"] == pytest.approx(statistics.median(r["times_s"]))
        iv = pair["interleaved"]
        assert iv["rounds"] == len(iv["ratios"]) == t["repeats"] and min(iv["ratios"]) > 0
        assert iv["ratios"][2] == pytest.approx(t["times_s"][2] / s["times_s"][2])  # paired by position
        assert iv["ratio_min"] <= iv["ratio_median"] <= iv["ratio_max"]
        assert iv["ratio_spread"] == pytest.approx(iv["ratio_max"] - iv["ratio_min"])
        assert pair["speedup"]["encoder"]["b32_l128"] == pytest.approx(t["median_s"] / s["median_s"])
    quick_vocab = inf["models"]["teacher-500"]["latency"]
    assert list(quick_vocab["encoder"]) == ["b1_l16", "b4_l32", "b32_l128"] and "b32_l128" not in quick_vocab["mlm"]
    assert list(inf["models"]["teacher-300"]["latency"]) == ["encoder"]  # only the claim's setting
    assert len(res["targets"]) == 2 and (run / "bench" / "bench.png").is_file()


def test_claim_speed_size_is_testable_on_the_bench_json(claim_run):
    from kdlib.analysis import claims

    run, _ = claim_run
    claim = claims.claim_speed_size(run)
    assert claims.MIN_REPEATS <= bench.CLAIM_REPEATS
    assert claim.verdict != claims.NOT_TESTABLE, claim.reason
    assert "timed interleaved" in claim.reason
    speed = [r for r in claim.details if r["comparison"].startswith("speed")]
    assert len(speed) == 2 and all(r["repeats"] >= 5 for r in speed)


def test_bad_claim_repeats_rejected(tmp_path):
    with pytest.raises(ValueError, match="repeats"):
        bench.run_bench(tmp_path / "out", verbose=False, repeats=0)
    assert bench.cli(["--out", str(tmp_path), "--claim-repeats", "0"]) == 2
