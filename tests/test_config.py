"""kdlib.engine.config: every setting documented where it is defined; result vs operational settings decide
what a checkpoint or a finished run depends on; the flat JSON/YAML form loads, round-trips and is checked."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from kdlib.engine.config import DistillConfig, StudentSpec, TeacherSpec, parse_overrides
from kdlib.engine.distill import _check_resumable, code_fingerprint, finished_summary

BASE = {"teachers": [{"name": "t", "path": "x"}], "students": [{"name": "s", "teachers": ["t"]}]}
# the settings that never changed what a run computes (the former hand-kept OPERATIONAL_KEYS)
OPERATIONAL = {
    "device",
    "save_every",
    "keep_checkpoints",
    "keep_final_checkpoint",
    "log_every",
    "report_to",
    "corpus",
    "corpus_max_sentences",
    "out_dir",
}


def test_every_field_is_documented_where_it_is_defined():
    docs = DistillConfig.docs()
    assert list(docs) == [f.name for f in fields(DistillConfig)]
    assert all(len(doc) > 10 for doc in docs.values()), [k for k, d in docs.items() if len(d) <= 10]


def test_result_and_operational_settings_split_the_fields():
    result, operational = set(DistillConfig.result_keys()), set(DistillConfig.operational_keys())
    assert operational == OPERATIONAL
    assert result | operational == {f.name for f in fields(DistillConfig)} and not result & operational
    cfg = DistillConfig.from_dict(BASE)
    assert set(cfg.result_settings()) == result and set(cfg.operational_settings()) == operational
    assert {**cfg.result_settings(), **cfg.operational_settings()} == cfg.to_dict()


def _changed(cfg: DistillConfig, key: str) -> dict:
    """cfg.to_dict() with `key` set to a value no real setting has."""
    return {**cfg.to_dict(), key: "<another value>"}


def test_a_checkpoint_is_invalidated_by_result_settings_only(tmp_path):
    """The checkpoint-invalidating set is exactly the non-operational fields."""
    cfg = DistillConfig.from_dict(BASE)
    for key in DistillConfig.operational_keys():
        _check_resumable(tmp_path, {"config": _changed(cfg, key)}, [{}], cfg, world_size=1, n_texts=10)
    for key in DistillConfig.result_keys():
        with pytest.raises(ValueError, match=rf"cannot resume exactly .*{key}: '<another value>' -> "):
            _check_resumable(tmp_path, {"config": _changed(cfg, key)}, [{}], cfg, world_size=1, n_texts=10)
    with pytest.raises(ValueError, match="corpus texts: 10 -> 11"):
        _check_resumable(tmp_path, {"config": cfg.to_dict(), "n_texts": 10}, [{}], cfg, world_size=1, n_texts=11)
    with pytest.raises(ValueError, match="same number"):
        _check_resumable(tmp_path, {"config": cfg.to_dict()}, [{}, {}], cfg, world_size=1, n_texts=10)


def test_a_finished_run_is_reused_across_operational_changes_only(tmp_path):
    """finished_summary: the same result settings (operational ones may differ) and corpus size reuse a run."""
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "config.json").write_text("{}")
    (tmp_path / "summary.json").write_text(json.dumps({"s": {"out_dir": str(tmp_path / "s")}}))
    done = DistillConfig.from_dict({**BASE, "out_dir": str(tmp_path), "lr": 1e-3})
    run = {"config": done.to_dict(), "n_texts": 50, "code": code_fingerprint()}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert finished_summary(done, 50) is not None
    assert finished_summary(DistillConfig.from_dict({**done.to_dict(), "log_every": 7, "device": "cpu"}), 50)
    assert finished_summary(DistillConfig.from_dict({**done.to_dict(), "lr": 2e-3}), 50) is None
    assert finished_summary(done, 51) is None


def test_flat_dict_round_trip_and_json_compatibility():
    """The flat keys of profiles, notebooks and saved checkpoints load and come back unchanged."""
    cfg = DistillConfig.from_dict({**BASE, "strategy": "sum", "mlm_smoothing": 0.7})
    assert isinstance(cfg.teachers[0], TeacherSpec) and isinstance(cfg.students[0], StudentSpec)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert DistillConfig.from_dict(data) == cfg
    assert data["teachers"] == [{"name": "t", "path": "x", "weight": 1.0}] and data["alpha_ce"] == 5.0
    with pytest.raises(ValueError, match="unknown DistillConfig keys \\['nope'\\]"):
        DistillConfig.from_dict({**BASE, "nope": 1})
    with pytest.raises(ValueError, match="'students' must be a non-empty list"):
        DistillConfig.from_dict({**BASE, "students": []})


def test_from_file_applies_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teachers: [{name: t, path: x}]\nstudents: [{name: s, teachers: [t]}]\nlr: 0.001\n")
    cfg = DistillConfig.from_file(path, ["lr=0.0002", "strategy=sum"])
    assert cfg.lr == 2e-4 and cfg.strategy == "sum" and cfg.max_steps == 100
    assert parse_overrides(["a=1", "b=null", "c=x=y"]) == {"a": 1, "b": None, "c": "x=y"}
    with pytest.raises(FileNotFoundError):
        DistillConfig.from_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"strategy": "max"}, "strategy"),
        ({"batch_size": 0}, "batch_size"),
        ({"mask_prob": 1.0}, "mask_prob"),
        ({"alpha_ce": 0, "alpha_mlm": 0, "alpha_cos": 0}, "not all 0"),
        ({"students": [{"name": "s", "teachers": ["u"]}]}, "refers to teacher 'u'"),
    ],
)
def test_validate_refuses_bad_settings(change, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig.from_dict({**BASE, **change}).validate()


def test_warmup_steps_and_checkpoint_policy(monkeypatch):
    assert DistillConfig.from_dict({**BASE, "warmup": 0.1, "max_steps": 50}).warmup_steps == 5
    assert DistillConfig.from_dict({**BASE, "warmup": 7}).warmup_steps == 7
    monkeypatch.setattr("kdlib.engine.config.on_colab", lambda: False)
    assert DistillConfig.from_dict({**BASE, "out_dir": "/tmp/x"}).checkpoint_policy() == (2, True)
    monkeypatch.setattr("kdlib.engine.config.on_colab", lambda: True)
    assert DistillConfig.from_dict(BASE).checkpoint_policy() == (1, False)
