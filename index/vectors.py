"""The FAISS side of the store: vectors keyed by chunk row id, inner product on unit vectors.

choose_kind picks the index by size. Figures from bench/scale.py on 2 shared cores, with
synthetic data calibrated to MiniLM embeddings (bench/results/scale.md):

- up to FLAT_MAX = 100,000 vectors, "flat": exact search, 6.8 ms a question at 100,000
  (half the ~15 ms search budget) and 154 MB; no training, nothing to tune, nothing lost.
- beyond, "pq_sq8": every vector is scanned as a 48-byte 4-bit PQ code with FAISS fast-scan,
  then the best REFINE_CANDIDATES are scored again with 8-bit scalar-quantised codes. At
  1,000,000: recall@10 0.989 against exact, p50 3.8 ms (p99 4.8), 440 MB, built in 5 s
  (k_factor 200 at k = 10 in the table).

Rejected at 1,000,000 vectors: exact (57 ms, 1.5 GB); flat SQ8 (43 ms); HNSW over SQ8, M 24,
efConstruction 80 (4-minute build, 600 MB, recall 0.88 at efSearch 1024 in 4.7 ms, 0.91 at
2048 in 7.9 ms; M 32 would take ~670 MB); IVF4000-SQ8 (0.95 only at nprobe 1000, 14 ms).
The graph and the partitions do much worse on embedding-like data than on Gaussian clusters;
the PQ scan does not depend on them. It is linear in n, ~3 ms per million vectors, so it
stays inside the search budget up to ~4M; beyond, put an IVF in front (IVF4096,PQ96x4fs +
SQ8 re-ranking: 0.977 at nprobe 2048, 4.9 ms at 1M in a separate run).

One query at a time runs on one FAISS thread (see VectorIndex.search); the segments of
an index (SegmentedVectors) are shared with one helper thread when a CPU is idle
(search_segments). Ids are chunk row ids, kept by IndexIDMap2 for flat (as before),
IndexIDMap (no reverse map, 40 B per vector less) for the other kinds but ivf_sq8, whose
inverted lists keep them. sq8, hnsw_sq8 and ivf_sq8 are there for the benchmark and for
explicit use.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np

from .errors import IndexCorrupt
from .machine import cpu_free, thread_count

KINDS = ("flat", "pq_sq8", "sq8", "hnsw_sq8", "ivf_sq8")

FLAT_MAX = 100_000  # exact search up to this many vectors, then pq_sq8
# In an index of more than FLAT_MAX vectors, where a fresh build is approximate anyway, a
# segment of more than this is written pq_sq8 too: at 250k stand-in vectors two exact
# segments of 61k cost 4 ms a question each, as pq_sq8 about 0.5 (docs/index-growth.md).
SEGMENT_FLAT_MAX = 10_000
# pq_sq8 re-ranks this many fast-scan candidates a question with the SQ8 codes, whatever k.
# Retrieval asks for k = 50 to fuse; at 1M MiniLM-like vectors (bench/scale.py's data, six
# segments) re-ranking k·100 = 5,000 gave recall@10 0.991, recall@50 0.988 in 4.9 ms, and
# 2,000 gives 0.990 and 0.979 in 3.4 ms (1,000: 0.988, 0.954, 2.9 ms; docs/index-growth.md).
REFINE_CANDIDATES = 2_000
# Several approximate segments share that budget by their share of the vectors (at least
# REFINE_MIN_FACTOR·k each), so a question costs about what one index of them all would.
REFINE_MIN_FACTOR = 2
HNSW_M = 24  # graph links per node: 32 would put 1M vectors over 0.6 GB
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 1024
IVF_PROBE_FRACTION = 1 / 4  # share of the inverted lists scanned per query
# One question's segments are searched by two threads when they hold more vectors than this
# (search_segments); below, one thread answers before a second would have started.
SHARED_MIN = FLAT_MAX
TRAIN_SAMPLE = 65_536  # vectors used to train PQ and IVF codebooks
# Fewer vectors than this and a kind is built as "flat" instead: PQ needs 16 points per
# codebook and IVF 39 per list, and exact search is the better index at such sizes anyway.
MIN_VECTORS = {"flat": 0, "sq8": 1, "hnsw_sq8": 1, "ivf_sq8": 39, "pq_sq8": 1_000}

T = TypeVar("T")
_SQ8 = faiss.ScalarQuantizer.QT_8bit
_IP = faiss.METRIC_INNER_PRODUCT


def choose_kind(n: int, index_total: int = 0) -> str:
    """The FAISS index type for n vectors, a segment of an index of index_total (0: of n
    alone): exact search while it is fast enough. Up to FLAT_MAX in all, every segment is
    exact, so a grown index ranks as a fresh build does."""
    if n > FLAT_MAX or (index_total > FLAT_MAX and n > SEGMENT_FLAT_MAX):
        return "pq_sq8"
    return "flat"


def ivf_lists(n: int) -> int:
    """Inverted lists for n vectors: about 4·√n, with 39 training points per list at least."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def pq_subquantizers(dim: int) -> int:
    """4-bit PQ sub-quantizers for dim: one per 4 dimensions (96 for 384-d)."""
    return max(m for m in range(1, dim // 4 + 1) if dim % m == 0) if dim >= 4 else 1


def omp_threads(n: int) -> AbstractContextManager[None]:
    """Run FAISS with n OpenMP threads in this thread, then restore the setting."""
    return thread_count(faiss.omp_get_max_threads, faiss.omp_set_num_threads, n)


def _sample(vectors: np.ndarray, size: int) -> np.ndarray:
    if len(vectors) <= size:
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), size, replace=False)
    return vectors[np.sort(rows)]


def _train_new(kind: str, vectors: np.ndarray) -> faiss.Index:
    """A trained, empty index of the kind, ids not yet mapped."""
    n, dim = vectors.shape
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "pq_sq8":
        index = faiss.index_factory(dim, f"PQ{pq_subquantizers(dim)}x4fs,Refine(SQ8)", _IP)
        # PQ training runs many tiny parallel loops: on 2 busy cores a second thread made it
        # 2x slower, once 40x; one thread needs under a second.
        with omp_threads(1):
            faiss.downcast_index(index.base_index).train(_sample(vectors, TRAIN_SAMPLE))
        faiss.downcast_index(index.refine_index).train(vectors)
        index.is_trained = True
        return index
    if kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, ivf_lists(n), _SQ8, _IP)
        index.train(_sample(vectors, max(TRAIN_SAMPLE, 64 * index.nlist)))
        return index
    if kind == "sq8":
        index = faiss.IndexScalarQuantizer(dim, _SQ8, _IP)
    else:
        index = faiss.IndexHNSWSQ(dim, _SQ8, HNSW_M, _IP)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.train(vectors)  # SQ8: per-dimension min and max, one pass
    return index


def _wrap(kind: str, index: faiss.Index) -> faiss.Index:
    """Map positions to chunk row ids."""
    if kind == "ivf_sq8":
        return index  # the inverted lists store the ids themselves
    if kind == "flat":
        return faiss.IndexIDMap2(index)  # as citebot always saved it
    return faiss.IndexIDMap(index)  # no reverse map: 40 B per vector less


def _inner(index: faiss.Index) -> faiss.Index:
    if isinstance(index, faiss.IndexIDMap):  # IndexIDMap2 is a subclass
        return faiss.downcast_index(index.index)
    return index


def _kind_of(index: faiss.Index) -> str | None:
    """The kind a loaded index is, judged by its FAISS classes and metric."""
    inner = _inner(index)
    if inner.metric_type != _IP:
        return None
    if isinstance(inner, faiss.IndexRefine):
        base = faiss.downcast_index(inner.base_index)
        refine = faiss.downcast_index(inner.refine_index)
        pq_sq8 = isinstance(base, faiss.IndexPQFastScan) and isinstance(
            refine, faiss.IndexScalarQuantizer)
        return "pq_sq8" if pq_sq8 else None
    kinds = [("flat", faiss.IndexFlatIP), ("sq8", faiss.IndexScalarQuantizer),
             ("hnsw_sq8", faiss.IndexHNSWSQ), ("ivf_sq8", faiss.IndexIVFScalarQuantizer)]
    return next((kind for kind, cls in kinds if isinstance(inner, cls)), None)


def _tune(index: faiss.Index, kind: str) -> None:
    """Set the search-time effort, so the file's stored value never decides it (pq_sq8's
    is given with each search: VectorIndex.params)."""
    inner = _inner(index)
    if kind == "hnsw_sq8":
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivf_sq8":
        inner.nprobe = max(1, round(inner.nlist * IVF_PROBE_FRACTION))


class VectorIndex:
    """A FAISS index whose ids are chunk row ids."""

    def __init__(self, index: faiss.Index, kind: str) -> None:
        self.index = index
        self.kind = kind
        self.candidates = float(REFINE_CANDIDATES)  # pq_sq8: re-ranked per query

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, kind: str = "auto",
              index_total: int = 0) -> VectorIndex:
        """Index unit vectors under their row ids; "auto" lets choose_kind pick the kind
        (for a segment of an index of index_total vectors).

        A kind asked for with fewer vectors than it can train on (MIN_VECTORS) is built
        as "flat"; `.kind` tells which was built.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise ValueError("vectors must be 2-D with one id per row")
        kind = choose_kind(len(vectors), index_total) if kind == "auto" else kind
        if kind not in KINDS:
            raise ValueError(f"unknown vector index kind {kind!r}; known: {', '.join(KINDS)}")
        if len(vectors) < MIN_VECTORS[kind]:
            kind = "flat"
        index = _wrap(kind, _train_new(kind, vectors))
        if len(vectors):
            index.add_with_ids(vectors, ids)
        _tune(index, kind)
        return cls(index, kind)

    def refine_share(self, share: float) -> None:
        """Re-rank this share of the candidates one pq_sq8 index of all segments would."""
        self.candidates = REFINE_CANDIDATES * share

    def params(self, k: int) -> faiss.SearchParameters | None:
        """The search parameters of a k-neighbour search: pq_sq8's re-ranking depth."""
        if self.kind != "pq_sq8":
            return None
        return faiss.IndexRefineSearchParameters(
            k_factor=max(REFINE_MIN_FACTOR, self.candidates / max(1, k)))

    def faiss_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's search of a float32 query matrix, with this index's parameters."""
        return self.index.search(queries, k, params=self.params(k))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1.

        A single query runs on one FAISS thread (the OpenMP setting is per calling thread):
        on 2 cores shared with the embedder and other work, a second thread never helped,
        made exact search 2.2-2.5x slower and a whole question 6-20 ms slower.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, self.ntotal or 1))
        if len(queries) != 1:
            return self.faiss_search(queries, k)
        with omp_threads(1):
            return self.faiss_search(queries, k)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, kind: str, *, mmap: bool = False) -> VectorIndex:
        """Read an index saved by save(); IndexCorrupt when the file is damaged.

        mmap maps flat codes from the file instead of copying them (flat, sq8, and the
        SQ8 codes of pq_sq8): fast start, and pages are shared and reclaimable. The file
        must then be replaced by rename, never rewritten in place, while it is loaded.
        """
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            index = faiss.read_index(str(path), flags)
        except Exception as exc:  # FAISS raises RuntimeError with C++ text on any damage
            raise IndexCorrupt("the vector file is damaged", path=path) from exc
        found = _kind_of(index)
        if found != kind:
            raise IndexCorrupt(
                f"the vector file holds a {found or 'foreign'} index, not a {kind} one", path=path)
        _tune(index, kind)
        return cls(index, kind)


_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _forget_helper() -> None:
    """A forked child has no helper thread (threads do not survive fork): it starts its own."""
    global _helper, _helper_lock
    _helper, _helper_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)


def _helper_thread() -> ThreadPoolExecutor:
    """The one thread, shared by every index of the process, that helps search segments."""
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(1, thread_name_prefix="citebot-segments",
                                         initializer=faiss.omp_set_num_threads, initargs=(1,))
        return _helper


def search_segments(parts: Sequence[VectorIndex], query: np.ndarray, ks: Sequence[int],
                    beside: Callable[[bool], T] = lambda shared: None
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], T]:
    """Each part's FAISS search of one query (a 1-row array) for its k, in the parts' order,
    and beside(shared)'s result, shared telling whether a helper is searching meanwhile.

    With a free CPU, a helper thread starts on the parts, biggest first, while the asking
    thread runs beside(True) (BM25: numpy lets go of the GIL in its loops, FAISS in its
    search); then both take the parts left from the same list, as Lucene's concurrent
    segment search does, each running FAISS on one thread. The question never waits for a
    helper that has not started: when the asking thread has taken every part, a helper
    still queued (busy with another question) is cancelled. Without a free CPU, one thread
    does it all: a helper sharing a busy core only made the question wait for it.
    """
    found: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(parts)
    order = sorted(range(len(parts)), key=lambda i: -parts[i].ntotal)
    taken = itertools.count()  # next() on it is atomic: each part is searched once

    def work() -> None:
        while (j := next(taken)) < len(order):
            i = order[j]
            found[i] = parts[i].faiss_search(query, ks[i])

    shared = len(parts) > 1 and sum(p.ntotal for p in parts) > SHARED_MIN and cpu_free()
    helper = _helper_thread().submit(work) if shared else None
    other = beside(helper is not None)
    with omp_threads(1):
        work()
    if helper is not None and not helper.cancel():
        helper.result()
    return found, other  # type: ignore[return-value]


class SegmentedVectors:
    """The vectors of all live segments searched as one index.

    Each segment is a VectorIndex over its own chunk ids; removed chunks stay in their
    segment until it is merged, so each segment is asked for as many more neighbours as it
    holds removed ones, and those are dropped. `ntotal` is one past the largest chunk id (the
    id space, as long as Lexical.scores' array), `live` the number of live vectors.

    Approximate segments split the re-ranking budget of one index by their share of the
    vectors (VectorIndex.refine_share): at 1M stand-in vectors in six pq_sq8 segments that
    took FAISS from about 15 ms a question to about 5, with the recall of one 1M index
    (docs/index-growth.md). One query's segments are searched by two threads when a CPU is
    idle (search_segments), with BM25 beside them (search_beside).
    """

    def __init__(self, parts: list[VectorIndex], dead: np.ndarray, bound: int, live: int,
                 dim: int) -> None:
        self.parts = parts
        approx = sum(p.ntotal for p in parts if p.kind == "pq_sq8")
        for p in parts:
            p.refine_share(p.ntotal / approx if approx else 1.0)
        self.dead = np.asarray(dead, dtype=np.int64)
        self.bound, self.live, self._dim = int(bound), int(live), int(dim)

    @property
    def ntotal(self) -> int:
        return self.bound

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        """The kind of the largest segment (what stats show)."""
        return max(self.parts, key=lambda p: p.ntotal).kind if self.parts else "flat"

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row over every segment; missing slots have id -1."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if len(queries) == 1:
            return self.search_beside(queries, k, lambda shared: None)[0]
        k = max(1, k)
        # FAISS spreads a batch over its own threads
        return self._merge([part.faiss_search(queries, min(k + len(self.dead), part.ntotal))
                            for part in self.parts if part.ntotal], k, len(queries))

    def search_beside(self, query: np.ndarray, k: int, beside: Callable[[bool], T]
                      ) -> tuple[tuple[np.ndarray, np.ndarray], T]:
        """search() of one query, and beside(shared)'s result, which the asking thread
        computes while a helper thread (when a CPU is free) begins the segments:
        search_segments."""
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        k = max(1, k)
        parts = [part for part in self.parts if part.ntotal]
        found, other = search_segments(
            parts, query, [min(k + len(self.dead), part.ntotal) for part in parts], beside)
        return self._merge(found, k, 1), other

    def _merge(self, found: list[tuple[np.ndarray, np.ndarray]], k: int, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k of the segments' results, removed chunks dropped."""
        all_scores = [np.full((n, 0), -np.inf, dtype=np.float32)]
        all_ids = [np.zeros((n, 0), dtype=np.int64)]
        for scores, ids in found:
            if len(self.dead):
                gone = np.isin(ids, self.dead) | (ids < 0)
                scores = np.where(gone, -np.inf, scores)
                ids = np.where(gone, -1, ids)
            all_scores.append(scores.astype(np.float32))
            all_ids.append(ids.astype(np.int64))
        scores, ids = np.concatenate(all_scores, axis=1), np.concatenate(all_ids, axis=1)
        scores = np.where(ids < 0, -np.inf, scores)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_s = np.take_along_axis(scores, order, axis=1)
        top_i = np.take_along_axis(ids, order, axis=1)
        if top_s.shape[1] < k:
            pad = k - top_s.shape[1]
            top_s = np.pad(top_s, ((0, 0), (0, pad)), constant_values=-np.inf)
            top_i = np.pad(top_i, ((0, 0), (0, pad)), constant_values=-1)
        top_i = np.where(np.isfinite(top_s), top_i, -1)
        return top_s, top_i
