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

IndexReader and IndexWriter below name the seam another backend (Milvus, issue 14) implements.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from .errors import CitebotError, DiskFull, IndexBusy, IndexCorrupt, IndexNotFound, ModelMismatch
from .lexical import Lexical, Postings, given_names, lexical_text, surface_words
from .paths import same_file_key
from .records import Chunk, Source
from .vectors import SegmentedVectors, VectorIndex

# 3: segments in one SQLite store per generation. 2 was one whole generation per update.
FORMAT_VERSION = 3
MERGE_FACTOR = 8  # this many segments of one size tier are merged into one
MAX_MERGED = 250_000  # chunks: bigger segments are not merged again (bounded merge memory)
REWRITE_DEAD_SHARE = 0.3  # a segment this much removed is rewritten without its dead chunks
STORE = "store.sqlite"
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, path TEXT, url TEXT, publisher TEXT, date TEXT,
    content_hash TEXT NOT NULL, added_at TEXT NOT NULL, text TEXT NOT NULL, file_key TEXT);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, source_id TEXT NOT NULL REFERENCES sources(id),
    start INTEGER NOT NULL, end INTEGER NOT NULL, text TEXT NOT NULL, hash TEXT NOT NULL,
    length INTEGER NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX chunks_source ON chunks(source_id);
CREATE INDEX chunks_hash ON chunks(hash);
CREATE TABLE sentences (
    id INTEGER PRIMARY KEY, chunk_id INTEGER NOT NULL REFERENCES chunks(id),
    start INTEGER NOT NULL, end INTEGER NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX sentences_chunk ON sentences(chunk_id);
CREATE TABLE words (word TEXT PRIMARY KEY, chunks INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE segments (name TEXT PRIMARY KEY, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
                       vectors INTEGER NOT NULL, kind TEXT NOT NULL);
CREATE TABLE dead (id INTEGER PRIMARY KEY);
"""
_REBUILD = "rebuild it with `citebot index build --rebuild`"

# Sentence vectors are only compared, never searched: half precision keeps three digits of
# cosine and halves the largest table.
_SENTENCE_DTYPE = np.float16


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
                                f"citebot writes {FORMAT_VERSION}: rebuild it with --rebuild")
        mine, theirs = self.settings(), expected.settings()
        for key, value in mine.items():
            if theirs[key] != value:
                raise ModelMismatch(
                    f"the index was built with {key}={value!r} but {theirs[key]!r} is "
                    f"configured: rebuild it with `citebot index build --rebuild`")


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
    lexical: Lexical  # .scores(query), .doc_freqs(stems), .n_docs, .knows(word)

    @property
    def generation(self) -> str: ...
    def sources(self) -> dict[str, Source]: ...
    def chunks(self, ids: list[int]) -> dict[int, Chunk]: ...
    def embeddings(self, ids: list[int]) -> np.ndarray: ...
    def sentences(self, ids: list[int]) -> dict[int, ChunkSentences]: ...
    def word_counts(self, words: list[str]) -> dict[str, int]: ...
    def source_text(self, source_id: str) -> str: ...
    def close(self) -> None: ...


class IndexWriter(Protocol):
    """What an update does to an index, under the one-writer lock."""

    def sources(self) -> dict[str, Source]: ...
    def file_keys(self) -> dict[str, str]:
        """same_file_key of every source, as it was when the source was indexed."""
        return dict(self.db.execute("SELECT id, file_key FROM sources"
                                    " WHERE file_key IS NOT NULL").fetchall())

    def chunks_kept(self, dropped: Sequence[str]) -> int:
        """How many stored chunks stay once the dropped sources' go."""
        total = int(self._meta()["live_chunks"])
        for sid in dropped:
            total -= self.db.execute("SELECT count(*) FROM chunks WHERE source_id = ?",
                                     (sid,)).fetchone()[0]
        return total

    def reusable(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, ChunkSentences]]: ...
    def apply(self, dropped: Sequence[str], rows: Sequence[SourceRows], embeddings: np.ndarray,
              sentences: Sequence[ChunkSentences]) -> str: ...
    def merge(self) -> int: ...
    def close(self) -> None: ...


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- the folder ----------------------------------------------------------------------------

def _os_error(exc: OSError, where: Path) -> CitebotError:
    """One line for a failed file operation on the index folder."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"the disk is full: the index in {where} was left as it was")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CitebotError(f"cannot write to the index folder {where}: "
                            f"{os.strerror(exc.errno).lower()}")
    if exc.errno == errno.ENOTDIR:
        return CitebotError(f"{where} is a file, not an index folder")
    return CitebotError(f"the index folder {where} cannot be used: {exc.strerror or exc}")


def _sqlite_error(exc: sqlite3.Error, where: Path) -> CitebotError:
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return DiskFull(f"the disk is full: the index in {where} was left as it was")
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).replace("-", ""):
        return CitebotError(f"cannot write to the index folder {where}: read-only")
    return IndexCorrupt(f"{where / STORE} is damaged: {_REBUILD}")


def current_generation(index_dir: Path) -> Path | None:
    """The live generation folder, or None when the folder holds no index."""
    pointer = Path(index_dir) / "CURRENT"
    try:
        name = pointer.read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        return None
    except NotADirectoryError as exc:
        raise IndexNotFound(f"{index_dir} is a file, not an index folder") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorrupt(f"{pointer} is damaged: {_REBUILD}") from exc
    if not name.startswith("gen-") or not name[4:].isdigit():
        raise IndexCorrupt(f"{pointer} is damaged: {_REBUILD}")
    return Path(index_dir) / name


@contextmanager
def write_lock(index_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the index folder's one-writer lock (created with the folder if need be)."""
    index_dir = Path(index_dir)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        fh = open(index_dir / ".lock", "a+")  # noqa: SIM115 -- closed below, after unlocking
    except FileExistsError as exc:
        raise CitebotError(f"{index_dir} is a file, not an index folder") from exc
    except IsADirectoryError as exc:
        raise CitebotError(f"{index_dir / '.lock'} is a folder, not citebot's lock file: "
                           f"remove it and try again") from exc
    except OSError as exc:
        raise _os_error(exc, index_dir) from exc
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise IndexBusy("another update of this index is running; try again when "
                            "it has finished") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _uri(path: Path, **params: str) -> str:
    """A SQLite file: URI; the path escaped, so '#', '?' and '%' in it stay part of it."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{urllib.parse.quote(str(path.absolute()))}" + (f"?{query}" if query else "")


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection that manages its own transactions (isolation_level None)."""
    if not readonly:
        db = sqlite3.connect(_uri(path, mode="rw"), uri=True, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit is durable at the checkpoint
        return db
    try:
        db = sqlite3.connect(_uri(path, mode="ro"), uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
    # A read-only folder or mount: WAL readers cannot make their shared-memory file, and no
    # writer can change the database either, so it is opened as immutable.
    return sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True,
                           isolation_level=None, check_same_thread=False)


def _write_file(path: Path, data: bytes) -> None:
    """Every file a writer creates besides SQLite's goes through here, written and synced."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(db: sqlite3.Connection) -> None:
    """The moment an update becomes visible (a seam the crash tests pause at)."""
    db.execute("COMMIT")


# -- reading -------------------------------------------------------------------------------

class Snapshot:
    """One committed state of a generation opened for reading; safe to share between threads.

    It holds a read transaction for its whole life, so every read sees that state.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        db_path = self.folder / STORE
        if not db_path.is_file():
            if (self.folder / "manifest.json").exists():
                raise ModelMismatch(
                    f"the index in {self.folder.parent} is in an older format (2), which this "
                    f"citebot does not read: upgrade it with `citebot index build --rebuild`")
            raise IndexCorrupt(f"{db_path} is missing: {_REBUILD}")
        try:
            self.db = _connect(db_path, readonly=True)
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
            raise IndexCorrupt(f"{db_path} is damaged: {_REBUILD}") from exc
        vectors, postings = [], []
        for name, lo, _hi, count, kind in segments:
            seg = self.folder / name
            try:
                part = VectorIndex.load(seg / "vectors.faiss", kind, mmap=True)
                postings.append(Postings.load(seg, lo))
            except IndexCorrupt as exc:
                raise IndexCorrupt(f"{exc}: {_REBUILD}") from exc
            if part.ntotal != count:
                raise IndexCorrupt(f"the vector file of {seg} holds {part.ntotal} vectors, the "
                                   f"index lists {count}: {_REBUILD}")
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
                raise IndexCorrupt(f"{self.folder / STORE} is damaged: {_REBUILD}") from exc

    def sources(self) -> dict[str, Source]:
        """Every source by id, with its chunk count."""
        if self._sources is None:
            rows = self._query(
                "SELECT s.id, s.title, s.path, s.url, s.publisher, s.date, s.content_hash,"
                " s.added_at, (SELECT count(*) FROM chunks c WHERE c.source_id = s.id)"
                " FROM sources s ORDER BY s.added_at, s.path, s.url")
            self._sources = {r[0]: Source(*r) for r in rows}
        return self._sources

    def _missing(self, ids: Sequence[int], found: object) -> None:
        gone = [int(i) for i in ids if int(i) not in found]  # type: ignore[operator]
        if gone:
            raise IndexCorrupt(f"the vectors of {self.folder} name chunk {gone[0]}, which has "
                               f"no row: {_REBUILD}")

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
        got = _group_sentences(rows, self.manifest.dim)
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
            probe = _connect(self.folder / STORE, readonly=True)
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


def _group_sentences(rows: list[tuple], dim: int) -> dict[int, ChunkSentences]:
    spans: dict[int, list[tuple[int, int]]] = {}
    blobs: dict[int, list[bytes]] = {}
    for cid, a, b, blob in rows:
        spans.setdefault(cid, []).append((a, b))
        blobs.setdefault(cid, []).append(blob)
    out = {}
    for cid, parts in blobs.items():
        vecs = np.frombuffer(b"".join(parts), dtype=_SENTENCE_DTYPE).reshape(len(parts), dim)
        out[cid] = ChunkSentences(tuple(spans[cid]), vecs.astype(np.float32))
    return out


def open_snapshot(index_dir: Path, expected: Manifest | None = None) -> Snapshot:
    """Open the live state of the index, refusing one built with other settings."""
    for attempt in range(3):
        folder = current_generation(index_dir)
        if folder is None:
            raise IndexNotFound(f"no index in {index_dir}: build one with `citebot index build`")
        if not folder.is_dir():
            raise IndexCorrupt(f"{Path(index_dir) / 'CURRENT'} names a missing generation: "
                               f"{_REBUILD}")
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


# -- writing -------------------------------------------------------------------------------

class Writer:
    """Applies updates to one generation's store. Use it under write_lock, through
    open_writer, which also commits a rebuild's new generation at the end."""

    def __init__(self, folder: Path, manifest: Manifest | None = None,
                 vector_kind: str = "auto") -> None:
        self.folder = folder
        self.vector_kind = vector_kind
        self.is_new = manifest is not None
        self.db = _connect(folder / STORE, readonly=False)
        if manifest is not None:  # a new store
            self.db.executescript(_SCHEMA)
            meta = {"manifest": json.dumps(asdict(replace(manifest, created_at=now_iso()))),
                    "version": 0, "next_id": 0, "next_segment": 1, "live_chunks": 0,
                    "live_length": 0, "sources": 0}
            self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                [(k, str(v)) for k, v in meta.items()])
        self._drop_unlisted()

    def _meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def _set(self, **values: object) -> None:
        self.db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                            [(str(v), k) for k, v in values.items()])

    def _drop_unlisted(self) -> None:
        """Delete segment folders no commit lists: a killed writer's, or merged-away ones."""
        listed = {r[0] for r in self.db.execute("SELECT name FROM segments")}
        for seg in self.folder.glob("seg-*"):
            if seg.name not in listed:
                shutil.rmtree(seg, ignore_errors=True)

    def manifest(self) -> Manifest:
        return Manifest(**json.loads(self._meta()["manifest"]))

    def state(self) -> str:
        """The name of the committed state (what Snapshot.generation calls it)."""
        return f"{self.folder.name}.v{self._meta()['version']}"

    def sources(self) -> dict[str, Source]:
        """Every indexed source's record (no text, no chunks)."""
        rows = self.db.execute("SELECT id, title, path, url, publisher, date, content_hash,"
                               " added_at FROM sources").fetchall()
        return {r[0]: Source(*r) for r in rows}

    def file_keys(self) -> dict[str, str]:
        """same_file_key of every source, as it was when the source was indexed."""
        return dict(self.db.execute("SELECT id, file_key FROM sources"
                                    " WHERE file_key IS NOT NULL").fetchall())

    def chunks_kept(self, dropped: Sequence[str]) -> int:
        """How many stored chunks stay once the dropped sources' go."""
        total = int(self._meta()["live_chunks"])
        for sid in dropped:
            total -= self.db.execute("SELECT count(*) FROM chunks WHERE source_id = ?",
                                     (sid,)).fetchone()[0]
        return total

    def reusable(self, hashes: Sequence[str]) -> dict[str, tuple[np.ndarray, ChunkSentences]]:
        """Stored vectors of chunk texts with these hashes, and of their sentences (spans
        relative to the chunk: the same text may start elsewhere next time)."""
        out: dict[str, tuple[np.ndarray, ChunkSentences]] = {}
        dim = self.manifest().dim
        wanted = sorted(set(hashes))
        for i in range(0, len(wanted), 500):
            part = wanted[i:i + 500]
            rows = self.db.execute(
                f"SELECT hash, id, start, embedding FROM chunks WHERE hash IN"
                f" ({','.join('?' * len(part))})", part).fetchall()
            first = {}
            for h, cid, start, blob in rows:
                first.setdefault(h, (cid, start, blob))
            ids = [cid for cid, _, _ in first.values()]
            sents = _group_sentences(self.db.execute(
                f"SELECT chunk_id, start, end, embedding FROM sentences WHERE chunk_id IN"
                f" ({','.join('?' * len(ids))}) ORDER BY id", ids).fetchall(), dim) \
                if ids else {}
            none = ChunkSentences((), np.zeros((0, dim), dtype=np.float32))
            for h, (cid, start, blob) in first.items():
                out[h] = (np.frombuffer(blob, dtype=np.float32),
                          sents.get(cid, none).shifted(-start))
        return out

    def apply(self, dropped: Sequence[str], rows: Sequence[SourceRows], embeddings: np.ndarray,
              sentences: Sequence[ChunkSentences]) -> str:
        """Drop the chunks of the dropped sources and add the rows (one vector and one
        ChunkSentences per chunk, in order) as a new segment, in one commit; the new state's
        name. On any failure nothing is left of it: no rows, no segment files."""
        meta = self._meta()
        lo, number = int(meta["next_id"]), int(meta["next_segment"])
        chunks = [(r, c) for r in rows for c in r.chunks]
        ids = list(range(lo, lo + len(chunks)))
        seg = self.folder / f"seg-{number:06d}"
        try:
            texts = []
            for r in rows:
                names = given_names(r.text)
                texts += [lexical_text(c.text, names) for c in r.chunks]
            postings = Postings.build(lo, ids, texts)
            if chunks:
                vectors = np.asarray(embeddings, dtype=np.float32).reshape(len(chunks), -1)
                kind = self._write_segment(seg, VectorIndex.build(vectors, np.asarray(ids),
                                                             self.vector_kind),
                                           postings)
            self.db.execute("BEGIN IMMEDIATE")
            gone_len = self._drop_sources(dropped)
            self.db.executemany("DELETE FROM sources WHERE id = ?", [(s,) for s in dropped])
            for r in rows:
                s = r.source
                self.db.execute("INSERT INTO sources VALUES (?,?,?,?,?,?,?,?,?,?)",
                                (s.id, s.title, s.path, s.url, s.publisher, s.date,
                                 s.content_hash, s.added_at or now_iso(), r.text,
                                 same_file_key(s)))
            lengths = postings.lengths
            self.db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?)", (
                (cid, r.source.id, c.start, c.end, c.text, c.hash, int(lengths[cid - lo]),
                 np.asarray(embeddings[j], dtype=np.float32).tobytes())
                for j, (cid, (r, c)) in enumerate(zip(ids, chunks, strict=True))))
            self.db.executemany(
                "INSERT INTO sentences (chunk_id, start, end, embedding) VALUES (?,?,?,?)",
                ((cid, a, b, v.astype(_SENTENCE_DTYPE).tobytes())
                 for cid, got in zip(ids, sentences, strict=True)
                 for (a, b), v in zip(got.spans, got.vectors, strict=True)))
            self._count_words([c.text for _, c in chunks], +1)
            if chunks:
                self.db.execute("INSERT INTO segments VALUES (?,?,?,?,?)",
                                (seg.name, lo, lo + len(chunks), len(chunks), kind))
            n_sources = int(self.db.execute("SELECT count(*) FROM sources").fetchone()[0])
            self._set(next_id=lo + len(chunks), next_segment=number + 1,
                      live_chunks=int(meta["live_chunks"]) + len(chunks) - gone_len[0],
                      live_length=int(meta["live_length"]) + int(lengths.sum()) - gone_len[1],
                      sources=n_sources, version=int(meta["version"]) + 1)
            _commit(self.db)
        except BaseException as exc:
            self._undo(seg)
            _reraise(exc, self.folder.parent)
        return f"{self.folder.name}.v{int(meta['version']) + 1}"

    def _undo(self, seg: Path | None) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back already
        if seg is not None:
            shutil.rmtree(seg, ignore_errors=True)

    def _write_segment(self, seg: Path, vectors: VectorIndex, postings: Postings) -> str:
        """Write a segment's files, synced, before any commit names it; its vector kind."""
        seg.mkdir()
        _write_file(seg / "vectors.faiss", faiss.serialize_index(vectors.index).tobytes())
        postings.save(seg, _write_file)
        _fsync_dir(seg)
        _fsync_dir(self.folder)
        return vectors.kind

    def _drop_sources(self, dropped: Sequence[str]) -> tuple[int, int]:
        """Delete the chunks of these sources (inside the open transaction); their number
        and summed length."""
        count = length = 0
        for sid in dropped:
            rows = self.db.execute("SELECT id, length, text FROM chunks WHERE source_id = ?",
                                   (sid,)).fetchall()
            if not rows:
                continue
            ids = [(r[0],) for r in rows]
            self.db.executemany("INSERT INTO dead VALUES (?)", ids)
            self.db.executemany("DELETE FROM sentences WHERE chunk_id = ?", ids)
            self.db.execute("DELETE FROM chunks WHERE source_id = ?", (sid,))
            self._count_words([r[2] for r in rows], -1)
            count += len(rows)
            length += sum(r[1] for r in rows)
        return count, length

    def _count_words(self, texts: list[str], sign: int) -> None:
        counts = surface_words(texts)
        self.db.executemany(
            "INSERT INTO words VALUES (?, ?) ON CONFLICT(word) DO UPDATE SET"
            " chunks = chunks + excluded.chunks", ((w, sign * n) for w, n in counts.items()))
        if sign < 0:
            self.db.executemany("DELETE FROM words WHERE word = ? AND chunks <= 0",
                                ((w,) for w in counts))

    # -- merging ---------------------------------------------------------------------------

    def _plan_merge(self) -> list[tuple[str, int, int, int]] | None:
        """The adjacent segments to merge next, or None: MERGE_FACTOR of one size tier, or
        one segment mostly made of removed chunks."""
        segs = self.db.execute("SELECT name, lo, hi, vectors FROM segments ORDER BY lo") \
            .fetchall()
        live = []
        for name, lo, hi, count in segs:
            dead = self.db.execute("SELECT count(*) FROM dead WHERE id >= ? AND id < ?",
                                   (lo, hi)).fetchone()[0]
            live.append((name, lo, hi, count - dead))
            if count and dead / count > REWRITE_DEAD_SHARE and count - dead <= MAX_MERGED:
                return [live[-1]]
        tiers = [_tier(n) for *_, n in live]
        for i in range(len(live) - MERGE_FACTOR + 1):
            run = live[i:i + MERGE_FACTOR]
            if len(set(tiers[i:i + MERGE_FACTOR])) == 1 and \
                    sum(n for *_, n in run) <= MAX_MERGED:
                return run
        return None

    def merge(self) -> int:
        """Merge segments while the policy asks for it; how many merges were done."""
        done = 0
        while (run := self._plan_merge()) is not None:
            self._merge(run)
            done += 1
        return done

    def _merge(self, run: list[tuple[str, int, int, int]]) -> None:
        lo, hi = run[0][1], run[-1][2]
        meta = self._meta()
        number = int(meta["next_segment"])
        seg = self.folder / f"seg-{number:06d}"
        dim = self.manifest().dim
        try:
            dead = np.array([r[0] for r in self.db.execute(
                "SELECT id FROM dead WHERE id >= ? AND id < ? ORDER BY id", (lo, hi))],
                dtype=np.int64)
            live = sum(n for *_, n in run)
            if live:
                ids = np.empty(live, dtype=np.int64)
                vectors = np.empty((live, dim), dtype=np.float32)
                for j, (cid, blob) in enumerate(self.db.execute(
                        "SELECT id, embedding FROM chunks WHERE id >= ? AND id < ? ORDER BY id",
                        (lo, hi))):
                    ids[j] = cid
                    vectors[j] = np.frombuffer(blob, dtype=np.float32)
                postings = Postings.merge(
                    [Postings.load(self.folder / name, s_lo) for name, s_lo, _, _ in run],
                    lo, hi - lo, dead)
                kind = self._write_segment(
                    seg, VectorIndex.build(vectors, ids, self.vector_kind), postings)
                del vectors
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM segments WHERE name = ?", [(r[0],) for r in run])
            self.db.execute("DELETE FROM dead WHERE id >= ? AND id < ?", (lo, hi))
            if live:
                self.db.execute("INSERT INTO segments VALUES (?,?,?,?,?)",
                                (seg.name, lo, hi, live, kind))
            self._set(next_segment=number + 1, version=int(meta["version"]) + 1)
            _commit(self.db)
        except BaseException as exc:
            self._undo(seg)
            _reraise(exc, self.folder.parent)
        for name, *_ in run:  # readers that began before the commit have theirs loaded
            shutil.rmtree(self.folder / name, ignore_errors=True)

    def close(self) -> None:
        self.db.close()


def _tier(chunks: int) -> int:
    """A segment's size class: segments within a factor MERGE_FACTOR share one."""
    return int(math.log(max(chunks, 1), MERGE_FACTOR))


def _reraise(exc: BaseException, where: Path) -> None:
    """Raise a failed write's error: one line for the disk or the folder, others as they were."""
    if isinstance(exc, OSError):
        raise _os_error(exc, where) from exc
    if isinstance(exc, sqlite3.Error):
        raise _sqlite_error(exc, where) from exc
    raise exc


@contextmanager
def open_writer(index_dir: Path, manifest: Manifest, *, rebuild: bool = False,
                vector_kind: str = "auto") -> Iterator[Writer]:
    """A Writer on the live generation, or, for a rebuild or a first build, on a new one
    that becomes live when the block ends without error. The caller holds write_lock."""
    index_dir = Path(index_dir)
    live = None
    if not rebuild:
        live = current_generation(index_dir)
        if live is not None:
            open_snapshot(index_dir, manifest).close()  # refuses other settings or damage
    _collect_garbage(index_dir)
    if live is not None:
        try:
            writer = Writer(live, vector_kind=vector_kind)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc, index_dir) from exc
        try:
            yield writer
        finally:
            writer.close()
        return
    number = _next_number(index_dir)
    tmp = index_dir / f".tmp-gen-{number:06d}-{os.getpid()}"
    try:
        tmp.mkdir()
        (tmp / STORE).touch()
        writer = Writer(tmp, manifest, vector_kind)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(exc, index_dir) from exc
    except sqlite3.Error as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _sqlite_error(exc, index_dir) from exc
    try:
        yield writer
        writer.close()
        _publish(index_dir, tmp, index_dir / f"gen-{number:06d}")
    except BaseException as exc:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        _reraise(exc, index_dir)


def _publish(index_dir: Path, tmp: Path, final: Path) -> None:
    """Make a complete new generation the live one: rename it, then switch CURRENT."""
    _fsync_dir(tmp)
    pointer = index_dir / f".CURRENT.{os.getpid()}"
    try:
        _write_file(pointer, (final.name + "\n").encode())
    except OSError:
        pointer.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    current = index_dir / "CURRENT"
    if current.is_dir() and not current.is_symlink():  # damage a rebuild repairs
        shutil.rmtree(current)
    os.replace(pointer, current)
    _fsync_dir(index_dir)


def _next_number(index_dir: Path) -> int:
    numbers = [int(p.name[4:]) for p in index_dir.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1


def _collect_garbage(index_dir: Path) -> None:
    """Drop generations that are not live and leftovers of killed writers (under the lock).

    With a damaged CURRENT nothing is dropped but leftovers: the rebuild that repairs it
    collects the rest next time.
    """
    try:
        live = current_generation(index_dir)
    except CitebotError:
        live = index_dir  # unknown: keep every generation
    for leftover in list(index_dir.glob(".tmp-gen-*")) + list(index_dir.glob(".CURRENT.*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if live is None or live == index_dir:
        return
    for old in index_dir.glob("gen-*"):
        if old != live:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
