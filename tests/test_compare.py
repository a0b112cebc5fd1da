"""`python -m kdlib compare`: figures against the published intervals, result files byte/tensor-exact, timings apart;
and the determinism of the smoke pipeline's first two steps (slow)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kdlib import cli
from kdlib.run import compare as cmp


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def _fake_run(run: Path) -> Path:
    """A small run folder: summary, scores, loyalty, a claim, weights, predictions and a log with timings."""
    _write(run / "run_summary.json", {"profile": "x", "run_dir": str(run), "steps": {"01": {"wall_s": 1.0}}})
    _write(run / ".done" / "01.json", {"hash": "h", "parameters": {"run_dir": str(run)}, "finished": "2026-01-01"})
    score = {"model": "S", "role": "student", "task": "upos", "metric": "macro_f1", "mean": 50.0, "std": 0.0}
    _write(run / "evaluate" / "results.json", [{**score, "dir": str(run / "evaluate/s/upos"), "test_seconds": 0.1}])
    _write(
        run / "loyalty" / "loyalty.json", [{"student": "S", "reference": "T", "task": "upos", "label_loyalty": 80.0}]
    )
    claim = {"id": "a", "claim": "c", "interval": {"estimate": 2.0, "low": 1.0, "high": 3.0}, "verdict": "supported"}
    _write(run / "claims" / "main.json", [claim])
    _write(run / "teachers" / "T" / "metrics.json", {"loss": 1.5, "timing": {"train_seconds": 3.0}, "torch_threads": 2})
    for folder in ("distill", "students", "bench", "notebooks"):
        (run / folder).mkdir()
    (run / "distill" / "log.jsonl").write_text('{"step": 1, "loss": 2.0, "elapsed": 0.5, "tokens_per_s": 9.0}\n')
    save_file({"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}, str(run / "students" / "S.safetensors"))
    np.savez(run / "evaluate" / "predictions.npz", ids=np.arange(4), probs=np.linspace(0, 1, 4))
    (run / "teachers" / "T" / "vocab.txt").write_text("[PAD]\n[UNK]\nab\n")
    (run / "bench" / "bench.json").write_text('{"latency": 1.0}')
    (run / "notebooks" / "01.ipynb").write_text("{}")
    return run


def _edit_json(path: Path, change) -> None:  # noqa: ANN001
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _rezip_later(path: Path) -> None:
    """Rewrite an .npz with other member timestamps: other bytes, the same arrays."""
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(2001, 2, 3, 4, 5, 6)), data)


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    a = _fake_run(tmp_path / "published")
    b = tmp_path / "elsewhere" / "rerun"
    shutil.copytree(a, b)
    for p in b.rglob("*.json"):  # a run made in B's folder names B's folder
        p.write_text(p.read_text().replace(str(a), str(b)))
    return a, b


def test_is_timing_tells_measured_fields_from_results():
    timing = ["wall_s", "total_wall_s", "elapsed", "tokens_per_s", "peak_rss_mb", "finished", "wall_time_s"]
    timing += ["test_seconds", "seconds_per_step", "timing", "median_s", "distill_s", "created", "children_maxrss_mb"]
    timing += ["throughput_t1", "ram_mb", "latency_ms_t2", "git_commit"]
    assert all(cmp.is_timing(k) for k in timing)
    assert cmp.is_timing("python", "3.11.7") and cmp.is_timing("torch_threads", 2) and cmp.is_timing("data_dir", "/d")
    results = ["mean", "score", "loss", "steps", "tokens", "seed", "parameters", "label_loyalty", "device", "hash"]
    assert not any(cmp.is_timing(k, 1.0) for k in results)
    assert not cmp.is_timing("python", [3, [1, 2], None])  # rng.json: the RNG state of Python's random


def test_a_rerun_elsewhere_is_identical_timings_aside(runs):
    a, b = runs
    _edit_json(b / "run_summary.json", lambda d: d["steps"]["01"].update(wall_s=9.0))
    _edit_json(
        b / "teachers" / "T" / "metrics.json", lambda d: d.update(timing={"train_seconds": 7.0}, torch_threads=8)
    )
    (b / "distill" / "log.jsonl").write_text('{"step": 1, "loss": 2.0, "elapsed": 0.9, "tokens_per_s": 3.0}\n')
    (b / "bench" / "bench.json").write_text('{"latency": 5.0}')
    _rezip_later(b / "evaluate" / "predictions.npz")
    report = cmp.compare(a, b)
    assert {f.status for f in report.figures} == {cmp.IDENTICAL} and len(report.figures) == 3
    statuses = {d.path: d.status for d in report.files}
    assert statuses.pop("evaluate/predictions.npz") == cmp.SAME_CONTENT
    assert set(statuses.values()) == {cmp.IDENTICAL} and "notebooks/01.ipynb" not in statuses
    assert report.timing_fields == ["elapsed", "timing", "tokens_per_s", "torch_threads", "wall_s"]
    assert report.measured_files == ["bench/bench.json"] and report.exit_code == 0
    text = cmp.format_report(report)
    assert "timing, not compared: elapsed, timing, tokens_per_s, torch_threads, wall_s" in text
    assert "no claim's verdict changed" in text


def test_differences_are_found_and_classed(runs):
    a, b = runs
    _edit_json(b / "evaluate" / "results.json", lambda d: d[0].update(mean=50.5))
    _edit_json(b / "loyalty" / "loyalty.json", lambda d: d[0].update(label_loyalty=95.0))
    _edit_json(b / "claims" / "main.json", lambda d: d[0].update(interval={"estimate": 2.5, "low": 0, "high": 4}))
    save_file({"w": torch.arange(6.0).reshape(2, 3) * 1.5, "b": torch.zeros(3)}, str(b / "students" / "S.safetensors"))
    (b / "teachers" / "T" / "vocab.txt").write_text("[PAD]\n[UNK]\nba\n")
    (b / "distill" / "log.jsonl").write_text('{"step": 1, "loss": 2.5, "elapsed": 0.5, "tokens_per_s": 9.0}\n')
    (a / "claims" / "extra.json").write_text("[]")
    intervals = {"S / upos (macro_f1)": (49.0, 51.0), "S -> T / upos (L-L)": (70.0, 90.0)}
    report = cmp.compare(a, b, intervals)
    status = {f.key: f.status for f in report.figures}
    assert status == {"S / upos (macro_f1)": cmp.WITHIN, "S -> T / upos (L-L)": cmp.BEYOND, "main:a": cmp.WITHIN}
    assert report.exit_code == 0  # the claim's figure moved, its verdict did not
    files = {d.path: d for d in report.files}
    assert files["students/S.safetensors"].status == cmp.DIFFERS
    assert files["students/S.safetensors"].details == ["tensor w: max |diff| 2.5"]
    assert files["distill/log.jsonl"].details == ["[0].loss: 2.0 -> 2.5"]
    assert files["teachers/T/vocab.txt"].details == ["line 3: 'ab' -> 'ba'"]
    assert files["claims/extra.json"].status == cmp.ONLY_A
    assert cmp.compare(a, b).figures[0].status == cmp.NO_INTERVAL  # without intervals: different, not judged


def test_a_changed_verdict_exits_1(runs, capsys):
    a, b = runs
    _edit_json(b / "claims" / "main.json", lambda d: d[0].update(verdict="inconclusive"))
    assert cmd_compare(a, b) == 1
    out = capsys.readouterr().out
    assert "[supported -> inconclusive]" in out and "verdict changed: main:a" in out
    assert cmd_compare(a, b, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["changed_verdicts"] == ["main:a"] and report["exit_code"] == 1
    (b / "claims" / "main.json").unlink()  # a claim the rerun lacks is a changed verdict too
    assert cmd_compare(a, b) == 1


def test_bad_input_exits_2_with_one_line(tmp_path, runs, capsys):
    a, _ = runs
    assert cmd_compare(a, tmp_path / "nowhere") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nowhere: expected a run folder" in err and "Traceback" not in err


def cmd_compare(a: Path, b: Path, *extra: str) -> int:
    return cli.main(["compare", str(a), str(b), *extra])


@pytest.mark.slow
def test_smoke_steps_01_02_are_deterministic(tmp_path):
    """The smoke profile's teachers and single-teacher students, made twice: every result file identical."""
    from kdlib.book import runner

    profile = {
        "extends": "smoke",
        "name": "smoke-determinism",
        "steps": ["01-teachers", "02-distill-single"],
        "notebooks": {
            "01-teachers": {"corpus_max_sentences": 600, "teacher_config": {"steps": 20, "heldout_max": 20}},
            "02-distill-single": {"distill_config": {"max_steps": 8}},
        },
    }
    first, second = tmp_path / "first", tmp_path / "second"
    for run in (first, second):
        summary = runner.run_pipeline(profile, run)
        assert summary["complete"], summary
    report = cmp.compare(first, second)
    assert {d.status for d in report.files} == {cmp.IDENTICAL}, cmp.format_report(report)
    paths = {d.path for d in report.files}
    assert {"teachers/BERT-base-ro/model.safetensors", "students/distil-bert-base-ro/model.safetensors"} <= paths
    assert "wall_s" in report.timing_fields and report.exit_code == 0
