"""One generation of the index in Milvus: what answering reads and what an update writes.

The collections and the reasons for their shape are described in milvus_store.py. Rows come
back from pymilvus as dicts; everything leaves this module as citebot's own records.

About 400 lines: it is the Milvus twin of store.py's Snapshot and segments.py's writes (the same
reader and writer protocols), kept together so the two directions of one schema stay in step.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .lexical import EMPTY, given_names, lexical_text, surface_words, tokenize
from .paths import same_file_key
from .records import Chunk, Source
from .store import ChunkSentences, Manifest, SourceRows, now_iso

if TYPE_CHECKING:
    from .milvus_store import MilvusStore

KINDS = ("chunks", "sentences", "sources", "terms")
MAX_TEXT = 65_535  # Milvus's VARCHAR limit, in bytes
BATCH = 512  # rows per insert: a few MB, far below gRPC's message limit
# pymilvus packs a row's float16 vector by appending bytes to bytes: quadratic in the rows of
# one insert. 2,048 sentences took 5.9 s in one insert, 1.9 s in batches of 512, 0.8 s of 128.
SENTENCE_BATCH = 64
_QUERY_WINDOW = 16_384  # Milvus's most rows of one query
PLACEHOLDER = [0.0, 0.0]  # every collection needs a vector field; this one is never searched
SOURCE_FIELDS = ("id", "title", "path", "url", "publisher", "date", "content_hash", "added_at",
                 "file_key")
_CHUNK_FIELDS = ("source_id", "text", "start", "end", "hash")
_REQUIRED = ("id", "title", "content_hash", "chunks")  # the others are None when empty


def chunk_id(source_id: str, start: int, text_hash: str) -> int:
    """A stable 63-bit primary key: the same chunk of the same source keeps its row."""
    digest = hashlib.blake2b(f"{source_id}\0{start}\0{text_hash}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


def bm25_terms(text: str) -> str:
    """What a chunk's BM25 field holds: citebot's tokens of its text, spaced (a query is
    searched as its tokens the same way, analysed by a whitespace tokenizer).

    A chunk with no word holds one placeholder token, as in the local store, so that both
    count it in the mean length alike.
    """
    return " ".join(tokenize(text)) or EMPTY


@dataclass(frozen=True)
class Candidates:
    """Chunks found by dense or BM25 search, each with its exact cosine and its BM25 score."""

    ids: np.ndarray  # int64
    dense: np.ndarray  # float32
    lexical: np.ndarray  # float32, 0 where no query term occurs


_APPROXIMATE = ("IVF_SQ8", "DISKANN", "AUTOINDEX")  # index types whose distances are not exact
_POOL: list[ThreadPoolExecutor] = []


def _pool() -> ThreadPoolExecutor:
    """Threads that send one question's independent requests together."""
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="milvus"))
    return _POOL[0]


def _batches(rows: Sequence[dict], size: int = BATCH) -> Iterator[Sequence[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _in(field: str, values: Iterable[Any]) -> str:
    return f"{field} in {json.dumps(list(values))}"


class Generation:
    """One generation's collections: what answering reads and what an update writes."""

    def __init__(self, store: MilvusStore, gen: str, manifest: Manifest) -> None:
        self.store, self.gen, self.manifest = store, gen, manifest
        self.client = store.client
        self.names = {kind: store._collection(gen, kind) for kind in KINDS}
        self._seen = threading.local()  # rows candidates() read ahead for this thread

    @property
    def generation(self) -> str:
        return self.gen

    def rows(self, kind: str, fields: list[str]) -> list[dict]:
        """Every row of one of the generation's collections (for `index check`)."""
        return self._query(kind, "id >= 0" if kind in ("chunks", "sentences") else 'id != ""',
                           fields)

    def _query(self, kind: str, expr: str, fields: list[str]) -> list[dict]:
        """Every row matching expr, however many (one query returns at most 16,384)."""
        rows = self.client.query(self.names[kind], filter=expr, output_fields=fields,
                                 limit=_QUERY_WINDOW)
        if len(rows) < _QUERY_WINDOW:
            # pymilvus fills vector fields in lazily by position: copy before any reordering.
            return [dict(r) for r in rows]
        it = self.client.query_iterator(self.names[kind], filter=expr, output_fields=fields,
                                        batch_size=4096)
        out: list[dict] = []
        try:
            while batch := it.next():
                out.extend(batch)
        finally:
            it.close()
        return out

    # -- reading -------------------------------------------------------------------------

    def count(self, kind: str = "chunks") -> int:
        rows = self.client.query(self.names[kind], filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def sources(self, ids: Iterable[str] | None = None) -> dict[str, Source]:
        """Source records by id: the given ones, or all."""
        expr = 'id != ""' if ids is None else _in("id", sorted(set(ids)))
        rows = self._query("sources", expr, [*SOURCE_FIELDS, "chunks"])
        found = [Source(**{f: r[f] if f in _REQUIRED else r[f] or None
                           for f in (*SOURCE_FIELDS, "chunks") if f != "file_key"})
                 for r in rows]
        found.sort(key=lambda s: (s.added_at or "", s.path or "", s.url or ""))
        return {s.id: s for s in found}

    def file_keys(self) -> dict[str, str]:
        """same_file_key of every source, as it was when the source was indexed."""
        rows = self._query("sources", 'file_key != ""', ["file_key"])
        return {r["id"]: r["file_key"] for r in rows}

    @property
    def lexical(self) -> Generation:
        """What answering asks BM25 (doc_freqs, n_docs, knows): the terms collection."""
        return self

    def source_text(self, source_id: str) -> str:
        """Not kept: a source's text may pass Milvus's VARCHAR limit, and nothing answering
        needs reads it (chunks hold their own text)."""
        return ""

    def close(self) -> None:
        """Nothing to release: the store owns the connection."""

    def _read_ahead(self, kind: str, ids: Sequence[int], read: Callable[[Sequence[int]], dict]
                    ) -> dict:
        """What candidates() read ahead for these ids on this thread, else read(ids)."""
        seen = getattr(self._seen, kind, {})
        if all(int(i) in seen for i in ids):
            return {int(i): seen[int(i)] for i in ids}
        return read(ids)

    def chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        """Chunks by id."""
        return self._read_ahead("chunks", ids, self._read_chunks)

    def _read_chunks(self, ids: Sequence[int]) -> dict[int, Chunk]:
        if not ids:
            return {}
        rows = self.client.query(self.names["chunks"], ids=[int(i) for i in ids],
                                 output_fields=list(_CHUNK_FIELDS))
        return {r["id"]: _chunk(r) for r in rows}

    def source_chunks(self, source_id: str) -> list[Chunk]:
        """A source's chunks in text order."""
        return sorted(map(_chunk, self._rows_of([source_id])), key=lambda c: c.start)

    def embeddings(self, ids: Sequence[int]) -> np.ndarray:
        """Stored vectors of the given chunk ids, in that order."""
        if not ids:
            return np.zeros((0, self.manifest.dim), dtype=np.float32)
        rows = self.client.query(self.names["chunks"], ids=[int(i) for i in ids],
                                 output_fields=["vector"])
        got = {r["id"]: r["vector"] for r in rows}
        return np.asarray([got[int(i)] for i in ids], dtype=np.float32)

    def sentences(self, ids: Sequence[int]) -> dict[int, ChunkSentences]:
        """The stored sentences of the given chunk ids (none for a chunk of short lines)."""
        return self._read_ahead("sentences", ids, self._read_sentences)

    def _read_sentences(self, ids: Sequence[int]) -> dict[int, ChunkSentences]:
        if not len(ids):
            return {}
        rows = self._query("sentences", _in("chunk_id", [int(i) for i in ids]),
                           ["chunk_id", "start", "end", "vector"])
        rows.sort(key=lambda r: (r["chunk_id"], r["start"]))
        dim = self.manifest.dim
        spans: dict[int, list[tuple[int, int]]] = {}
        blobs: dict[int, list[bytes]] = {}
        for r in rows:
            spans.setdefault(r["chunk_id"], []).append((r["start"], r["end"]))
            blobs.setdefault(r["chunk_id"], []).append(_float16_bytes(r["vector"]))
        empty = ChunkSentences((), np.zeros((0, dim), dtype=np.float32))
        out = {int(i): empty for i in ids}
        for cid, parts in blobs.items():
            vecs = np.frombuffer(b"".join(parts), dtype=np.float16).reshape(len(parts), dim)
            out[cid] = ChunkSentences(tuple(spans[cid]), vecs.astype(np.float32))
        return out

    def reusable(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, ChunkSentences]]:
        """Stored vectors of chunk texts with these hashes, and of their sentences (spans
        relative to the chunk: the same text may start elsewhere next time)."""
        out: dict[str, tuple[np.ndarray, ChunkSentences]] = {}
        wanted = sorted(set(hashes))
        for i in range(0, len(wanted), BATCH):
            first: dict[str, dict] = {}
            for r in self._query("chunks", _in("hash", wanted[i:i + BATCH]),
                                 ["hash", "start", "vector"]):
                first.setdefault(r["hash"], r)
            sentences = self.sentences([r["id"] for r in first.values()])
            for h, r in first.items():
                out[h] = (np.asarray(r["vector"], dtype=np.float32),
                          sentences[r["id"]].shifted(-r["start"]))
        return out

    def term_counts(self, terms: list[str]) -> dict[str, int]:
        if not terms:
            return {}
        rows = self.client.query(self.names["terms"], ids=terms, output_fields=["chunks"])
        return {r["term"]: int(r["chunks"]) for r in rows}

    def word_counts(self, words: list[str]) -> dict[str, int]:
        """How many chunks hold each of the given lower-cased words (unknown ones left out)."""
        got = self.term_counts([f"w:{w}" for w in words])
        return {k[2:]: v for k, v in got.items()}

    def knows(self, word: str) -> bool:
        """Whether some chunk holds the word in some form (the same stem)."""
        stems = tokenize(word)
        return bool(stems) and len(self.term_counts([f"s:{t}" for t in stems])) == len(set(stems))

    def doc_freqs(self, stems: list[str]) -> np.ndarray:
        """How many chunks hold each stem (0 for a stem no chunk holds)."""
        got = self.term_counts([f"s:{t}" for t in stems])
        return np.array([got.get(f"s:{t}", 0) for t in stems], dtype=np.int64)

    @property
    def n_docs(self) -> int:
        return self.count()

    def candidates(self, query: str, qvec: np.ndarray, pool: int) -> Candidates:
        """The pool best chunks by dense and by BM25 search, with both scores for each.

        Three rounds of requests sent together: the two searches; then both scores of every
        candidate and the rows ranking reads next (their sentences and chunk rows, kept for
        this thread's following sentences() and chunks() calls: an id names one content, so
        such a row cannot be stale).
        """
        qvec = np.asarray(qvec, dtype=np.float32)
        terms = " ".join(tokenize(query))
        dense_f = _pool().submit(self._dense, qvec, pool)
        lex = self._bm25(terms, pool) if terms else {}
        dense = dense_f.result()
        ids = np.unique(np.array(list(dense) + list(lex), dtype=np.int64))
        listed = ids.tolist()
        missing = [i for i in listed if i not in lex]
        jobs = {"sentences": _pool().submit(self._read_sentences, listed),
                "chunks": _pool().submit(self._read_chunks, listed)}
        if self.store.index_type in _APPROXIMATE:  # quantised distances: exact ones from rows
            cos_f = _pool().submit(lambda: dict(zip(listed, self.embeddings(listed) @ qvec,
                                                    strict=True)))
        else:  # FLAT and graph distances are exact float32 inner products
            cos_f = _pool().submit(self._dense, qvec, len(listed),
                                   _in("id", [i for i in listed if i not in dense]))
        if terms and missing:  # dense-only candidates may still hold a query term
            lex.update(self._bm25(terms, len(missing), _in("id", missing)))
        dense.update(cos_f.result())
        unscored = [i for i in listed if i not in dense]  # a graph search may miss some
        if unscored:
            dense.update(zip(unscored, (self.embeddings(unscored) @ qvec).tolist(),
                             strict=True))
        self._seen.sentences = jobs["sentences"].result()
        self._seen.chunks = jobs["chunks"].result()
        return Candidates(ids, np.array([dense[i] for i in listed], dtype=np.float32),
                          np.array([lex.get(i, 0.0) for i in listed], dtype=np.float32))

    def _dense(self, qvec: np.ndarray, limit: int, expr: str = "") -> dict[int, float]:
        if not limit or expr == "id in []":
            return {}
        hits = self.client.search(self.names["chunks"], data=[qvec.tolist()],
                                  anns_field="vector", limit=limit, filter=expr,
                                  search_params=self._dense_params(limit))[0]
        return {int(h["id"]): float(h["distance"]) for h in hits}

    def _bm25(self, terms: str, limit: int, expr: str = "") -> dict[int, float]:
        hits = self.client.search(self.names["chunks"], data=[terms], anns_field="sparse",
                                  limit=limit, filter=expr,
                                  search_params={"metric_type": "BM25"})[0]
        return {int(h["id"]): float(h["distance"]) for h in hits if h["distance"] > 0}

    def _dense_params(self, pool: int) -> dict:
        extra = {"HNSW": {"ef": max(2 * pool, 64)}, "IVF_FLAT": {"nprobe": 64},
                 "IVF_SQ8": {"nprobe": 64}, "DISKANN": {"search_list": max(2 * pool, 100)}}
        return {"metric_type": "IP", "params": extra.get(self.store.index_type, {})}

    # -- writing -------------------------------------------------------------------------

    def put(self, rows: Sequence[SourceRows], embeddings: np.ndarray,
            sentences: Sequence[ChunkSentences]) -> None:
        """Write sources and their chunks, replacing what the generation held of them.

        embeddings and sentences have one entry per chunk of rows, in order. Chunks a source
        already had (same offset and text) keep their rows; only new ones are written, gone
        ones deleted. Writes go in batches across sources: each write to Milvus Lite costs
        ~25 ms here, whatever its size.
        """
        if not rows:
            return
        old = {r["id"]: r for r in self._rows_of([r.source.id for r in rows], ["terms"])}
        records, new_rows, new_sentences = [], [], []
        at = 0
        for r in rows:
            s = r.source
            records.append({**{f: (getattr(s, f, None) or "") for f in SOURCE_FIELDS},
                            "added_at": s.added_at or now_iso(),
                            "file_key": same_file_key(s) or "", "chunks": len(r.chunks),
                            "_": PLACEHOLDER})
            names = given_names(r.text)
            for c in r.chunks:
                vec, sent = embeddings[at], sentences[at]
                at += 1
                cid = chunk_id(s.id, c.start, c.hash)
                if old.pop(cid, None) is not None:
                    continue
                new_rows.append({"id": cid, "source_id": s.id, "start": c.start, "end": c.end,
                                 "hash": c.hash, "text": c.text,
                                 "terms": bm25_terms(lexical_text(c.text, names)),
                                 "vector": np.asarray(vec, dtype=np.float32).tolist()})
                new_sentences += [{"chunk_id": cid, "source_id": s.id, "start": a, "end": b,
                                   "vector": v.astype(np.float16)}
                                  for (a, b), v in zip(sent.spans, sent.vectors, strict=True)]
        # Sources and sentences before the chunks that lead to them; gone chunks last.
        for batch in _batches(records):
            self.client.upsert(self.names["sources"], list(batch))
        for batch in _batches(new_sentences, SENTENCE_BATCH):
            self.client.insert(self.names["sentences"], list(batch))
        for batch in _batches(new_rows):
            self.client.insert(self.names["chunks"], list(batch))
        self._delete_chunks(list(old))
        self._count_terms(new_rows, list(old.values()))

    def remove(self, source_ids: Sequence[str]) -> None:
        """Delete sources, their chunks and their sentences."""
        if not source_ids:
            return
        gone = self._rows_of(source_ids, ["terms"])
        self._delete_chunks([r["id"] for r in gone])
        for i in range(0, len(source_ids), BATCH):
            self.client.delete(self.names["sources"], ids=list(source_ids[i:i + BATCH]))
        self._count_terms([], gone)

    def _rows_of(self, source_ids: Sequence[str], extra: Sequence[str] = ()) -> list[dict]:
        """The chunk rows of these sources."""
        out: list[dict] = []
        for i in range(0, len(source_ids), 256):
            out += self._query("chunks", _in("source_id", source_ids[i:i + 256]),
                               [*_CHUNK_FIELDS, *extra])
        return out

    def _delete_chunks(self, ids: list[int]) -> None:
        for i in range(0, len(ids), BATCH):
            part = ids[i:i + BATCH]
            self.client.delete(self.names["chunks"], ids=part)
            self.client.delete(self.names["sentences"], filter=_in("chunk_id", part))

    def _count_terms(self, added: list[dict], removed: list[dict]) -> None:
        """Move the stem and word counts by the added and removed chunk rows'."""
        delta: Counter[str] = Counter()
        for rows, sign in ((added, 1), (removed, -1)):
            for r in rows:
                for t in set(r["terms"].split()):
                    delta[f"s:{t}"] += sign
            for w, n in surface_words([r["text"] for r in rows]).items():
                delta[f"w:{w}"] += sign * n
        keys = sorted(k for k, v in delta.items() if v)
        now: dict[str, int] = {}
        for i in range(0, len(keys), 4096):
            now.update(self.term_counts(keys[i:i + 4096]))
        keep, drop = [], []
        for key in keys:
            n = now.get(key, 0) + delta[key]
            if n > 0:
                keep.append({"term": key, "chunks": n, "_": PLACEHOLDER})
            else:
                drop.append(key)
        for batch in _batches(keep, 4096):
            self.client.upsert(self.names["terms"], list(batch))
        for i in range(0, len(drop), 4096):
            self.client.delete(self.names["terms"], ids=drop[i:i + 4096])


def _chunk(row: dict) -> Chunk:
    return Chunk(source_id=row["source_id"], text=row["text"], start=row["start"],
                 end=row["end"], hash=row["hash"], id=row["id"])


def _float16_bytes(value: Any) -> bytes:
    """pymilvus returns a FLOAT16_VECTOR field as a list holding one bytes object."""
    return value[0] if isinstance(value, list) else bytes(value)
