"""BM25 over chunk texts (bm25s), with stemming so "defended" finds "defend"."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import IndexCorrupt

_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset("""
a an and are as at be been but by did do does for from had has have he her him his how i if in
into is it its me my of on or our she so that the their them then there these they this to
was we were what when where which who whom why will with would you your about after also can
could said says say just than too very more most some any all not no nor only own same such
""".split())


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Lower-cased, accent-folded, stop-word-free, stemmed word tokens."""
    text = unicodedata.normalize("NFKD", text.lower().replace("info-icon", " "))
    words = [w for w in _WORD.findall(text) if len(w) > 1 and w not in _STOPWORDS]
    return _stemmer().stemWords(words)


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _edits(word: str) -> set[str]:
    """Every string one deletion, transposition, replacement or insertion away."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return ({a + b[1:] for a, b in splits if b}
            | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
            | {a + c + b[1:] for a, b in splits if b for c in _LETTERS}
            | {a + c + b for a, b in splits for c in _LETTERS})


# The surname is a lookahead so that "Later Theresa May" yields both pairs.
_FULL_NAME = re.compile(r"\b([A-Z][a-z]+)\s+(?=([A-Z][a-z]{2,})\b)")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]{2,}\b")


def given_names(text: str) -> dict[str, set[str]]:
    """For each capitalised word of an article, the capitalised words just before it:
    {"Johnson": {"Boris"}, "May": {"Theresa"}}."""
    names: dict[str, set[str]] = {}
    for m in _FULL_NAME.finditer(text):
        names.setdefault(m.group(2), set()).add(m.group(1))
    return names


def lexical_text(chunk_text: str, names: dict[str, set[str]]) -> str:
    """What BM25 indexes for a chunk: its text plus the given names of those it calls by
    surname alone.

    News articles name someone in full once ("Boris Johnson"), then "Johnson"; people ask
    about "boris". Adding the article's own given names lets BM25 see the chunk mentions him.
    """
    present = set(_CAPITALISED.findall(chunk_text))
    extra = sorted({g for w in present for g in names.get(w, ()) if g not in present})
    return chunk_text + "\n" + " ".join(extra) if extra else chunk_text


def surface_words(texts: list[str]) -> dict[str, int]:
    """Lower-cased words of at least five letters and the number of texts holding each: the
    vocabulary that spelling correction picks from."""
    counts: dict[str, int] = {}
    for text in texts:
        for w in set(_WORD.findall(text.lower())):
            if len(w) >= 5 and w.isalpha():
                counts[w] = counts.get(w, 0) + 1
    return counts


def correct_spelling(query: str, lookup: Callable[[list[str]], dict[str, int]],
                     is_word: Callable[[str], bool] = lambda w: False) -> str:
    """The query with misspelt words ("suposed") replaced by their likeliest indexed spelling.

    lookup(words) gives how many chunks hold each known word. A word of five letters or more
    that no chunk holds, in no form (its stem), and that is_word does not know either becomes
    the one-edit variant held by the most chunks (at least two, so one odd spelling in the
    sources does not attract queries); other words stay as typed. is_word keeps real words
    the sources happen not to use ("banish" must not become "danish").
    """
    words = {w.lower() for w in _WORD.findall(query)
             if len(w) >= 5 and w.isalpha() and w.lower() not in _STOPWORDS}
    if not words:
        return query
    known = lookup(sorted(words))
    fixes: dict[str, str] = {}
    for w in words - set(known):
        if is_word(w):
            continue
        cands = lookup(sorted(_edits(w)))
        best = max(cands.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
        if best[1] >= 2:
            fixes[w] = best[0]
    if not fixes:
        return query
    return _WORD.sub(lambda m: fixes.get(m.group().lower(), m.group()), query)


class Lexical:
    """A BM25 index whose document numbers are chunk row ids."""

    def __init__(self, bm25) -> None:
        self.bm25 = bm25
        self.vocab = bm25.vocab_dict

    @classmethod
    def build(cls, texts: list[str], *, k1: float = 1.2, b: float = 0.75) -> Lexical:
        import bm25s

        bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        tokens = [tokenize(t) or ["\x00empty"] for t in texts]
        bm25.index(tokens, show_progress=False)
        return cls(bm25)

    @property
    def n_docs(self) -> int:
        return int(self.bm25.scores["num_docs"])

    def knows(self, word: str) -> bool:
        """Whether some chunk holds the word in some form (the same stem)."""
        stems = tokenize(word)
        return bool(stems) and all(s in self.vocab for s in stems)

    def doc_freqs(self, stems: list[str]) -> np.ndarray:
        """How many chunks hold each stem (0 for a stem the index does not know)."""
        indptr = self.bm25.scores["indptr"]
        out = np.zeros(len(stems), dtype=np.int64)
        for j, stem in enumerate(stems):
            i = self.vocab.get(stem)
            if i is not None and i + 1 < len(indptr):
                out[j] = int(indptr[i + 1] - indptr[i])
        return out

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for the query (zeros when no word is known)."""
        ids = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        if not ids:
            return np.zeros(self.n_docs, dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids).astype(np.float32, copy=False)

    def save(self, folder: Path) -> None:
        self.bm25.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> Lexical:
        import bm25s

        try:
            return cls(bm25s.BM25.load(str(folder), mmap=False, show_progress=False))
        except Exception as exc:  # bm25s raises plain OSError/ValueError/JSON errors on damage
            raise IndexCorrupt("the BM25 files are damaged", path=folder) from exc
