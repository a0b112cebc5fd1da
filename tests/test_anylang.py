"""Any language by a profile alone (issue #15): declared tasks, profile language and tasks, the pipeline.

The data is a generated Dutch-like language (tests/synthetic.py): a CoNLL-U treebank without a dev
file, a CSV of star-rated reviews and a TSV of scored sentence pairs, written into tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import synthetic
import yaml

from kdlib.analysis import reporting
from kdlib.book import build as book
from kdlib.book import runner
from kdlib.data import corpus, tasks
from kdlib.data import load as data
from kdlib.eval import metrics


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return synthetic.write_all(tmp_path_factory.mktemp("nl"))


@pytest.fixture
def decls(files) -> dict[str, dict]:
    return synthetic.declarations(files)


@pytest.fixture(autouse=True)
def _no_active_tasks(monkeypatch):
    monkeypatch.delenv(tasks.TASKS_ENV, raising=False)
    tasks.clear_registered()
    yield
    tasks.clear_registered()


# --- declared tasks ----------------------------------------------------------------------------------------


def test_conllu_declaration_carves_validation(decls, files):
    ds = data.load_task(decls["pos"])
    assert isinstance(ds, datasets.DatasetDict)
    assert {s: len(ds[s]) for s in data.SPLITS} == {"train": 216, "validation": 24, "test": 60}
    assert data.label_names(ds, decls["pos"]) == data.UPOS_TAGS
    assert ds["train"][0]["tokens"] == ["Gent", "draagt", "de", "fiets", "vaak", "."]
    ids = {s: set(ds[s]["id"]) for s in data.SPLITS}
    assert not ids["train"] & ids["validation"] and len(ids["train"] | ids["validation"]) == 240
    used, source = data.task_sources(decls["pos"])
    assert "validation carved from train: 24 of 240 examples (10%, seed 42, not stratified)" in source
    assert source in ds["validation"].info.description and used["test"] == [str(files["pos_test"])]
    again = data._load_declared_cached.__wrapped__(  # the carve is seeded: same split without the cache
        "declared",
        json.dumps(tasks.get_task(decls["pos"]).declaration(), sort_keys=True),
        str(data.resolve_data_dir()),
        True,
        (),
    )[0]
    assert list(again["validation"]["id"]) == list(ds["validation"]["id"])


def test_csv_declaration_stratified(decls):
    ds = data.load_task(decls["sent"])
    names = data.label_names(ds, decls["sent"])
    assert names == ["1", "2", "4", "5"] and ds["train"].column_names == ["id", "text_a", "label"]
    assert len(ds["validation"]) == 20 and len(ds["test"]) == 60
    train = [names[i] for i in ds["train"]["label"]] + [names[i] for i in ds["validation"]["label"]]
    val = [names[i] for i in ds["validation"]["label"]]
    for label in names:  # stratified: each label's share of validation within one example of 10%
        assert abs(val.count(label) - train.count(label) / 10) <= 1
    assert "stratified by label" in data.task_sources(decls["sent"])[1]
    assert ds["test"][0]["id"] == "r4-0" and "," in ds["test"][0]["text_a"]  # quoted field kept whole


def test_tsv_pair_regression(decls):
    ds = data.load_task(decls["sim"])
    assert {s: len(ds[s]) for s in data.SPLITS} == {"train": 200, "validation": 40, "test": 50}
    assert ds["train"].features["label"].dtype == "float32"
    assert set(ds["train"].column_names) == {"id", "text_a", "text_b", "label"}
    assert all(0 <= x <= 5 for x in ds["test"]["label"]) and max(ds["train"]["label"]) == 5.0


def test_jsonl_conll_and_datasets_formats(tmp_path, decls):
    jsonl = tmp_path / "tags.jsonl"
    jsonl.write_text(
        '{"tokens": ["Jan", "leest"], "tags": ["PROPN", "VERB"]}\n\n'
        '{"tokens": ["Wij", "zoeken", "."], "tags": ["PRON", "VERB", "PUNCT"]}\n' * 5,
        encoding="utf-8",
    )
    ds = data.load_task({"kind": "tagging", "format": "jsonl", "train": str(jsonl), "test": str(jsonl)})
    assert ds["train"].features["tags"].feature.names == ["PRON", "PROPN", "PUNCT", "VERB"]
    conll = tmp_path / "ner.conll"
    conll.write_text("-DOCSTART- O\n\nJan B-PER\nwoont O\nin O\nNew B-LOC\nYork I-LOC\n\n" * 4, encoding="utf-8")
    ner = data.load_task(
        {"kind": "tagging", "format": "conll", "train": str(conll), "test": str(conll), "validation": str(conll)}
    )
    assert ner["train"].features["tags"].feature.names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert len(ner["train"]) == 4 and ner["train"][0]["tokens"][3:] == ["New", "York"]
    saved = tmp_path / "saved"
    data.load_task(decls["sent"]).save_to_disk(str(saved))
    hf = data.load_task(
        {"kind": "classification", "format": "datasets", "name": str(saved), "text": "text_a", "label": "label"}
    )
    assert hf["train"]["text_a"] == data.load_task(decls["sent"])["train"]["text_a"]
    assert hf["train"].features["label"].names == ["1", "2", "4", "5"]


def test_language_normalisation(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nEskişehir ligt in Turkije,a\nIn Ştefan cel Mare,b\n" * 6, encoding="utf-8")
    decl = {"kind": "classification", "format": "csv", "train": str(path), "test": str(path)}
    assert data.load_task({**decl, "language": "nl"})["test"][0]["text_a"] == "Eskişehir ligt in Turkije"
    assert data.load_task({**decl, "language": "ro"})["test"][0]["text_a"] == "Eskișehir ligt in Turkije"
    assert data.load_task(decl)["test"][1]["text_a"] == "In Ștefan cel Mare"  # no language: Romanian default
    tasks.register_tasks({"t": decl}, language="tr")
    assert data.load_task("t")["test"][0]["text_a"] == "Eskişehir ligt in Turkije"


# --- malformed declarations and files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"kind": "tagger"},
            r"task 'declared': `kind` must be one of tagging, classification, regression, got 'tagger'",
        ),
        ({"format": "xml"}, r"`format` must be one of conllu, conll, csv, tsv, jsonl, datasets"),
        ({"column": "lemma"}, r"`column` must be one of upos, xpos, feats"),
        ({"train": None}, r"`train` is required"),
        ({"colum": "upos"}, r"unknown key\(s\) \['colum'\] for format 'conllu'"),
        ({"metric": "pearson"}, r"`metric` of a tagging task must be one of macro_f1, accuracy"),
        ({"format": "csv"}, r"format 'csv' holds classification or regression tasks, not tagging"),
        ({"language": "Dutch!"}, r"language must be a language code"),
    ],
)
def test_bad_declarations(decls, change, message):
    decl = {k: v for k, v in {**decls["pos"], **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        data.load_task(decl)


def test_missing_file_and_bad_lines(decls, files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"task 'declared': test file /nope/x.conllu does not exist"):
        data.load_task({**decls["pos"], "test": "/nope/x.conllu"})
    bad = tmp_path / "bad.conllu"
    lines = files["pos_test"].read_text(encoding="utf-8").split("\n")
    lines[4] = (
        lines[4].replace("\tNOUN\t", "\tNOUNN\t").replace("\tDET\t", "\tDETT\t").replace("\tPROPN\t", "\tPROPNN\t")
    )
    bad.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"task 'declared': {bad}, line 5: column 4: expected one of the known tags"):
        data.load_task({**decls["pos"], "test": str(bad)})
    csv_bad = tmp_path / "bad.csv"
    csv_bad.write_text("id,review,stars\nx1,goed,5\nx2,,4\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 3: column 'review': expected a non-empty text"):
        data.load_task({**decls["sent"], "test": str(csv_bad)})
    csv_bad.write_text("id,text,stars\nx1,goed,5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.csv, line 1: expected a header row with column\(s\) 'review'"):
        data.load_task({**decls["sent"], "test": str(csv_bad)})
    tsv_bad = tmp_path / "bad.tsv"
    tsv_bad.write_text("s1\ts2\tscore\na\tb\t7\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"bad.tsv, line 2: column 'score': expected a number between 0 and 5, found '7'"
    ):
        data.load_task({**decls["sim"], "test": str(tsv_bad)})
    conll = tmp_path / "bad.conll"
    conll.write_text("Jan B-PER\nwoont X-Y\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.conll, line 2: last column: expected a BIO tag"):
        data.load_task({"kind": "tagging", "format": "conll", "train": str(conll), "test": str(conll)})
    one = tmp_path / "one.conll"
    one.write_text("Jan O\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"task 'declared': train has 1 example\(s\), too few to carve"):
        data.load_task({"kind": "tagging", "format": "conll", "train": str(one), "test": str(one)})


# --- registry: names, metrics, corpus ---------------------------------------------------------------------


def test_registered_tasks_resolve_everywhere(decls):
    assert tasks.task_names() == data.TASK_NAMES
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        metrics.task_kind_and_metric("pos")
    tasks.register_tasks({**decls, "acc": {**decls["sent"], "metric": "accuracy"}}, language="nl")
    assert tasks.task_names() == ("pos", "sent", "sim", "acc")
    assert [metrics.task_kind_and_metric(t) for t in ("pos", "sim", "acc", "upos")] == [
        ("tagging", "macro_f1"),
        ("regression", "pearson"),
        ("classification", "accuracy"),
        ("tagging", "macro_f1"),
    ]
    assert metrics.compute_metrics("acc", [0, 1, 1], [0, 1, 0])["score"] == pytest.approx(2 / 3)
    texts = corpus.build_corpus("ordered")["text"]
    heldout = corpus.heldout_texts()
    assert texts and not set(texts) & heldout
    sim_test = data.load_task("sim")["test"]
    assert sim_test[0]["text_a"] in heldout
    assert "Gent draagt de fiets vaak." in texts  # the first treebank sentence, detokenised


def test_tasks_file_from_the_environment(tmp_path, monkeypatch, decls):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"language": "nl", "tasks": {"pos": decls["pos"]}}), encoding="utf-8")
    monkeypatch.setenv(tasks.TASKS_ENV, str(path))
    assert tasks.task_names() == ("pos",) and tasks.active()[0] == "nl"
    assert len(data.load_task("pos")["test"]) == 60
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tasks.json, line 1: invalid JSON"):
        tasks.task_names()


# --- profiles ------------------------------------------------------------------------------------------


def test_profile_with_language_and_tasks(tmp_path, decls):
    path = tmp_path / "dutch.yaml"
    news = {"kind": "classification", "format": "datasets", "name": "some/dataset", "text": "text", "label": "label"}
    path.write_text(
        yaml.safe_dump(
            {"extends": "smoke", "name": "dutch-smoke", "language": "nl", "tasks": {**decls, "news": news}},
            sort_keys=False,
        )
    )
    prof, smoke = runner.load_profile(path), runner.load_profile("smoke")
    assert prof["name"] == "dutch-smoke" and prof["language"] == "nl"
    assert prof["params"]["tasks"] == ["pos", "sent", "sim", "news"]  # the declared tasks, for every notebook

    def without_tasks(notebooks: dict) -> dict:  # a profile's own tasks replace the per-notebook task lists
        return {nb: {k: v for k, v in settings.items() if k != "tasks"} for nb, settings in notebooks.items()}

    assert without_tasks(prof["notebooks"]) == without_tasks(smoke["notebooks"])  # settings kept
    assert prof["params"]["seed"] == 0 and all("tasks" not in s for s in prof["notebooks"].values())
    assert runner.task_declarations(prof) == {"language": "nl", "tasks": {**decls, "news": news}}
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {path}\nparams: {{seed: 4}}\n")
    assert runner.load_profile(child)["params"]["tasks"] == ["pos", "sent", "sim", "news"]
    subset = tmp_path / "subset.yaml"
    subset.write_text(yaml.safe_dump({"extends": "smoke", "tasks": decls, "params": {"tasks": ["pos", "nope"]}}))
    with pytest.raises(ValueError, match=r"params.tasks names \['nope'\], which are neither declared"):
        runner.load_profile(subset)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"extends": "smoke", "tasks": {"pos": {**decls["pos"], "kind": "tag"}}}))
    with pytest.raises(ValueError, match=rf"profile {bad}: tasks: task 'pos': `kind` must be one of"):
        runner.load_profile(bad)


def test_bad_task_file_fails_before_any_notebook(tmp_path, decls, files):
    broken = tmp_path / "broken.tsv"
    broken.write_text("s1\ts2\tscore\na\tb\tx\n", encoding="utf-8")
    profile = {"extends": "smoke", "name": "broken", "tasks": {**decls, "sim": {**decls["sim"], "test": str(broken)}}}
    with pytest.raises(ValueError, match=r"task 'sim': .*broken.tsv, line 2: column 'score': expected a number"):
        runner.run_pipeline(profile, tmp_path / "run")
    assert not (tmp_path / "run" / "notebooks").exists()


# --- the pipeline end to end ---------------------------------------------------------------------------


def _dutch_profile(files: dict[str, Path]) -> dict:
    tiny = {"max_steps": 6, "batch_size": 8, "max_len": 32, "lr": 5e-4, "save_every": 0}
    return {
        "extends": "smoke",
        "name": "dutch-smoke",
        "language": "nl",
        # every step but the benchmark and the RobBERTje chapter, which reads LaRoSeDa's long reviews and the
        # Romanian corpus sources (book/reproduce.md: "Another language")
        "steps": [p.stem for p in runner.list_steps() if "bench" not in p.stem and "corpus-shape" not in p.stem],
        "tasks": synthetic.declarations(files),
        "notebooks": {
            "01-teachers": {
                "local_teachers": {"BERTje-mini": {"lowercase": False}, "RobBERT-mini": {"lowercase": True}},
                "fill_mask_sentences": ["De hond loopt in de {mask}."],
                "corpus_max_sentences": None,
                "teacher_config": {
                    "hidden_size": 32,
                    "num_layers": 2,
                    "num_heads": 2,
                    "intermediate_size": 64,
                    "vocab_size": 200,
                    "max_len": 32,
                    "steps": 20,
                    "batch_size": 16,
                    "lr": 1e-3,
                    "heldout_max": 40,
                    "pppl_texts": 5,
                    "pppl_max_len": 16,
                },
            },
            "02-distill-single": {
                "students": [
                    {"name": "Distil-BERTje-mini", "teacher": "BERTje-mini"},
                    {"name": "Distil-RobBERT-mini", "teacher": "RobBERT-mini"},
                ],
                "distill_config": tiny,
            },
            "03-distill-ensemble": {
                "teacher_weights": {"BERTje-mini": 1.0, "RobBERT-mini": 1.0},
                "ensemble_name": "DistilMulti-BERTje-mini",
                "strategies": ["average"],
                "control": False,
                "ablation_tasks": ["pos"],
                "distill_config": tiny,
            },
            "04-evaluate": {
                "max_train_examples": 60,
                "max_eval_examples": 30,
                "finetune_config": {"epochs": 1, "batch_size": 16, "max_len": 32},
            },
        },
    }


@pytest.mark.slow
def test_dutch_pipeline_end_to_end(tmp_path):
    files = synthetic.write_all(tmp_path / "data")
    path = tmp_path / "dutch-smoke.yaml"
    path.write_text(yaml.safe_dump(_dutch_profile(files)), encoding="utf-8")
    run = tmp_path / "run"
    summary = runner.run_pipeline(path, run)
    assert all(step["status"] == "ok" for step in summary["steps"].values())
    assert json.loads((run / "tasks.json").read_text())["language"] == "nl"
    teachers = runner.read_json(run / "teachers" / "teachers.json")
    assert list(teachers) == ["BERTje-mini", "RobBERT-mini"] and teachers["RobBERT-mini"]["lowercase"] is True
    texts = datasets.load_from_disk(str(run / "corpus"))["text"]
    assert any("Eskişehir" in t for t in texts)  # Dutch: no Romanian cedilla -> comma-below fix
    results = reporting.collect_results(run)
    assert set(results["task"]) == {"pos", "sent", "sim"}
    assert set(results["model"]) == {
        "BERTje-mini",
        "RobBERT-mini",
        "Distil-BERTje-mini",
        "Distil-RobBERT-mini",
        "DistilMulti-BERTje-mini (average)",
        "Random-init Distil-BERTje-mini",  # the random-initialisation pair of 03 (random_pair, on in smoke)
        "Random-init control (MLM only)",
    }
    assert dict(zip(results["task"], results["metric"])) == {"pos": "macro_f1", "sent": "macro_f1", "sim": "pearson"}
    loyalty = runner.read_json(run / "loyalty" / "loyalty.json")
    assert {r["task"] for r in loyalty} == {"pos", "sent", "sim"}
    assert {r["reference"] for r in loyalty if r["student"].startswith("DistilMulti")} == {
        "BERTje-mini",
        "RobBERT-mini",
        "mean of teachers",
    }
    assert list(reporting.paper_table(results, with_poster=False).columns) == ["pos", "sent", "sim"]


# --- the book of another language: title, model names, planning -------------------------------------------


def _named_profile(files: dict[str, Path], **changes) -> dict:
    """A Dutch-like profile that names its book and models through `title`, `teachers` and `students`."""
    prof = _dutch_profile(files)
    for key in ("local_teachers",):
        prof["notebooks"]["01-teachers"].pop(key)
    prof["notebooks"]["02-distill-single"].pop("students")
    for key in ("teacher_weights", "ensemble_name"):
        prof["notebooks"]["03-distill-ensemble"].pop(key)
    prof["notebooks"]["03-distill-ensemble"].update({"ablation": False, "random_pair": False, "projection_words": 0})
    prof.update(title="Distilling Dutch-like BERTs", teachers={"cased": "BERTje-mini", "uncased": "RobBERT-mini"})
    return {**prof, **changes}


def test_profile_names_the_models(files):
    prof = runner.load_profile(_named_profile(files))
    assert runner.book_title(prof) == "Distilling Dutch-like BERTs"
    assert runner.model_names(prof) == {
        "cased": "BERTje-mini",
        "uncased": "RobBERT-mini",
        "cased_student": "Distil-BERTje-mini",
        "uncased_student": "Distil-RobBERT-mini",
        "ensemble": "DistilMulti-BERTje-mini",
    }
    params = runner.resolve_parameters(prof, runner.list_steps(), Path("/tmp/run"))
    assert params["02-distill-single"]["students"][1] == {"name": "Distil-RobBERT-mini", "teacher": "RobBERT-mini"}
    assert params["08-corpus-shape"]["teacher"] == "BERTje-mini"
    assert runner.book_title({"language": "nl"}) == "Distilling Dutch BERTs from one or two teachers"
    smoke = runner.load_profile("smoke")  # the paper's profiles: no model parameters added, the notebooks' names
    assert runner.model_parameters(smoke) == {} and runner.model_names(smoke)["ensemble"] == "DistilMulti-BERT-base-ro"
    for bad, message in (
        ({"title": ""}, r"`title` must be a one-line, non-empty string"),
        ({"teachers": {"cased": "A (x)"}}, r"teachers.cased must be a model name without"),
        ({"students": {"multi": "M"}}, r"`students` must map cased, uncased, ensemble to model names"),
        ({"teachers": {"cased": "A", "uncased": "A"}}, r"the teachers' and students' names must differ"),
    ):
        with pytest.raises(ValueError, match=message):
            runner.load_profile({"extends": "smoke", **bad})


def test_planning_refuses_or_skips_before_any_step(tmp_path, files):
    decls = synthetic.declarations(files)
    only_sim = _named_profile(files, tasks={"sim": decls["sim"]}, steps=None)
    only_sim["notebooks"]["03-distill-ensemble"]["ablation_tasks"] = ["sim"]
    with pytest.raises(ValueError) as err:
        runner.run_pipeline(only_sim, tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message and not (tmp_path / "run").exists()
    assert message.startswith("profile 'dutch-smoke': step 06-bench cannot apply: it needs Romanian text")
    prof = runner.load_profile({**only_sim, "optional": ["06-bench", "07"]})
    params = runner.resolve_parameters(prof, runner.list_steps(), tmp_path / "run")
    skipped = runner.plan_steps(prof, runner.list_steps(), params)
    assert list(skipped) == ["06-bench", "07-task-distill"]
    assert skipped["07-task-distill"] == (
        "Step 07-task-distill is skipped for profile `dutch-smoke`: it needs a classification or tagging task "
        "among its tasks, and its tasks are: sim (regression)."
    )
    unnamed = _dutch_profile(files)  # names its teachers by 01's parameters only: 08 still asks for BERT-base-ro
    unnamed["steps"] = None
    unnamed["optional"] = ["06-bench"]
    with pytest.raises(ValueError, match=r"step 08-corpus-shape cannot apply: its teacher names 'BERT-base-ro', and "):
        runner.run_pipeline(unnamed, tmp_path / "run")


@pytest.mark.slow
def test_dutch_book_follows_the_profile(tmp_path):
    files = synthetic.write_all(tmp_path / "data")
    prof = _named_profile(files, steps=["01-teachers", "02-distill-single", "03-distill-ensemble", "04-evaluate"])
    prof["notebooks"]["03-distill-ensemble"]["control"] = False
    run = tmp_path / "run"
    runner.run_pipeline(prof, run)
    src = book.stage_book(run, tmp_path / "src")
    config = yaml.safe_load((src / "_config.yml").read_text(encoding="utf-8"))
    assert config["title"] == "Distilling Dutch-like BERTs"
    assert (src / "book" / "intro.md").read_text(encoding="utf-8").startswith("# Distilling Dutch-like BERTs\n")
    headline = (src / "book" / "_generated" / "headline.md").read_text(encoding="utf-8")
    for name in ("BERTje-mini", "RobBERT-mini", "Distil-BERTje-mini", "Distil-RobBERT-mini", "DistilMulti-BERTje-mini"):
        assert f"**{name}" in headline
    for romanian in ("BERT-base-ro", "RoBERT-base", "Romanian BERTs", "poster's (", "paper"):
        assert romanian not in headline.replace("the paper's method", "").replace("paper's poster numbers", "")
    assert "No task is learned" in headline or "keeps the largest share" in headline
    left_out = (src / "notebooks" / "08-corpus-shape.md").read_text(encoding="utf-8")
    assert left_out.startswith("# ") and "left out by the profile's `steps:` list" in left_out
