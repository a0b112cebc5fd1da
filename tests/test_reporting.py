"""Tests of kdlib.analysis.reporting on a tiny but real run folder: two tiny teachers on real Romanian text, two
students and the control distilled from them (kdlib.engine.distill), every model fine-tuned on SaPN
(kdlib.eval.finetune), and a tiny benchmark (kdlib.bench.speed). Tables are checked against the files they read,
figures for one line/marker per model in the model's colour, text >= 9 pt and legends outside the data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import datasets
import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import ro_sentences
from matplotlib.text import Text
from PIL import Image

from kdlib.analysis import reporting
from kdlib.bench import speed as bench
from kdlib.book.runner import read_json, slug, write_json
from kdlib.engine.distill import DistillConfig, distill, read_log
from kdlib.engine.teachers import TeacherConfig, pretrain_teacher
from kdlib.eval.finetune import FinetuneConfig, finetune_seeds
from kdlib.eval.loyalty import PREDICTIONS_FILE, load_predictions

TEACHERS = {"BERT-base-ro": False, "RoBERT-base": True}  # name -> lowercase
STUDENTS = {"Distil-BERT-base-ro": "BERT-base-ro", "Distil-RoBERT-base": "RoBERT-base"}
CONTROL = "Control (MLM only)"
MODELS = [*TEACHERS, *STUDENTS, CONTROL]


def _distill(run, sents, out_name: str, students: dict[str, str], **kw) -> dict:
    teachers = sorted(set(students.values()))
    cfg = DistillConfig.from_dict(
        dict(
            teachers=[{"name": t, "path": str(run / "teachers" / t)} for t in teachers],
            students=[
                {"name": slug(s), "teachers": [t], "tokenizer_from": t, "out_dir": str(run / "students" / slug(s))}
                for s, t in students.items()
            ],
            batch_size=8,
            max_len=32,
            max_steps=4,
            lr=1e-3,
            out_dir=str(run / "distill" / out_name),
            device="cpu",
            amp="off",
            seed=0,
            save_every=0,
            **kw,
        )
    )
    return distill(cfg, datasets.Dataset.from_dict({"text": sents}))


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """A run folder as notebooks 01-04 write it, at a tiny scale (teachers trained for 8 steps)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    sents = ro_sentences(data_dir, 300)
    tcfg = TeacherConfig(
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_len=32,
        max_position_embeddings=64,
        vocab_size=600,
        steps=8,
        batch_size=16,
        lr=1e-3,
        pppl_texts=2,
        seed=0,
    )
    teachers = {}
    for name, lowercase in TEACHERS.items():
        metrics = pretrain_teacher(
            datasets.Dataset.from_dict({"text": sents}),
            run / "teachers" / name,
            lowercase=lowercase,
            config=tcfg,
            progress=False,
            device="cpu",
        )
        teachers[name] = {
            "path": str(run / "teachers" / name),
            "source": "trained here",
            "lowercase": lowercase,
            "metrics": metrics,
        }
    write_json(run / "teachers" / "teachers.json", teachers)
    summary = _distill(run, sents, "single", STUDENTS)
    _distill(run, sents, "control", {CONTROL: "BERT-base-ro"}, alpha_ce=0.0, alpha_cos=0.0)
    write_json(
        run / "distill" / "single.json",
        {
            s: {
                "path": str(run / "students" / slug(s)),
                "teachers": [t],
                "kind": "single-teacher",
                "log": str(run / "distill" / "single" / "log.jsonl"),
                "key": slug(s),
            }
            for s, t in STUDENTS.items()
        },
    )
    write_json(
        run / "distill" / "ensemble.json",
        {
            CONTROL: {
                "path": str(run / "students" / slug(CONTROL)),
                "teachers": ["BERT-base-ro"],
                "kind": "control",
                "log": str(run / "distill" / "control" / "log.jsonl"),
                "key": slug(CONTROL),
            }
        },
    )
    zoo = reporting.model_zoo(run)
    config = FinetuneConfig(epochs=1, batch_size=8, max_len=32, device="cpu", amp="off", max_eval_examples=24)
    rows, summaries = [], {}
    for name in MODELS:
        summaries[name] = finetune_seeds(
            zoo[name]["path"],
            "sapn",
            run / "evaluate" / zoo[name]["key"] / "sapn",
            seeds=[0],
            config=config,
            max_train_examples=24,
            progress=False,
        )
        rows.append(reporting.result_row(name, zoo[name]["role"], summaries[name]))
    write_json(run / "evaluate" / "results.json", rows)
    return {"dir": run, "distill_summary": summary, "finetune": summaries}


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory):
    torch.set_num_threads(1)
    shapes = bench.InferenceShapes(
        vocab_sizes=(500,),
        hidden=32,
        teacher_layers=2,
        student_layers=1,
        heads=2,
        ffn=64,
        max_positions=64,
        settings=((1, 16), (4, 32)),
    )
    train = bench.TrainShapes("tiny", 400, 32, 2, 1, 2, 64, batch_size=8, max_len=48, steps=2, sentences=300)
    return bench.run_bench(
        tmp_path_factory.mktemp("bench"),
        quick=False,
        device="cpu",
        parts="inference,throughput,shared",
        inference_shapes=shapes,
        train_shapes=train,
        budget_s=0.05,
        max_repeats=2,
        matmul_n=128,
        verbose=False,
    )


def _texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]


def _assert_readable(fig) -> None:
    """7 in wide, every piece of text at least 9 pt, and figure legends below every panel (not on the data)."""
    assert fig.get_figwidth() == pytest.approx(reporting.FIG_WIDTH)
    small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < 9]
    assert not small, small
    assert not any(ax.get_legend() for ax in fig.axes)  # no legend inside a panel
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for legend in fig.legends:
        top = legend.get_window_extent(renderer).y1
        assert all(top <= ax.get_window_extent(renderer).y0 + 1 for ax in fig.axes if ax.get_visible())


# --------------------------------------------------------------------------- what a run holds


def test_model_zoo_and_teacher_map(run):
    zoo = reporting.model_zoo(run["dir"])
    assert list(zoo) == MODELS
    assert [zoo[m]["role"] for m in MODELS] == ["teacher", "teacher", "student", "student", "control"]
    assert zoo["Distil-RoBERT-base"]["key"] == "distil-robert-base" and zoo[CONTROL]["key"] == "control-mlm-only"
    results = reporting.collect_results(run["dir"])
    assert reporting.teacher_map(run["dir"], results) == {
        "Distil-BERT-base-ro": ["BERT-base-ro"],
        "Distil-RoBERT-base": ["RoBERT-base"],
        CONTROL: ["BERT-base-ro"],
    }
    # a teacher without results drops the students that need it
    assert CONTROL not in reporting.teacher_map(run["dir"], results[results["model"] != "BERT-base-ro"])


def test_result_rows_read_the_finetune_outputs(run):
    results = reporting.collect_results(run["dir"])
    assert list(results["model"]) == MODELS and set(results["task"]) == {"sapn"}
    for _, row in results.iterrows():
        s = run["finetune"][row["model"]]
        seed_dir = run["dir"] / "evaluate" / slug(row["model"]) / "sapn" / "seed-0"
        metrics = json.loads((seed_dir / "metrics.json").read_text())
        assert row["mean"] == pytest.approx(100 * s["test"]["score"]["mean"])
        assert row["metric"] == "accuracy" and row["n_seeds"] == 1 and row["test_examples"] == 24
        assert row["test_seconds"] == pytest.approx(metrics["timing"]["test_seconds"])
        assert row["parameters"] == metrics["parameters"] > 0
    # the students have fewer encoder parameters than their teachers
    size = results.set_index("model")["parameters"]
    assert size["Distil-BERT-base-ro"] < size["BERT-base-ro"]
    empty = run["dir"] / "empty"
    write_json(empty / "evaluate" / "results.json", [])
    with pytest.raises(ValueError, match="holds no results"):
        reporting.collect_results(empty)
    with pytest.raises(FileNotFoundError, match="results.json is missing"):
        reporting.collect_results(run["dir"] / "nowhere")


def test_log_frame_has_a_row_per_step_and_student(run):
    path = run["dir"] / "distill" / "single" / "log.jsonl"
    records = read_log(path)
    df = reporting.log_frame(path)
    assert len(df) == 2 * len(records) == 8
    assert set(df["student"]) == {"distil-bert-base-ro", "distil-robert-base"}
    last = df[(df["step"] == records[-1]["step"]) & (df["student"] == "distil-robert-base")].iloc[0]
    assert last["total"] == records[-1]["students"]["distil-robert-base"]["total"]
    assert {"kl", "mlm", "cos", "lr"} <= set(df.columns)
    with pytest.raises(FileNotFoundError, match="did not write its log"):
        reporting.log_frame(run["dir"] / "distill" / "nope" / "log.jsonl")


def test_flat_summary_flattens_one_students_numbers(run):
    flat = reporting.flat_summary(run["distill_summary"], "distil-bert-base-ro")
    student = run["distill_summary"]["distil-bert-base-ro"]
    assert flat["steps"] == 4 and flat["final_losses.total"] == student["final_losses"]["total"]
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat.values())
    assert "teachers" not in flat and "device" not in flat  # lists and strings are left out


# --------------------------------------------------------------------------- result tables


def test_paper_table_puts_ours_beside_the_poster(run):
    results = reporting.collect_results(run["dir"])
    table = reporting.paper_table(results)
    assert list(table.columns) == [("sapn", "ours"), ("sapn", "paper")]
    assert list(table.index) == ["BERT-base-ro", "RoBERT-base", "Distil-BERT-base-ro", "Distil-RoBERT-base", CONTROL]
    ours = results.set_index("model")["mean"]
    for model in MODELS:
        assert table.loc[model, ("sapn", "ours")] == pytest.approx(round(ours[model], 2))
    assert table.loc["Distil-RoBERT-base", ("sapn", "paper")] == reporting.POSTER_TABLE["Distil-RoBERT-base"]["sapn"]
    assert np.isnan(table.loc[CONTROL, ("sapn", "paper")])
    rows = reporting.paper_table(results, layout="rows")  # the poster's number under ours; no empty paper row
    assert list(rows.index) == [(m, src) for m in table.index for src in ("ours", "paper")][:-1]
    assert list(rows.columns) == ["sapn"]
    for (model, src), value in rows["sapn"].items():
        assert value == table.loc[model, ("sapn", src)]
    with pytest.raises(ValueError, match="layout='wide'"):
        reporting.paper_table(results, layout="wide")
    plain = reporting.paper_table(results, with_poster=False)
    assert list(plain.columns) == ["sapn"] and plain.loc[CONTROL, "sapn"] == table.loc[CONTROL, ("sapn", "ours")]


def test_render_shows_missing_as_a_dash_and_short_names(run):
    html = reporting.render(reporting.paper_table(reporting.collect_results(run["dir"]))).to_html()
    assert "nan" not in html.lower() and reporting.MISSING in html
    assert ">Distil-RoBERT<" in html and ">Control<" in html and "Distil-RoBERT-base" not in html
    assert "white-space: nowrap" in html
    rows = reporting.render(reporting.paper_table(reporting.collect_results(run["dir"]), layout="rows")).to_html()
    grey = rows[: rows.index("color: #666")].rsplit("}", 1)[1]  # the selectors of the grey rule
    assert sorted(re.findall(r"_row(\d+)_col0", grey)) == ["1", "3", "5", "7"]  # the poster's rows, in grey
    assert reporting.short_name("DistilMulti-BERT-base-ro (sum)") == "DistilMulti (sum)"
    assert reporting.short_name("Something else (x)") == "Something else (x)"


def test_relative_drop_against_one_or_several_teachers(run):
    results = reporting.collect_results(run["dir"])
    score = results.set_index("model")["mean"]
    drop = reporting.relative_drop(
        results, {"Distil-BERT-base-ro": "BERT-base-ro", CONTROL: ["BERT-base-ro", "RoBERT-base"]}
    )
    t = score["BERT-base-ro"]
    assert drop.loc["Distil-BERT-base-ro", "sapn"] == pytest.approx(
        round(100 * (t - score["Distil-BERT-base-ro"]) / abs(t), 2)
    )
    mean = (score["BERT-base-ro"] + score["RoBERT-base"]) / 2
    assert drop.loc[CONTROL, "sapn"] == pytest.approx(round(100 * (mean - score[CONTROL]) / abs(mean), 2))
    with pytest.raises(KeyError, match="no results for \\['nobody'\\]"):
        reporting.relative_drop(results, {"nobody": "BERT-base-ro"})


def test_loyalty_rows_match_the_saved_predictions(run):
    rows = pd.DataFrame(reporting.loyalty_rows(run["dir"], ["sapn"]))
    assert sorted(rows["student"]) == sorted([*STUDENTS, CONTROL])
    assert all(rows["reference"] == rows["student"].map({**STUDENTS, CONTROL: "BERT-base-ro"}))

    def preds(model):
        return load_predictions(run["dir"] / "evaluate" / slug(model) / "sapn" / "seed-0" / PREDICTIONS_FILE)

    for _, row in rows.iterrows():
        t, s = preds(row["reference"]), preds(row["student"])
        assert row["examples"] == len(s.pred) == 24
        assert row["label_loyalty"] == pytest.approx(100 * np.mean(t.pred == s.pred))
        assert 0 <= row["probability_loyalty"] <= 100
    table = reporting.loyalty_table(rows)
    assert table.loc[("Distil-BERT-base-ro", "BERT-base-ro"), "L-L"] == pytest.approx(
        round(rows.set_index("student").loc["Distil-BERT-base-ro", "label_loyalty"], 2)
    )
    assert table.loc[("Distil-BERT-base-ro", "BERT-base-ro"), "L-L (poster)"] == 87.80
    assert np.isnan(table.loc[(CONTROL, "BERT-base-ro"), "L-L (poster)"])
    assert "R-L" not in table.columns  # no STS in this run: no regression loyalty


# --------------------------------------------------------------------------- colours and style


def test_one_colour_per_model_everywhere():
    paper = [*TEACHERS, *STUDENTS, "DistilMulti-BERT-base-ro (average)", "DistilMulti-BERT-base-ro (sum)", CONTROL]
    colours = [reporting.color_for(m) for m in paper]
    assert len(set(colours)) == len(paper)  # distinct
    assert reporting.color_for("distil-bert-base-ro") == reporting.color_for("Distil-BERT-base-ro")
    assert reporting.display_name("control-mlm-only") == CONTROL
    # a name without a fixed colour gets one from the extra palette, the same in another process
    other = reporting.color_for("Distil-BERT-base-ro (task)")
    assert other in reporting.EXTRA_COLORS
    code = "from kdlib.analysis.reporting import color_for; print(color_for('Distil-BERT-base-ro (task)'))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == other


def test_style_sets_the_book_rcparams():
    with matplotlib.rc_context():
        matplotlib.rcParams["legend.fontsize"] = 6
        reporting.style()
        assert matplotlib.rcParams["legend.fontsize"] == 9 and matplotlib.rcParams["savefig.dpi"] == 200
        assert matplotlib.rcParams["figure.figsize"] == [reporting.FIG_WIDTH, 3.6]


def test_save_figure_writes_svg_and_2x_png_atomically(run, tmp_path):
    fig = reporting.plot_all_logs(run["dir"])
    svg = reporting.save_figure(fig, tmp_path / "curves.svg")
    assert "<svg" in svg.read_text()[:2000]
    png = reporting.save_figure(reporting.plot_all_logs(run["dir"]), tmp_path / "curves.png")
    with Image.open(png) as img:
        assert img.width >= 1.8 * 100 * reporting.FIG_WIDTH  # about 200 dpi at 7 in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]  # no temporary files left


# --------------------------------------------------------------------------- figures


def test_loss_curves_one_panel_per_term_one_line_per_student(run):
    fig = reporting.plot_all_logs(run["dir"])
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["total", "KL to the teacher(s)", "masked-LM", "cosine"]
    names = [*STUDENTS, CONTROL]
    for ax in panels:
        assert [line.get_label() for line in ax.get_lines()] == names
        assert [line.get_color() for line in ax.get_lines()] == [reporting.color_for(n) for n in names]
    total = panels[0].get_lines()[0]
    log = reporting.log_frame(run["dir"] / "distill" / "single" / "log.jsonl")
    mine = log[log["student"] == "distil-bert-base-ro"]
    assert list(total.get_ydata()) == list(mine["total"]) and list(total.get_xdata()) == list(mine["step"])
    _assert_readable(fig)
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == names
    single = reporting.plot_distill_log(run["dir"] / "distill" / "single" / "log.jsonl", title="single")
    assert [line.get_label() for line in single.axes[0].get_lines()] == list(STUDENTS)  # keys -> display names
    _assert_readable(single)


def test_teacher_curves_one_line_per_teacher(run):
    teachers = read_json(run["dir"] / "teachers" / "teachers.json")
    fig = reporting.plot_teacher_curves(teachers)
    [ax] = fig.axes
    for line, (name, info) in zip(ax.get_lines(), teachers.items(), strict=True):
        steps, losses = zip(*info["metrics"]["train_loss_curve"])
        assert line.get_label() == name and line.get_color() == reporting.color_for(name)
        assert list(line.get_xdata()) == list(steps) and list(line.get_ydata()) == list(losses)
    _assert_readable(fig)
    hub = {name: {"path": "hub/id", "source": "hub", "metrics": {}} for name in TEACHERS}
    assert reporting.plot_teacher_curves(hub) is None  # nothing trained here, nothing to draw


def test_loss_curves_need_a_log(tmp_path):
    write_json(tmp_path / "teachers" / "teachers.json", {"T": {"path": "t"}})
    with pytest.raises(ValueError, match="no student has a distillation log"):
        reporting.plot_all_logs(tmp_path)
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "lr": 0.1}) + "\n")
    with pytest.raises(ValueError, match="no loss columns"):
        reporting.plot_distill_log(tmp_path / "log.jsonl")


def test_headline_figure_one_marker_per_model(run, bench_result):
    results = reporting.collect_results(run["dir"])
    fig = reporting.plot_score_vs_speed_size(results, bench_result)
    size_ax, speed_ax = fig.axes
    agg = reporting.speed_size(results)
    assert list(agg.index) == ["BERT-base-ro", "RoBERT-base", "Distil-BERT-base-ro", "Distil-RoBERT-base", CONTROL]
    for ax, x in ((size_ax, agg["parameters"] / 1e6), (speed_ax, agg["examples_per_s"])):
        assert len(ax.collections) == len(MODELS)
        for coll, (model, row) in zip(ax.collections, agg.iterrows()):
            assert coll.get_label() == model
            assert np.allclose(coll.get_offsets(), [[x[model], row["score"]]])
            assert matplotlib.colors.same_color(coll.get_facecolor()[0], reporting.color_for(model))
    assert agg.loc["Distil-BERT-base-ro", "examples_per_s"] == pytest.approx(
        24 / results.set_index("model").loc["Distil-BERT-base-ro", "test_seconds"]
    )
    pair = bench_result["inference"]["pairs"][0]
    note = fig._suptitle.get_text()
    assert note == (
        f"kdlib.bench.speed (cpu): the 1-layer student is {pair['speedup']['encoder']['b1_l16']:.1f}x faster "
        f"than the 2-layer teacher (batch 1 x 16), {100 * pair['size_reduction']:.0f}% smaller."
    )
    _assert_readable(fig)
    assert reporting.plot_score_vs_speed_size(results)._suptitle is None  # no benchmark, no note


# --------------------------------------------------------------------------- the benchmark


def test_bench_report_figure_and_tables(bench_result):
    text = reporting.format_report(bench_result)
    lat = reporting.bench_tables(bench_result)["latency"]
    assert len(lat) == 4  # 2 heads x 2 settings of one vocabulary
    for (vocab, head, setting), row in lat.iterrows():
        line = next(t for t in text.splitlines() if t.startswith(f"{vocab} {head}") and setting in t)
        assert f"{row['teacher_ms']:.1f}" in line and f"{row['speedup']:.2f}x" in line
    models = bench_result["inference"]["models"]
    sizes = reporting.bench_tables(bench_result)["sizes"]
    assert sizes.loc["student-500", "safetensors (MB)"] == models["student-500"]["size"]["MB"]
    assert "teacher-500" in text and "student-500 vs teacher-500" in text
    th, sh = bench_result["throughput"], bench_result["shared"]
    assert "2. distillation throughput" in text and f"loop {th['ratio_tokens_per_s']:.2f}x" in text
    assert f"one call, 3 students: {sh['shared_s']:.1f} s" in text
    assert (
        reporting.bench_tables(bench_result)["throughput"].loc["kdlib", "loop tokens/s"]
        == th["kdlib"]["train_tokens_per_s"]
    )
    fig = reporting.plot_bench(bench_result)
    latency, speed, loops, shared = fig.axes
    assert latency.get_title() == "Latency, 2-layer teacher and 1-layer student, vocabulary 500 (cpu)"
    assert speed.get_title() == "Speed-up of the 1-layer student over the 2-layer teacher"
    ys = [list(line.get_ydata()) for line in speed.get_lines()]
    assert ys[0] == list(pair_speedup(bench_result, "encoder"))
    assert [bench_result["target_values"]["speedup_b32_l128_cpu"]] * 2 in ys  # the target line
    assert sorted(bar.get_width() for bar in loops.patches) == sorted(
        [th["reference"]["train_tokens_per_s"], th["kdlib"]["train_tokens_per_s"]]
    )
    assert f"{th['ratio_tokens_per_s']:.2f}x" in loops.get_title()
    widths = [bar.get_width() for bar in shared.patches]  # s1, s2, s3 stacked, then the shared run
    assert widths[:3] == [sh["separate"][k]["total_s"] for k in ("s1", "s2", "s3")] and widths[3] == sh["shared_s"]
    small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < 9]
    assert not small, small
    with pytest.raises(ValueError, match="no inference, throughput or shared"):
        reporting.plot_bench({"device": {"type": "cpu"}})


def pair_speedup(result: dict, head: str) -> list[float]:
    return list(result["inference"]["pairs"][0]["speedup"][head].values())
