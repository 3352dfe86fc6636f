"""Hybrid retrieval: dense (FAISS) and lexical (BM25) candidates, fused into one ranking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import Hit
from .store import Snapshot


@dataclass(frozen=True)
class RetrievalSettings:
    """How candidates are gathered and fused."""

    candidates: int = 50
    dense_weight: float = 0.5


def hybrid_search(snap: Snapshot, query: str, qvec: np.ndarray, k: int,
                  settings: RetrievalSettings = RetrievalSettings()) -> list[Hit]:
    """The k best chunks for a query, by a weighted sum of cosine and normalised BM25."""
    n = snap.vectors.ntotal
    if n == 0 or k <= 0:
        return []
    pool = min(n, max(settings.candidates, k))
    _, dense_ids = snap.vectors.search(qvec.reshape(1, -1), pool)
    lex_all = snap.lexical.scores(query)
    lex_ids = np.argpartition(-lex_all, pool - 1)[:pool] if pool < n else np.arange(n)
    lex_ids = lex_ids[lex_all[lex_ids] > 0]
    ids = np.unique(np.concatenate([dense_ids[0][dense_ids[0] >= 0], lex_ids])).astype(np.int64)
    # Exact cosines for every candidate, whatever approximate index found them.
    dense = snap.embeddings(ids.tolist()) @ qvec.astype(np.float32)
    lex = lex_all[ids]
    top = float(lex.max()) if len(lex) else 0.0
    lex_norm = lex / top if top > 0 else np.zeros_like(lex)
    w = settings.dense_weight
    fused = w * dense + (1.0 - w) * lex_norm
    order = np.argsort(-fused, kind="stable")[:k]
    chunks = snap.chunks([int(ids[i]) for i in order])
    sources = snap.sources()
    hits = []
    for rank, i in enumerate(order, 1):
        chunk = chunks[int(ids[i])]
        hits.append(Hit(rank=rank, score=float(fused[i]), chunk=chunk,
                        source=sources[chunk.source_id], dense=float(dense[i]),
                        lexical=float(lex_norm[i])))
    return hits
