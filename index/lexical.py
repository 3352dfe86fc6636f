"""BM25 over chunk texts (bm25s), with stemming so "defended" finds "defend"."""

from __future__ import annotations

import re
import unicodedata
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

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk for the query (zeros when no word is known)."""
        ids = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        n = int(self.bm25.scores["num_docs"])
        if not ids:
            return np.zeros(n, dtype=np.float32)
        return self.bm25.get_scores_from_ids(ids).astype(np.float32, copy=False)

    def save(self, folder: Path) -> None:
        self.bm25.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> Lexical:
        import bm25s

        try:
            return cls(bm25s.BM25.load(str(folder), mmap=False, show_progress=False))
        except Exception as exc:  # bm25s raises plain OSError/ValueError/JSON errors on damage
            raise IndexCorrupt(f"the BM25 files in {folder} are damaged") from exc
