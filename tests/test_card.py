"""Model cards as the hub expects them (kdlib.engine.card): ModelCardData metadata with the teachers' and the
data's licences, base_model only for hub teachers, model-index only from test metrics, no absolute paths or
times (two identical runs give byte-identical cards); --push-to-hub tested against a fake hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_tokenizer, ro_sentences, tiny_teacher
from huggingface_hub import ModelCard

from kdlib.engine import card as kcard
from kdlib.engine.distill import DistillConfig, distill
from kdlib.engine.distill import cli as distill_cli
from kdlib.eval.finetune import MODEL_DIR, push_models
from kdlib.eval.finetune import cli as finetune_cli

RO_BERT, ROBERT = "dumitrescustefan/bert-base-romanian-cased-v1", "readerbench/RoBERT-base"
ALL_DATA = ["universal_dependencies", "ronec", "laroseda", "moroco", "ro_sts"]


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory) -> dict:
    """Real Romanian sentences and a tiny local teacher (tokenizer + BertForMaskedLM) saved to disk."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("card")
    sents = ro_sentences(data_dir, 120)
    tok = make_tokenizer(sents, root / "tok", lowercase=False, vocab_size=400)
    teacher = root / "teachers" / "t"
    tiny_teacher(tok, hidden=32, seed=0).save_pretrained(teacher)
    tok.save_pretrained(teacher)
    return {"root": root, "sents": sents, "teacher": str(teacher)}


class FakeHub:
    """Stands for huggingface_hub.HfApi: records the calls and copies uploaded folders under `root`."""

    calls: list[tuple] = []
    root: Path

    def create_repo(self, repo_id: str, **kw) -> str:
        FakeHub.calls.append(("create_repo", repo_id, kw))
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, *, repo_id: str, folder_path: str, **kw) -> str:
        FakeHub.calls.append(("upload_folder", repo_id, kw))
        shutil.copytree(folder_path, FakeHub.root / repo_id, dirs_exist_ok=True)
        return f"https://hub.example/{repo_id}/commit/1"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """A fake hub: uploads land in tmp_path/hub/<repo id>."""
    import huggingface_hub

    FakeHub.calls, FakeHub.root = [], tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    return FakeHub.root


def _config(tiny: dict, out: Path, students: list[str] = ("s",), **kw) -> DistillConfig:
    base = dict(
        teachers=[{"name": "t", "path": tiny["teacher"]}],
        students=[{"name": s, "teachers": ["t"]} for s in students],
        batch_size=8,
        max_len=32,
        max_steps=3,
        lr=1e-3,
        out_dir=str(out),
        device="cpu",
        amp="off",
        seed=3,
    )
    return DistillConfig.from_dict({**base, **kw})


def _render(teachers: list[str], corpus: str) -> ModelCard:
    text = kcard.render(
        body="# s",
        models=[(t.split("/")[0], t) for t in teachers],
        models_title="Teachers",
        run_dir=".",
        sources=kcard.corpus_sources(corpus),
        pipeline_tag="fill-mask",
        tags=["kdlib"],
    )
    return ModelCard(text)


def test_student_card_states_licences_of_hub_teachers_and_corpus_data():
    card = _render([RO_BERT, ROBERT], "shuffled")
    assert card.data.base_model == [RO_BERT, ROBERT] and card.data.pipeline_tag == "fill-mask"
    assert card.data.datasets == ALL_DATA  # the corpus modes are made of the seven tasks' train splits
    assert card.data.license == "other"  # RoBERT-base states no licence
    assert f"[`{RO_BERT}`](https://huggingface.co/{RO_BERT}); licence: mit" in card.text
    assert (
        f"[`{ROBERT}`](https://huggingface.co/{ROBERT}); licence: not stated here: see the teacher's card" in card.text
    )
    assert "LaRoSeDa: `ancatache/LaRoSeDa`; licence: cc-by-nc-sa-4.0 (non-commercial)" in card.text
    assert "RONEC: `dumitrescustefan/ronec`; licence: mit" in card.text
    assert "RO-STS: `dumitrescustefan/RO-STS`; licence: cc-by-sa-4.0" in card.text
    assert "eval_results" not in card.content and "model-index" not in card.content
    # known licences only: the most restrictive one; a corpus of unknown origin adds no dataset
    assert _render([RO_BERT], "shuffled").data.license == "cc-by-nc-sa-4.0"
    plain = _render([RO_BERT], "my_corpus.txt")
    assert plain.data.license == "mit" and plain.data.datasets is None


def test_distilled_card_is_deterministic_relocatable_and_has_no_results(tiny):
    cards = []
    for where in ("a", "b"):
        out = tiny["root"] / where / "run"
        summary = distill(_config(tiny, out), tiny["sents"], corpus_name="shuffled")
        cards.append((Path(summary["s"]["out_dir"]) / "README.md").read_bytes())
    assert cards[0] == cards[1]  # no times, no absolute paths: the same run gives the same card
    text = cards[0].decode()
    assert str(tiny["root"]) not in text and "wall" not in text
    card = ModelCard(text)
    assert card.data.base_model is None and card.data.license == "other" and card.data.datasets == ALL_DATA
    assert card.data.eval_results is None and "model-index" not in text
    assert "`t`: local folder `../../teachers/t`" in text and "trained in this run" in text
    assert "steps: 3" in text and "corpus: shuffled" in text


def test_task_model_card_has_test_results_and_is_pushed(tiny, data_dir, hub, tmp_path):
    base = tmp_path / "student"
    shutil.copytree(tiny["teacher"], base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a student\n", encoding="utf-8")
    out = tmp_path / "ft"
    args = ["--model", str(base), "--task", "sapn", "--out", str(out), "--data-dir", str(data_dir)]
    args += ["--epochs", "1", "--max-train-examples", "24", "--max-eval-examples", "16", "--max-len", "32"]
    assert finetune_cli([*args, "--device", "cpu", "--no-progress", "--push-to-hub", "me/sapn"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    text = (out / MODEL_DIR / "README.md").read_text()
    card = ModelCard(text)
    assert card.data.license == "cc-by-nc-sa-4.0"  # MIT base, LaRoSeDa non-commercial
    assert card.data.base_model is None and card.data.datasets == ["laroseda"]
    assert card.data.pipeline_tag == "text-classification" and card.data.model_name == "student-sapn"
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    numbers = {k: v for k, v in metrics["test"].items() if k not in ("score", "metric")}
    assert results == numbers and set(results) == {"macro_f1", "accuracy"}
    assert {r.dataset_split for r in card.data.eval_results} == {"test"}
    assert str(tmp_path) not in text and "licence: mit" in text and "`../student`" in text
    assert "report_to" not in metrics["config"]  # metrics.json as before when nothing is tracked
    pushed = hub / "me" / "sapn"
    assert (pushed / "README.md").read_text() == text and (pushed / "head.safetensors").is_file()
    assert [c[:2] for c in FakeHub.calls] == [("create_repo", "me/sapn"), ("upload_folder", "me/sapn")]


def test_distill_cli_pushes_each_student(tiny, hub, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny["sents"]) + "\n", encoding="utf-8")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_config(tiny, tmp_path / "run", ["s1", "s2"]).to_dict()), encoding="utf-8")
    assert distill_cli(["--config", str(cfg), "--corpus", str(corpus), "--push-to-hub", "me/student"]) == 0
    for name in ("s1", "s2"):
        pushed = hub / "me" / f"student-{name}"
        assert (pushed / "model.safetensors").read_bytes() == (
            tmp_path / "run" / name / "model.safetensors"
        ).read_bytes()
        text = (pushed / "README.md").read_text()
        assert "corpus: ../corpus.txt:" in text and str(tmp_path) not in text
        assert ModelCard(text).data.datasets is None  # a text file of unknown origin names no dataset


def test_a_failed_push_is_one_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    class Down(FakeHub):
        def create_repo(self, repo_id: str, **kw) -> str:
            raise OSError("connection refused")

    monkeypatch.setattr(huggingface_hub, "HfApi", Down)
    (tmp_path / MODEL_DIR).mkdir()
    (tmp_path / MODEL_DIR / "config.json").write_text("{}")
    assert push_models([("", tmp_path)], "me/x") == 1
    assert capsys.readouterr().err.strip() == "kdlib finetune: push to the hub failed: connection refused"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        kcard.push_folder(tmp_path, "me/x")
