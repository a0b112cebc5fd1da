"""kdlib.bench.corpus: the repeated corpus stays distinct, preparation yields an indexed on-disk corpus."""

from datasets import load_from_disk

from kdlib.bench import corpus as corpus_bench
from kdlib.data import corpus


def test_repeated_corpus_is_prepared_whole(tmp_path, data_dir):
    base = list(corpus.build_corpus("ordered", tasks=["sts"], data_dir=data_dir)["text"])[:100]
    text = corpus_bench.write_repeated_corpus(tmp_path / "c.txt", 250, base)
    lines = text.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines)) == 250  # de-duplication must keep every line
    row = corpus_bench.prepare(text, tmp_path / "prepared", tmp_path / "cache")
    assert row["sentences"] == 250 and row["sentences_per_min"] > 0
    saved = load_from_disk(str(tmp_path / "prepared"))
    assert len(saved) == 250 and list((tmp_path / "prepared").glob("lengths-*.npz"))
    assert corpus.corpus_stats(saved)["words"] == sum(len(line.split()) for line in lines)


def test_cli_refuses_bad_sizes(capsys):
    assert corpus_bench.cli(["--sizes", "10,-5"]) == 2
    assert "--sizes" in capsys.readouterr().err
