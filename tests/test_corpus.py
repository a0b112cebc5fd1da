"""kdlib.data.corpus: train-only distillation corpus, its three modes, and external text corpora."""

from __future__ import annotations

import collections
import itertools
import json
import warnings

import pytest
from datasets import Dataset

from kdlib.data import corpus
from kdlib.data import load as data
from kdlib.data.text import split_sentences


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="module")
def full_corpus():
    return corpus.build_corpus("ordered")


def heldout_independent(data_dir) -> set[str]:
    """Validation/test texts rebuilt here without kdlib.data.corpus: whole texts and their sentences."""
    texts: set[str] = set()
    for task in ("sapn", "di", "sts"):
        ds = data.load_task(task, data_dir)
        for split in ("validation", "test"):
            for col in ("text_a", "text_b"):
                if col in ds[split].column_names:
                    for t in ds[split][col]:
                        texts.add(" ".join(t.split()))
                        texts.update(split_sentences(t))
    for task in ("upos", "ner"):
        ds = data.load_task(task, data_dir)
        for split in ("validation", "test"):
            texts.update(corpus.detokenize(toks) for toks in ds[split]["tokens"])
    return texts


def test_no_validation_or_test_text_leaks(full_corpus, data_dir):
    lines = set(full_corpus[:]["text"])
    assert not lines & heldout_independent(data_dir)
    assert not lines & corpus.heldout_texts(data_dir)
    # but train text is there: the first RRT train sentence and a LaRoSeDa train title
    assert "Lui Winston îi displăcuse fata asta din primul moment când o văzuse." in lines
    sts_train = data.load_task("sts", data_dir)["train"]
    assert sum(t in lines for t in sts_train["text_a"][:200]) > 100


def test_ordered_corpus_size_and_dedup(full_corpus):
    stats = corpus.corpus_stats(full_corpus)
    assert stats["sentences"] == len(full_corpus) > 100_000
    assert stats["characters"] == sum(len(t) for t in full_corpus[:]["text"]) > 10_000_000
    counts = collections.Counter(full_corpus[:]["text"])
    assert counts.most_common(1)[0][1] == 1  # de-duplicated
    assert all(t == " ".join(t.split()) and t for t in full_corpus[:]["text"])
    assert not any(c in t for t in full_corpus[:]["text"] for c in "şţŞŢ")  # normalised


def test_modes(data_dir):
    tasks = ["upos", "sts"]
    ordered = list(corpus.build_corpus("ordered", tasks=tasks)[:]["text"])
    shuffled = list(corpus.build_corpus("shuffled", tasks=tasks, seed=1)[:]["text"])
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    assert list(corpus.build_corpus("shuffled", tasks=tasks, seed=1)[:]["text"]) == shuffled
    assert list(corpus.build_corpus("shuffled", tasks=tasks, seed=2)[:]["text"]) != shuffled
    assert ordered[0].startswith("Lui Winston")  # RRT first, in file order

    merged = list(corpus.build_corpus("merged", tasks=tasks, merge_p=0.5, seed=1)[:]["text"])
    assert len(merged) < len(ordered)
    # every merged line is a run of consecutive ordered sentences
    joined = "\n".join(ordered)
    position = {s: i for i, s in enumerate(ordered)}
    rrt_lines = [m for m in merged if "Winston" in m]
    assert any(m not in position for m in rrt_lines)
    for m in merged[:300]:
        assert m in position or m.replace(" ", "\n") in joined.replace(" ", "\n")
    assert sum(len(m) for m in merged) > sum(len(o) for o in ordered)  # joining adds spaces
    assert set(corpus.build_corpus("merged", tasks=tasks, merge_p=0.0)[:]["text"]) == set(ordered)
    # p = 1 merges each document into one line: RRT is one document, STS sentences are their own
    all_merged = list(corpus.build_corpus("merged", tasks=["upos"], merge_p=1.0)[:]["text"])
    assert len(all_merged) == 1


def test_max_sentences_and_bad_arguments():
    ds = corpus.build_corpus("shuffled", tasks=["sts"], max_sentences=50)
    assert len(ds) == 50
    with pytest.raises(ValueError, match="unknown corpus mode 'random'.*ordered, shuffled, merged"):
        corpus.build_corpus("random")
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        corpus.build_corpus(tasks=["pos"])
    with pytest.raises(ValueError, match="merge_p"):
        corpus.build_corpus("merged", merge_p=1.5)


def test_detokenize():
    assert (
        corpus.detokenize("a venit s- o vadă ( ieri ) , a 2 -a oară .".split())
        == "a venit s-o vadă (ieri), a 2-a oară."
    )


def test_load_text_corpus(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("Prima frază cu ş.\n\n  A doua.  \nA treia\n", encoding="utf-8")
    ds = corpus.load_text_corpus(str(f))
    assert list(ds["text"]) == ["Prima frază cu ș.", "A doua.", "A treia"]
    assert len(corpus.load_text_corpus(str(f), max_sentences=2)) == 2
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "1.txt").write_text("unu\ndoi\n", encoding="utf-8")
    (folder / "2.txt").write_text("trei\n", encoding="utf-8")
    assert sorted(corpus.load_text_corpus(str(folder))["text"]) == ["doi", "trei", "unu"]
    saved = tmp_path / "saved"
    Dataset.from_dict({"content": ["x y", "z"]}).save_to_disk(str(saved))
    assert list(corpus.load_text_corpus(str(saved), text_column="content")["text"]) == ["x y", "z"]
    with pytest.raises(ValueError, match="no column 'text'"):
        corpus.load_text_corpus(str(saved))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpus.load_text_corpus(str(tmp_path / "missing.txt"))


def test_corpus_cli(tmp_path, capsys):
    out = tmp_path / "sub" / "corpus.txt"
    assert corpus.cli(["--mode", "ordered", "--tasks", "sts", "--out", str(out)]) == 0
    stats = json.loads(capsys.readouterr().out)
    lines = out.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == stats["sentences"]
    assert sum(len(line) for line in lines) == stats["characters"]
    assert list(out.parent.iterdir()) == [out]  # no temporary file left
    assert corpus.cli(["--mode", "ordered", "--tasks", "nope", "--out", str(out)]) == 2


def test_hub_documents_are_split_into_sentences(data_dir):
    """Hub corpora yield documents (articles, pages); they are cut into sentences and capped by sentence."""
    from kdlib.data.corpus import _document_sentences
    from kdlib.data.load import load_task
    from kdlib.data.text import split_sentences

    reviews = load_task("sapn", data_dir)["train"].select(range(50))
    rows = [{"text": r["text_a"] + "\n" + r["text_b"]} for r in reviews]
    expected = [s for r in rows for line in r["text"].splitlines() for s in split_sentences(line)]
    assert len(expected) > len(rows)
    assert list(_document_sentences(rows, "text", None)) == expected
    assert list(_document_sentences(iter(rows), "text", 7)) == expected[:7]
    with pytest.raises(ValueError, match="no column 'content'"):
        list(_document_sentences(rows, "content", None))


# ------------------------------------------------------------------ the three modes on LaRoSeDa documents
def laroseda_documents(data_dir) -> list[list[str]]:
    """LaRoSeDa train reviews rebuilt here as documents (title, then the content's sentences), in file
    order, without held-out texts and repeated units (first occurrence kept): what every mode starts from."""
    train = data.load_task("sapn", data_dir)["train"]
    blocked, seen, docs = corpus.heldout_texts(data_dir), set(), []
    for title, content in zip(train["text_a"], train["text_b"]):
        kept = [u for u in [" ".join(title.split())] + split_sentences(content) if u and u not in blocked]
        kept = [u for u in dict.fromkeys(kept) if u not in seen]
        seen.update(kept)
        if kept:
            docs.append(kept)
    return docs


def parse_merged(line: str, where: dict[str, tuple[int, int]], docs: list[list[str]]) -> tuple[int, int, int] | None:
    """(document, first sentence, sentences) if `line` is consecutive sentences of ONE document, else None."""
    for cut in [i for i, c in enumerate(line) if c == " "] + [len(line)]:
        if line[:cut] not in where:
            continue
        d, k = where[line[:cut]]
        text, m = docs[d][k], 1
        while len(text) < len(line) and k + m < len(docs[d]):
            text, m = text + " " + docs[d][k + m], m + 1
        if text == line:
            return d, k, m
    return None


@pytest.fixture(scope="module")
def reviews(data_dir):
    return laroseda_documents(data_dir)


def test_ordered_keeps_document_order_and_shuffled_permutes_it(reviews, data_dir):
    ordered = list(corpus.build_corpus("ordered", tasks=["sapn"])[:]["text"])
    assert ordered == [u for doc in reviews for u in doc]
    shuffled = list(corpus.build_corpus("shuffled", tasks=["sapn"], seed=3)[:]["text"])
    assert sorted(shuffled) == sorted(ordered)
    # a real permutation: few neighbours of the document order survive next to each other
    follows = dict(itertools.pairwise(ordered))
    kept = sum(follows.get(a) == b for a, b in itertools.pairwise(shuffled))
    assert kept < 0.01 * len(ordered)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_merged_joins_consecutive_sentences_of_one_document_with_probability_p(p, reviews):
    merged = list(corpus.build_corpus("merged", tasks=["sapn"], merge_p=p, seed=1)[:]["text"])
    where = {u: (d, k) for d, doc in enumerate(reviews) for k, u in enumerate(doc)}
    parsed = [parse_merged(line, where, reviews) for line in merged]
    crossing = [line for line, hit in zip(merged, parsed) if hit is None]
    assert not crossing, f"{len(crossing)} merged lines are not a run of one document, e.g. {crossing[0][:120]!r}"
    covered = sorted((d, k + i) for d, k, m in parsed for i in range(m))
    assert covered == sorted(where.values())  # every sentence in exactly one line
    boundaries = sum(len(doc) - 1 for doc in reviews)  # places where a join may happen
    joins = sum(m - 1 for _, _, m in parsed)
    sd = (p * (1 - p) / boundaries) ** 0.5
    assert abs(joins / boundaries - p) < 5 * sd, (joins / boundaries, p)
    firsts = [(d, k) for d, k, _ in parsed]
    assert firsts != sorted(firsts)  # the merged lines are shuffled, not in document order


def test_merged_with_p_one_gives_one_line_per_document(reviews):
    merged = list(corpus.build_corpus("merged", tasks=["sapn"], merge_p=1.0)[:]["text"])
    assert sorted(merged) == sorted(dict.fromkeys(" ".join(doc) for doc in reviews))


def test_streamed_corpus_is_deduplicated_and_filtered(tmp_path, data_dir):
    """A folder of json documents is streamed like a hub corpus: sentences, no repeats, no test text."""
    from kdlib.data.load import load_task

    leaked = load_task("sts", data_dir)["test"][0]["text_a"]
    assert leaked in corpus.heldout_texts(data_dir)
    docs = [
        {"text": f"Prima propoziție. {leaked}\nA doua linie, a doua propoziție."},
        {"text": "Prima propoziție. O propoziție nouă!"},
    ]
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "part-0.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    ds = corpus.load_text_corpus(str(folder), data_dir=data_dir, cache_dir=str(tmp_path / "cache"))
    assert list(ds["text"]) == ["Prima propoziție.", "A doua linie, a doua propoziție.", "O propoziție nouă!"]
    assert ds.cache_files, "the corpus must live on disk, not in memory"
    capped = corpus.load_text_corpus(str(folder), data_dir=data_dir, max_sentences=2, cache_dir=str(tmp_path / "c2"))
    assert len(capped) == 2
    kept = corpus.load_text_corpus(str(folder), filter_heldout=False, dedup=False, cache_dir=str(tmp_path / "c3"))
    assert len(kept) == 5 and leaked in kept["text"]
