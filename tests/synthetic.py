"""A small generated Dutch-like language for the tests of declared tasks (kdlib.data.tasks).

Sentences come from a few templates over a closed vocabulary, seeded, so every file is the same on
every run: a UPOS-tagged CoNLL-U treebank, a CSV of star-rated reviews whose stars follow the
adjective's polarity, and a TSV of sentence pairs whose similarity score falls with the number of
replaced words. Labels are learnable, texts are not Romanian, and nothing is downloaded.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

LEXICON = {
    "DET": ["de", "het", "een", "deze"],
    "NOUN": ["hond", "kat", "huis", "boek", "fiets", "stad", "tafel", "vriend", "brief", "tuin", "auto", "school"],
    "ADJ": ["grote", "kleine", "oude", "nieuwe", "rode", "stille"],
    "VERB": ["ziet", "leest", "koopt", "zoekt", "maakt", "vindt", "draagt"],
    "ADP": ["in", "op", "naar", "met", "onder", "achter"],
    "PRON": ["hij", "zij", "wij", "jij"],
    "PROPN": ["Jan", "Piet", "Anna", "Utrecht", "Gent", "Sanne", "Eskişehir"],  # ş: not Romanian-normalised
    "ADV": ["vaak", "graag", "snel", "nooit", "soms"],
    "CCONJ": ["en", "maar", "of"],
    "NUM": ["twee", "drie", "vier", "tien"],
}
TEMPLATES = [
    ["DET", "ADJ", "NOUN", "VERB", "ADP", "DET", "NOUN"],
    ["PROPN", "VERB", "DET", "NOUN", "ADV"],
    ["PRON", "VERB", "NUM", "NOUN", "CCONJ", "PRON", "VERB", "ADV"],
    ["DET", "NOUN", "ADP", "PROPN", "VERB", "DET", "ADJ", "NOUN"],
    ["PROPN", "CCONJ", "PROPN", "VERB", "ADV", "ADP", "DET", "NOUN"],
]
POSITIVE = ["goed", "prachtig", "fijn", "handig", "sterk"]
NEGATIVE = ["slecht", "lelijk", "kapot", "traag", "zwak"]


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    """One sentence as (word, UPOS) pairs, capitalised and ending in a full stop."""
    words = [(rng.choice(LEXICON[pos]), pos) for pos in rng.choice(TEMPLATES)]
    first, pos = words[0]
    words[0] = (first[0].upper() + first[1:], pos)
    return words + [(".", "PUNCT")]


def write_conllu(path: Path, n: int, seed: int, prefix: str) -> Path:
    """``n`` generated sentences in CoNLL-U (sent_id and text comments, 10 columns)."""
    rng = random.Random(seed)
    blocks = []
    for i in range(n):
        words = sentence(rng)
        lines = [f"# sent_id = {prefix}-{i + 1}", "# text = " + " ".join(w for w, _ in words[:-1]) + "."]
        for j, (word, pos) in enumerate(words, 1):
            lines.append(
                "\t".join(
                    [
                        str(j),
                        word,
                        word.lower(),
                        pos,
                        pos[:1],
                        "_",
                        "0" if j == 1 else "1",
                        "root" if j == 1 else "dep",
                        "_",
                        "_",
                    ]
                )
            )
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path


def write_reviews(path: Path, n: int, seed: int) -> Path:
    """CSV ``id,review,stars``: stars 4-5 for a positive adjective, 1-2 for a negative one."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "review", "stars"])
        for i in range(n):
            good = rng.random() < 0.5
            adjective = rng.choice(POSITIVE if good else NEGATIVE)
            noun = rng.choice(LEXICON["NOUN"])
            extra = " ".join(w for w, _ in sentence(rng))
            out.writerow(
                [
                    f"r{seed}-{i}",
                    f"De {noun} is echt {adjective}, zeker {adjective}. {extra}",
                    rng.choice([4, 5]) if good else rng.choice([1, 2]),
                ]
            )
    return path


def write_pairs(path: Path, n: int, seed: int) -> Path:
    """TSV ``s1<TAB>s2<TAB>score``: s2 is s1 with k words replaced, score = 5 * (1 - k / length)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("s1\ts2\tscore\n")
        for _ in range(n):
            words = sentence(rng)
            changed = list(words)
            k = rng.randint(0, len(words) - 1)
            for j in rng.sample(range(len(words) - 1), min(k, len(words) - 1)):
                changed[j] = (rng.choice(LEXICON[words[j][1]]), words[j][1])
            same = sum(a == b for a, b in zip(words, changed))
            score = round(5 * same / len(words), 2)
            fh.write(" ".join(w for w, _ in words) + "\t" + " ".join(w for w, _ in changed) + f"\t{score}\n")
    return path


def write_all(root: Path) -> dict[str, Path]:
    """Every file of the three tasks under ``root`` (treebank without a dev file: it is carved)."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "pos_train": write_conllu(root / "nl_synth-ud-train.conllu", 240, 1, "train"),
        "pos_test": write_conllu(root / "nl_synth-ud-test.conllu", 60, 2, "test"),
        "sent_train": write_reviews(root / "reviews-train.csv", 200, 3),
        "sent_test": write_reviews(root / "reviews-test.csv", 60, 4),
        "sim_train": write_pairs(root / "pairs-train.tsv", 200, 5),
        "sim_dev": write_pairs(root / "pairs-dev.tsv", 40, 6),
        "sim_test": write_pairs(root / "pairs-test.tsv", 50, 7),
    }


def declarations(files: dict[str, Path]) -> dict[str, dict]:
    """The three tasks as a profile declares them (issue #15's example, with generated files)."""
    return {
        "pos": {
            "kind": "tagging",
            "format": "conllu",
            "column": "upos",
            "train": str(files["pos_train"]),
            "test": str(files["pos_test"]),
        },
        "sent": {
            "kind": "classification",
            "format": "csv",
            "text": "review",
            "label": "stars",
            "id": "id",
            "train": str(files["sent_train"]),
            "test": str(files["sent_test"]),
        },
        "sim": {
            "kind": "regression",
            "format": "tsv",
            "text_a": "s1",
            "text_b": "s2",
            "label": "score",
            "range": [0, 5],
            "train": str(files["sim_train"]),
            "validation": str(files["sim_dev"]),
            "test": str(files["sim_test"]),
        },
    }
