"""kdlib.engine.batching: the corpus read by index, the length-bucketed batch order, the stream's position."""

import numpy as np
import pytest
from datasets import load_from_disk

from kdlib.data import corpus
from kdlib.engine import batching


@pytest.fixture(scope="module")
def sts_corpus(data_dir):
    return corpus.build_corpus("ordered", tasks=["sts"], data_dir=data_dir)


def test_batch_order_is_a_bucketed_permutation(sts_corpus):
    lengths = corpus.length_index(sts_corpus)["n_words"]
    order = batching.batch_order(lengths, 16, seed=3, epoch=0, pool=10)
    assert order.shape == (len(lengths) // 16, 16)
    flat = order.ravel()
    assert len(np.unique(flat)) == len(flat)  # every text at most once per epoch
    assert np.array_equal(order, batching.batch_order(lengths, 16, seed=3, epoch=0, pool=10))
    assert not np.array_equal(order, batching.batch_order(lengths, 16, seed=3, epoch=1, pool=10))
    # bucketing: texts of one batch have closer lengths than random batches
    spread = np.mean([np.ptp(lengths[b]) for b in order])
    rng = np.random.default_rng(0)
    random_spread = np.mean([np.ptp(lengths[rng.choice(len(lengths), 16, replace=False)]) for _ in range(200)])
    assert spread < random_spread / 2


def test_text_corpus_reads_an_on_disk_corpus_by_index(sts_corpus, tmp_path):
    ds = sts_corpus.select(range(50)).add_item({"text": "   "}).add_item({"text": "ultima"})
    ds.save_to_disk(str(tmp_path / "c"))
    on_disk = load_from_disk(str(tmp_path / "c"))
    tc = batching.TextCorpus(on_disk)
    assert len(tc) == 51  # the blank line is skipped
    assert tc.texts([0, 50]) == [sts_corpus[0]["text"], "ultima"]
    assert list(tmp_path.joinpath("c").glob("lengths-*.npz")), "the length index is saved beside the corpus"
    assert batching.TextCorpus(list(ds["text"])).texts([50]) == ["ultima"]
    with pytest.raises(ValueError, match="'text' column"):
        batching.TextCorpus(on_disk.rename_column("text", "body"))


def test_stream_resumes_at_its_position(sts_corpus):
    tc = batching.TextCorpus(sts_corpus.select(range(100)))
    a = batching.BatchStream(tc, 8, seed=0, pool=2)
    seen = [a.next() for _ in range(15)]  # crosses into the second epoch (12 batches each)
    assert a.position == {"epoch": 1, "batch_idx": 3}
    b = batching.BatchStream(tc, 8, seed=0, pool=2, epoch=1, batch_idx=1)
    assert b.next() == seen[13] and b.next() == seen[14]
