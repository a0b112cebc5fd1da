"""kdlib.studies.task_study on the smoke run's own task-distillation results (runs/smoke, or KDLIB_RUN_DIR): the
chapter's plan, frame, tables and sentences, each number in a sentence checked against the frame."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kdlib.book import runner
from kdlib.studies import task_study
from kdlib.studies.task_distill import TaskDistillConfig

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("KDLIB_RUN_DIR", ROOT / "runs" / "smoke"))
RESULTS = RUN_DIR / "task-distill" / "results.json"
STUDY = dict(students=["bilstm", "cnn", "bert-tiny", "agnostic"], main_loss="kl+hard", ablation_student="bilstm")


@pytest.fixture(scope="module")
def smoke():
    if not RESULTS.is_file():
        pytest.fail(f"{RESULTS} is missing: run `python -m kdlib run --profile smoke --out {RUN_DIR}` first")
    rows = runner.read_json(RESULTS)
    study = task_study.plan_study(RUN_DIR, ["sapn", "upos", "sts"], losses=["hard", "kl+hard"], **STUDY)
    df = task_study.study_frame(study, rows, config=TaskDistillConfig(max_eval_examples=100))
    return study, rows, df


def test_plan_resolves_models_and_sets_regression_aside(smoke):
    study, rows, _ = smoke
    assert study.tasks == ["sapn", "upos"] and study.skipped == ["sts"]
    assert study.zoo[study.teacher]["role"] == "teacher"
    assert study.zoo[study.agnostic_student]["teachers"] == [study.teacher]
    # 4 main students + bilstm with 2 losses without augmentation (kl+hard listed twice) + random embeddings
    assert len(study.specs) == 7
    assert {r["name"] for r in rows if r["task"] == "sapn"} - {"teacher"} == {s.name for s in study.specs}


def test_unknown_model_or_no_usable_task_is_one_line():
    with pytest.raises(ValueError, match=r"teacher='nope': not a model of"):
        task_study.plan_study(RUN_DIR, ["sapn"], losses=["hard"], teacher="nope", **STUDY)
    with pytest.raises(ValueError, match=r"agnostic_student='x': not a model of"):
        task_study.plan_study(RUN_DIR, ["sapn"], losses=["hard"], agnostic_student="x", **STUDY)
    with pytest.raises(ValueError, match="no classification or tagging task"):
        task_study.plan_study(RUN_DIR, ["sts"], losses=["hard"], **STUDY)


def test_frame_adds_agnostic_students_with_intervals(smoke):
    study, rows, df = smoke
    agnostic = df[df["family"] == "task-agnostic (fine-tuned)"]
    assert len(df) == len(rows) + len(agnostic) and not agnostic.empty
    assert ((df["low"] <= df["score"] + 1e-9) & (df["score"] <= df["high"] + 1e-9)).all()
    assert len(task_study.student_rows(df)) == len(rows)


def test_tables_and_sentences_read_the_frame(smoke):
    study, rows, df = smoke
    table = task_study.family_table(study, df, "classification")
    assert set(table.index.get_level_values("task")) == {"sapn"}
    teacher = df[(df["task"] == "sapn") & (df["name"] == "teacher")].iloc[0]
    assert table.loc[("sapn", "teacher"), "params (M)"] == round(teacher["parameters"] / 1e6, 2)
    low, high = teacher["low"], teacher["high"]
    assert table.loc[("sapn", "teacher"), "score [95% CI]"] == f"{teacher['score']:.1f} [{low:.1f}, {high:.1f}]"
    assert table.loc[("sapn", "Distil-BERT-base-ro"), "loyalty"] == "—"  # fine-tuned elsewhere: no loyalty here
    text = task_study.best_sentence(study, df, "classification")
    assert f"({teacher['score']:.1f})" in text and f"majority baseline scores {teacher['majority']:.1f}" in text
    _, text = task_study.data_table(study, rows)
    assert "STS: a regression task, left out" in text
    fig, fronts = task_study.plot_fronts(study, df)
    assert len(fig.axes) == 2 and set(fronts) == {"sapn", "upos"}
    said = re.findall(r"the front holds (\d+) of", task_study.front_sentence(study, df, fronts))
    assert [int(n) for n in said] == [len(fronts["sapn"]), len(fronts["upos"])]
    abl = task_study.ablation_table(df, "bilstm")
    assert abl.shape == (4, 2)  # main run, hard and kl+hard without augmentation, random embeddings x 2 tasks
