"""The projection benchmark: its summary by hand on a small case, then the measure, its table and sentence on
the smoke run's own teachers (runs/smoke, or KDLIB_RUN_DIR)."""

import math
import os
import re
from pathlib import Path

import pytest
import torch

from kdlib.bench.align import bench_align, dev_words, measure_run, projection_sentence, projection_table, summarise
from kdlib.engine.align import VOCAB_CASES

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("KDLIB_RUN_DIR", ROOT / "runs" / "smoke"))


def test_summarise_splits_capitalised_words_by_position():
    mass = torch.tensor([1.0, 0.5, 0.0, 0.25, 1.0])
    mismatch = torch.tensor([False, False, True, False, False])
    capitalised = torch.tensor([False, True, True, True, False])
    initial = torch.tensor([True, True, False, False, False])
    r = summarise(mass, mismatch, capitalised, initial)
    assert r["all"] == round((1.0 + 0.5 + 0.25 + 1.0) / 4, 4)
    assert r["lowercase"] == 1.0
    assert r["capitalised"] == round((0.5 + 0.25) / 2, 4)  # the mismatched capitalised word is left out
    assert r["capitalised_initial"] == 0.5
    assert r["capitalised_inner"] == 0.25
    assert r["all_with_mismatched"] == round(2.75 / 5, 4)
    assert r["mismatched"] == 0.2


def test_summarise_an_empty_group_is_nan():
    r = summarise(
        torch.ones(2),
        torch.zeros(2, dtype=torch.bool),
        torch.zeros(2, dtype=torch.bool),
        torch.ones(2, dtype=torch.bool),
    )
    assert math.isnan(r["capitalised"]) and math.isnan(r["capitalised_inner"]) and r["lowercase"] == 1.0


# ------------------------------------------------------------------ on the smoke run's own teachers
@pytest.fixture(scope="module")
def measured():
    teachers = RUN_DIR / "teachers" / "teachers.json"
    if not teachers.is_file():
        pytest.fail(f"{teachers} is missing: run `python -m kdlib run --profile smoke --out {RUN_DIR}` first")
    import datasets

    texts = datasets.load_from_disk(str(RUN_DIR / "corpus"))["text"][:2000]
    return bench_align(teachers=teachers, texts=texts, max_words=400, threads=2)


def test_dev_words_stop_at_whole_sentences():
    words = dev_words(max_words=400)
    assert 0 < sum(map(len, words)) <= 400
    assert sum(map(len, dev_words(max_words=400 + 200))) > sum(map(len, words))


def test_projection_on_a_runs_teachers(measured):
    assert measured["meta"]["words"] <= 400 and measured["meta"]["capitalised_words"] > 0
    for mode in VOCAB_CASES:
        r = measured[mode]
        assert all(0.0 <= r[k] <= 1.0 for k in ("all", "lowercase", "capitalised", "mismatched"))
        assert r["mismatched"] == measured["split"]["mismatched"]  # a property of the tokenizers, not the mode
    # exact_first sends an uncased piece all to its own lowercase spelling: right on lowercase words,
    # wrong wherever a capitalised word's lowercase spelling is also a cased token
    assert measured["exact_first"]["lowercase"] > 0.99
    assert measured["exact_first"]["capitalised"] < measured["prior"]["capitalised"]


def test_projection_table_and_sentence_read_the_result(measured):
    table = projection_table(measured)
    assert f"{measured['default']} (default)" in table.index and len(table) == len(VOCAB_CASES)
    assert table.loc["split", "capitalised"] == round(100 * measured["split"]["capitalised"], 1)
    text = projection_sentence(measured)
    d = measured[measured["default"]]
    for key in ("all", "lowercase", "capitalised_initial", "capitalised_inner", "mismatched"):
        assert f"{d[key]:.1%}" in text, key
    assert f"{measured['meta']['words']:,} RRT dev words" in text
    assert not re.search(r"\bnan\b", text)


def test_measure_run_says_why_it_skips(tmp_path):
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "teachers.json").write_text(
        '{"a": {"path": "x", "lowercase": false}, "b": {"path": "y", "lowercase": false}}', encoding="utf-8"
    )
    assert "all cased or all uncased" in measure_run(tmp_path, [], max_words=100)["skipped"]
    assert "switched off" in measure_run(tmp_path, [], max_words=0)["skipped"]
    assert not (tmp_path / "distill").exists()  # nothing written when nothing was measured
