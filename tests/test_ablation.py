"""The ensemble ablation's bookkeeping (kdlib.studies.ablation): which students it trains and how it picks a value."""

from __future__ import annotations

import pandas as pd

from kdlib.engine.distill import DistillConfig
from kdlib.studies.ablation import SETTINGS, pick, variants


def test_variants_change_one_setting_each():
    items = variants(["BERT-base-ro", "RoBERT-base"])
    defaults = DistillConfig.__dataclass_fields__
    assert items[0].name == "ensemble (defaults)" and not items[0].overrides
    singles = [v for v in items if v.name.startswith("single")]
    assert [(v.teachers, v.tokenizer_from) for v in singles] == [
        (["BERT-base-ro"], "BERT-base-ro"),
        (["RoBERT-base"], "RoBERT-base"),
    ]
    changed = [v for v in items if v.setting]
    assert all(len(v.overrides) == 1 and v.overrides[v.setting] != defaults[v.setting].default for v in changed)
    assert len(changed) == sum(len(vals) - 1 for vals in SETTINGS.values())
    assert {v.tokenizer_from for v in changed} == {"BERT-base-ro"}


def test_pick_names_the_best_value_and_whether_it_is_clear():
    items = variants(["a", "b"], {"strategy": ("average", "sum"), "cross_cosine": ("linear", "raw", "off")})
    rows = [
        ("strategy=sum", "strategy", "upos", 1.0, 0.2, 1.8),
        ("strategy=sum", "strategy", "ner", 2.0, 0.5, 3.5),
        ("cross_cosine=raw", "cross_cosine", "upos", -1.0, -2.0, 0.3),
        ("cross_cosine=off", "cross_cosine", "upos", -0.5, -1.0, -0.1),
    ]
    diffs = pd.DataFrame(rows, columns=["variant", "setting", "task", "estimate", "low", "high"])
    picks = pick(diffs, items)
    assert picks["strategy"]["best"] == "sum" and picks["strategy"]["clear"]
    assert picks["strategy"]["mean_difference"] == {"average": 0.0, "sum": 1.5}
    default = DistillConfig.__dataclass_fields__["cross_cosine"].default
    assert picks["cross_cosine"]["best"] == default and not picks["cross_cosine"]["clear"]  # raw's interval has 0


def test_differences_pair_every_variant_with_the_reference(monkeypatch):
    """This test stubs kdlib.analysis.stats.difference_interval (score(a) - score(b) of fake runs) to check the
    bookkeeping only."""
    import sys
    import types
    from dataclasses import dataclass

    from kdlib.studies import ablation

    @dataclass
    class Interval:
        estimate: float
        low: float
        high: float

        def as_dict(self):
            return {"estimate": self.estimate, "low": self.low, "high": self.high}

    stub = types.ModuleType("kdlib.analysis.stats")
    stub.difference_interval = lambda a, b, n_resamples=1000: Interval(a[0] - b[0], a[0] - b[0] - 1, a[0] - b[0] + 1)
    monkeypatch.setitem(sys.modules, "kdlib.analysis.stats", stub)
    items = variants(["a", "b"], {"strategy": ("average", "sum")})
    score = {"ensemble (defaults)": 50.0, "single: a": 40.0, "single: b": 45.0, "strategy=sum": 53.0}
    monkeypatch.setattr(ablation, "_runs", lambda index, model, task: [score[model] + (task == "ner")])
    diffs = ablation.differences({}, items, ["upos", "ner"])
    assert len(diffs) == 3 * 2
    row = diffs[(diffs["variant"] == "strategy=sum") & (diffs["task"] == "ner")].iloc[0]
    assert row["estimate"] == 3.0 and row["setting"] == "strategy" and (row["low"], row["high"]) == (2.0, 4.0)
    assert pick(diffs, items)["strategy"]["best"] == "sum"
