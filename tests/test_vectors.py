"""index.vectors with real FAISS: every kind builds, finds, saves, loads and refuses damage."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from bench.scale import recall_at_10, synthetic
from index.errors import IndexCorrupt
from index.vectors import FLAT_MAX, KINDS, MIN_VECTORS, VectorIndex, choose_kind

N = 10_000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realistic chunk vectors, their row ids (not positions) and off-data questions."""
    chunks, questions = synthetic(N, 200, seed=7)
    return chunks, np.arange(N, dtype=np.int64) * 7 + 3, questions


@pytest.fixture(scope="module")
def built(data) -> dict[str, VectorIndex]:
    chunks, ids, _ = data
    return {kind: VectorIndex.build(chunks, ids, kind) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_finds_a_vectors_own_id_first(built, data, kind):
    chunks, ids, _ = data
    index = built[kind]
    assert (index.kind, index.ntotal, index.dim) == (kind, N, 384)
    scores, found = index.search(chunks[:50], 5)
    assert found.shape == scores.shape == (50, 5)
    assert found[:, 0].tolist() == ids[:50].tolist()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert np.isin(found, ids).all()


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "flat"])
def test_approximate_kinds_recall_at_10(built, data, kind):
    _, _, questions = data
    exact = built["flat"].search(questions, 10)[1]
    found = built[kind].search(questions, 10)[1]
    recall = recall_at_10(found, exact)
    assert recall >= 0.9, f"{kind} recall@10 {recall:.3f}"


def test_single_query_matches_batch_and_restores_threads(built, data):
    _, _, questions = data
    faiss.omp_set_num_threads(2)
    one = built["pq_sq8"].search(questions[3], 10)[1]  # a 1-D vector is one query
    assert faiss.omp_get_max_threads() == 2
    assert one[0].tolist() == built["pq_sq8"].search(questions[:5], 10)[1][3].tolist()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(built, data, tmp_path: Path, kind, mmap):
    _, _, questions = data
    path = tmp_path / "vectors.faiss"
    built[kind].save(path)
    loaded = VectorIndex.load(path, kind, mmap=mmap)
    assert (loaded.kind, loaded.ntotal, loaded.dim) == (kind, N, 384)
    before, after = built[kind].search(questions, 10), loaded.search(questions, 10)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5)


def test_load_restores_the_search_effort_a_file_lost(built, data, tmp_path: Path):
    _, _, questions = data
    inner = faiss.downcast_index(built["hnsw_sq8"].index.index)
    shipped = inner.hnsw.efSearch
    inner.hnsw.efSearch = 1
    try:
        built["hnsw_sq8"].save(tmp_path / "v.faiss")
    finally:
        inner.hnsw.efSearch = shipped
    loaded = VectorIndex.load(tmp_path / "v.faiss", "hnsw_sq8")
    assert faiss.downcast_index(loaded.index.index).hnsw.efSearch == shipped


def test_pq_sq8_re_ranks_a_number_of_candidates_whatever_k(built, data):
    """A k-neighbour pq_sq8 search re-ranks REFINE_CANDIDATES fast-scan candidates, not k
    times a factor, whatever k_factor the FAISS index holds: FAISS's results at that depth."""
    from index.vectors import REFINE_CANDIDATES

    _, _, questions = data
    vi = built["pq_sq8"]
    inner = faiss.downcast_index(vi.index.index)
    stored = inner.k_factor
    try:
        for k in (10, 50):
            inner.k_factor = 1.0
            got = vi.search(questions[:20], k)[1]
            inner.k_factor = REFINE_CANDIDATES / k
            np.testing.assert_array_equal(got, vi.index.search(questions[:20], k)[1])
    finally:
        inner.k_factor = stored


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other kind"])
@pytest.mark.parametrize("mmap", [False, True])
def test_damaged_file_raises_index_corrupt(built, tmp_path: Path, damage, mmap):
    path = tmp_path / "vectors.faiss"
    built["pq_sq8"].save(path)
    blob = path.read_bytes()
    kind = "pq_sq8"
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        kind = "flat"
    with pytest.raises(IndexCorrupt) as caught:
        VectorIndex.load(path, kind, mmap=mmap)
    assert caught.value.path == str(path) and str(path) not in str(caught.value)


def test_choose_kind_is_exact_until_flat_max_and_always_trainable():
    assert choose_kind(0) == choose_kind(FLAT_MAX) == "flat"
    assert choose_kind(FLAT_MAX + 1) == choose_kind(10**6) == choose_kind(10**8) == "pq_sq8"
    for n in [0, 1, 15, 16, 999, 1000, FLAT_MAX, FLAT_MAX + 1, 10**6]:
        assert MIN_VECTORS[choose_kind(n)] <= n


@pytest.mark.parametrize("kind", KINDS)
def test_too_few_vectors_for_training_builds_flat(data, kind):
    chunks, ids, _ = data
    index = VectorIndex.build(chunks[:5], ids[:5], kind)
    assert index.kind == (kind if MIN_VECTORS[kind] <= 5 else "flat")
    assert index.search(chunks[2], 3)[1][0, 0] == ids[2]


def test_empty_index_answers_with_missing_ids():
    index = VectorIndex.build(np.zeros((0, 384), np.float32), np.zeros(0, np.int64), "auto")
    assert index.kind == "flat" and index.ntotal == 0
    scores, found = index.search(np.ones((2, 384), np.float32) / np.sqrt(384), 10)
    assert found.tolist() == [[-1], [-1]]


def test_k_beyond_size_is_clamped_and_unknown_kind_refused(data):
    chunks, ids, _ = data
    small = VectorIndex.build(chunks[:3], ids[:3], "flat")
    assert sorted(small.search(chunks[0], 10)[1][0].tolist()) == sorted(ids[:3].tolist())
    with pytest.raises(ValueError, match="kind"):
        VectorIndex.build(chunks[:3], ids[:3], "lsh")
    with pytest.raises(ValueError):
        VectorIndex.build(chunks[:3], ids[:2], "flat")


def test_approximate_segments_share_the_refine_budget_and_keep_recall(data):
    """Four pq_sq8 segments re-rank a quarter of one index's candidates each (a flat one
    takes no share), and together they find what one index of them all finds."""
    from index.vectors import REFINE_CANDIDATES, SegmentedVectors

    chunks, ids, questions = data
    quarters = np.array_split(np.arange(N), 4)
    parts = [VectorIndex.build(chunks[q], ids[q], "pq_sq8") for q in quarters]
    small = VectorIndex.build(chunks[:10], ids[:10] + 10 * N, "flat")
    whole = VectorIndex.build(chunks, ids, "pq_sq8")
    both = SegmentedVectors([*parts, small], np.zeros(0, dtype=np.int64), int(ids.max()) + 10 * N,
                            N + 10, 384)
    assert [p.candidates for p in parts] == [REFINE_CANDIDATES / 4] * 4
    SegmentedVectors([whole], np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)
    assert whole.candidates == REFINE_CANDIDATES
    assert small.kind == "flat" and both.parts[-1] is small
    split_only = SegmentedVectors(parts, np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)
    exact = VectorIndex.build(chunks, ids, "flat").search(questions, 10)[1]
    split = recall_at_10(split_only.search(questions, 10)[1], exact)
    assert split >= recall_at_10(whole.search(questions, 10)[1], exact) - 0.02 and split >= 0.9


class _Spy:
    """A real FAISS index whose searches record the thread that ran them, set an event,
    and can be slow."""

    def __init__(self, index: faiss.Index, seen: list[str], delay: float, began) -> None:
        self.index, self.seen, self.delay, self.began = index, seen, delay, began
        self.ntotal, self.d = index.ntotal, index.d

    def search(self, queries: np.ndarray, k: int, params=None) -> tuple[np.ndarray, np.ndarray]:
        import threading
        import time

        self.seen.append(threading.current_thread().name)
        self.began.set()
        time.sleep(self.delay)
        return self.index.search(queries, k, params=params)


def _spied(parts: list[VectorIndex], seen: list[str], delay: float = 0.0):
    """Spy on every part's searches, parts[0] slow by delay (so that the other thread takes
    the rest); the event returned is set when a search begins."""
    import threading

    began = threading.Event()
    for i, part in enumerate(parts):
        part.index = _Spy(part.index, seen, delay if i == 0 else 0.0, began)
    return began


def _flat_thirds(data) -> tuple[list[VectorIndex], VectorIndex]:
    chunks, ids, _ = data
    thirds = np.array_split(np.arange(N), 3)
    return ([VectorIndex.build(chunks[t], ids[t], "flat") for t in thirds],
            VectorIndex.build(chunks, ids, "flat"))


def test_segments_are_searched_by_two_threads_with_the_results_of_one(data, monkeypatch):
    """With a free CPU, a helper thread takes segments from the same list as the asking
    thread; the merged top-k is what one exact index of all the vectors gives."""
    import index.vectors as vectors
    from index.vectors import SegmentedVectors

    chunks, ids, questions = data
    parts, whole = _flat_thirds(data)
    monkeypatch.setattr(vectors, "SHARED_MIN", 0)
    monkeypatch.setattr(vectors, "cpu_free", lambda: True)
    seen: list[str] = []
    _spied(parts, seen, delay=0.3)
    both = SegmentedVectors(parts, np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)
    faiss.omp_set_num_threads(2)
    scores, found = both.search(questions[7], 10)
    assert faiss.omp_get_max_threads() == 2
    assert len(seen) == 3 and {name.split("_")[0] for name in seen} == {
        "MainThread", "citebot-segments"}
    want_scores, want = whole.search(questions[7], 10)
    assert found[0].tolist() == want[0].tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    monkeypatch.setattr(vectors, "cpu_free", lambda: False)  # no free CPU: one thread
    seen.clear()
    assert both.search(questions[7], 10)[1][0].tolist() == want[0].tolist()
    assert seen == ["MainThread"] * 3


def test_a_busy_helper_thread_never_delays_a_question(data, monkeypatch):
    """The asking thread searches every segment itself when the helper is busy; the queued
    help is cancelled, not waited for."""
    import threading
    import time

    import index.vectors as vectors
    from index.vectors import SegmentedVectors

    chunks, ids, questions = data
    parts, whole = _flat_thirds(data)
    monkeypatch.setattr(vectors, "SHARED_MIN", 0)
    monkeypatch.setattr(vectors, "cpu_free", lambda: True)
    both = SegmentedVectors(parts, np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)
    release = threading.Event()
    busy = vectors._helper_thread().submit(release.wait, 30)
    try:
        began = time.perf_counter()
        found = both.search(questions[:1], 10)[1]
        assert time.perf_counter() - began < 5
        assert found[0].tolist() == whole.search(questions[0], 10)[1][0].tolist()
    finally:
        release.set()
    assert busy.result() is True


def test_cpu_free_reads_the_running_tasks(tmp_path, monkeypatch):
    import index.machine as machine

    monkeypatch.setattr(machine, "usable_cpus", lambda: 2)
    file = tmp_path / "loadavg"
    file.write_text("0.50 0.40 0.30 1/120 4242\n")
    assert machine.cpu_free(file)
    file.write_text("3.10 2.00 1.00 2/120 4242\n")
    assert not machine.cpu_free(file)
    file.write_text("garbage\n")
    assert not machine.cpu_free(file)
    assert not machine.cpu_free(tmp_path / "missing")


def test_bm25_runs_beside_a_helper_searching_the_segments(data, monkeypatch):
    """search_beside: the asking thread computes beside() while the helper thread has begun
    the segments; the results are those of searching and computing one after the other."""
    import threading

    import index.vectors as vectors
    from index.vectors import SegmentedVectors

    chunks, ids, questions = data
    parts, whole = _flat_thirds(data)
    monkeypatch.setattr(vectors, "SHARED_MIN", 0)
    monkeypatch.setattr(vectors, "cpu_free", lambda: True)
    seen: list[str] = []
    helping = _spied(parts, seen)
    both = SegmentedVectors(parts, np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)

    def beside(shared: bool) -> tuple[bool, str]:
        assert shared
        return helping.wait(10), threading.current_thread().name

    (scores, found), (overlapped, name) = both.search_beside(questions[11], 10, beside)
    assert overlapped and name == "MainThread"
    assert seen[0].startswith("citebot-segments")  # the helper took the first part
    assert found[0].tolist() == whole.search(questions[11], 10)[1][0].tolist()


def test_a_forked_child_searches_with_its_own_helper(data, monkeypatch):
    """Threads do not survive fork: a child process starts its own helper thread, which
    then takes segments as the parent's did."""
    import json
    import os

    import index.vectors as vectors

    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    monkeypatch.setattr(vectors, "SHARED_MIN", 0)
    monkeypatch.setattr(vectors, "cpu_free", lambda: True)
    chunks, ids, questions = data
    parts, whole = _flat_thirds(data)
    seen: list[str] = []
    _spied(parts, seen, delay=0.3)
    both = vectors.SegmentedVectors(parts, np.zeros(0, dtype=np.int64), int(ids.max()) + 1,
                                    N, 384)
    both.search(questions[0], 10)  # the parent's helper thread exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report which threads searched, and the ids found
        try:
            seen.clear()
            found = both.search(questions[1], 10)[1][0].tolist()
            names = sorted({name.split("_")[0] for name in seen})
            os.write(write, json.dumps([names, found]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        names, found = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert names == ["MainThread", "citebot-segments"]
    assert found == whole.search(questions[1], 10)[1][0].tolist()
