"""On-disk index: whole generations of SQLite rows + FAISS vectors + BM25, one manifest each.

Layout of an index folder:
    CURRENT              name of the live generation, replaced atomically (os.replace)
    gen-000007/          one complete, immutable generation
        manifest.json    model, dimension, chunking settings, format version, counts
        index.sqlite     sources (with their extracted text), chunks (text, offsets, hash,
                         embedding; row ids 0..n-1, the ids FAISS and BM25 use) and the
                         quotable sentences of each chunk with their own embeddings
        vectors.faiss
        bm25/
    .lock                held by the one process writing a new generation

A writer builds a new generation in a temporary folder and only then points CURRENT at it,
so readers (and a process killed mid-update) only ever see a whole generation.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import IndexCorrupt, IndexNotFound, ModelMismatch
from .lexical import Lexical, given_names, lexical_text, surface_words
from .records import Chunk, Source
from .vectors import VectorIndex

# 2: sentences (answers and ranking embed nothing at query time) and words (spelling).
FORMAT_VERSION = 2
_SCHEMA = """
CREATE TABLE sources (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, path TEXT, url TEXT, publisher TEXT, date TEXT,
    content_hash TEXT NOT NULL, added_at TEXT NOT NULL, text TEXT NOT NULL);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, source_id TEXT NOT NULL REFERENCES sources(id),
    start INTEGER NOT NULL, end INTEGER NOT NULL, text TEXT NOT NULL, hash TEXT NOT NULL,
    embedding BLOB NOT NULL);
CREATE INDEX chunks_source ON chunks(source_id);
CREATE INDEX chunks_hash ON chunks(hash);
CREATE TABLE sentences (
    id INTEGER PRIMARY KEY, chunk_id INTEGER NOT NULL REFERENCES chunks(id),
    start INTEGER NOT NULL, end INTEGER NOT NULL, embedding BLOB NOT NULL);
CREATE INDEX sentences_chunk ON sentences(chunk_id);
CREATE TABLE words (word TEXT PRIMARY KEY, chunks INTEGER NOT NULL) WITHOUT ROWID;
"""


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
                                f"citebot writes {FORMAT_VERSION}")
        mine, theirs = self.settings(), expected.settings()
        for key, value in mine.items():
            if theirs[key] != value:
                raise ModelMismatch(
                    f"the index was built with {key}={value!r} but {theirs[key]!r} is "
                    "configured")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def current_generation(index_dir: Path) -> Path | None:
    """The live generation folder, or None when the folder holds no index."""
    try:
        name = (index_dir / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IndexCorrupt(f"cannot read CURRENT: {exc.strerror}", path=index_dir) from exc
    if not name.startswith("gen-") or "/" in name:
        raise IndexCorrupt("the index's CURRENT file is damaged", path=index_dir)
    return index_dir / name


class Snapshot:
    """One whole generation opened for reading; safe to share between threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        try:
            data = json.loads((folder / "manifest.json").read_text())
            self.manifest = Manifest(**data)
        except FileNotFoundError as exc:
            raise IndexCorrupt("the index has no manifest", path=folder) from exc
        except (ValueError, TypeError) as exc:
            raise IndexCorrupt("the index's manifest is damaged", path=folder) \
                from exc
        db_path = folder / "index.sqlite"
        if not db_path.exists():
            raise IndexCorrupt("the index database is missing", path=db_path)
        try:
            self.db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True,
                                      check_same_thread=False)
            self.db.execute("SELECT count(*) FROM chunks").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorrupt("the index database is damaged", path=db_path) from exc
        try:
            self.vectors = VectorIndex.load(folder / "vectors.faiss", self.manifest.vector_kind)
            self.lexical = Lexical.load(folder / "bm25")
        except IndexCorrupt as exc:
            raise IndexCorrupt(str(exc), path=exc.path or folder) from exc
        self._sources: dict[str, Source] | None = None

    @property
    def generation(self) -> str:
        return self.folder.name

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise IndexCorrupt("the index database is damaged",
                                   path=self.folder / "index.sqlite") from exc

    def sources(self) -> dict[str, Source]:
        """Every source by id, with its chunk count."""
        if self._sources is None:
            rows = self._query(
                "SELECT s.id, s.title, s.path, s.url, s.publisher, s.date, s.content_hash,"
                " s.added_at, (SELECT count(*) FROM chunks c WHERE c.source_id = s.id)"
                " FROM sources s ORDER BY s.added_at, s.path, s.url")
            self._sources = {r[0]: Source(*r) for r in rows}
        return self._sources

    def chunks(self, ids: list[int]) -> dict[int, Chunk]:
        """Chunks by row id."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._query(f"SELECT id, source_id, text, start, end, hash FROM chunks"
                           f" WHERE id IN ({marks})", tuple(int(i) for i in ids))
        return {r[0]: Chunk(source_id=r[1], text=r[2], start=r[3], end=r[4], hash=r[5], id=r[0])
                for r in rows}

    def embeddings(self, ids: list[int]) -> np.ndarray:
        """Stored vectors of the given chunk ids, in that order."""
        marks = ",".join("?" * len(ids))
        rows = dict(self._query(f"SELECT id, embedding FROM chunks WHERE id IN ({marks})",
                                tuple(int(i) for i in ids)))
        return np.stack([np.frombuffer(rows[int(i)], dtype=np.float32) for i in ids]) \
            if ids else np.zeros((0, self.manifest.dim), dtype=np.float32)

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

    def all_sentences(self) -> dict[int, ChunkSentences]:
        """Every chunk's sentences by chunk id (for reuse by the next generation)."""
        rows = self._query("SELECT chunk_id, start, end, embedding FROM sentences ORDER BY id")
        return _group_sentences(rows, self.manifest.dim)

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

    def all_chunks(self) -> list[tuple[Chunk, bytes]]:
        """Every chunk with its stored embedding bytes (for reuse by the next generation)."""
        rows = self._query("SELECT id, source_id, text, start, end, hash, embedding FROM chunks"
                           " ORDER BY id")
        return [(Chunk(source_id=r[1], text=r[2], start=r[3], end=r[4], hash=r[5], id=r[0]), r[6])
                for r in rows]

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
    """Open the live generation, refusing one built with other settings."""
    folder = current_generation(index_dir)
    if folder is None:
        raise IndexNotFound("there is no index yet", path=index_dir)
    if not folder.is_dir():
        raise IndexCorrupt("the index's CURRENT file names a missing generation",
                           path=index_dir)
    snap = Snapshot(folder)
    if expected is not None:
        snap.manifest.check_compatible(expected)
    return snap


@dataclass(frozen=True)
class SourceRows:
    """A source as it goes into a new generation: its record, text and chunks."""

    source: Source
    text: str
    chunks: list[Chunk]


def write_generation(index_dir: Path, manifest: Manifest, rows: list[SourceRows],
                     embeddings: np.ndarray, sentences: list[ChunkSentences],
                     vector_kind: str = "auto") -> Path:
    """Write a complete new generation and make it the live one; returns its folder.

    embeddings and sentences have one entry per chunk, in the order of rows' chunks.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    number = _next_number(index_dir)
    final = index_dir / f"gen-{number:06d}"
    tmp = index_dir / f".tmp-gen-{number:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    texts: list[str] = []
    bm25_texts: list[str] = []
    db = sqlite3.connect(tmp / "index.sqlite")
    try:
        db.executescript(_SCHEMA)
        cid = 0
        for r in rows:
            s = r.source
            db.execute("INSERT INTO sources VALUES (?,?,?,?,?,?,?,?,?)",
                       (s.id, s.title, s.path, s.url, s.publisher, s.date, s.content_hash,
                        s.added_at or now_iso(), r.text))
            names = given_names(r.text)
            for c in r.chunks:
                bm25_texts.append(lexical_text(c.text, names))
                db.execute("INSERT INTO chunks VALUES (?,?,?,?,?,?,?)",
                           (cid, s.id, c.start, c.end, c.text, c.hash,
                            embeddings[cid].astype(np.float32).tobytes()))
                db.executemany(
                    "INSERT INTO sentences (chunk_id, start, end, embedding) VALUES (?,?,?,?)",
                    [(cid, a, b, v.astype(_SENTENCE_DTYPE).tobytes())
                     for (a, b), v in zip(sentences[cid].spans, sentences[cid].vectors,
                                          strict=True)])
                texts.append(c.text)
                cid += 1
        db.executemany("INSERT INTO words VALUES (?,?)", surface_words(texts).items())
        db.commit()
    finally:
        db.close()
    ids = np.arange(len(texts), dtype=np.int64)
    vectors = VectorIndex.build(embeddings.reshape(len(texts), manifest.dim), ids, vector_kind)
    vectors.save(tmp / "vectors.faiss")
    Lexical.build(bm25_texts).save(tmp / "bm25")
    manifest = Manifest(**{**asdict(manifest), "vector_kind": vectors.kind,
                           "sources": len(rows), "chunks": len(texts),
                           "created_at": now_iso()})
    (tmp / "manifest.json").write_text(json.dumps(asdict(manifest), indent=2))
    _fsync_tree(tmp)
    try:
        previous = current_generation(index_dir)
    except IndexCorrupt:  # a rebuild over a damaged CURRENT: nothing live to keep
        previous = None
    os.replace(tmp, final)
    pointer = index_dir / f".CURRENT.{os.getpid()}"
    pointer.write_text(final.name + "\n")
    _fsync_file(pointer)
    os.replace(pointer, index_dir / "CURRENT")
    _fsync_dir(index_dir)
    _collect_garbage(index_dir, keep=(final.name, previous.name if previous else ""))
    return final


def _next_number(index_dir: Path) -> int:
    numbers = [int(p.name[4:]) for p in index_dir.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1


def _collect_garbage(index_dir: Path, keep: tuple[str, ...]) -> None:
    """Drop all but the new and the previously live generation, and leftovers of killed writers.

    Keeping by liveness, not by number: an orphan generation of a writer killed between its
    rename and the CURRENT switch must not push out the one readers were just using.
    The caller holds the lock.
    """
    for old in index_dir.glob("gen-*"):
        if old.is_dir() and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in list(index_dir.glob(".tmp-gen-*")) + list(index_dir.glob(".CURRENT.*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync_file(path)


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            _fsync_file(p)
    for p in [folder, *[d for d in folder.rglob("*") if d.is_dir()]]:
        _fsync_dir(p)
