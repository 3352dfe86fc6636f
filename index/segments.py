"""Writing the segment store: an update's new segment and rows in one commit, and merges.

See store.py for the layout and why it is shaped so. A Writer works on one generation's
store.sqlite under the folder's lock; open_writer gives one on the live generation, or on a
new generation (first build, --rebuild) that becomes live when the block ends without error.

Longer than most modules (~400 lines) on purpose: the commit, the merge and their clean-up on
failure are one crash-safety argument, read best in one place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import faiss
import numpy as np

from . import folder
from .errors import IndexCorrupt
from .lexical import Postings, given_names, lexical_text, surface_words
from .paths import same_file_key
from .records import Source
from .store import (
    SENTENCE_DTYPE,
    ChunkSentences,
    Manifest,
    SourceRows,
    group_sentences,
    now_iso,
    store_file,
)
from .vectors import VectorIndex

MERGE_FACTOR = 8  # this many segments of one size tier are merged into one
MAX_MERGED = 250_000  # chunks: bigger segments are not merged again (bounded merge memory)
REWRITE_DEAD_SHARE = 0.3  # a segment this much removed is rewritten without its dead chunks
# Planning asks for sources by resolved path, content hash and URL; each is an index, so an
# update reads the records of the files it is offered, not every source's.
_SOURCE_INDEXES = """
DROP INDEX IF EXISTS sources_records;
CREATE INDEX IF NOT EXISTS sources_file ON sources(file_key, id);
CREATE INDEX IF NOT EXISTS sources_hash ON sources(content_hash, id);
CREATE INDEX IF NOT EXISTS sources_url ON sources(url, id);
CREATE INDEX IF NOT EXISTS sources_path ON sources(path, id);
"""
_SOURCE_FIELDS = "id, title, path, url, publisher, date, content_hash, added_at"
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


def _commit(db: sqlite3.Connection) -> None:
    """The moment an update becomes visible (a seam the crash tests pause at)."""
    db.execute("COMMIT")


class StoreLookup:
    """The SourceLookup planning uses (index/plan.py): each question is one indexed query."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _ids(self, where: str, *args: str) -> list[str]:
        if not all(map(folder.storable, args)):  # no stored source has such a name
            return []
        return [r[0] for r in self.db.execute(f"SELECT id FROM sources WHERE {where}", args)]

    def get(self, sid: str) -> Source | None:
        if not folder.storable(sid):
            return None
        row = self.db.execute(f"SELECT {_SOURCE_FIELDS} FROM sources WHERE id = ?",
                              (sid,)).fetchone()
        return Source(*row) if row else None

    def by_file_key(self, key: str) -> list[str]:
        return self._ids("file_key = ?", key)

    def by_hash(self, content_hash: str) -> list[str]:
        return self._ids("content_hash = ?", content_hash)

    def by_url(self, url: str) -> list[str]:
        return self._ids("url = ?", url)

    def within(self, folder: str) -> list[str]:
        key = "path:" + folder
        inside = key.rstrip("/") + "/"  # keys from inside/ up to (not including) inside0
        return self._ids("file_key = ? OR (file_key >= ? AND file_key < ?)", key, inside,
                         inside[:-1] + "0")

    def count(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'sources'").fetchone()[0])


class Writer:
    """Applies updates to one generation's store. Use it under write_lock, through
    open_writer, which also commits a rebuild's new generation at the end."""

    def __init__(self, generation: Path, manifest: Manifest | None = None,
                 vector_kind: str = "auto") -> None:
        self.folder = generation
        self.vector_kind = vector_kind
        self.is_new = manifest is not None
        self.db = folder.connect(generation / folder.STORE, readonly=False)
        if manifest is not None:  # a new store
            self.db.executescript(_SCHEMA)
            meta = {"manifest": json.dumps(asdict(replace(manifest, created_at=now_iso()))),
                    "version": 0, "next_id": 0, "next_segment": 1, "live_chunks": 0,
                    "live_length": 0, "sources": 0}
            self.db.executemany("INSERT INTO meta VALUES (?, ?)",
                                [(k, str(v)) for k, v in meta.items()])
        self.db.executescript(_SOURCE_INDEXES)
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

    def lookup(self) -> StoreLookup:
        """The indexed sources for planning, asked one at a time from SQLite's indexes."""
        return StoreLookup(self.db)

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
            sents = group_sentences(self.db.execute(
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
            postings = Postings.build(lo, ids, texts, [c.hash for _, c in chunks])
            if chunks:
                vectors = np.asarray(embeddings, dtype=np.float32).reshape(len(chunks), -1)
                total = int(meta["live_chunks"]) + len(chunks)
                kind = self._write_segment(seg, VectorIndex.build(
                    vectors, np.asarray(ids), self.vector_kind, index_total=total), postings)
            self.db.execute("BEGIN IMMEDIATE")
            gone_len = self._drop_sources(dropped)
            cur = self.db.executemany("DELETE FROM sources WHERE id = ?", [(s,) for s in dropped])
            n_sources = int(meta["sources"]) - cur.rowcount + len(rows)
            self.db.executemany("INSERT INTO sources VALUES (?,?,?,?,?,?,?,?,?,?)", (
                (s.id, s.title, s.path, s.url, s.publisher, s.date, s.content_hash,
                 s.added_at or now_iso(), r.text, same_file_key(s))
                for r in rows for s in (r.source,)))
            lengths = postings.lengths
            self.db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?,?,?,?)", (
                (cid, r.source.id, c.start, c.end, c.text, c.hash, int(lengths[cid - lo]),
                 np.asarray(embeddings[j], dtype=np.float32).tobytes())
                for j, (cid, (r, c)) in enumerate(zip(ids, chunks, strict=True))))
            self.db.executemany(
                "INSERT INTO sentences (chunk_id, start, end, embedding) VALUES (?,?,?,?)",
                ((cid, a, b, v.astype(SENTENCE_DTYPE).tobytes())
                 for cid, got in zip(ids, sentences, strict=True)
                 for (a, b), v in zip(got.spans, got.vectors, strict=True)))
            self._count_words([c.text for _, c in chunks], +1)
            if chunks:
                self.db.execute("INSERT INTO segments VALUES (?,?,?,?,?)",
                                (seg.name, lo, lo + len(chunks), len(chunks), kind))
            self._set(next_id=lo + len(chunks), next_segment=number + 1,
                      live_chunks=int(meta["live_chunks"]) + len(chunks) - gone_len[0],
                      live_length=int(meta["live_length"]) + int(lengths.sum()) - gone_len[1],
                      sources=n_sources, version=int(meta["version"]) + 1)
            _commit(self.db)
        except BaseException as exc:
            self._undo(seg)
            folder.reraise(exc, self.folder.parent)
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
        folder.write_file(seg / "vectors.faiss", faiss.serialize_index(vectors.index).tobytes())
        postings.save(seg, folder.write_file)
        folder.fsync_dir(seg)
        folder.fsync_dir(self.folder)
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
        """The adjacent segments to merge next, or None: one segment mostly made of removed
        chunks; MERGE_FACTOR of one size tier; or adjacent mid-sized ones that together make
        a big one (half MAX_MERGED to MAX_MERGED), since big batches of new sources would
        otherwise stay many separate exact segments, each searched in full."""
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
        return _big_run(live)

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
                kind = self._write_segment(seg, VectorIndex.build(
                    vectors, ids, self.vector_kind, index_total=int(meta["live_chunks"])),
                    postings)
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
            folder.reraise(exc, self.folder.parent)
        for name, *_ in run:  # readers that began before the commit have theirs loaded
            shutil.rmtree(self.folder / name, ignore_errors=True)

    def close(self) -> None:
        self.db.close()


def _big_run(live: list[tuple[str, int, int, int]]) -> list[tuple[str, int, int, int]] | None:
    """The first run of two or more adjacent segments, each under half MAX_MERGED, whose
    live chunks add up to between half MAX_MERGED and MAX_MERGED."""
    half = MAX_MERGED // 2
    for i in range(len(live)):
        total = 0
        for j in range(i, len(live)):
            n = live[j][3]
            if n >= half or total + n > MAX_MERGED:
                break
            total += n
            if j > i and total >= half:
                return live[i:j + 1]
    return None


def _tier(chunks: int) -> int:
    """A segment's size class: segments within a factor MERGE_FACTOR share one."""
    return int(math.log(max(chunks, 1), MERGE_FACTOR))


@contextmanager
def open_writer(index_dir: Path, manifest: Manifest, *, rebuild: bool = False,
                vector_kind: str = "auto") -> Iterator[Writer]:
    """A Writer on the live generation, or, for a rebuild or a first build, on a new one
    that becomes live when the block ends without error. The caller holds write_lock."""
    index_dir = Path(index_dir)
    live = None if rebuild else folder.current_generation(index_dir)
    if live is not None:
        store_file(live)  # refuses an older format by name
        try:
            writer = Writer(live, vector_kind=vector_kind)
            stored = writer.manifest()
        except (sqlite3.Error, KeyError, ValueError, TypeError) as exc:
            raise IndexCorrupt("the index database is damaged", path=live / folder.STORE) from exc
        try:
            stored.check_compatible(manifest)  # refuses other settings by name
        except BaseException:
            writer.close()
            raise
    folder.collect_garbage(index_dir)
    if live is not None:
        try:
            yield writer
        finally:
            writer.close()
        return
    number = folder.next_number(index_dir)
    tmp = index_dir / f".tmp-gen-{number:06d}-{os.getpid()}"
    try:
        tmp.mkdir()
        (tmp / folder.STORE).touch()
        writer = Writer(tmp, manifest, vector_kind)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise folder.os_error(exc, index_dir) from exc
    except sqlite3.Error as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise folder.sqlite_error(exc, index_dir) from exc
    try:
        yield writer
        writer.close()
        folder.publish(index_dir, tmp, index_dir / f"gen-{number:06d}")
    except BaseException as exc:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        folder.reraise(exc, index_dir)
