"""Hybrid retrieval: dense (FAISS) and lexical (BM25) candidates, fused into one ranking, the
best of them re-ranked by the learned passage scorer (answer_model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .answer_model import (
    PASSAGE_FEATURES,
    AnswerModel,
    Terms,
    load_model,
    passage_features,
    passage_matrix,
    question_terms,
)
from .records import Chunk, Hit
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
        rerank: how many of the best fused candidates the learned passage scorer re-orders
            (0: the fused order as it is).
        sentence_slot: the candidate holding the sentence closest to the question ranks no
            lower than this after re-ranking (0: anywhere). The re-ranker leans on the
            question's words; a passage that says the answer in other words ("Johnson" for
            "boris") may lose them all and still hold the closest sentence.
    """

    candidates: int = setting(50, min=1, max=10_000)
    dense_weight: float = setting(0.6, max=1)
    sentence_weight: float = setting(0.7, max=10)
    correct_spelling: bool = True
    rerank: int = setting(30, max=1000)
    sentence_slot: int = setting(5, max=1000)


@dataclass(frozen=True)
class Candidates:
    """A query's candidate passages in fused order, with what ranking them read."""

    chunks: list[Chunk]
    dense: np.ndarray
    lexical: np.ndarray
    fused: np.ndarray
    stored: dict[int, ChunkSentences]
    features: np.ndarray  # one row of answer_model.PASSAGE_FEATURES per chunk
    terms: Terms


def hybrid_search(snap: Snapshot, query: str, qvec: np.ndarray, k: int,
                  settings: RetrievalSettings = RetrievalSettings()) -> list[Hit]:
    """The k best chunks for a query: the fused candidates, re-ranked by the passage scorer."""
    return search_with_sentences(snap, query, qvec, k, settings)[0]


def search_with_sentences(snap: Snapshot, query: str, qvec: np.ndarray, k: int,
                          settings: RetrievalSettings = RetrievalSettings(),
                          model: AnswerModel | None = None
                          ) -> tuple[list[Hit], dict[int, ChunkSentences]]:
    """hybrid_search, and the stored sentences of the hits' chunks, by chunk id: ranking has
    read them already, so answering does not read them again."""
    model = model or (load_model() if settings.rerank else None)
    cands = candidates(snap, query, qvec, max(k, settings.rerank), settings)
    if cands is None:
        return [], {}
    learned = model.passage.logits(cands.features) if model is not None else None
    hits = ranked_hits(snap, cands, learned, k, settings.sentence_slot)
    ids = [h.chunk.id for h in hits if h.chunk.id is not None]
    missing = [i for i in ids if i not in cands.stored]
    if missing:
        cands.stored.update(snap.sentences(missing))
    return hits, {i: cands.stored[i] for i in ids}


def candidates(snap: Snapshot, query: str, qvec: np.ndarray, depth: int,
               settings: RetrievalSettings = RetrievalSettings()) -> Candidates | None:
    """The `depth` best candidates by the fused score, with their passage features (None for
    an empty index)."""
    if depth <= 0:
        return None
    qvec = qvec.astype(np.float32)
    with_sentences = bool(settings.sentence_weight or settings.rerank)
    found = _gather(snap, query, qvec, max(settings.candidates, depth), with_sentences)
    if found is None:
        return None
    ids, dense, lex, stored, terms = found.ids, found.dense, found.lexical, found.stored, \
        found.terms
    top = float(lex.max()) if len(lex) else 0.0
    lex_norm = lex / top if top > 0 else np.zeros_like(lex)
    w = settings.dense_weight
    fused = w * dense + (1.0 - w) * lex_norm
    best = np.zeros(len(ids), dtype=np.float32)
    if with_sentences:
        best = _best_sentence(stored, ids, qvec)
        fused = fused + settings.sentence_weight * best
    order = np.argsort(-fused, kind="stable")[:depth]
    by_id = snap.chunks([int(ids[i]) for i in order])
    chunks = [by_id[int(ids[i])] for i in order]
    feats = []
    if settings.rerank:
        dense_top, best_top = float(dense[order].max()), float(best[order].max())
        for rank, (i, c) in enumerate(zip(order, chunks, strict=True), 1):
            got = stored.get(int(ids[i]))
            cos = got.vectors @ qvec if got is not None and len(got.spans) else np.zeros(0)
            texts = [c.text[a - c.start:b - c.start] for a, b in got.spans] if got else []
            feats.append(passage_features(terms, c.text, float(dense[i]), dense_top,
                                          float(lex_norm[i]), cos, texts, best_top, rank))
    return Candidates(chunks, dense[order], lex_norm[order], fused[order], stored,
                      passage_matrix(feats), terms)


def ranked_hits(snap: Snapshot, cands: Candidates, learned: np.ndarray | None,
                k: int, sentence_slot: int = 0) -> list[Hit]:
    """The k best candidates as hits: by the learned score when given (its probability is
    the hit's score), else by the fused score; with the learned score, the candidate with the
    closest sentence ranks no lower than sentence_slot (when not 0)."""
    if learned is None:
        order, scores = np.arange(len(cands.chunks)), cands.fused
    else:
        order = np.argsort(-learned, kind="stable")
        scores = 1.0 / (1.0 + np.exp(-learned))
        if sentence_slot and len(order) > sentence_slot:
            order = keep_in_slot(order, int(np.argmax(
                cands.features[:, PASSAGE_FEATURES.index("best_sentence")])), sentence_slot)
    sources = snap.sources({c.source_id for c in cands.chunks})
    hits = []
    for rank, i in enumerate(order[:k], 1):
        chunk = cands.chunks[int(i)]
        hits.append(Hit(rank=rank, score=float(scores[i]), chunk=chunk,
                        source=sources[chunk.source_id], dense=float(cands.dense[i]),
                        lexical=float(cands.lexical[i])))
    return hits


def keep_in_slot(order: np.ndarray, item: int, slot: int) -> np.ndarray:
    """order with item moved up to position slot (1-based) when it ranks lower."""
    at = int(np.flatnonzero(order == item)[0])
    if at < slot:
        return order
    rest = np.delete(order, at)
    return np.insert(rest, slot - 1, item)


def _best_sentence(stored: dict[int, ChunkSentences], ids: np.ndarray,
                   qvec: np.ndarray) -> np.ndarray:
    """Each candidate's highest sentence cosine (0 when it has no sentence)."""
    out = np.zeros(len(ids), dtype=np.float32)
    for j, cid in enumerate(ids.tolist()):
        got = stored.get(cid)
        if got is not None and len(got.spans):
            out[j] = float((got.vectors @ qvec).max())
    return out


@dataclass(frozen=True)
class _Pool:
    """The union of the pool best chunks by cosine and by BM25, with what ranking reads."""

    ids: np.ndarray
    dense: np.ndarray  # exact cosines
    lexical: np.ndarray  # BM25 scores
    stored: dict[int, ChunkSentences]  # the candidates' sentences, when asked for
    terms: Terms


def _gather(snap: Snapshot, query: str, qvec: np.ndarray, pool: int, sentences: bool
            ) -> _Pool | None:
    """The union of the pool best chunks by cosine and by BM25 (None for an empty index),
    with their stored sentences when `sentences`.

    A store that searches itself (Milvus: milvus_generation.Generation.candidates) gathers
    the same union in the engine; candidates() then fuses both the same way.
    """
    if hasattr(snap, "candidates"):
        got = snap.candidates(query, qvec, pool)
        if not len(got.ids):
            return None
        return _Pool(got.ids, got.dense, got.lexical,
                     snap.sentences(got.ids.tolist()) if sentences else {},
                     question_terms(query, snap.lexical))
    n = snap.vectors.ntotal
    if n == 0:
        return None
    pool = min(n, pool)

    def lexical_side(shared: bool) -> tuple:
        # BM25 and the question's terms; with a helper thread searching the vector segments
        # meanwhile, the rows of the BM25 candidates too: at 1M chunks about a millisecond
        # more of a question then runs beside FAISS (docs/index-growth.md). Alone, all rows
        # are read in one query afterwards.
        lex_ids, lex_all = snap.lexical.search(query, pool)
        rows = lex_ids.tolist() if shared else []
        return (lex_ids, lex_all, dict(zip(rows, snap.embeddings(rows), strict=True)),
                snap.sentences(rows) if sentences else {}, question_terms(query, snap.lexical))

    (_, dense_ids), (lex_ids, lex_all, vecs, stored, terms) = snap.vectors.search_beside(
        qvec, pool, lexical_side)
    ids = np.unique(np.concatenate([dense_ids[0][dense_ids[0] >= 0], lex_ids])).astype(np.int64)
    rest = [i for i in ids.tolist() if i not in vecs]
    matrix = snap.embeddings(rest)  # every candidate's, in order, when none was read beside
    if sentences:
        stored.update(snap.sentences(rest))
    if vecs:
        vecs.update(zip(rest, matrix, strict=True))
        matrix = np.stack([vecs[i] for i in ids.tolist()])
    # Exact cosines for every candidate, whatever approximate index found them.
    return _Pool(ids, matrix @ qvec, lex_all[ids], stored, terms)
