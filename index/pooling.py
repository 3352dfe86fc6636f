"""Sentence-transformers' mean pooling without torch: tokenise, run length-sorted batches through
a transformer forward (ONNX Runtime, or torch in bf16), mean-pool over real tokens, normalise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

# The transformer as a function: (token ids, attention mask) -> last hidden state.
Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pooled_batches(tokenizer: Any, texts: list[str], forward: Forward, *, bs: int, dim: int,
                   lower: bool = False, progress: Callable[[int], None] | None = None,
                   workers: int = 1) -> np.ndarray:
    """Tokenise texts, run length-sorted batches of bs through forward on workers threads,
    mean-pool and normalise; progress(n) after each batch of n."""
    texts = [t.strip().lower() if lower else t.strip() for t in texts]
    encs = tokenizer.encode_batch(texts)
    order = np.argsort([-len(e.ids) for e in encs], kind="stable")
    batches = [order[i:i + bs] for i in range(0, len(encs), bs)]

    def run(idx: np.ndarray) -> np.ndarray:
        ids, mask = pad([encs[j] for j in idx])
        return _mean_pool(forward(ids, mask), mask)

    out = np.empty((len(texts), dim), dtype=np.float32)
    # Whole batches run in parallel, one thread each: on few cores this beats splitting
    # every matrix product across threads, and it degrades gently under load.
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(run, batches) if workers > 1 else map(run, batches)
        for idx, vecs in zip(batches, results, strict=True):
            out[idx] = vecs
            if progress:
                progress(len(idx))
    return out


def pad(encs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of encodings, zero-padded to the longest."""
    width = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, e in enumerate(encs):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.ids)] = 1
    return ids, mask


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens, then L2 normalisation: the model's own pooling and Normalize."""
    weights = mask[..., None].astype(np.float32)
    vecs = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
    norms = np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return (vecs / norms).astype(np.float32, copy=False)


def word_vectors(tokenizer: Any, texts: list[str], forward: Forward, *,
                 lower: bool = False) -> list[tuple[list[str], np.ndarray]]:
    """Each text's words (as the tokenizer splits them) with their contextual vectors: the
    mean of the word's pieces in the transformer's last layer, normalised. One batch."""
    texts = [t.strip().lower() if lower else t.strip() for t in texts]
    encs = tokenizer.encode_batch(texts)
    ids, mask = pad(encs)
    hidden = forward(ids, mask)
    out = []
    for enc, h, text in zip(encs, hidden, texts, strict=True):
        spans: dict[int, list] = {}
        for i, (w, (a, b)) in enumerate(zip(enc.word_ids, enc.offsets, strict=True)):
            if w is not None:
                spans.setdefault(w, [a, b, []])
                spans[w][1] = b
                spans[w][2].append(i)
        if not spans:
            out.append(([], np.zeros((0, hidden.shape[-1]), dtype=np.float32)))
            continue
        vecs = np.array([h[idx].mean(axis=0) for _, _, idx in spans.values()], dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        out.append(([text[a:b] for a, b, _ in spans.values()], vecs))
    return out
