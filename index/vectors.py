"""The FAISS side of the store: vectors keyed by chunk row id, inner product on unit vectors."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from .errors import IndexCorrupt


def choose_kind(n: int) -> str:
    """The FAISS index type for n vectors: exact search while it is fast enough."""
    return "flat"


class VectorIndex:
    """A FAISS index whose ids are chunk row ids."""

    def __init__(self, index: faiss.Index, kind: str) -> None:
        self.index = index
        self.kind = kind

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, kind: str = "auto") -> VectorIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        kind = choose_kind(len(vectors)) if kind == "auto" else kind
        if kind != "flat":
            raise ValueError(f"unknown vector index kind {kind!r}")
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        if len(vectors):
            index.add_with_ids(vectors, ids)
        return cls(index, kind)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal or 1))
        return self.index.search(queries, k)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, kind: str) -> VectorIndex:
        try:
            index = faiss.read_index(str(path))
        except Exception as exc:  # FAISS raises RuntimeError with C++ text on any damage
            raise IndexCorrupt(f"the vector file {path} is damaged") from exc
        return cls(index, kind)
