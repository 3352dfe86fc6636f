"""Sentence embeddings: one Embedder, L2-normalised float32 vectors, three interchangeable paths.

- "torch": sentence-transformers in fp32, the reference every other path is checked against.
- "onnx": an ONNX export of the same transformer run by ONNX Runtime, tokenised by `tokenizers`
  and mean-pooled in numpy. It starts in a fraction of a second without importing torch, so
  queries and small inputs use it.
- "bf16": the transformer's weights in bfloat16 under torch, for bulk indexing on CPUs that do
  bf16 fast.

This module loads the model and routes each call to a path. `prepare()`, called by index build,
makes the export (index/onnx_export.py) and settles which bulk path is fastest on this machine
(index/bulk_path.py); both are kept in `cache_dir`, so each is made once per model and machine.
Routing reads only settings no measurement changes: `encode_on` runs a named path for whoever
needs one (the measurement, Ray workers), so a question asked meanwhile stays torch-free.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import bulk_path
from .bulk_path import MIN_COSINE
from .errors import CitebotError
from .machine import batch_workers, cpu_model, torch_threads, version
from .model_files import DEFAULT_MODEL, ModelShape, read_shape, resolve_model
from .onnx_export import export_folder, make_export, open_export, session_forward
from .pooling import Forward, pad, pooled_batches, word_vectors

__all__ = ["BACKENDS", "DEFAULT_MODEL", "MIN_COSINE", "Embedder", "resolve_model"]

log = logging.getLogger("citebot.embed")

BACKENDS = ("auto", *bulk_path.PATHS)
# Inputs up to this size go through ONNX: at ~40k chars/s that beats the ~5 s torch import,
# and it keeps `ask` (which also embeds candidate sentences) torch-free.
_SMALL_CHARS = 100_000
_SMALL_BATCH = 32  # texts: fewer are tokenized one by one (encode_batch wakes a thread pool)


class Embedder:
    """Turns texts into normalised vectors with a sentence-transformers model.

    Queries and other small inputs (up to `small_chars` characters per call) always take the
    ONNX path when the export exists, else the reference.

    Args:
        device: "cpu", "cuda" or "auto" (cuda when available); only bulk work uses a GPU.
        backend: the bulk path: "auto" (measured on this machine), or "torch", "bf16", "onnx".
        cache_dir: where the ONNX export and the bulk measurement are kept; None means no
            export, so queries take the reference path.
        cpus: how many CPUs bulk work may use (default: all this process may run on).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 32,
                 backend: str = "auto", cache_dir: Path | None = None,
                 cpus: int | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.name, self.path = resolve_model(model)
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.cpus = cpus
        self._st = None
        self._bf16: Forward | None = None
        self._fp32: Forward | None = None
        self._tokenizer = None
        self._model_tokenizer = None
        self._session: Any = None  # None: not opened yet; False: unusable, already logged
        self._export_checked = False  # prepare() found the export sound in this process
        self._bulk: str | None = None
        self._device_used: str | None = None
        self._last = ""
        # The bot embeds from worker threads. One lock loads things once; measuring the bulk
        # path has its own, so a question never waits for a measurement.
        self._lock = threading.RLock()
        self._bulk_lock = threading.Lock()
        self.small_chars = _SMALL_CHARS
        if self.path is None:  # a hub name: only sentence-transformers knows its shape
            st = self._load()
            shape = ModelShape(int(st.max_seq_length), int(st.get_sentence_embedding_dimension()),
                               False, False)
        else:
            shape = read_shape(self.path)
        self.max_tokens, self.dim = shape.max_tokens, shape.dim
        self._lower, self._fast_ok = shape.lower_case, shape.mean_pooled


    # -- tokenisers ----------------------------------------------------------------------

    @property
    def tokenizer(self):
        """The tokenizer without truncation or padding, for counting."""
        if self._tokenizer is None:
            self._tokenizer = self._new_tokenizer()
            self._tokenizer.no_truncation()
        return self._tokenizer

    @property
    def model_tokenizer(self):
        """The tokenizer as the model sees text: special tokens, truncated to max_tokens."""
        if self._model_tokenizer is None:
            self._model_tokenizer = self._new_tokenizer()
            self._model_tokenizer.enable_truncation(max_length=self.max_tokens)
        return self._model_tokenizer

    def _new_tokenizer(self):
        from tokenizers import Tokenizer

        if self.path is not None and (self.path / "tokenizer.json").exists():
            tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        else:
            tok = Tokenizer.from_str(self._load().tokenizer.backend_tokenizer.to_str())
        tok.no_padding()
        return tok

    @property
    def counts_add_up(self) -> bool:
        """Whether texts joined by whitespace count as the sum of their parts: the tokenizer
        splits at whitespace before anything else and its normaliser keeps whitespace."""
        from tokenizers import normalizers, pre_tokenizers

        splits = (pre_tokenizers.BertPreTokenizer, pre_tokenizers.Whitespace,
                  pre_tokenizers.WhitespaceSplit)
        keeps = (normalizers.BertNormalizer, normalizers.Lowercase, normalizers.NFC,
                 normalizers.NFD, normalizers.NFKC, normalizers.NFKD, normalizers.StripAccents)
        tok = self.tokenizer
        return isinstance(tok.pre_tokenizer, splits) and (
            tok.normalizer is None or isinstance(tok.normalizer, keeps))

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, without the [CLS]/[SEP] the model adds."""
        if not texts:
            return []
        tok = self.tokenizer
        if len(texts) < _SMALL_BATCH:  # no thread pool to wake: far faster for a few texts
            return [len(tok.encode(t, add_special_tokens=False).ids) for t in texts]
        return [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]

    # -- public API ----------------------------------------------------------------------

    def prepare(self, *, measure_bulk: bool = True) -> None:
        """Make or check the ONNX export and settle the bulk path; slow only the first time.

        With measure_bulk False the bulk path is measured when bulk work first comes, so a
        small first index (which the ONNX path embeds anyway) does not wait for it.
        """
        where = self.onnx_dir
        if where is not None and not self._export_checked:  # each update calls prepare()
            session, problem, _ = open_export(where, self.name, self._pooled, thorough=True)
            if session is None:
                try:
                    self._export(where)
                    session, problem, _ = open_export(where, self.name, self._pooled)
                except Exception as exc:  # a failed export only costs speed
                    problem = f"the ONNX export failed ({type(exc).__name__}: {exc})"
            if session is None:
                log.warning("%s; queries use the reference model", problem)
            self._session = session or False
            self._export_checked = session is not None
        if measure_bulk and self._fast_ok and self.backend == "auto" and self._device() == "cpu":
            self._bulk_choice()

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts in batches; progress(n) is called after each batch of n texts."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        path = self.route(texts)
        self._last = path
        return self.encode_on(path, texts, batch_size=batch_size, progress=progress)

    def encode_on(self, path: str, texts: Sequence[str], *, batch_size: int | None = None,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts on the named path ("torch", "bf16" or "onnx"), whatever encode() would
        choose; for comparing paths and for workers told which path a job uses."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bs = batch_size or self.batch_size
        workers, threads = batch_workers(self.cpus)
        if path == "torch":
            return self._encode_reference(texts, bs, progress)
        if path == "onnx":
            session = self._onnx()
            if session is None:
                raise CitebotError(f"no usable ONNX export of {self.name}")
            return self._batched(texts, session_forward(session), bs, progress,
                                 1 if len(texts) <= bs else workers)
        if path == "bf16":
            forward = self._bf16_model()
            with torch_threads(threads):
                return self._batched(texts, forward, bs, progress, workers)
        raise ValueError(f"path must be one of {', '.join(bulk_path.PATHS)}, not {path!r}")

    def encode_query(self, text: str) -> np.ndarray:
        """One text's vector, by the torch-free ONNX path when the export exists."""
        return self.encode([text])[0]

    def word_vectors(self, texts: Sequence[str]) -> list[tuple[list[str], np.ndarray]]:
        """Each text's words with their contextual vectors (the mean of the word's pieces in
        the transformer's last layer, normalised), in one batch: by ONNX when the export
        exists, else by the reference model in fp32. For a few short texts (an answer's)."""
        texts = list(texts)
        if not texts:
            return []
        session = self._onnx() if self._fast_ok else None
        forward = session_forward(session) if session is not None else self._torch_forward()
        return word_vectors(self.model_tokenizer, texts, forward, lower=self._lower)

    def route(self, texts: Sequence[str]) -> str:
        """The path encode() takes for these texts: small inputs ONNX, bulk work the measured
        or configured one."""
        if not self._fast_ok:
            return "torch"
        if self.backend == "onnx" or sum(map(len, texts)) <= self.small_chars:
            return "onnx" if self._onnx() is not None else "torch"
        if self.backend in ("torch", "bf16"):
            return self.backend
        if self._device() != "cpu":
            return "torch"
        return self._bulk_choice()

    @property
    def backend_used(self) -> str:
        """The path of the last encode() ("onnx", "bf16" or "torch"); before one, a query's."""
        if self._last:
            return self._last
        return "onnx" if self.has_export else "torch"

    @property
    def has_export(self) -> bool:
        """Whether this model's ONNX export is in cache_dir (made by prepare())."""
        where = self.onnx_dir
        return where is not None and (where / "meta.json").exists()

    @property
    def needs_export(self) -> bool:
        """Whether prepare() will have to make the export (about a minute, once per machine)."""
        where = self.onnx_dir
        return where is not None and not (where / "meta.json").exists()

    @functools.cached_property
    def onnx_dir(self) -> Path | None:
        """The folder of this model's ONNX export in cache_dir (it may not exist yet); worked
        out once: it is keyed by the weights, which a process loads once (export_folder)."""
        if self.cache_dir is None or not self._fast_ok:
            return None
        return export_folder(self.cache_dir, self.name, self.path)

    # -- the bulk path -------------------------------------------------------------------

    def _device(self) -> str:
        if self._device_used is None:
            device = self.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._device_used = device
        return self._device_used

    def _bulk_choice(self) -> str:
        """The bulk path for this machine: measured once, then read from cache_dir."""
        if self._bulk is None:
            with self._bulk_lock:
                if self._bulk is None:
                    key = self._bulk_key()
                    choice = bulk_path.remembered(self.cache_dir, key)
                    if choice is None:
                        found = self._measure()
                        bulk_path.remember(self.cache_dir, key, found)
                        choice = found["backend"]
                    self._bulk = choice
        return self._bulk

    def _bulk_key(self) -> str:
        """What a saved verdict holds for: this model, export, CPU and software."""
        where = self.onnx_dir
        return "|".join([self.name, where.name if where else "-", cpu_model(),
                         f"{batch_workers(self.cpus)[0]} cpus", f"torch {version('torch')}",
                         f"onnx {self._onnx() is not None}",
                         f"calibration {bulk_path.CALIBRATION_FORMAT}"])

    def _measure(self) -> dict[str, Any]:
        """Time the bulk paths on a synthetic sample; the fastest that stays accurate wins."""
        paths = ["torch", "bf16"] + (["onnx"] if self._onnx() is not None else [])
        # At least two batches per worker: the fast paths run whole batches in parallel, so
        # fewer texts than that would time them on one core and undersell them.
        count = 2 * self.batch_size * batch_workers(self.cpus)[0]
        texts = bulk_path.calibration_texts(self.model_tokenizer.get_vocab(), self.max_tokens,
                                            count)
        return bulk_path.measure(self.encode_on, paths, texts)

    # -- the reference and bf16 paths (torch) ---------------------------------------------

    def _load(self):
        with self._lock:
            if self._st is None:
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()  # its "Loading weights" bar is noise here
                    self._st = SentenceTransformer(str(self.path or self.name),
                                                   device=self._device())
                except Exception as exc:  # any load failure is one message for the user
                    raise CitebotError(
                        f"cannot load the embedding model {self.name}: {exc}") from exc
        return self._st

    def _encode_reference(self, texts: list[str], bs: int,
                          progress: Callable[[int], None] | None) -> np.ndarray:
        st = self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Sorting by length keeps padding low inside each batch.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for i in range(0, len(texts), bs):
            idx = order[i:i + bs]
            vecs = st.encode([texts[j] for j in idx], batch_size=bs,
                             normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
            out[idx] = vecs.astype(np.float32, copy=False)
            if progress:
                progress(len(idx))
        return out

    def _bf16_model(self) -> Forward:
        import torch

        with self._lock:
            if self._bf16 is None:
                self._bf16 = self._forward_of(torch.bfloat16)
        return self._bf16

    def _torch_forward(self) -> Forward:
        """The reference transformer in fp32 as a Forward (its last hidden state)."""
        import torch

        with self._lock:
            if self._fp32 is None:
                self._fp32 = self._forward_of(torch.float32)
        return self._fp32

    def _forward_of(self, dtype) -> Forward:
        """The reference transformer in dtype on the CPU, as a Forward (call under
        self._lock): the loaded model itself when it is that already (fp32 on the CPU), else
        a copy, so the loaded one stays as encode() uses it."""
        import torch

        model = self._load()[0].auto_model
        first = next(model.parameters())
        if (first.device.type, first.dtype) != ("cpu", dtype):
            model = copy.deepcopy(model).to("cpu", dtype)
        model.eval()

        def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            return out.last_hidden_state.float().numpy()

        return forward

    # -- the ONNX path -------------------------------------------------------------------

    def _onnx(self):
        """The ONNX Runtime session, or None (logged once) when no usable export exists."""
        if self._session is None:
            with self._lock:
                if self._session is None:
                    where = self.onnx_dir
                    session, problem, damaged = (
                        open_export(where, self.name, self._pooled) if where is not None
                        else (None, "no cache folder for an ONNX export", False))
                    if session is None:
                        log.log(logging.WARNING if damaged else logging.INFO,
                                "%s; embedding with the reference model", problem)
                    self._session = session or False
        return self._session or None

    def _export(self, where: Path) -> None:
        # A padded row in the sample input, so tracing records the attention-mask path.
        sample = pad(self.model_tokenizer.encode_batch(["a b c d e f g h", "a b"]))
        make_export(where, name=self.name, model=self._load(), pooled=self._pooled,
                    sample=sample, max_tokens=self.max_tokens)

    # -- shared batching -----------------------------------------------------------------

    def _pooled(self, forward: Forward, texts: list[str]) -> np.ndarray:
        """texts through forward on this thread, for checking an export."""
        return self._batched(texts, forward, 8, None, 1)

    def _batched(self, texts: list[str], forward: Forward, bs: int,
                 progress: Callable[[int], None] | None, workers: int) -> np.ndarray:
        return pooled_batches(self.model_tokenizer, texts, forward, bs=bs, dim=self.dim,
                              lower=self._lower, progress=progress, workers=workers)


