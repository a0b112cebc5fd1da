"""kdlib.bench.finetune: both sides fine-tune the same real data and report examples/s; the CLI refuses bad input."""

import importlib.util
from dataclasses import replace

import pytest

from kdlib.bench import finetune as ftbench
from kdlib.bench.speed import cli as bench_cli


@pytest.mark.slow
def test_smallest_setting_runs_both_sides(tmp_path):
    setting = replace(ftbench.SMALLEST, tasks=("sapn", "upos"))
    result = ftbench.bench_finetune(setting, cache_dir=tmp_path / "cache", fresh_process=False, work_dir=str(tmp_path))
    assert result["machine"]["cpu"] and result["machine"]["torch"] and result["machine"]["threads_per_run"] > 0
    for task in ("sapn", "upos"):
        t = result["tasks"][task]
        assert [r["side"] for r in t["runs"]] == ["kdlib", "trainer"]
        kdlib_run, trainer_run = t["runs"]
        for key in ("train_examples", "eval_examples", "train_features"):
            assert kdlib_run[key] == trainer_run[key] > 0
        assert t["examples"]["train"] == 16 and t["examples"]["eval"] == 16
        for side in ftbench.SIDES:
            for phase in ("train", "eval"):
                assert t[side][phase]["median"] > 0
        assert t["ratio"]["train"]["median"] > 0 and t["ratio"]["eval"]["median"] > 0
    assert result["tasks"]["upos"]["examples"]["train_features"] >= 16  # tagging: long sentences are chunked
    assert "sapn:" in ftbench.format_result(result)


def test_summarise_pairs_repeats_and_checks_counts():
    row = {"train_examples": 10, "eval_examples": 5, "train_features": 10}
    rows = [
        {**row, "side": "kdlib", "train_eps": 20.0, "eval_eps": 50.0},
        {**row, "side": "trainer", "train_eps": 10.0, "eval_eps": 100.0},
        {**row, "side": "trainer", "train_eps": 10.0, "eval_eps": 100.0},
        {**row, "side": "kdlib", "train_eps": 30.0, "eval_eps": 50.0},
    ]
    out = ftbench.summarise(rows)
    assert out["ratio"]["train"] == {"median": 2.5, "min": 2.0, "max": 3.0}
    assert out["meets_goal"] == {"train": True, "eval": False}
    assert [ftbench._order(i) for i in range(3)] == [("kdlib", "trainer"), ("trainer", "kdlib"), ("kdlib", "trainer")]
    with pytest.raises(RuntimeError, match="different examples"):
        ftbench.summarise([*rows[:3], {**rows[3], "eval_examples": 6}])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--repeats", "0"], "--repeats"),
        (["--train-examples", "abc"], "--train-examples"),
        (["--tasks", "nosuchtask"], "nosuchtask"),
        (["--tasks", ","], "--tasks"),
        (["--max-len", "4"], "--max-len"),
        (["--device", "tpu"], "--device"),
        (["--bogus"], "--bogus"),
    ],
)
def test_cli_refuses_bad_arguments(argv, needle, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        rc = bench_cli(["--only", "finetune", "--out", str(tmp_path / "f.json"), *argv])
        raise SystemExit(rc)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "f.json").exists()


def test_cli_says_when_accelerate_is_missing(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    assert ftbench.cli(["--smallest", "--out", str(tmp_path / "f.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert "accelerate" in err and len(err.splitlines()) == 1
