"""kdlib.run.registry: the distillation-run builder gives the configs notebooks 02/03 built by hand, and the
registry files it describes are what reporting.model_zoo reads."""

from __future__ import annotations

import json

import pytest

from kdlib.analysis import reporting
from kdlib.book import runner
from kdlib.engine.distill import DistillConfig
from kdlib.run import registry

TEACHERS = {"BERT-base-ro": {"path": "/m/bert"}, "RoBERT-base": {"path": "/m/robert"}}
SETTINGS = {"max_steps": 30, "batch_size": 16, "max_len": 48, "lr": 5e-4, "save_every": 0}


def test_single_teacher_plan_matches_the_hand_built_config(tmp_path):
    # the dict notebook 02 built by hand before the builder (same values -> same run)
    run = tmp_path.resolve()
    students = [
        {"name": "Distil-BERT-base-ro", "teacher": "BERT-base-ro"},
        {"name": "Distil-RoBERT-base", "teacher": "RoBERT-base"},
    ]
    needed = sorted({s["teacher"] for s in students})
    by_hand = {
        "teachers": [{"name": t, "path": TEACHERS[t]["path"], "weight": 1.0} for t in needed],
        "students": [
            {
                "name": runner.slug(s["name"]),
                "teachers": [s["teacher"]],
                "tokenizer_from": s["teacher"],
                "init": "teacher",
                "shape": "distilbert",
                "out_dir": str(run / "students" / runner.slug(s["name"])),
            }
            for s in students
        ],
        "seed": 0,
        "device": "cpu",
        "out_dir": str(run / "distill" / "single"),
        "corpus": str(run / "corpus"),
        **SETTINGS,
    }
    plan = registry.distill_run(
        run,
        "single",
        {s["name"]: [s["teacher"]] for s in students},
        teachers=TEACHERS,
        kind="single-teacher",
        settings=SETTINGS,
        seed=0,
        device="cpu",
    )
    assert plan.config == by_hand
    assert plan.config_path == run / "distill" / "single" / "config.json"
    DistillConfig.from_dict(plan.config)  # a valid DistillConfig
    assert [e.record() for e in plan.entries] == [
        {
            "path": str(run / "students" / runner.slug(s["name"])),
            "teachers": [s["teacher"]],
            "kind": "single-teacher",
            "log": str(run / "distill" / "single" / "log.jsonl"),
            "key": runner.slug(s["name"]),
        }
        for s in students
    ]


def test_ensemble_and_control_plans(tmp_path):
    run = tmp_path.resolve()
    weights = {"BERT-base-ro": 1.0, "RoBERT-base": 0.5}
    plan = registry.distill_run(
        run,
        "ensemble-sum",
        {"DistilMulti-BERT-base-ro (sum)": list(weights)},
        teachers=TEACHERS,
        kind="ensemble (sum)",
        weights=weights,
        tokenizer_from="BERT-base-ro",
        strategy="sum",
        settings=SETTINGS,
        seed=1,
        device="cpu",
    )
    assert plan.config["strategy"] == "sum"
    assert plan.config["teachers"] == [
        {"name": t, "path": TEACHERS[t]["path"], "weight": w} for t, w in weights.items()
    ]
    assert plan.config["students"][0]["tokenizer_from"] == "BERT-base-ro"
    assert plan.entries[0].key == "distilmulti-bert-base-ro-sum" and plan.entries[0].role == "student"
    control = registry.distill_run(
        run,
        "control",
        {"Control (MLM only)": ["BERT-base-ro"]},
        teachers=TEACHERS,
        kind="control",
        weights=weights,
        alpha_ce=0.0,
        alpha_cos=0.0,
        settings=SETTINGS,
        seed=1,
        device="cpu",
    )
    cfg = DistillConfig.from_dict(control.config)
    assert (cfg.alpha_ce, cfg.alpha_cos, len(cfg.teachers)) == (0.0, 0.0, 1)
    assert control.entries[0].role == "control" and control.entries[0].key == "control-mlm-only"


def test_unknown_teacher_is_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"name teachers \['XLM-R'\]; notebook 01 made \['BERT-base-ro', 'RoBERT-base'\]"
    ):
        registry.distill_run(
            tmp_path,
            "single",
            {"S": ["XLM-R"]},
            teachers=TEACHERS,
            kind="single-teacher",
            settings=SETTINGS,
            seed=0,
            device="cpu",
        )


def test_registry_files_are_what_model_zoo_reads(tmp_path):
    run = tmp_path.resolve()
    runner.write_json(run / "teachers" / "teachers.json", {t: {**i, "source": "hub"} for t, i in TEACHERS.items()})
    single = registry.distill_run(
        run,
        "single",
        {"Distil-BERT-base-ro": ["BERT-base-ro"]},
        teachers=TEACHERS,
        kind="single-teacher",
        settings=SETTINGS,
        seed=0,
        device="cpu",
    )
    control = registry.distill_run(
        run,
        "control",
        {"Control (MLM only)": ["BERT-base-ro"]},
        teachers=TEACHERS,
        kind="control",
        settings=SETTINGS,
        seed=0,
        device="cpu",
        alpha_ce=0.0,
    )
    runner.write_json(run / "distill" / "single.json", registry.records(single.entries))
    runner.write_json(run / "distill" / "ensemble.json", registry.records(control.entries))
    zoo = reporting.model_zoo(run)
    assert list(zoo) == ["BERT-base-ro", "RoBERT-base", "Distil-BERT-base-ro", "Control (MLM only)"]
    assert [z["role"] for z in zoo.values()] == ["teacher", "teacher", "student", "control"]
    assert zoo["Distil-BERT-base-ro"]["teachers"] == ["BERT-base-ro"]
    assert zoo["Distil-BERT-base-ro"]["log"] == str(run / "distill" / "single" / "log.jsonl")
    rows = registry.entries_table(registry.models(run).values(), run)
    assert rows[0]["folder"] == "/m/bert" and rows[2]["folder"] == "students/distil-bert-base-ro"
    (run / "distill" / "single.json").write_text(json.dumps({"S": {"teachers": []}}))
    with pytest.raises(ValueError, match=r"single\.json: entry 'S' has no 'path'"):
        registry.models(run)


def test_loss_table_names_the_students():
    entries = [
        registry.ModelEntry(name="Distil-BERT-base-ro", path="p", kind="single-teacher", key="distil-bert-base-ro")
    ]
    summary = {
        "distil-bert-base-ro": {
            "steps": 30,
            "wall_time_s": 1.3,
            "tokens_per_s": 1e4,
            "first_losses": {"total": 12.8, "mlm": 6.4},
            "final_losses": {"total": 12.7, "mlm": 6.3, "kl": 0.02, "cos": 0.02},
        }
    }
    table = registry.loss_table(summary, entries)
    assert list(table.index) == ["Distil-BERT-base-ro"]
    assert list(table.columns) == list(registry.LOSS_COLUMNS.values())
    assert table.loc["Distil-BERT-base-ro", "final total"] == 12.7
