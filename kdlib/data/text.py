"""Text normalisation per language, applied to every task and corpus text by default.

:func:`normalizer` picks it: for Romanian (``ro``, ``ro-MD``, ...) :func:`normalize_romanian` below;
for any other language only Unicode NFC (:func:`normalize_nfc`), so that no language-specific
replacement touches, e.g., Turkish ş (which is correct with a cedilla).

Romanian writes ș and ț with a comma below (U+0219/U+021B, U+0218/U+021A), but much older text
(typed with legacy keyboards/encodings) uses the look-alike cedilla letters ş ţ Ş Ţ (U+015F/U+0163,
U+015E/U+0162). The cased teacher (``dumitrescustefan/bert-base-romanian-cased-v1``) was trained on
comma-below text and its authors recommend this replacement, so the two spellings of one word map to
one token sequence. The result is also put in Unicode NFC, so a letter plus a combining diacritic
(e.g. ``a`` + U+0306) becomes the single precomposed letter (``ă``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["CEDILLA_TO_COMMA", "normalize_romanian", "normalize_nfc", "normalizer", "split_sentences"]

CEDILLA_TO_COMMA = str.maketrans({"ş": "ș", "ţ": "ț", "Ş": "Ș", "Ţ": "Ț"})

# A combining cedilla (U+0327) after s/t/S/T is the decomposed form of the same legacy letters.
_DECOMPOSED_CEDILLA = re.compile("([sStT])\u0327")
_ANY_CEDILLA = re.compile("[şţŞŢ\u0327]")


def normalize_romanian(text: str) -> str:
    """Return ``text`` with cedilla ş/ţ/Ş/Ţ replaced by comma-below ș/ț/Ș/Ț, in Unicode NFC.

    Idempotent; leaves every other character unchanged (case, punctuation, spacing).
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_romanian expects a str, got {type(text).__name__}")
    if not _ANY_CEDILLA.search(text):  # the common case, ~10x faster: at most NFC to do
        return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)
    text = _DECOMPOSED_CEDILLA.sub(lambda m: m.group(1) + "\u0326", text)  # to combining comma below
    return unicodedata.normalize("NFC", text).translate(CEDILLA_TO_COMMA)


def normalize_nfc(text: str) -> str:
    """Return ``text`` in Unicode NFC (the generic normalisation of every language but Romanian)."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_nfc expects a str, got {type(text).__name__}")
    return unicodedata.normalize("NFC", text)


def normalizer(language: str) -> Callable[[str], str]:
    """The normalisation of a language code: Romanian fixes for ``ro`` (and ``ro-*``), else NFC."""
    primary = re.split(r"[-_]", language or "", maxsplit=1)[0].lower()
    return normalize_romanian if primary in {"ro", "ron", "rum"} else normalize_nfc


# --- a deliberately simple sentence splitter, for reviews, news texts and STS sentences ---------------
# Split after . ! ? … (optionally followed by closing quotes/brackets) and whitespace. Reviews are often
# written in lower case, so the next sentence need not start with a capital letter. A split is undone
# when the piece before it ends in an initial ("S.C.", "I. L.") or a common Romanian abbreviation
# ("dl.", "nr.", "str."), which would otherwise cut names and numbers apart.
_BOUNDARY = re.compile(r"(?<=[.!?…])[\"'”»)\]]*\s+")
_ABBREV = re.compile(
    r"(?:(?:^|[\s(.])[A-ZĂÂÎȘȚŞŢ]\.$)"  # an initial: "S.C.", "I. L. Caragiale"
    r"|(?:(?:^|[\s(])(?i:dl|dna|dnul|dra|nr|str|art|alin|lit|pag|pct|prof|dr|ing|sf|mil|mld|gen|cca|vol|ed|ex)\.$)"
)


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences with a regular expression (no model, deterministic).

    Empty pieces and pieces without any letter or digit are dropped; whitespace is collapsed.
    """
    text = " ".join(text.split())
    if not text:
        return []
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        candidate = text[start : match.start()]
        # the lookbehind put the end punctuation before match.start(); closing quotes are in the match
        closing = match.group(0).rstrip()
        if _ABBREV.search(candidate):
            continue
        pieces.append((candidate + closing).strip())
        start = match.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if any(ch.isalnum() for ch in p)]
