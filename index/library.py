"""The library's front door: update an index folder and answer from it.

Everything the interfaces need goes through Library; it reads no config and no environment.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import ingest
from .answer import AnswerSettings, build_answer
from .chunk import answer_units, chunk_text
from .conversation import Turn, follow_up_query
from .embed import Embedder
from .errors import BadQuery, CitebotError, IndexBusy, IndexCorrupt, IndexNotFound
from .lexical import correct_spelling
from .records import Answer, Chunk, Hit, Source
from .retrieve import RetrievalSettings, hybrid_search, search_with_sentences
from .settings import setting
from .store import (
    ChunkSentences,
    Manifest,
    Snapshot,
    SourceRows,
    current_generation,
    now_iso,
    open_snapshot,
    write_generation,
)
from .vectors import KINDS

# progress(chunks done, chunks to embed), called as embedding goes on; a chunk counts as done
# with its sentences.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Settings:
    """Everything that shapes an index and its answers."""

    target_tokens: int = setting(128, min=8, key="chunking.target_tokens")
    overlap_sentences: int = setting(1, max=100, key="chunking.overlap_sentences")
    vector_kind: str = setting("auto", choices=("auto", *KINDS), key="index.vector_kind")
    fetch_timeout: float = setting(15.0, above=0, max=3600, key="fetch.timeout")
    fetch_max_bytes: int = setting(20_000_000, min=1, key="fetch.max_bytes")
    max_query_chars: int = setting(2000, min=1, key="answer.max_question_chars")
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    answer: AnswerSettings = field(default_factory=AnswerSettings)


@dataclass
class UpdateReport:
    """What an update changed, for the CLI and the bot to report."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    generation: str | None = None

    @property
    def wrote(self) -> bool:
        return self.generation is not None


class Library:
    """An index folder plus the model that embeds for it."""

    def __init__(self, index_dir: Path, embedder: Embedder, settings: Settings = Settings()):
        self.index_dir = Path(index_dir)
        self.embedder = embedder
        self.settings = settings
        self._snap: Snapshot | None = None
        self._snap_lock = threading.Lock()

    # -- reading -------------------------------------------------------------------------

    def manifest(self) -> Manifest:
        """The manifest this library's settings would write."""
        return Manifest(model=self.embedder.name, dim=self.embedder.dim,
                        max_tokens=self.embedder.max_tokens - 2,
                        target_tokens=self.settings.target_tokens,
                        overlap_sentences=self.settings.overlap_sentences)

    def exists(self) -> bool:
        return current_generation(self.index_dir) is not None

    def snapshot(self) -> Snapshot:
        """The live generation, reopened when an update has replaced it."""
        live = current_generation(self.index_dir)
        with self._snap_lock:
            if live is None:
                raise IndexNotFound("there is no index yet", path=self.index_dir)
            if self._snap is None or self._snap.folder != live:
                self._snap = open_snapshot(self.index_dir, self.manifest())
            return self._snap

    def sources(self) -> list[Source]:
        return list(self.snapshot().sources().values())

    def stats(self) -> dict:
        snap = self.snapshot()
        m = snap.manifest
        size = sum(p.stat().st_size for p in snap.folder.rglob("*") if p.is_file())
        return {"index": str(self.index_dir), "generation": snap.generation,
                "sources": m.sources, "chunks": m.chunks, "model": m.model, "dim": m.dim,
                "max_tokens": m.max_tokens, "target_tokens": m.target_tokens,
                "overlap_sentences": m.overlap_sentences, "vector_kind": m.vector_kind,
                "format_version": m.format_version, "created_at": m.created_at,
                "bytes": size}

    def check(self) -> list[str]:
        """Integrity problems of the live index; an empty list means it is sound."""
        try:
            snap = open_snapshot(self.index_dir, self.manifest())
        except CitebotError as exc:
            return [str(exc)]
        problems = []
        m, sources = snap.manifest, snap.sources()
        rows = snap.all_chunks()
        if len(sources) != m.sources or len(rows) != m.chunks:
            problems.append(f"manifest counts {m.sources} sources/{m.chunks} chunks, the "
                            f"database holds {len(sources)}/{len(rows)}")
        if snap.vectors.ntotal != len(rows):
            problems.append(f"{snap.vectors.ntotal} vectors for {len(rows)} chunks")
        if snap.vectors.dim != m.dim:
            problems.append(f"vectors have dimension {snap.vectors.dim}, manifest says {m.dim}")
        texts: dict[str, str] = {}
        for i, (chunk, blob) in enumerate(rows):
            if chunk.id != i:
                problems.append(f"chunk ids are not 0..{len(rows) - 1}")
                break
            if chunk.source_id not in sources:
                problems.append(f"chunk {chunk.id} belongs to no source")
                continue
            text = texts.setdefault(chunk.source_id, snap.source_text(chunk.source_id))
            if text[chunk.start:chunk.end] != chunk.text:
                problems.append(f"chunk {chunk.id} does not match its source's text")
            if len(blob) != 4 * m.dim:
                problems.append(f"chunk {chunk.id} has a damaged embedding")
        if rows and not problems:
            sample = [0, len(rows) // 2, len(rows) - 1]
            vecs = snap.embeddings(sample)
            _, ids = snap.vectors.search(vecs, 1)
            if any(int(ids[j][0]) != sample[j] and
                   float(vecs[j] @ snap.embeddings([int(ids[j][0])])[0]) < 0.999
                   for j in range(len(sample))):
                problems.append("the vector file does not match the chunk rows")
        return problems

    # -- answering -----------------------------------------------------------------------

    def _check_query(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise BadQuery("the question is empty")
        if len(text) > self.settings.max_query_chars:
            raise BadQuery(f"the question is {len(text):,} characters long; "
                           f"the limit is {self.settings.max_query_chars:,}")
        return text

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The k best passages for a query."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """search() for many queries, embedding them in batches."""
        snap = self.snapshot()
        queries = [self._normalise(snap, self._check_query(q)) for q in queries]
        qvecs = self.embedder.encode(queries)
        return [hybrid_search(snap, q, v, k, self.settings.retrieval)
                for q, v in zip(queries, qvecs, strict=True)]

    def ask(self, question: str, *, context: Sequence[Turn | str] = ()) -> Answer:
        """The answer to a question, with citations.

        context: the conversation's earlier turns (or questions); a follow-up such as "how
        old is he?" is retrieved and answered with the names they were about.
        """
        question = self._check_query(question)
        snap = self.snapshot()
        query = self._normalise(snap, question)
        query = follow_up_query(query, context) if context else query
        qvec = self.embedder.encode_query(query)
        hits, stored = search_with_sentences(snap, query, qvec, self.settings.answer.passages,
                                             self.settings.retrieval)
        answer = build_answer(query, hits, qvec, stored, self.settings.answer,
                              lexical=snap.lexical)
        return answer if query == question else replace(answer, question=question)

    def _normalise(self, snap: Snapshot, query: str) -> str:
        """The query as searched: misspelt words corrected against the index's words."""
        if not self.settings.retrieval.correct_spelling:
            return query

        def is_word(word: str) -> bool:
            # A word the sources use in another form, or one the model's vocabulary holds
            # whole, is a word; a misspelling splits into pieces.
            return snap.lexical.knows(word) or self.embedder.token_counts([word]) == [1]

        return correct_spelling(query, snap.word_counts, is_word)

    # -- updating ------------------------------------------------------------------------

    @contextmanager
    def _writing(self, wait: bool) -> Iterator[None]:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        with open(self.index_dir / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise IndexBusy("another update of this index is running; try again when "
                                "it has finished") from exc
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update(self, specs: Sequence[str], *, rebuild: bool = False, prune: bool = False,
               remove: Sequence[str] = (), progress: Progress | None = None,
               wait: bool = True) -> UpdateReport:
        """Add or refresh sources (files, folders, URLs) and write a new generation.

        Unchanged sources keep their chunks; changed ones are re-chunked and only chunks
        whose text is new are embedded. With prune, sources that vanished from the given
        folders are dropped. Nothing is written when nothing changed.
        """
        started = time.monotonic()
        report = UpdateReport()
        with self._writing(wait):
            old = None if rebuild else self._old_snapshot()
            old_sources = old.sources() if old else {}
            kept: dict[str, SourceRows] = {}
            old_chunks = old.all_chunks() if old else []
            if old:
                by_source: dict[str, list] = {}
                for chunk, _ in old_chunks:
                    by_source.setdefault(chunk.source_id, []).append(chunk)
                for sid, src in old_sources.items():
                    kept[sid] = SourceRows(src, old.source_text(sid), by_source.get(sid, []))
            for spec in remove:
                gone = _matching(kept, spec)
                if not gone:
                    raise CitebotError(f"{spec} is not in the index")
                for sid in gone:
                    report.removed.append(kept.pop(sid).source.location)
            if prune:
                present = set(ingest.discover(list(specs)))
                for sid in [s for s in kept if _under(kept[s].source, specs)]:
                    if kept[sid].source.location not in present:
                        report.removed.append(kept.pop(sid).source.location)
            new_rows = self._load(specs, kept, report)
            rows = list(kept.values())
            changed = bool(report.added or report.changed or report.removed) or rebuild \
                or old is None
            report.chunks_total = sum(len(r.chunks) for r in rows)
            if changed and not rows:  # BM25 (bm25s) cannot build an index of nothing
                raise CitebotError("that would leave the index with no sources, so it is left "
                                   "as it was; add another source first")
            if changed:  # the old vectors are read only when a generation will be written
                reuse = _reusable(old, old_chunks) if old else {}
                embeddings, sentences = self._embed(rows, new_rows, reuse, progress, report)
                folder = write_generation(self.index_dir, self.manifest(), rows, embeddings,
                                          sentences, self.settings.vector_kind)
                report.generation = folder.name
        report.seconds = time.monotonic() - started
        return report

    def remove(self, specs: Sequence[str]) -> UpdateReport:
        """Drop sources (by path, URL, folder or id) and their chunks."""
        return self.update([], remove=specs)

    def _old_snapshot(self) -> Snapshot | None:
        if current_generation(self.index_dir) is None:
            return None
        return open_snapshot(self.index_dir, self.manifest())

    def _load(self, specs: Sequence[str], kept: dict[str, SourceRows],
              report: UpdateReport) -> set[str]:
        """Load sources into kept; returns the ids that need chunking."""
        fresh: set[str] = set()
        named = {os.path.normpath(s) for s in specs}

        def skip(spec: str, err: CitebotError) -> None:
            if os.path.normpath(spec) in named or ingest.is_web_url(spec):
                raise err
            report.skipped.append((spec, str(err)))

        docs = ingest.iter_documents(list(specs), timeout=self.settings.fetch_timeout,
                                     max_bytes=self.settings.fetch_max_bytes, on_error=skip)
        for doc in docs:
            src = doc.source
            prev = kept.get(src.id) or next(
                (r for r in kept.values() if _same_file(r.source, src)), None)
            if prev and prev.source.id != src.id:
                # The same file spelled another way ("seeds" vs "/repo/seeds"): keep its id.
                src = replace(src, id=prev.source.id, path=prev.source.path)
            if prev and prev.source.content_hash == src.content_hash:
                report.unchanged.append(src.location)
                continue
            twin = next((r.source for r in kept.values()
                         if r.source.content_hash == src.content_hash and r.source.id != src.id),
                        None)
            if twin is not None:
                report.duplicates.append((src.location, twin.location))
                continue
            added_at = prev.source.added_at if prev else now_iso()
            src = replace(src, added_at=added_at)
            chunks = chunk_text(doc.text, src.id, self.embedder.token_counts,
                                target_tokens=self.settings.target_tokens,
                                max_tokens=self.embedder.max_tokens - 2,
                                overlap_sentences=self.settings.overlap_sentences)
            (report.changed if prev else report.added).append(src.location)
            kept[src.id] = SourceRows(src, doc.text, chunks)
            fresh.add(src.id)
        return fresh

    def _embed(self, rows: list[SourceRows], fresh: set[str],
               reuse: dict[str, tuple[np.ndarray, ChunkSentences]],
               progress: Progress | None,
               report: UpdateReport) -> tuple[np.ndarray, list[ChunkSentences]]:
        """Vectors of every chunk and of its quotable sentences, reusing those of unchanged
        chunk texts, so an update embeds only new text."""
        chunks = [c for r in rows for c in r.chunks]
        out = np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)
        sentences: list[ChunkSentences | None] = [None] * len(chunks)
        todo = [i for i, c in enumerate(chunks) if c.hash not in reuse]
        for i, c in enumerate(chunks):
            if c.hash in reuse:
                out[i] = reuse[c.hash][0]
                sentences[i] = reuse[c.hash][1].shifted(c.start)
        # A sentence shared by overlapping chunks is embedded once.
        spans = {i: answer_units(chunks[i].text) for i in todo}
        texts = list(dict.fromkeys(chunks[i].text[a:b] for i in todo for a, b in spans[i]))
        if todo:
            # The fast paths, made once per model and machine; the bulk one only if needed.
            self.embedder.prepare(measure_bulk=False)
            chunk_texts = [chunks[i].text for i in todo]
            meter = _ChunkProgress(progress, len(todo), chunk_texts + texts)
            out[todo] = self.embedder.encode(chunk_texts, progress=meter.counter(chunk_texts))
            vecs = self.embedder.encode(texts, progress=meter.counter(texts))
            meter.show(len(todo))
            row = {t: j for j, t in enumerate(texts)}
            for i in todo:
                c = chunks[i]
                sentences[i] = ChunkSentences(
                    tuple((c.start + a, c.start + b) for a, b in spans[i]),
                    vecs[[row[c.text[a:b]] for a, b in spans[i]]].reshape(-1, self.embedder.dim))
        report.chunks_embedded = len(todo)
        assert all(s is not None for s in sentences)  # every chunk was reused or embedded
        return out, [s for s in sentences if s is not None]


class _ChunkProgress:
    """Progress in chunks while chunks and then their sentences are embedded.

    Each text done counts as its pass's mean length over all the characters to embed, so the
    rate shown is chunks per second of the whole job and the time left holds for both passes.
    """

    def __init__(self, progress: Progress | None, chunks: int, texts: Sequence[str]) -> None:
        self.progress, self.chunks = progress, chunks
        self.chars = max(1, sum(map(len, texts)))
        self.done, self.shown = 0.0, -1

    def counter(self, texts: Sequence[str]) -> Callable[[int], None]:
        """An Embedder progress(n) callback for one pass over texts."""
        share = sum(map(len, texts)) / max(1, len(texts)) / self.chars

        def step(n: int) -> None:
            self.done += n * share
            self.show(min(self.chunks, int(self.chunks * self.done + 1e-6)))

        return step

    def show(self, chunks: int) -> None:
        if self.progress and chunks != self.shown:
            self.shown = chunks
            self.progress(chunks, self.chunks)


def _reusable(old: Snapshot, chunks: list[tuple[Chunk, bytes]]
              ) -> dict[str, tuple[np.ndarray, ChunkSentences]]:
    """The old index's vectors of each chunk text and of its sentences, by text hash.

    Sentence spans are kept relative to the chunk: the same text may start elsewhere next time.
    """
    sentences = old.all_sentences()
    none = ChunkSentences((), np.zeros((0, old.manifest.dim), dtype=np.float32))
    return {c.hash: (np.frombuffer(blob, dtype=np.float32),
                     sentences.get(c.id, none).shifted(-c.start)) for c, blob in chunks}


def _same_file(a: Source, b: Source) -> bool:
    if a.path and b.path:
        return os.path.realpath(a.path) == os.path.realpath(b.path)
    return bool(a.url and a.url == b.url and not a.path and not b.path)


def _matching(kept: dict[str, SourceRows], spec: str) -> list[str]:
    """Ids of the sources a remove argument names: id, path, URL, or a folder holding them."""
    if ingest.is_web_url(spec):
        return [sid for sid, r in kept.items() if r.source.url == spec]
    return [sid for sid, r in kept.items()
            if spec == sid or (r.source.path and path_within(r.source.path, spec))]


def path_within(path: str, folder: str) -> bool:
    """Whether path is folder or lies inside it, both resolved (symlinks, "..")."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _under(source: Source, specs: Sequence[str]) -> bool:
    """Whether a file source lies in one of the given folders."""
    if not source.path:
        return False
    path = os.path.normpath(source.path)
    return any(os.path.isdir(s) and path.startswith(os.path.normpath(s).rstrip("/") + "/")
               for s in specs)


__all__ = ["Library", "Settings", "UpdateReport", "IndexCorrupt"]
