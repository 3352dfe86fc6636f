"""`citebot index check`: every way the stored rows, vectors and postings can disagree."""

from __future__ import annotations

import numpy as np

from .store import Snapshot

# A stored vector is a unit vector to this tolerance (sentence vectors are half precision).
NORM_TOLERANCE = 1e-3
SENTENCE_NORM_TOLERANCE = 1e-2


def problems(snap: Snapshot) -> list[str]:
    """What is wrong with an opened index; empty when it is sound."""
    found: list[str] = []
    m, sources = snap.manifest, snap.sources()
    n_rows = 0
    texts: dict[str, str] = {}
    live_ids = []
    for rows in snap.iter_chunks():
        for chunk, blob in rows:
            n_rows += 1
            live_ids.append(chunk.id)
            if chunk.source_id not in sources:
                found.append(f"chunk {chunk.id} belongs to no source")
                continue
            if chunk.source_id not in texts:
                texts = {chunk.source_id: snap.source_text(chunk.source_id)}
            if texts[chunk.source_id][chunk.start:chunk.end] != chunk.text:
                found.append(f"chunk {chunk.id} does not match its source's text")
            if len(blob) != 4 * m.dim:
                found.append(f"chunk {chunk.id} has a damaged embedding")
        if not found:
            found += _unit_vectors(np.stack([np.frombuffer(b, dtype=np.float32)
                                             for _, b in rows]), "chunk", NORM_TOLERANCE)
            sentences = snap.sentences([c.id for c, _ in rows])
            vecs = [s.vectors for s in sentences.values() if len(s.spans)]
            if vecs:
                found += _unit_vectors(np.concatenate(vecs), "sentence", SENTENCE_NORM_TOLERANCE)
        if len(found) > 20:
            break
    if len(sources) != m.sources or n_rows != m.chunks:
        found.append(f"the index lists {m.sources} sources/{m.chunks} chunks, the database "
                     f"holds {len(sources)}/{n_rows}")
    if snap.vectors.dim != m.dim:
        found.append(f"vectors have dimension {snap.vectors.dim}, manifest says {m.dim}")
    found += _segments_match(snap, np.array(live_ids, dtype=np.int64))
    return list(dict.fromkeys(found))


def _unit_vectors(vectors: np.ndarray, what: str, tolerance: float) -> list[str]:
    if not np.isfinite(vectors).all():
        return [f"some {what} vectors hold infinite or NaN values"]
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
    if len(norms) and float(np.abs(norms - 1).max()) > tolerance:
        return [f"some {what} vectors are not normalised (length {norms.min():.3g} to "
                f"{norms.max():.3g})"]
    return []


def _segments_match(snap: Snapshot, live: np.ndarray) -> list[str]:
    """Each segment's vectors hold exactly its live and removed chunk ids, and find them."""
    found = []
    dead = snap.vectors.dead
    live_set = set(live.tolist())
    held = 0
    for name in snap.segments:
        ids, (lo, hi) = snap.segment_ids(name)
        part = snap.vectors.parts[snap.segments.index(name)]
        held += part.ntotal - int(((dead >= lo) & (dead < hi)).sum())
        if len(ids):
            expected = np.union1d(live[(live >= lo) & (live < hi)],
                                  dead[(dead >= lo) & (dead < hi)])
            if not np.array_equal(np.sort(ids), expected):
                found.append(f"the vector file of {name} does not match the chunk rows")
                continue
        sample = live[(live >= lo) & (live < hi)]
        sample = sample[[0, len(sample) // 2, -1]] if len(sample) else sample
        if len(sample):
            vecs = snap.embeddings(sample.tolist())
            here = dead[(dead >= lo) & (dead < hi)]
            _, got = part.search(vecs, 1 + len(here))
            for row, s, v in zip(got, sample, vecs, strict=True):
                others = [int(h) for h in row if int(h) in live_set]
                if int(s) in row.tolist():
                    continue
                if not others or float(v @ snap.embeddings(others[:1])[0]) < 0.999:
                    found.append(f"the vector file of {name} does not match the chunk rows")
                    break
    if held != len(live):
        found.append(f"{held} live vectors for {len(live)} chunks")
    return found
