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
    from index.vectors import REFINE_K_FACTOR, SegmentedVectors

    chunks, ids, questions = data
    quarters = np.array_split(np.arange(N), 4)
    parts = [VectorIndex.build(chunks[q], ids[q], "pq_sq8") for q in quarters]
    small = VectorIndex.build(chunks[:10], ids[:10] + 10 * N, "flat")
    whole = VectorIndex.build(chunks, ids, "pq_sq8")
    both = SegmentedVectors([*parts, small], np.zeros(0, dtype=np.int64), int(ids.max()) + 10 * N,
                            N + 10, 384)
    factors = [faiss.downcast_index(p.index.index).k_factor for p in parts]
    assert factors == [REFINE_K_FACTOR // 4] * 4
    SegmentedVectors([whole], np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)
    assert faiss.downcast_index(whole.index.index).k_factor == REFINE_K_FACTOR
    assert small.kind == "flat" and both.parts[-1] is small
    split_only = SegmentedVectors(parts, np.zeros(0, dtype=np.int64), int(ids.max()) + 1, N, 384)
    exact = VectorIndex.build(chunks, ids, "flat").search(questions, 10)[1]
    split = recall_at_10(split_only.search(questions, 10)[1], exact)
    assert split >= recall_at_10(whole.search(questions, 10)[1], exact) - 0.02 and split >= 0.9
