"""Hybrid retrieval: dense (FAISS) and lexical (BM25) candidates, fused into one ranking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import Hit
from .settings import setting
from .store import ChunkSentences, Snapshot


@dataclass(frozen=True)
class RetrievalSettings:
    """How candidates are gathered, fused and re-ranked.

    Args:
        dense_weight: share of the chunk cosine against the BM25 score (scaled to the best
            candidate's) in the fused score.
        sentence_weight: weight of the best single sentence's cosine: a passage that holds one
            sentence close to the question beats one that is vaguely about it throughout.
        correct_spelling: search misspelt question words as the indexed word one edit away.
    """

    candidates: int = setting(50, min=1, max=10_000)
    dense_weight: float = setting(0.6, max=1)
    sentence_weight: float = 0.7
    correct_spelling: bool = True


def hybrid_search(snap: Snapshot, query: str, qvec: np.ndarray, k: int,
                  settings: RetrievalSettings = RetrievalSettings()) -> list[Hit]:
    """The k best chunks for a query: a weighted sum of chunk cosine, BM25 (scaled to the best
    candidate's) and the best sentence's cosine."""
    return _ranked(snap, query, qvec, k, settings)[0]


def search_with_sentences(snap: Snapshot, query: str, qvec: np.ndarray, k: int,
                          settings: RetrievalSettings = RetrievalSettings()
                          ) -> tuple[list[Hit], dict[int, ChunkSentences]]:
    """hybrid_search, and the stored sentences of the hits' chunks, by chunk id: ranking has
    read them already, so answering does not read them again."""
    hits, stored = _ranked(snap, query, qvec, k, settings)
    ids = [h.chunk.id for h in hits if h.chunk.id is not None]
    missing = [i for i in ids if i not in stored]  # none unless sentence_weight is 0
    if missing:
        stored.update(snap.sentences(missing))
    return hits, {i: stored[i] for i in ids}


def _ranked(snap: Snapshot, query: str, qvec: np.ndarray, k: int, settings: RetrievalSettings
            ) -> tuple[list[Hit], dict[int, ChunkSentences]]:
    """The hits, and the sentences read for ranking them (all candidates', or none)."""
    if k <= 0:
        return [], {}
    qvec = qvec.astype(np.float32)
    found = _candidates(snap, query, qvec, max(settings.candidates, k))
    if found is None:
        return [], {}
    ids, dense, lex = found
    top = float(lex.max()) if len(lex) else 0.0
    lex_norm = lex / top if top > 0 else np.zeros_like(lex)
    w = settings.dense_weight
    fused = w * dense + (1.0 - w) * lex_norm
    stored: dict[int, ChunkSentences] = {}
    if settings.sentence_weight:
        stored = snap.sentences(ids.tolist())
        fused = fused + settings.sentence_weight * _best_sentence(stored, ids, qvec)
    order = np.argsort(-fused, kind="stable")[:k]
    chunks = snap.chunks([int(ids[i]) for i in order])
    # A store that searches itself reads only the hits' sources; the local one holds them all.
    sources = snap.sources({c.source_id for c in chunks.values()}) \
        if hasattr(snap, "candidates") else snap.sources()
    hits = []
    for rank, i in enumerate(order, 1):
        chunk = chunks[int(ids[i])]
        hits.append(Hit(rank=rank, score=float(fused[i]), chunk=chunk,
                        source=sources[chunk.source_id], dense=float(dense[i]),
                        lexical=float(lex_norm[i])))
    return hits, stored


def _candidates(snap: Snapshot, query: str, qvec: np.ndarray, pool: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The union of the pool best chunks by cosine and by BM25: (ids, exact cosines, BM25
    scores), or None for an empty index.

    A store that searches itself (Milvus: milvus_generation.Generation.candidates) gathers
    the same union in the engine; _ranked then fuses both the same way.
    """
    if hasattr(snap, "candidates"):
        got = snap.candidates(query, qvec, pool)
        return (got.ids, got.dense, got.lexical) if len(got.ids) else None
    n = snap.vectors.ntotal
    if n == 0:
        return None
    pool = min(n, pool)
    _, dense_ids = snap.vectors.search(qvec.reshape(1, -1), pool)
    lex_all = snap.lexical.scores(query)
    lex_ids = snap.lexical.top(lex_all, pool)
    ids = np.unique(np.concatenate([dense_ids[0][dense_ids[0] >= 0], lex_ids])).astype(np.int64)
    # Exact cosines for every candidate, whatever approximate index found them.
    return ids, snap.embeddings(ids.tolist()) @ qvec, lex_all[ids]


def _best_sentence(stored: dict[int, ChunkSentences], ids: np.ndarray,
                   qvec: np.ndarray) -> np.ndarray:
    """Each candidate's highest sentence cosine (0 when it has no sentence)."""
    out = np.zeros(len(ids), dtype=np.float32)
    for j, cid in enumerate(ids.tolist()):
        got = stored.get(cid)
        if got is not None and len(got.spans):
            out[j] = float((got.vectors @ qvec).max())
    return out
