"""kdlib.engine.models: teachers are frozen and grouped by vocabulary into views; students get projections and
linear maps for teachers with another vocabulary, and shapes that cannot meet in a loss are refused."""

from __future__ import annotations

import pytest
import torch
from helpers import make_tokenizer, ro_sentences, tiny_teacher

from kdlib.engine.config import DistillConfig
from kdlib.engine.models import build_students, load_teachers, teachers_to_half, tokenizer_views

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    """A cased and an uncased tokenizer; preloaded teachers: two cased (one wider), one uncased."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    sents = ro_sentences(data_dir, 200)
    cased = make_tokenizer(sents, root / "cased", lowercase=False)
    uncased = make_tokenizer(sents, root / "uncased", lowercase=True)
    pre = {
        "a": (tiny_teacher(cased, seed=0), cased),
        "b": (tiny_teacher(cased, seed=1), cased),
        "u": (tiny_teacher(uncased, seed=2), uncased),
        "wide": (tiny_teacher(cased, hidden=48, seed=3), cased),
    }
    return {"sents": sents, "pre": pre}


def _config(students: list[dict], **kw) -> DistillConfig:
    teachers = [{"name": n, "path": n} for n in ("a", "b", "u", "wide")]
    return DistillConfig.from_dict({"teachers": teachers, "students": students, **kw})


def test_teachers_are_frozen_and_grouped_by_vocabulary(tiny):
    tm = load_teachers(_config([{"name": "s", "teachers": ["a"]}]), CPU, tiny["pre"])
    assert tm["a"].view == tm["b"].view == tm["wide"].view == "a" and tm["u"].view == "u"
    assert set(tokenizer_views(tm)) == {"a", "u"}
    assert not any(p.requires_grad for t in tm.values() for p in t.model.parameters())
    assert not tm["a"].model.training
    assert teachers_to_half(tm, _config([{"name": "s", "teachers": ["a"]}]), CPU) == "fp32"  # CPU: fp32 stays


def test_student_gets_projection_and_linear_map_for_other_vocabulary(tiny):
    cfg = _config([{"name": "s", "teachers": ["a", "u"], "num_layers": 1}])
    tm = load_teachers(cfg, CPU, tiny["pre"])
    [st] = build_students(cfg, tm, CPU, None, texts=tiny["sents"])
    assert st.view == "a" and set(st.cross) == {"u"} and set(st.cross_maps) == {"u"}
    assert st.model.config.n_layers == 1 and st.out_dir.name == "s"
    assert set(dict(st.trainable.named_children())) == {"student", "cross_maps"}
    cfg_raw = _config([{"name": "s", "teachers": ["a", "u"]}], cross_cosine="raw")
    assert not build_students(cfg_raw, tm, CPU, None, texts=tiny["sents"])[0].cross_maps


def test_shapes_that_cannot_meet_are_refused(tiny):
    cfg = _config([{"name": "s", "teachers": ["a", "wide"]}])
    tm = load_teachers(cfg, CPU, tiny["pre"])
    with pytest.raises(ValueError, match="cannot match teacher 'wide'"):
        build_students(cfg, tm, CPU, None)
    assert build_students(_config([{"name": "s", "teachers": ["a", "wide"]}], alpha_cos=0.0), tm, CPU, None)
    cfg_none = _config([{"name": "s", "teachers": ["a", "u"]}], cross_tokenizer="none")
    with pytest.raises(ValueError, match="cross_tokenizer='none'"):
        build_students(cfg_none, tm, CPU, None)
