"""BM25 over chunk texts, with stemming so "defended" finds "defend", kept per segment.

Each segment of the store has its own inverted index (Postings: for every stem, the chunks
holding it and how often, and every chunk's length). Scores are computed at query time from the
statistics of the whole live index (number of chunks, mean length, document frequency of each
stem, removed chunks left out), with Lucene's BM25 (the formula bm25s's "lucene" method uses):
so an index grown by many updates scores exactly as a fresh build of the same chunks does,
and an update writes only the postings of its new chunks.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
much many
""".split())


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Lower-cased, accent-folded, stop-word-free, stemmed word tokens."""
    text = unicodedata.normalize("NFKD", text.lower())
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
    sources does not attract queries, unless it is the word's only one-edit variant: a
    small index names "Durham" once, and "durhm" can mean nothing else in it); other words
    stay as typed. is_word keeps real words
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
        if best[1] >= 2 or len(cands) == 1:
            fixes[w] = best[0]
    if not fixes:
        return query
    def fix(m: re.Match) -> str:
        word = m.group()
        new = fixes.get(word.lower(), word)
        return new.capitalize() if word[0].isupper() and new != word else new

    return _WORD.sub(fix, query)


EMPTY = "\x00empty"  # the one token of a chunk with no word: it still counts as a document
K1, B = 1.2, 0.75


def tie_key(text_or_hash: str) -> int:
    """A chunk's tie-break key: 64 bits of its text hash (a hex digest), else of the text."""
    try:
        return int(text_or_hash[:16], 16)
    except ValueError:
        import hashlib

        return int.from_bytes(hashlib.blake2b(text_or_hash.encode("utf-8", "replace"),
                                              digest_size=8).digest(), "little")
_FILES = ("indptr", "docs", "tfs", "lengths", "keys")


@dataclass(frozen=True)
class Postings:
    """One segment's inverted index over chunk ids lo..lo+len(lengths)-1 (gaps have length 0).

    keys holds each chunk's tie-break key (from its text hash), so that chunks of equal score
    are taken in an order that does not depend on their ids, i.e. on how the index was built.

    terms[stem] is a row; docs[indptr[row]:indptr[row + 1]] are the chunks holding the stem
    (as offsets from lo, ascending) and tfs how often each holds it.
    """

    lo: int
    terms: dict[str, int]
    indptr: np.ndarray
    docs: np.ndarray
    tfs: np.ndarray
    lengths: np.ndarray
    keys: np.ndarray

    @classmethod
    def build(cls, lo: int, ids: Sequence[int], texts: Sequence[str],
              hashes: Sequence[str] | None = None) -> Postings:
        """Postings of the given chunk texts (what lexical_text gives) under their ids;
        hashes: the chunks' text hashes (hex), for the tie-break keys (else the texts')."""
        terms: dict[str, int] = {}
        rows: list[int] = []
        docs: list[int] = []
        tfs: list[int] = []
        size = (max(ids) - lo + 1) if len(ids) else 0
        lengths = np.zeros(size, dtype=np.int32)
        keys = np.zeros(size, dtype=np.uint64)
        for j, (cid, text) in enumerate(zip(ids, texts, strict=True)):
            keys[cid - lo] = tie_key(hashes[j] if hashes is not None else text)
            tokens = tokenize(text) or [EMPTY]
            lengths[cid - lo] = len(tokens)
            for term, tf in Counter(tokens).items():
                rows.append(terms.setdefault(term, len(terms)))
                docs.append(cid - lo)
                tfs.append(tf)
        order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
        indptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.bincount(np.asarray(rows, dtype=np.int64), minlength=len(terms)),
                  out=indptr[1:])
        return cls(lo, terms, indptr, np.asarray(docs, dtype=np.int32)[order],
                   np.minimum(np.asarray(tfs, dtype=np.int64), 65535).astype(np.uint16)[order],
                   lengths, keys)

    @classmethod
    def merge(cls, parts: Sequence[Postings], lo: int, size: int, dead: np.ndarray) -> Postings:
        """One index of several segments' postings (in id order), dead chunk ids left out."""
        terms: dict[str, int] = {}
        rows, docs, tfs = [], [], []
        lengths = np.zeros(size, dtype=np.int32)
        keys = np.zeros(size, dtype=np.uint64)
        for p in parts:
            remap = np.array([terms.setdefault(t, len(terms)) for t in p.terms], dtype=np.int32)
            ids = p.docs.astype(np.int64) + p.lo
            keep = ~np.isin(ids, dead)
            rows.append(np.repeat(remap, np.diff(p.indptr))[keep])
            docs.append((ids[keep] - lo).astype(np.int32))
            tfs.append(np.asarray(p.tfs)[keep])
            part_ids = np.arange(p.lo, p.lo + len(p.lengths))
            alive = ~np.isin(part_ids, dead)
            lengths[part_ids[alive] - lo] = np.asarray(p.lengths)[alive]
            keys[part_ids[alive] - lo] = np.asarray(p.keys)[alive]
        row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
        order = np.argsort(row, kind="stable")
        counts = np.bincount(row, minlength=len(terms))
        used = counts > 0  # a stem only dead chunks held is dropped
        names = [t for t, u in zip(terms, used, strict=True) if u]
        indptr = np.zeros(len(names) + 1, dtype=np.int64)
        np.cumsum(counts[used], out=indptr[1:])
        return cls(lo, {t: i for i, t in enumerate(names)}, indptr,
                   np.concatenate(docs)[order] if docs else np.zeros(0, np.int32),
                   np.concatenate(tfs)[order] if tfs else np.zeros(0, np.uint16), lengths, keys)

    def save(self, folder: Path, write: Callable[[Path, bytes], None]) -> None:
        """Write the files through write(path, bytes), the store's one way to write a file."""
        import io

        write(folder / "terms.json", json.dumps(list(self.terms), ensure_ascii=False)
              .encode("utf-8"))
        for name in _FILES:
            buf = io.BytesIO()
            np.save(buf, getattr(self, name), allow_pickle=False)
            write(folder / f"{name}.npy", buf.getvalue())

    @classmethod
    def load(cls, folder: Path, lo: int) -> Postings:
        """Read a segment's postings, arrays memory-mapped; IndexCorrupt when damaged."""
        try:
            names = json.loads((folder / "terms.json").read_text(encoding="utf-8"))
            # Plain views of the maps: slicing a np.memmap costs a Python hook per slice.
            arrays = {n: np.asarray(np.load(folder / f"{n}.npy", mmap_mode="r",
                                            allow_pickle=False)) for n in _FILES}
        except (OSError, ValueError) as exc:
            raise IndexCorrupt("the BM25 files are damaged", path=folder) from exc
        if len(arrays["indptr"]) != len(names) + 1 or len(arrays["docs"]) != len(arrays["tfs"]) \
                or len(arrays["keys"]) != len(arrays["lengths"]):
            raise IndexCorrupt("the BM25 files are damaged", path=folder)
        return cls(lo, {t: i for i, t in enumerate(names)}, **arrays)


class Lexical:
    """BM25 over every live chunk of a store's segments; document numbers are chunk ids.

    Args:
        dead: sorted ids of removed chunks the segments still hold.
        total_length: summed token count of the live chunks.
        bound: one past the largest chunk id (the length of scores()).
    """

    def __init__(self, parts: Sequence[Postings], dead: np.ndarray, n_docs: int,
                 total_length: int, bound: int) -> None:
        self.parts = list(parts)
        self.dead = np.asarray(dead, dtype=np.int64)
        self._n, self.bound = int(n_docs), int(bound)
        self.avgdl = total_length / n_docs if n_docs else 1.0
        ends = [p.lo + len(p.lengths) for p in self.parts]
        self._dead_in = [self.dead[(self.dead >= p.lo) & (self.dead < e)] - p.lo
                         for p, e in zip(self.parts, ends, strict=True)]
        self.keys = np.zeros(self.bound, dtype=np.uint64)
        for p, e in zip(self.parts, ends, strict=True):
            self.keys[p.lo:min(e, self.bound)] = np.asarray(p.keys)[:min(e, self.bound) - p.lo]
        # The length part of BM25's denominator depends on avgdl: computed once per state.
        self._norms = [self._norm(np.asarray(p.lengths)).astype(np.float32) for p in self.parts]

    def _norm(self, lengths: np.ndarray) -> np.ndarray:
        return K1 * ((1 - B) + B * lengths / self.avgdl)

    @classmethod
    def build(cls, texts: Sequence[str]) -> Lexical:
        """BM25 over the given texts as chunk ids 0..n-1, in one segment (small uses, tests)."""
        part = Postings.build(0, list(range(len(texts))), texts)
        return cls([part], np.zeros(0, dtype=np.int64), len(texts), int(part.lengths.sum()),
                   len(texts))

    @property
    def n_docs(self) -> int:
        return self._n

    def _live(self, stem: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(segment number, live chunks as offsets, tfs) of the chunks holding a stem."""
        out = []
        for j, (p, dead) in enumerate(zip(self.parts, self._dead_in, strict=True)):
            row = p.terms.get(stem)
            if row is None:
                continue
            a, b = int(p.indptr[row]), int(p.indptr[row + 1])
            docs, tfs = p.docs[a:b], p.tfs[a:b]
            if len(dead):
                keep = ~np.isin(docs, dead)
                docs, tfs = docs[keep], tfs[keep]
            if len(docs):
                out.append((j, docs, tfs))
        return out

    def doc_freqs(self, stems: list[str]) -> np.ndarray:
        """How many live chunks hold each stem (0 for a stem the index does not know)."""
        return np.array([sum(len(docs) for _, docs, _ in self._live(s)) for s in stems],
                        dtype=np.int64)

    def knows(self, word: str) -> bool:
        """Whether some chunk holds the word in some form (the same stem)."""
        stems = tokenize(word)
        return bool(stems) and bool(self.doc_freqs(stems).all())

    def _terms(self, stems: list[str]) -> dict[str, tuple[float, list]]:
        """The query's known stems: (idf, their live postings)."""
        out = {}
        for stem in dict.fromkeys(stems):
            live = self._live(stem)
            df = sum(len(docs) for _, docs, _ in live)
            if df:
                out[stem] = (np.log(1 + (self._n - df + 0.5) / (df + 0.5)), live)
        return out

    def _weights(self, idf: float, j: int, docs: np.ndarray, tfs: np.ndarray) -> np.ndarray:
        """BM25 term scores of a stem in the chunks docs of segment j, as scores() adds them:
        idf·tf/(norm + tf) in float32, computed in place in one array."""
        out = np.take(self._norms[j], docs)  # faster than indexing with docs
        out += tfs
        np.divide(tfs, out, out=out)
        out *= np.float32(idf)
        return out

    def top(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Ids of the k best scores of scores() that are above 0; among equal scores at the
        cut the order is by tie-break key, so a grown index and a fresh build of the same
        chunks take the same ones."""
        positive = np.flatnonzero(scores > 0)
        return self._cut(positive, scores[positive], k)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk id below bound for the query (0 for removed ids)."""
        return self._scored(query)[0]

    def _scored(self, query: str) -> tuple[np.ndarray, list[list]]:
        """scores(), and per known stem, rarest first, its live postings."""
        out = np.zeros(self.bound, dtype=np.float32)
        stems = tokenize(query)
        terms = self._terms(stems)
        for stem in stems:  # a repeated word counts again, as in bm25s
            if stem in terms:
                idf, live = terms[stem]
                for j, docs, tfs in live:
                    # One stem's docs are distinct, so add.at adds what `+=` would, bit for
                    # bit, in one pass (numpy 2's fast path) instead of a gather, an add
                    # and a scatter: at 1M chunks 1.0 ms a question against 1.7 (and 2.4
                    # before _weights worked in place).
                    np.add.at(out[self.parts[j].lo:], docs, self._weights(idf, j, docs, tfs))
        held = sorted((live for _, live in terms.values()),
                      key=lambda live: sum(len(docs) for _, docs, _ in live))
        return out, held

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(top(scores(query), k), scores(query)), the top cut from the chunks scoring at or
        above a floor (the k-th best among the rarest stems' chunks) instead of from every
        chunk with a positive score: at 1M chunks often more than 100,000."""
        out, held = self._scored(query)
        # The k-th best score among the chunks of the rarest stems is a floor for the k-th
        # best of all: only chunks at or above it are candidates.
        floor, seen = 0.0, np.zeros(0, dtype=np.int64)
        for n, live in enumerate(held):
            ids = np.concatenate([self.parts[j].lo + docs.astype(np.int64)
                                  for j, docs, _ in live])
            seen = np.union1d(seen, ids) if n else ids  # one stem's ids are distinct
            if len(seen) >= k:
                vals = out[seen]
                floor = float(np.partition(vals, len(vals) - k)[len(vals) - k])
                break
        if floor <= 0:
            return self.top(out, k), out
        # One pass over the scores finds them faster than looking up every posting again
        # (0.24 ms against 1.3 at 1M chunks, 150,000 postings a question).
        cand = np.flatnonzero(out >= floor)
        return self._cut(cand, out[cand], k), out

    def _cut(self, ids: np.ndarray, vals: np.ndarray, k: int) -> np.ndarray:
        """top() of the ascending ids with scores vals, all above 0."""
        if len(ids) <= k:
            return ids
        kth = np.partition(vals, len(vals) - k)[len(vals) - k]
        above = ids[vals > kth]
        tied = ids[vals == kth]
        tied = tied[np.argsort(self.keys[tied], kind="stable")][:k - len(above)]
        return np.concatenate([above, tied])
