"""A STAND-IN embedding for benchmarks and tests that time or check the store, not the model.

HashEmbedder is the real Embedder (real tokenizer, so real chunking and token counts) whose
vectors are made from a hash of each text: unit vectors, deterministic, free. Its answers mean
nothing; equal texts get equal vectors and different texts different ones, which is all the
store relies on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from index.embed import Embedder


class HashEmbedder(Embedder):
    """Embedder with the model replaced by a hash of the text (labelled "stand-in")."""

    def prepare(self, *, measure_bulk: bool = True) -> None:
        return None

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"),
                                                  digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        if progress and len(texts):
            progress(len(texts))
        return out

    def word_vectors(self, texts: Sequence[str]) -> list[tuple[list[str], np.ndarray]]:
        """Each text's words with a hash vector each (the model is never loaded)."""
        return [(words, self.encode(words)) for words in (t.lower().split() for t in texts)]
