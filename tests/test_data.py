"""kdlib.data.load and kdlib.data.text on the real offline mirror, plus corrupted copies in tmp_path."""

from __future__ import annotations

import collections
import shutil
import unicodedata
import warnings
from pathlib import Path

import pytest

from kdlib.data import load as data
from kdlib.data import sources
from kdlib.data.text import normalize_romanian, split_sentences

RRT_DIR = "ud_romanian_rrt"


@pytest.fixture(autouse=True)
def _quiet_rebuilt_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rebuilt copy.*")
        warnings.filterwarnings("ignore", message="di: MOROCO.*")
        yield


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads and an empty private cache, so a missing file is really missing."""
    monkeypatch.setenv("KDLIB_DOWNLOAD", "0")
    monkeypatch.setenv("KDLIB_CACHE_DIR", str(tmp_path / "cache"))


def sizes(ds):
    return {s: len(ds[s]) for s in data.SPLITS}


# --- real data: sizes and label inventories (data README) ------------------------------------------------


def test_task_registry():
    assert data.TASK_NAMES == ("upos", "xpos", "ner", "sapn", "sar", "di", "sts")
    assert {t.kind for t in data.TASKS.values()} == {"tagging", "classification", "regression"}
    assert data.TASKS["sapn"].metric == "accuracy" and data.TASKS["sts"].metric == "pearson"


def test_builtin_tasks_are_registry_entries():
    from kdlib.data import tasks

    assert data.TASKS is tasks.BUILTIN and data.TASK_NAMES == tasks.task_names()
    assert all(
        tasks.get_task(name) is spec and spec.builtin and spec.language == "ro" for name, spec in data.TASKS.items()
    )
    # UPOS/XPOS are plain CoNLL-U declarations on the pinned RRT files; the others keep their own readers
    assert tasks.get_task("xpos").declaration()["validation"] == f"{RRT_DIR}/ro_rrt-ud-dev.conllu"
    assert {s.format for s in data.TASKS.values()} == {"conllu", "ronec", "laroseda", "moroco", "ro-sts"}


@pytest.mark.parametrize("task", ["upos", "xpos"])
def test_rrt_sizes(task, data_dir):
    ds = data.load_task(task, data_dir)
    assert sizes(ds) == {"train": 8043, "validation": 752, "test": 729}
    tokens = {s: sum(map(len, ds[s]["tokens"])) for s in data.SPLITS}
    assert tokens == {"train": 185125, "validation": 17073, "test": 16324}
    assert set(ds["train"].column_names) == {"id", "tokens", "tags"}
    assert all(len(t) == len(g) for t, g in zip(ds["validation"]["tokens"], ds["validation"]["tags"]))


def test_upos_labels(data_dir):
    ds = data.load_task("upos", data_dir)
    names = data.label_names(ds, "upos")
    assert names == data.UPOS_TAGS and len(names) == 17
    seen_devtest = {names[i] for s in ("validation", "test") for tags in ds[s]["tags"] for i in tags}
    # the README lists the 16 tags seen in dev+test (no SYM)
    assert seen_devtest == set(data.UPOS_TAGS) - {"SYM"}
    first = ds["train"][0]
    assert first["tokens"][:2] == ["Lui", "Winston"]
    assert [names[i] for i in first["tags"][:2]] == ["DET", "PROPN"]


def test_xpos_labels(data_dir):
    ds = data.load_task("xpos", data_dir)
    names = data.label_names(ds, "xpos")
    assert names == sorted(names) and "Ncfsry" in names and "COMMA" in names
    seen = {names[i] for s in ("validation", "test") for tags in ds[s]["tags"] for i in tags}
    assert len(seen) == 371  # data README: 371 distinct XPOS in dev+test


def test_ner_v1(data_dir):
    ds = data.load_task("ner", data_dir)
    assert sizes(ds) == {"train": 4173, "validation": 522, "test": 522}
    names = data.label_names(ds, "ner")
    assert len(names) == 33 and names[0] == "O"
    assert {n[2:] for n in names[1:]} == set(data.RONEC_V1_CLASSES) and len(data.RONEC_V1_CLASSES) == 16
    used = collections.Counter(names[i] for tags in ds["train"]["tags"] for i in tags)
    assert {n[2:] for n in used if n != "O"} == set(data.RONEC_V1_CLASSES)
    # BIO: an entity never starts with I- after O in well over 99% of the cases
    starts_with_i = sum(
        1
        for tags in ds["validation"]["tags"]
        for a, b in zip([0] + tags, tags)
        if names[b].startswith("I-") and names[a] == "O"
    )
    assert starts_with_i == 0


def test_ner_v2_offline(data_dir, offline):
    with pytest.raises(sources.DataFileMissingError, match=r"(?s)ronec/data/train\.json.*v2_train='carve'"):
        data.load_task("ner", data_dir, version=2)
    ds = data.load_task("ner", data_dir, version=2, v2_train="carve")
    assert sizes(ds) == {"train": 1064, "validation": 266, "test": 2000}
    assert len(data.label_names(ds, "ner")) == 31
    assert not set(ds["train"]["id"]) & set(ds["validation"]["id"])


def test_laroseda(data_dir):
    sapn, sar = data.load_task("sapn", data_dir), data.load_task("sar", data_dir)
    assert sizes(sar) == {"train": 10800, "validation": 1200, "test": 3000}
    assert len(sar["train"]) + len(sar["validation"]) == 12000
    assert data.label_names(sar, "sar") == ["1", "2", "4", "5"]
    assert data.label_names(sapn, "sapn") == ["negative", "positive"]
    names = data.label_names(sar, "sar")
    stars = collections.Counter(names[i] for s in ("train", "validation") for i in sar[s]["label"])
    assert stars == {"1": 4459, "2": 1541, "4": 1018, "5": 4982}
    assert collections.Counter(names[i] for i in sar["test"]["label"]) == {"1": 1102, "2": 398, "4": 244, "5": 1256}
    # stratified carve: each star's share in validation within one example of 10%
    val = collections.Counter(names[i] for i in sar["validation"]["label"])
    assert all(abs(val[k] - stars[k] / 10) <= 1 for k in stars)
    # same carve for both tasks, and polarity = stars
    for s in data.SPLITS:
        assert list(sapn[s]["id"]) == list(sar[s]["id"])
        assert all((star in (0, 1)) == (pol == 0) for star, pol in zip(sar[s]["label"], sapn[s]["label"]))
    assert not set(sar["train"]["id"]) & set(sar["validation"]["id"])
    assert sar["train"].column_names == ["id", "text_a", "text_b", "label"]


def test_carve_is_deterministic(data_dir):
    first = list(data.load_task("sar", data_dir)["validation"]["id"])
    fresh = data._load_cached.__wrapped__("sar", str(data_dir.resolve()), True, ())[0]  # bypass the cache
    assert list(fresh["validation"]["id"]) == first


def test_di_vardial(data_dir, offline):
    with pytest.warns(UserWarning, match="VarDial"):
        ds = data.load_task("di", data_dir, source="auto")
    assert sum(sizes(ds).values()) == 5923
    assert sizes(ds) == {"train": 4737, "validation": 593, "test": 593}
    assert data.label_names(ds, "di") == ["moldavian", "romanian"]
    total = collections.Counter(i for s in data.SPLITS for i in ds[s]["label"])
    assert total == {0: 2718, 1: 3205}  # gold file: 2,718 MD, 3,205 RO
    assert ds["train"].column_names == ["id", "text_a", "label"]
    ids = [set(ds[s]["id"]) for s in data.SPLITS]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_di_moroco_missing_offline(data_dir, offline):
    with pytest.raises(sources.DataFileMissingError, match=r"MOROCO/preprocessed/train/samples\.txt"):
        data.load_task("di", data_dir, source="moroco")


def test_sts(data_dir):
    ds = data.load_task("sts", data_dir)
    assert sizes(ds) == {"train": 5749, "validation": 1500, "test": 1379}
    assert data.label_names(ds, "sts") is None
    labels = ds["train"]["label"]
    assert min(labels) >= 0.0 and max(labels) <= 5.0
    assert ds["train"][0]["label"] == 5.0 and ds["train"][0]["text_a"] == "Un avion decolează."
    assert ds["train"].features["label"].dtype == "float32"


def test_load_returns_independent_copies(data_dir):
    a = data.load_task("sts", data_dir)
    a["train"] = a["train"].select(range(3))
    assert len(data.load_task("sts", data_dir)["train"]) == 5749


# --- normalisation -----------------------------------------------------------------------------------------


def test_normalize_romanian():
    assert normalize_romanian("Ştiinţă şi ŢARĂ") == "Știință și ȚARĂ"
    decomposed = "s\u0327i a\u0306"  # s + combining cedilla, a + combining breve
    assert normalize_romanian(decomposed) == "și ă"
    text = "Știință și țară, ăâî"
    assert normalize_romanian(text) == text == normalize_romanian(normalize_romanian(text))
    assert unicodedata.is_normalized("NFC", normalize_romanian("a\u0306"))
    with pytest.raises(TypeError):
        normalize_romanian(None)


def test_normalisation_applied_by_default(data_dir):
    cedilla = set("şţŞŢ")
    raw = data.load_task("sts", data_dir, normalize=False)["train"]
    norm = data.load_task("sts", data_dir)["train"]
    raw_hits = [i for i, t in enumerate(list(raw["text_a"]) + list(raw["text_b"])) if cedilla & set(t)]
    assert raw_hits, "RO-STS train has a few cedilla letters"
    assert not any(cedilla & set(t) for t in list(norm["text_a"]) + list(norm["text_b"]))


def test_split_sentences():
    assert split_sentences("Merge bine. nu recomand! Dl. Popescu și S.C. Pick au zis: da?  ok") == [
        "Merge bine.",
        "nu recomand!",
        "Dl. Popescu și S.C. Pick au zis: da?",
        "ok",
    ]
    assert split_sentences("  ...  ") == []


# --- bad input on corrupted copies -----------------------------------------------------------------------------


def copy_files(src: Path, dst: Path, relpaths: list[str]) -> None:
    for rel in relpaths:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst / rel)


STS_FILES = [f"ro_sts/dataset/text-similarity/RO-STS.{s}.tsv" for s in ("train", "dev", "test")]
RRT_FILES = [f"{RRT_DIR}/ro_rrt-ud-{s}.conllu" for s in ("dev", "test")]


def test_unknown_task_split_option(data_dir):
    with pytest.raises(ValueError, match="unknown task 'pos'.*upos, xpos, ner, sapn, sar, di, sts"):
        data.load_task("pos", data_dir)
    with pytest.raises(ValueError, match="unknown split 'dev'.*train, validation, test"):
        data.load_split("sts", "dev", data_dir)
    assert len(data.load_split("sts", "test", data_dir)) == 1379
    with pytest.raises(TypeError, match="unknown option 'version'.*none"):
        data.load_task("sts", data_dir, version=2)
    with pytest.raises(ValueError, match="source='x'"):
        data.load_task("di", data_dir, source="x")


def test_missing_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        data.resolve_data_dir(tmp_path / "nope")


def test_missing_file(data_dir, tmp_path, offline):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, RRT_FILES)  # train is missing
    with pytest.raises(sources.DataFileMissingError) as err:
        data.load_task("upos", root)
    msg = str(err.value)
    assert "ud_romanian_rrt/ro_rrt-ud-train.conllu" in msg
    assert "KDLIB_DATA_DIR" in msg and "download" in msg and str(root) in msg


def test_malformed_conllu_line(data_dir, tmp_path, offline):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, RRT_FILES)
    lines = (data_dir / RRT_FILES[0]).read_text(encoding="utf-8").split("\n")
    (root / f"{RRT_DIR}/ro_rrt-ud-train.conllu").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")
    bad = lines[:]
    bad[10] = "\t".join(bad[10].split("\t")[:7])  # line 11: 7 columns instead of 10
    (root / RRT_FILES[0]).write_text("\n".join(bad), encoding="utf-8")
    with pytest.warns(UserWarning, match="ro_rrt-ud-dev.conllu.*CHECKSUM MISMATCH"):
        with pytest.raises(
            ValueError, match=r"ro_rrt-ud-dev\.conllu, line 11: expected 10 tab-separated columns.*found 7"
        ):
            data.load_task("upos", root)


def test_bad_upos_tag(data_dir, tmp_path, offline):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, RRT_FILES)
    lines = (data_dir / RRT_FILES[1]).read_text(encoding="utf-8").split("\n")
    (root / f"{RRT_DIR}/ro_rrt-ud-train.conllu").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    cols = lines[4].split("\t")
    cols[3] = "NOUNN"
    lines[4] = "\t".join(cols)
    (root / RRT_FILES[1]).write_text("\n".join(lines), encoding="utf-8")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"ro_rrt-ud-test\.conllu, line 5: column 4.*'NOUNN'"),
    ):
        data.load_task("upos", root)


def _laroseda_with_bad_train(data_dir: Path, tmp_path: Path, corrupt) -> Path:
    """A mirror holding LaRoSeDa's real test file and, as train, `corrupt(test file text)`."""
    root = tmp_path / "mirror"
    rels = [f"laroseda/data_splitted/laroseda_{s}.json" for s in ("train", "test")]
    copy_files(data_dir, root, rels[1:])
    (root / rels[0]).write_text(corrupt((data_dir / rels[1]).read_text(encoding="utf-8")), encoding="utf-8")
    return root


def test_broken_json(data_dir, tmp_path, offline):
    root = _laroseda_with_bad_train(data_dir, tmp_path, lambda text: text[:5000])  # truncated JSON
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"laroseda_train\.json, line \d+: invalid JSON"):
        data.load_task("sapn", root)


def test_bad_star_rating(data_dir, tmp_path, offline):
    root = _laroseda_with_bad_train(
        data_dir, tmp_path, lambda text: text.replace('"starRating": "1"', '"starRating": "3"', 1)
    )
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"review #\d+ .*expected starRating 1, 2, 4 or 5, found '3'"),
    ):
        data.load_task("sar", root)


@pytest.mark.parametrize("bad", ["abc", "7.5"])
def test_bad_sts_score(data_dir, tmp_path, offline, bad):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, STS_FILES)
    lines = (root / STS_FILES[1]).read_text(encoding="utf-8").split("\n")
    lines[2] = bad + "\t" + lines[2].split("\t", 1)[1]
    (root / STS_FILES[1]).write_text("\n".join(lines), encoding="utf-8")
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            ValueError, match=rf"RO-STS\.dev\.tsv, line 3: expected a similarity score between 0 and 5.*'{bad}'"
        ),
    ):
        data.load_task("sts", root)


def test_sts_bad_columns(data_dir, tmp_path, offline):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, STS_FILES)
    with open(root / STS_FILES[2], "a", encoding="utf-8") as fh:
        fh.write("4.0\tonly one sentence\n")
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match=r"RO-STS\.test\.tsv, line 1380: expected 3 tab-separated"),
    ):
        data.load_task("sts", root)


def test_empty_split(data_dir, tmp_path, offline):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, STS_FILES)
    (root / STS_FILES[2]).write_text("", encoding="utf-8")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"split 'test' is empty.*RO-STS\.test\.tsv"):
        data.load_task("sts", root)


# --- `python -m kdlib data --check` -------------------------------------------------------------------------


def test_check_cli_all_tasks(data_dir, capsys, offline):
    assert data.cli(["--check", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    for task in data.TASK_NAMES:
        assert f"\n{task} " in out
    assert "upos  train          8,043  185,125" in out
    assert "sts   test           1,379" in out
    assert "rebuilt copy" in out and "blob ok" in out and "VarDial" in out


def test_check_cli_fails_on_broken_data(data_dir, tmp_path, capsys, offline):
    root = tmp_path / "mirror"
    copy_files(data_dir, root, STS_FILES[:2])
    assert data.cli(["--check", "--data-dir", str(root), "--task", "sts"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "RO-STS.test.tsv" in captured.out
