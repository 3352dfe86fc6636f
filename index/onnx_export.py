"""The ONNX export of a sentence-transformers model: made once per model and machine in the cache
folder, checked whenever it is opened, published in one rename so no reader sees half of one.

A missing or damaged export only costs speed: opening says why it cannot be used and the
embedder falls back to the reference model.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CitebotError
from .machine import version, write_json
from .pooling import Forward

log = logging.getLogger("citebot.embed")

EXPORT_FORMAT = 2
EXPORT_COSINE = 0.9999  # an fp32 export agrees to ~1e-7; less means a broken export
PROBE = "Which bulk path embeds chunks fastest on this machine without losing accuracy?"

# Runs a Forward over texts (tokenise, pad, pool, normalise): the embedder's own batching.
Pooled = Callable[[Forward, list[str]], np.ndarray]


def export_folder(cache_dir: Path, name: str, model_path: Path) -> Path:
    """Where the export of this model (these weights, this ONNX Runtime) lives.

    Keyed by the weights' content, not by where they lie: every install of the same model
    package (each clone's virtual environment) shares one export of ~90 MB instead of
    making its own.
    """
    weights = sorted(f for f in model_path.iterdir()
                     if f.suffix in (".safetensors", ".bin", ".pt", ".onnx"))
    ident = [name, str(EXPORT_FORMAT)]
    ident += [f"{f.name}:{d}" for f, d in zip(weights, weight_digests(cache_dir, weights),
                                                strict=True)]
    key = hashlib.sha256("|".join(ident).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name.rsplit("/", 1)[-1])[:40]
    return cache_dir / "onnx" / f"{slug}-{key}-ort{version('onnxruntime')}"


def weight_digests(cache_dir: Path, files: list[Path]) -> list[str]:
    """Each file's SHA-256, remembered in cache_dir by path, size and modification time:
    hashing 90 MB of weights takes ~0.2 s, once per install instead of at every start."""
    memo = cache_dir / "onnx" / "weights.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    out, fresh = [], False
    for f in files:
        stamp = _stamp(f)
        if not isinstance(known.get(stamp), str):
            known[stamp], fresh = _sha256(f), True
        out.append(known[stamp])
    if fresh:  # written without the entries of files gone or changed since
        known = {stamp: d for stamp, d in known.items() if _stamp(stamp.rsplit("|", 2)[0]) == stamp}
        try:
            write_json(memo, known)
        except OSError as exc:  # a read-only cache: hashed again next time
            log.debug("could not remember weight digests in %s: %s", memo, exc)
    return out


def _stamp(file: Path | str) -> str:
    """A weight file's path, size and modification time ("" when it is gone)."""
    try:
        stat = os.stat(file)
    except OSError:
        return ""
    return f"{Path(file).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def session_forward(session: Any) -> Forward:
    """The exported transformer behind an ONNX Runtime session, as a Forward."""
    return functools.partial(_run, session)


def open_export(where: Path, name: str, pooled: Pooled,
                *, thorough: bool = False) -> tuple[Any, str, bool]:
    """(session, "", False) for a sound export, else (None, why not, whether damaged).

    Opening checks file sizes and one probe vector, which catches truncation, garbage and
    most damage in milliseconds; `thorough` also compares content hashes (~0.1 s).
    """
    if not (where / "meta.json").exists():
        return None, f"no ONNX export of {name} in {where.parent} yet", False
    try:
        meta = json.loads((where / "meta.json").read_text())
        for file, (size, digest) in meta["files"].items():
            if (where / file).stat().st_size != size:
                raise ValueError(f"{file} has the wrong size")
            if thorough and _sha256(where / file) != digest:
                raise ValueError(f"{file} has changed since the export")
        session = _ort_session(where / "model.onnx")
        got = pooled(session_forward(session), [meta["probe"]])[0]
        if float(got @ np.asarray(meta["probe_vector"], dtype=np.float32)) < EXPORT_COSINE:
            raise ValueError("it gives wrong vectors")
    except Exception as exc:  # any damage means the file is not used
        return None, f"the ONNX export at {where} is unusable ({exc})", True
    return session, "", False


def make_export(where: Path, *, name: str, model: Any, pooled: Pooled,
                sample: tuple[np.ndarray, np.ndarray], max_tokens: int) -> None:
    """Export model's transformer to ONNX, optimise and check it, then publish it atomically.

    Args:
        model: the loaded SentenceTransformer, the reference the export must agree with.
        sample: token ids and mask of a small batch with a padded row, for tracing.
    """
    import onnxruntime as ort
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
            return self.inner(input_ids=input_ids,
                              attention_mask=attention_mask).last_hidden_state

    start = time.perf_counter()
    traced = LastHiddenState(copy.deepcopy(model[0].auto_model).to("cpu").eval())
    where.parent.mkdir(parents=True, exist_ok=True)
    for stale in where.parent.glob(f".tmp-{where.name}-*"):  # left by a killed export
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{where.name}-", dir=where.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is for every process
    try:
        names = ["input_ids", "attention_mask", "last_hidden_state"]
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # deprecation and tracer notes, all expected
            # The TorchScript exporter handles this model in seconds; dynamo=True would
            # need onnxscript, which citebot does not depend on.
            torch.onnx.export(traced, tuple(torch.from_numpy(a) for a in sample),
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
        probes = [PROBE, "hi", "citebot " * (2 * max_tokens)]
        want = model.encode(probes, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)
        got = pooled(session_forward(_ort_session(tmp / "model.onnx")), probes)
        cosine = float((got * want).sum(1).min())
        if cosine < EXPORT_COSINE:
            raise CitebotError(f"the export disagrees with the model (cosine {cosine:.6f})")
        files = {f.name: (f.stat().st_size, _sha256(f)) for f in tmp.iterdir()}
        write_json(tmp / "meta.json", {
            "format": EXPORT_FORMAT, "model": name, "files": files,
            "probe": PROBE, "probe_vector": want[0].tolist(),
            "torch": version("torch"), "onnxruntime": version("onnxruntime"),
            "created": datetime.now(UTC).isoformat(timespec="seconds")})
        _publish(tmp, where)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to ONNX in %.1f s: %s", name, time.perf_counter() - start, where)


def _run(session: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
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


def _sha256(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
