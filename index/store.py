"""On-disk index: immutable segments, with rows and the record of live segments in SQLite.

Layout of an index folder:
    CURRENT              name of the live generation; only a rebuild starts a new one
    gen-000003/
        store.sqlite     WAL mode. meta (settings, counters, version), sources (with their
                         extracted text), chunks (text, offsets, hash, token count, embedding),
                         the quotable sentences of each chunk with their own vectors, words
                         (spelling), segments (the live ones) and dead (removed chunk ids that a
                         segment still holds)
        seg-000001/      one segment: vectors.faiss and the BM25 postings of the chunks one
                         update added (or one merge combined), never changed once written
    .lock                held by the one process writing (flock)

Why this shape (issue 11, measured in docs/index-growth.md):
- An update costs what it changes. It writes its new chunks as one new segment and, in one
  SQLite transaction, their rows, the removed chunks' deletion (rows gone, ids listed in dead)
  and the new list of live segments. Nothing else is read or rewritten: the previous format
  copied every row and vector into a new generation, so one added article cost minutes at a
  million chunks.
- Readers see a whole index, old or new. A Snapshot holds one SQLite read transaction (WAL
  gives it a consistent view while a writer commits) and loads the segments that view lists.
  A writer writes and fsyncs a segment's files before the commit that lists it; files of
  segments no longer listed are deleted only after the commit, and a reader that lost such a
  race opens again. SIGKILL at any moment leaves either the old commit or the new one, plus
  at worst unlisted segment folders, which the next writer deletes.
- Search results do not depend on how the index was built: chunk cosines are exact (flat
  segments, and exact re-scoring of candidates in retrieve), and BM25 statistics are computed
  over the live chunks at query time (lexical.Lexical), equal to a fresh build's.
- Small segments are merged (MERGE_FACTOR of one size tier into one, up to MAX_MERGED chunks)
  after the update has committed: readers keep answering from the old segments meanwhile, and
  a merge is one more crash-safe commit.
- A rebuild writes a whole new generation beside the live one and switches CURRENT: it
  repairs any damage to the folder, since it reads nothing of the old index.

Rejected: one FAISS index with IndexIDMap.remove_ids (an update would rewrite the whole vector
file, 1.5 GB at a million chunks, and the pq_sq8 kind cannot remove); SQLite FTS5 for BM25
(its bm25() has another idf and its own tokenizer: rankings, tuned on Lucene BM25 over Snowball
stems with given names added, would change).

This module reads; segments.py writes (updates and merges); folder.py keeps the control files
(CURRENT, the lock, SQLite URIs, synced writes, one-line failures). IndexReader and
IndexWriter below name the seam another backend (Milvus, issue 14) implements. It is past
350 lines because the layout's reasons above are its longest part.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

from .errors import CitebotError, IndexCorrupt, IndexNotFound, ModelMismatch
from .folder import STORE, connect, current_generation
from .lexical import Lexical, Postings
from .records import Chunk, Source
from .vectors import SegmentedVectors, VectorIndex

if TYPE_CHECKING:
    from .plan import SourceLookup

# 3: segments in one SQLite store per generation. 2 was one whole generation per update.
FORMAT_VERSION = 3

# Sentence vectors are only compared, never searched: half precision keeps three digits of
# cosine and halves the largest table.
SENTENCE_DTYPE = np.float16


@dataclass(frozen=True)
class ChunkSentences:
    """The quotable sentences of one chunk: spans in the source's text and their vectors."""

    spans: tuple[tuple[int, int], ...]
    vectors: np.ndarray  # float32, one normalised row per span

    def shifted(self, delta: int) -> ChunkSentences:
        """The same sentences with offsets moved (a kept chunk that now starts elsewhere)."""
        return ChunkSentences(tuple((a + delta, b + delta) for a, b in self.spans), self.vectors)


@dataclass(frozen=True)
class Manifest:
    """What an index was built with; opening it with anything else is refused."""

    model: str
    dim: int
    max_tokens: int
    target_tokens: int
    overlap_sentences: int
    vector_kind: str = "flat"
    sources: int = 0
    chunks: int = 0
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    def settings(self) -> dict:
        return {"model": self.model, "dim": self.dim, "max_tokens": self.max_tokens,
                "target_tokens": self.target_tokens, "overlap_sentences": self.overlap_sentences}

    def check_compatible(self, expected: Manifest) -> None:
        """Raise ModelMismatch naming the first setting that differs."""
        if self.format_version != FORMAT_VERSION:
            raise ModelMismatch(f"the index has format version {self.format_version}, this "
                                f"citebot writes {FORMAT_VERSION}")
        mine, theirs = self.settings(), expected.settings()
        for key, value in mine.items():
            if theirs[key] != value:
                raise ModelMismatch(
                    f"the index was built with {key}={value!r} but {theirs[key]!r} is "
                    "configured")


@dataclass(frozen=True)
class SourceRows:
    """A source as an update writes it: its record, text and chunks."""

    source: Source
    text: str
    chunks: list[Chunk]


class IndexReader(Protocol):
    """What retrieval, answering and `index check` read: one consistent view of an index."""

    manifest: Manifest
    vectors: SegmentedVectors  # .search(queries, k), .ntotal (the id space), .live, .dim
    lexical: Lexical  # .search(query, k), .doc_freqs(stems), .n_docs, .knows(word)

    @property
    def generation(self) -> str: ...
    def sources(self, ids: Iterable[str] | None = None) -> dict[str, Source]: ...
    def chunks(self, ids: list[int]) -> dict[int, Chunk]: ...
    def embeddings(self, ids: list[int]) -> np.ndarray: ...
    def sentences(self, ids: list[int]) -> dict[int, ChunkSentences]: ...
    def word_counts(self, words: list[str]) -> dict[str, int]: ...
    def source_text(self, source_id: str) -> str: ...
    def close(self) -> None: ...


class IndexWriter(Protocol):
    """What an update does to an index, under the one-writer lock."""

    is_new: bool  # a first build or a rebuild: nothing stored yet

    def state(self) -> str: ...
    def lookup(self) -> SourceLookup: ...  # the indexed sources, for planning
    def chunks_kept(self, dropped: Sequence[str]) -> int: ...
    def reusable(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, ChunkSentences]]: ...
    def apply(self, dropped: Sequence[str], rows: Sequence[SourceRows], embeddings: np.ndarray,
              sentences: Sequence[ChunkSentences]) -> str: ...
    def merge(self) -> int: ...
    def close(self) -> None: ...


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- reading -------------------------------------------------------------------------------

class Snapshot:
    """One committed state of a generation opened for reading; safe to share between threads.

    It holds a read transaction for its whole life, so every read sees that state.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        db_path = store_file(self.folder)
        try:
            self.db = connect(db_path, readonly=True)
            self.db.execute("BEGIN")
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            segments = self.db.execute(
                "SELECT name, lo, hi, vectors, kind FROM segments ORDER BY lo").fetchall()
            dead = np.array([r[0] for r in self.db.execute("SELECT id FROM dead ORDER BY id")],
                            dtype=np.int64)
            self.manifest = Manifest(**json.loads(meta["manifest"]))
            self.version = int(meta["version"])
            counts = {k: int(meta[k]) for k in ("next_id", "live_chunks", "live_length")}
        except (sqlite3.DatabaseError, KeyError, ValueError, TypeError) as exc:
            raise IndexCorrupt("the index database is damaged", path=db_path) from exc
        vectors, postings = [], []
        for name, lo, _hi, count, kind in segments:
            seg = self.folder / name
            try:
                part = VectorIndex.load(seg / "vectors.faiss", kind, mmap=True)
                postings.append(Postings.load(seg, lo))
            except IndexCorrupt as exc:
                raise IndexCorrupt(str(exc), path=exc.path or seg) from exc
            if part.ntotal != count:
                raise IndexCorrupt(f"a vector file holds {part.ntotal} vectors, the index lists "
                                   f"{count}", path=seg)
            vectors.append(part)
        self.vectors = SegmentedVectors(vectors, dead, counts["next_id"], counts["live_chunks"],
                                        self.manifest.dim)
        self.manifest = replace(self.manifest, sources=int(meta.get("sources", 0)),
                                chunks=counts["live_chunks"], vector_kind=self.vectors.kind)
        self.lexical = Lexical(postings, dead, counts["live_chunks"], counts["live_length"],
                               counts["next_id"])
        self.segments = [r[0] for r in segments]
        self._sources: dict[str, Source] | None = None

    @property
    def generation(self) -> str:
        """Which committed state this is: the generation folder and its version."""
        return f"{self.folder.name}.v{self.version}"

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexCorrupt("the index database is damaged",
                                   path=self.folder / STORE) from exc

    def sources(self, ids: Iterable[str] | None = None) -> dict[str, Source]:
        """Source records by id, with their chunk counts: the given ones, or all (read once
        per snapshot)."""
        if self._sources is None:
            rows = self._query(
                "SELECT s.id, s.title, s.path, s.url, s.publisher, s.date, s.content_hash,"
                " s.added_at, (SELECT count(*) FROM chunks c WHERE c.source_id = s.id)"
                " FROM sources s ORDER BY s.added_at, s.path, s.url")
            self._sources = {r[0]: Source(*r) for r in rows}
        if ids is None:
            return self._sources
        return {i: self._sources[i] for i in ids if i in self._sources}

    def _missing(self, ids: Sequence[int], found: object) -> None:
        gone = [int(i) for i in ids if int(i) not in found]  # type: ignore[operator]
        if gone:
            raise IndexCorrupt(f"the vectors name chunk {gone[0]}, which has no row",
                               path=self.folder)

    def chunks(self, ids: list[int]) -> dict[int, Chunk]:
        """Chunks by row id."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT id, source_id, text, start, end, hash FROM chunks"
                           f" WHERE id IN ({marks})", tuple(int(i) for i in ids))
        out = {r[0]: Chunk(source_id=r[1], text=r[2], start=r[3], end=r[4], hash=r[5], id=r[0])
               for r in rows}
        self._missing(ids, out)
        return out

    def embeddings(self, ids: list[int]) -> np.ndarray:
        """Stored vectors of the given chunk ids, in that order."""
        if not len(ids):
            return np.zeros((0, self.manifest.dim), dtype=np.float32)
        marks = ",".join("?" * len(ids))
        rows = dict(self._query(f"SELECT id, embedding FROM chunks WHERE id IN ({marks})",
                                tuple(int(i) for i in ids)))
        self._missing(ids, rows)
        return np.frombuffer(b"".join(rows[int(i)] for i in ids), dtype=np.float32) \
            .reshape(len(ids), self.manifest.dim)

    def sentences(self, ids: list[int]) -> dict[int, ChunkSentences]:
        """The stored sentences of the given chunk ids (none for a chunk of short lines)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT chunk_id, start, end, embedding FROM sentences"
                           f" WHERE chunk_id IN ({marks}) ORDER BY id",
                           tuple(int(i) for i in ids))
        got = group_sentences(rows, self.manifest.dim)
        empty = ChunkSentences((), np.zeros((0, self.manifest.dim), dtype=np.float32))
        return {int(i): got.get(int(i), empty) for i in ids}

    def word_counts(self, words: list[str]) -> dict[str, int]:
        """How many chunks hold each of the given lower-cased words (unknown ones left out)."""
        if not words:
            return {}
        marks = ",".join("?" * len(words))
        return dict(self._query(f"SELECT word, chunks FROM words WHERE word IN ({marks})",
                                tuple(words)))

    def source_text(self, source_id: str) -> str:
        rows = self._query("SELECT text FROM sources WHERE id = ?", (source_id,))
        return rows[0][0] if rows else ""

    def iter_chunks(self, batch: int = 10_000) -> Iterator[list[tuple[Chunk, bytes]]]:
        """Every chunk with its embedding bytes, in id order, a batch at a time."""
        last = -1
        while True:
            rows = self._query("SELECT id, source_id, text, start, end, hash, embedding"
                               " FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch))
            if not rows:
                return
            last = rows[-1][0]
            yield [(Chunk(source_id=r[1], text=r[2], start=r[3], end=r[4], hash=r[5],
                          id=r[0]), r[6]) for r in rows]

    def all_chunks(self) -> list[tuple[Chunk, bytes]]:
        """Every chunk with its stored embedding bytes (small indexes and tests)."""
        return [row for rows in self.iter_chunks() for row in rows]

    def segment_ids(self, name: str) -> tuple[np.ndarray, tuple[int, int]]:
        """The chunk ids a segment's vector file holds (when it keeps them), and its range."""
        lo, hi = self._query("SELECT lo, hi FROM segments WHERE name = ?", (name,))[0]
        part = self.vectors.parts[self.segments.index(name)]
        index = part.index
        if isinstance(index, faiss.IndexIDMap):
            return faiss.vector_to_array(index.id_map).astype(np.int64), (lo, hi)
        return np.zeros(0, dtype=np.int64), (lo, hi)

    def is_current(self) -> bool:
        """Whether no update has committed since this snapshot was opened."""
        try:
            live = current_generation(self.folder.parent)
        except CitebotError:
            return False
        if live != self.folder:
            return False
        try:
            probe = connect(self.folder / STORE, readonly=True)
            try:
                row = probe.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            finally:
                probe.close()
        except sqlite3.DatabaseError:
            return False
        return row is not None and int(row[0]) == self.version

    def close(self) -> None:
        with self._lock:
            self.db.close()


def group_sentences(rows: list[tuple], dim: int) -> dict[int, ChunkSentences]:
    spans: dict[int, list[tuple[int, int]]] = {}
    blobs: dict[int, list[bytes]] = {}
    for cid, a, b, blob in rows:
        spans.setdefault(cid, []).append((a, b))
        blobs.setdefault(cid, []).append(blob)
    out = {}
    for cid, parts in blobs.items():
        vecs = np.frombuffer(b"".join(parts), dtype=SENTENCE_DTYPE).reshape(len(parts), dim)
        out[cid] = ChunkSentences(tuple(spans[cid]), vecs.astype(np.float32))
    return out


def store_file(generation: Path) -> Path:
    """The generation's store.sqlite; a named error for an older format or a missing one."""
    db_path = generation / STORE
    if not db_path.is_file():
        if (generation / "manifest.json").exists():
            raise ModelMismatch("the index is in an older format (2), which this citebot does "
                                "not read", path=generation.parent)
        raise IndexCorrupt("the index database is missing", path=db_path)
    return db_path


def open_snapshot(index_dir: Path, expected: Manifest | None = None) -> Snapshot:
    """Open the live state of the index, refusing one built with other settings."""
    for attempt in range(3):
        folder = current_generation(index_dir)
        if folder is None:
            raise IndexNotFound("there is no index yet", path=index_dir)
        if not folder.is_dir():
            raise IndexCorrupt("the index's CURRENT file names a missing generation",
                               path=index_dir)
        try:
            snap = Snapshot(folder)
            break
        except IndexCorrupt:
            # A writer may have merged away (or rebuilt past) what we began to read: retry
            # on the state committed since; a real fault fails every time.
            if attempt == 2:
                raise
            time.sleep(0.05)
    if expected is not None:
        snap.manifest.check_compatible(expected)
    return snap

