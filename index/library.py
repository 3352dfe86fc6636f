"""The library's front door: update an index folder and answer from it.

Everything the interfaces need goes through Library; it reads no config and no environment.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import check, ingest
from .answer import AnswerSettings, build_answer
from .chat_text import read_chat
from .chunk import answer_units, chunk_text
from .conversation import Turn, follow_up_query
from .embed import Embedder
from .errors import BadQuery, CitebotError, IndexCorrupt, IndexNotFound
from .folder import current_generation, storable, write_lock
from .lexical import correct_spelling
from .paths import path_within
from .plan import Planner, chunks_to_embed
from .records import Answer, Hit, Source
from .retrieve import RetrievalSettings, hybrid_search, search_with_sentences
from .segments import Writer, open_writer
from .settings import setting
from .store import (
    ChunkSentences,
    IndexWriter,
    Manifest,
    Snapshot,
    SourceRows,
    now_iso,
    open_snapshot,
)
from .vectors import KINDS

if TYPE_CHECKING:  # the milvus backend is an extra
    from .milvus_store import MilvusStore

# progress(chunks done, chunks to embed), called as embedding goes on; a chunk counts as done
# with its sentences.
Progress = Callable[[int, int], None]
# A first build or a rebuild embeds and writes this many chunks at a time (Library.update): at
# about 11 KB of chunk and sentence vectors a chunk, about 1.1 GB held per part.
BUILD_PART = 100_000


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
    seconds: float = 0.0  # until the update was committed and visible
    merges: int = 0
    merge_seconds: float = 0.0  # merging segments afterwards, readers answering meanwhile
    generation: str | None = None

    @property
    def wrote(self) -> bool:
        return self.generation is not None


# Prefixes that make words of words: a misspelling is rarely one of them on a real word.
_PREFIXES = ("un", "re", "non", "dis", "mis", "pre", "over", "under", "anti", "inter", "out",
             "sub", "de", "co")


class Library:
    """An index folder plus the model that embeds for it."""

    def __init__(self, index_dir: Path, embedder: Embedder, settings: Settings = Settings(),
                 store: MilvusStore | None = None):
        """store: an index in Milvus (milvus_store), used instead of the folder index_dir."""
        self.index_dir = Path(index_dir)
        self.embedder = embedder
        self.settings = settings
        self.store = store
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
        if self.store is not None:
            return self.store.live() is not None
        return current_generation(self.index_dir) is not None

    def snapshot(self) -> Snapshot:
        """The live generation, reopened when an update has replaced it."""
        if self.store is not None:  # the pointer is resolved on every call
            return self.store.open(self.manifest())  # type: ignore[return-value]
        live = current_generation(self.index_dir)
        with self._snap_lock:
            if live is None:
                raise IndexNotFound("there is no index yet", path=self.index_dir)
            if self._snap is None or not self._snap.is_current():
                self._snap = open_snapshot(self.index_dir, self.manifest())
            return self._snap

    def sources(self) -> list[Source]:
        return list(self.snapshot().sources().values())

    def stats(self) -> dict:
        if self.store is not None:
            return self.store.stats(self.store.open(self.manifest()))
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
        if self.store is not None:
            return self.store.problems(self.manifest())
        try:
            snap = open_snapshot(self.index_dir, self.manifest())
        except CitebotError as exc:
            return [str(exc)]
        try:
            found = check.problems(snap)
        except CitebotError as exc:
            found = [str(exc)]
        finally:
            snap.close()
        return found

    # -- answering -----------------------------------------------------------------------

    def _check_query(self, text: str) -> str:
        if not storable(text):
            raise BadQuery("the question is not valid UTF-8 text")
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
                              lexical=snap.lexical, words=self.embedder.word_vectors)
        return answer if query == question else replace(answer, question=question)

    def _normalise(self, snap: Snapshot, query: str) -> str:
        """The query as searched: chat typing spelt out (`read_chat`), misspelt words
        corrected against the index's words."""
        query = read_chat(query)
        if not self.settings.retrieval.correct_spelling:
            return query

        def whole(word: str) -> bool:
            return snap.lexical.knows(word) or self.embedder.token_counts([word]) == [1]

        def is_word(word: str) -> bool:
            # A word the sources use in another form, or one the model's vocabulary holds
            # whole, is a word; a misspelling splits into pieces. So is a prefix on such a
            # word ("unmodified" is not "uncodified").
            return whole(word) or any(word.startswith(p) and len(word) - len(p) >= 4 and
                                      whole(word[len(p):]) for p in _PREFIXES)

        return correct_spelling(query, snap.word_counts, is_word)

    # -- updating ------------------------------------------------------------------------

    def update(self, specs: Sequence[str], *, rebuild: bool = False, prune: bool = False,
               remove: Sequence[str] = (), progress: Progress | None = None,
               wait: bool = True) -> UpdateReport:
        """Add or refresh sources (files, folders, URLs), remove others, in one commit.

        Unchanged sources are not read again beyond their hash; a changed one is re-chunked
        and only chunks whose text is new are embedded; the update writes only the rows and
        vectors of the sources it adds or changes. With prune, sources that vanished from the
        given folders are dropped. Nothing is written when nothing changed. Small segments
        are merged afterwards (report.merge_seconds), while readers answer.
        """
        started = time.monotonic()
        report = UpdateReport()
        with self._writer(rebuild, wait) as writer:
            planner = Planner(writer.lookup(), now_iso())
            for spec in remove:
                planner.remove(spec)
            if prune:
                planner.prune(specs, ingest.discover(list(specs)))
            rows = self._load(specs, planner, report)
            plan = planner.plan
            report.added = [s.location for s in plan.added]
            report.changed = [s.location for s in plan.changed]
            report.removed = [s.location for s in plan.removed]
            report.unchanged, report.duplicates = plan.unchanged, plan.duplicates
            new_chunks = sum(len(r.chunks) for r in rows)
            report.chunks_total = writer.chunks_kept(plan.dropped_ids) + new_chunks
            if not planner.sources_left() and (plan.writes or rebuild):
                raise CitebotError("that would leave the index with no sources, so it is left "
                                   "as it was; add another source first")
            if plan.writes or rebuild or writer.is_new:
                # A first build or a rebuild writes a generation no reader sees before the
                # update ends, so it embeds and writes in parts: its memory is the loaded
                # texts and one part's vectors, not every chunk's (a build of 1M chunks in
                # one part peaked at 12.8 GB, docs/index-growth.md). Any other update is one
                # commit, which readers see whole.
                parts = build_parts(rows, BUILD_PART) if writer.is_new else [rows]
                parted = progress if len(parts) > 1 else None  # counted over all parts
                done = 0
                for n, part in enumerate(parts):
                    shown = _offset(parted, done, new_chunks) if parted else progress
                    embeddings, sentences = self._embed(writer, part, shown, report)
                    report.generation = writer.apply(plan.dropped_ids if n == 0 else [], part,
                                                     embeddings, sentences)
                    del embeddings, sentences
                    done += sum(len(r.chunks) for r in part)
                    if parted:
                        parted(done, new_chunks)  # reused chunks count as done too
                report.seconds = time.monotonic() - started
                merging = time.monotonic()
                report.merges = writer.merge()
                report.merge_seconds = time.monotonic() - merging
                report.generation = writer.state()
        if not report.seconds:
            report.seconds = time.monotonic() - started
        return report

    @contextmanager
    def _writer(self, rebuild: bool, wait: bool) -> Iterator[IndexWriter]:
        """The one writer of the index, in the folder or in Milvus."""
        if self.store is not None:
            with self.store.writer(self.manifest(), rebuild=rebuild, wait=wait) as writer:
                yield writer
            return
        with write_lock(self.index_dir, wait), \
                open_writer(self.index_dir, self.manifest(), rebuild=rebuild,
                            vector_kind=self.settings.vector_kind) as writer:
            yield writer

    def remove(self, specs: Sequence[str]) -> UpdateReport:
        """Drop sources (by path, URL, folder or id) and their chunks."""
        return self.update([], remove=specs)

    def _load(self, specs: Sequence[str], planner: Planner,
              report: UpdateReport) -> list[SourceRows]:
        """Load the given sources; the chunked rows of those that are new or changed."""
        named = {os.path.normpath(s) for s in specs}

        def skip(spec: str, err: CitebotError) -> None:
            if os.path.normpath(spec) in named or ingest.is_web_url(spec):
                raise err
            report.skipped.append((spec, str(err)))

        rows: dict[str, SourceRows] = {}
        docs = ingest.iter_documents(list(specs), timeout=self.settings.fetch_timeout,
                                     max_bytes=self.settings.fetch_max_bytes, on_error=skip)
        additive = self.embedder.counts_add_up
        for doc in docs:
            src = planner.offer(doc.source)
            if src is None:
                continue
            chunks = chunk_text(doc.text, src.id, self.embedder.token_counts,
                                target_tokens=self.settings.target_tokens,
                                max_tokens=self.embedder.max_tokens - 2,
                                overlap_sentences=self.settings.overlap_sentences,
                                additive=additive)
            rows[src.id] = SourceRows(src, doc.text, chunks)
        return list(rows.values())

    def _embed(self, writer: Writer, rows: list[SourceRows], progress: Progress | None,
               report: UpdateReport) -> tuple[np.ndarray, list[ChunkSentences]]:
        """Vectors of the new rows' chunks and of their quotable sentences, reusing the
        stored ones of chunk texts the index holds already, so an update embeds only new
        text and reads only the vectors it reuses."""
        chunks = [c for r in rows for c in r.chunks]
        reuse = writer.reusable([c.hash for c in chunks])
        out = np.zeros((len(chunks), self.embedder.dim), dtype=np.float32)
        sentences: list[ChunkSentences | None] = [None] * len(chunks)
        todo = chunks_to_embed(chunks, reuse)
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
        report.chunks_embedded += len(todo)
        assert all(s is not None for s in sentences)  # every chunk was reused or embedded
        return out, [s for s in sentences if s is not None]


def build_parts(rows: list[SourceRows], size: int) -> list[list[SourceRows]]:
    """The rows in consecutive parts of at most size chunks (a source bigger than that is a
    part of its own); one empty part for no rows."""
    parts: list[list[SourceRows]] = [[]]
    held = 0
    for r in rows:
        if parts[-1] and held + len(r.chunks) > size:
            parts.append([])
            held = 0
        parts[-1].append(r)
        held += len(r.chunks)
    return parts


def _offset(progress: Progress, done: int, total: int) -> Progress:
    """progress for one part of a build: its chunks counted after the done ones, of total."""
    return lambda n, _: progress(min(total, done + n), total)


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


__all__ = ["Library", "Settings", "UpdateReport", "IndexCorrupt", "path_within"]
