"""Students trained elsewhere (the authors' released racai/distilbert-*): registered with the role "released" by
notebook 04, fine-tuned like the others, compared with their teachers by notebook 05 and by claim (b-released).

Offline, the hub is replaced by stand-ins saved like hub models (tests/standins.py): the fast tests use a small
one (2 layers of width 32, vocabulary 700) on a tiny run of two tiny teachers; one slow test builds the three with
the real shapes (DistilBERT 6 x 768, vocabularies 50,000 and 37,788) and loads them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_tokenizer, ro_sentences, tiny_teacher
from standins import RELEASED, released_standins, save_standin
from test_claims import build_run, real_gold  # noqa: F401  (real_gold: the fixture build_run needs)

from kdlib.analysis import claims, reporting
from kdlib.run import registry

ROOT = Path(__file__).resolve().parents[1]
RELEASED_NAME = "Distil-BERT-base-ro (released)"
TASKS = ["sapn", "sts"]


def _execute(notebook: str, out: Path, parameters: dict) -> str:
    """Run a pipeline notebook with papermill; its outputs as JSON text (for error checks)."""
    papermill = pytest.importorskip("papermill")
    papermill.execute_notebook(
        str(ROOT / "notebooks" / f"{notebook}.ipynb"),
        str(out / f"{notebook}.ipynb"),
        kernel_name="python3",
        parameters=parameters,
        progress_bar=False,
    )
    executed = json.loads((out / f"{notebook}.ipynb").read_text(encoding="utf-8"))
    return json.dumps([c.get("outputs", []) for c in executed["cells"]])


def _teachers(run: Path, sentences: list[str]) -> None:
    """Two tiny teachers (cased, uncased) saved in the run and named in teachers/teachers.json, as notebook 01 does."""
    info = {}
    for i, (name, lower) in enumerate((("BERT-base-ro", False), ("RoBERT-base", True))):
        folder = run / "teachers" / name
        tiny_teacher(make_tokenizer(sentences, folder, lowercase=lower), seed=i).save_pretrained(folder)
        info[name] = {"path": str(folder)}
    (run / "teachers" / "teachers.json").write_text(json.dumps(info), encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """Notebooks 04 and 05 on a tiny run: two teachers and a released stand-in, SAPN and STS, two seeds."""
    root = tmp_path_factory.mktemp("released")
    run, sentences = root / "run", ro_sentences(data_dir, 600)
    _teachers(run, sentences)
    standin = save_standin(
        root / "hub" / "distil", sentences, vocab_size=700, lowercase=False, layers=2, dim=32, heads=2
    )
    released = {RELEASED_NAME: {"path": str(standin), "teachers": ["BERT-base-ro"], "revision": None}}
    common = {"run_dir": str(run), "tasks": TASKS}
    outputs = _execute(
        "04-evaluate",
        root,
        {
            **common,
            "data_dir": str(data_dir),
            "seeds": [0, 1],
            "max_train_examples": 48,
            "max_eval_examples": 48,
            "finetune_config": {"epochs": 1, "batch_size": 16, "max_len": 32},
            "released_students": released,
        },
    )
    assert "The released students against their teachers" in outputs  # 04's sentence on them
    outputs += _execute("05-loyalty", root, common)
    assert "The released students' label loyalty" in outputs and '"output_type": "error"' not in outputs
    return run


def test_released_student_is_registered_and_evaluated(tiny_run):
    zoo = reporting.model_zoo(tiny_run)
    assert list(zoo) == ["BERT-base-ro", "RoBERT-base", RELEASED_NAME]  # after the run's own models
    assert (zoo[RELEASED_NAME]["role"], zoo[RELEASED_NAME]["kind"]) == ("released", "released")
    assert zoo[RELEASED_NAME]["teachers"] == ["BERT-base-ro"] and zoo[RELEASED_NAME]["log"] is None
    results = reporting.collect_results(tiny_run)
    row = results[results["model"] == RELEASED_NAME]
    assert sorted(row["task"]) == TASKS and set(row["role"]) == {"released"} and set(row["n_seeds"]) == {2}
    assert RELEASED_NAME in reporting.paper_table(results, with_poster=False).index
    assert reporting.teacher_map(tiny_run, results) == {RELEASED_NAME: ["BERT-base-ro"]}
    assert list(reporting.relative_drop(results, {RELEASED_NAME: ["BERT-base-ro"]}).columns) == TASKS


def test_released_student_loyalty_to_its_teacher(tiny_run):
    rows = json.loads((tiny_run / "loyalty" / "loyalty.json").read_text(encoding="utf-8"))
    mine = {r["task"]: r for r in rows if r["student"] == RELEASED_NAME}
    assert sorted(mine) == TASKS and {r["reference"] for r in mine.values()} == {"BERT-base-ro"}
    assert 0 <= mine["sapn"]["label_loyalty"] <= 100 and 0 <= mine["sapn"]["probability_loyalty"] <= 100
    assert -100 <= mine["sts"]["regression_loyalty"] <= 100
    table = reporting.loyalty_table(pd.DataFrame(rows))
    assert table.loc[(RELEASED_NAME, "BERT-base-ro"), "L-L (poster)"] == 87.80  # the poster's released student


def test_claim_reads_the_released_student(tiny_run, monkeypatch):
    got = {c.id: c for c in claims.main_claims(tiny_run)}
    claim = got["b-released"]
    assert (claim.kind, claim.quote) == ("paper", claims.ABSTRACT_COMPARABLE)
    if claim.verdict == claims.NOT_TESTABLE and claim.reason.startswith("No task is learned"):
        monkeypatch.setitem(claims.THRESHOLDS["learned"], "value", -1000.0)  # let the tiny run's tasks count
        claim = {c.id: c for c in claims.main_claims(tiny_run)}["b-released"]
    read = claim.reason + json.dumps(claim.details, default=str)  # untestable comparisons are named in the reason
    assert claim.verdict in claims.VERDICTS and all(
        f"{RELEASED_NAME} - BERT-base-ro" in read and t in read for t in TASKS
    )
    assert got["b"].verdict == claims.NOT_TESTABLE  # the run has no students of its own: (b) reads only those


def _add_released(run: Path, names: dict[str, str]) -> None:
    """Register released students whose test predictions are copies of a model's of the synthetic run."""
    specs = {name: {"path": str(run / "hub" / key), "teachers": ["BERT-base-ro"]} for name, key in names.items()}
    registry.write_released(run, registry.released_entries(run, specs))
    for name, key in names.items():
        shutil.copytree(run / "evaluate" / key, run / "evaluate" / registry.slug(name), dirs_exist_ok=True)


def test_claim_verdict_follows_the_released_students(tmp_path, real_gold):  # noqa: F811
    """A released student 1 point behind its teacher is within a few points; one 20 points behind is not."""
    run = build_run(tmp_path, real_gold, random_pair=False)
    got = {c.id: c for c in claims.main_claims(run)}
    assert got["b-released"].verdict == claims.NOT_TESTABLE and "no released student" in got["b-released"].reason
    _add_released(run, {RELEASED_NAME: "distil-bert-base-ro"})
    got = {c.id: c for c in claims.main_claims(run)}
    assert got["b-released"].verdict == claims.SUPPORTED, got["b-released"].reason
    assert {d["comparison"] for d in got["b-released"].details} == {f"{RELEASED_NAME} - BERT-base-ro"}
    assert all(RELEASED_NAME not in d["comparison"] for d in got["b"].details)  # (b) is about our students
    assert "All 2 tasks" in got["b-released"].reason  # the scope note, as (b) has it
    _add_released(run, {RELEASED_NAME: "distil-bert-base-ro", "Worse (released)": "control-mlm-only"})
    worse = {c.id: c for c in claims.main_claims(run)}["b-released"]
    assert worse.verdict == claims.CONTRADICTED and "Worse (released)" in worse.figure
    assert worse.interval.high < claims.THRESHOLDS["teacher_gap"]["value"]


def test_released_specs_are_checked(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "teachers").mkdir(parents=True)
    (run / "teachers" / "teachers.json").write_text(json.dumps({"BERT-base-ro": {"path": "x"}}))
    bad = {
        "A": {"path": "org/a", "teachers": ["RoBERT-base"]},
        "BERT-base-ro": {"path": "org/b", "teachers": ["BERT-base-ro"]},
        "C": {"path": "org/c", "teachers": "BERT-base-ro", "revison": "abc"},
    }
    with pytest.raises(ValueError) as err:
        registry.released_entries(run, bad)
    assert "'RoBERT-base' is not one of the run's teachers" in str(err.value)
    assert "already has a model named 'BERT-base-ro'" in str(err.value) and "unknown field 'revison'" in str(err.value)
    assert "'teachers' must be a non-empty list" in str(err.value)
    calls = []
    monkeypatch.setattr("kdlib.engine.teachers.pin_teacher", lambda *a: calls.append(a) or "/pinned")
    spec = {"D": {"path": "org/d", "teachers": ["BERT-base-ro"], "revision": "abc123"}}
    entry = registry.released_entries(run, spec)[0]
    assert (entry.path, entry.kind, entry.role) == ("/pinned", "released", "released")
    assert calls == [("org/d", run.resolve() / "released" / "d", "abc123")]
    assert registry.write_released(run, [entry]) == run / registry.RELEASED_FILE
    assert list(registry.models(run)) == ["BERT-base-ro", "D"]
    assert registry.write_released(run, []) is None and list(registry.models(run)) == ["BERT-base-ro"]


def test_profiles_list_the_authors_students():
    from kdlib.book import runner

    for name in ("colab", "paper"):
        specs = runner.load_profile(name)["notebooks"]["04-evaluate"]["released_students"]
        assert {n: (s["path"], s["teachers"]) for n, s in specs.items()} == {n: r[:2] for n, r in RELEASED.items()}
        assert all(s["revision"] is None for s in specs.values())  # to be pinned to the revision tested
    for name in ("smoke", "cpu"):
        assert not runner.load_profile(name)["notebooks"].get("04-evaluate", {}).get("released_students")


@pytest.mark.slow
def test_real_shape_standins_build_and_load(tmp_path, data_dir):
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    specs = released_standins(tmp_path, ro_sentences(data_dir, 4000))
    assert list(specs) == list(RELEASED)
    for name, spec in specs.items():
        size = RELEASED[name][2]
        config = AutoConfig.from_pretrained(spec["path"])
        assert (config.model_type, config.n_layers, config.dim, config.n_heads) == ("distilbert", 6, 768, 12)
        assert config.sinusoidal_pos_embds and config.vocab_size == size
        assert len(AutoTokenizer.from_pretrained(spec["path"])) == size
        model, info = AutoModelForMaskedLM.from_pretrained(spec["path"], output_loading_info=True)
        assert not any(info.values()), info
        params = sum(p.numel() for p in model.distilbert.parameters())
        assert params == pytest.approx({50_000: 81.3e6, 37_788: 71.9e6}[size], rel=0.01)  # the paper's sizes
        assert np.isfinite(model.vocab_projector.weight.detach().numpy()).all()
