"""Bulk embedding on a Ray cluster, for rebuilds that must embed millions of texts.

Ray Data streams the texts through a pool of actors (`map_batches`); each actor loads the model
once (on a GPU when its worker has one) and embeds its batches on the path this process would
have used, so the vectors are the in-process ones. Small inputs (queries, an update of a few
chunks) stay in this process: a round trip through the cluster would only slow them.

Ray is an extra (`pip install 'citebot[ray]'`), imported only when bulk work is sent to it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .embed import Embedder
from .errors import CitebotError

LOCAL = "local"  # the address meaning: a Ray on this machine (or the one RAY_ADDRESS names)
INSTALL = "pip install 'citebot[ray]'"
_BATCHES_PER_CALL = 8  # texts an actor receives at once, in the embedder's batches
_MAX_BLOCKS = 10_000


def import_ray():
    """The ray module, or a CitebotError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra: ray[data])
    except ImportError as exc:
        raise CitebotError(f"bulk embedding on Ray needs the Ray extra: {INSTALL}") from exc
    return ray


class RayEmbedder:
    """An Embedder whose bulk work runs on a Ray cluster; everything else is the local one's.

    Args:
        local: the embedder this process uses; its settings are shipped to the actors.
        address: a Ray address ("ray://head:10001", "head:6379", "auto"), or "local" for
            ray.init() with no address. An already initialised Ray is used as it is.
        actors: how many actors embed (default: one per GPU, else one per CPU of the cluster).
        min_chars: bulk work starts above this many characters (default: local.small_chars).
        init_args: more keyword arguments for ray.init (tests pass num_cpus, _temp_dir).
    """

    def __init__(self, local: Embedder, address: str = LOCAL, *, actors: int | None = None,
                 min_chars: int | None = None, init_args: dict[str, Any] | None = None) -> None:
        self.local = local
        self.address = address
        self.actors = actors
        self.min_chars = local.small_chars if min_chars is None else min_chars
        self.init_args = init_args or {}
        self.workers: set[int] = set()  # process ids of the actors of the last job
        self._ray = import_ray()  # fail now, before any work, when the extra is missing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts: on the cluster when they are bulk work, else in this process."""
        texts = list(texts)
        if not texts or sum(map(len, texts)) <= self.min_chars:
            return self.local.encode(texts, batch_size=batch_size, progress=progress)
        # The path this process would take (measured once per machine, as in-process).
        path = self.local.route(texts)
        return self._on_cluster(texts, path, batch_size or self.local.batch_size, progress)

    def _on_cluster(self, texts: list[str], path: str, bs: int,
                    progress: Callable[[int], None] | None) -> np.ndarray:
        ray = self._ray
        self._connect()
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = self.actors or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
        settings = {"model": self.local.name,  # what the worker resolves on its own machine
                    "device": self.local.device, "batch_size": bs,
                    "backend": self.local.backend,
                    "cache_dir": str(self.local.cache_dir) if self.local.cache_dir else None}
        # Blocks of one call each, and one call in flight per actor: otherwise the first actor
        # to finish loading takes every block and the others idle.
        per_call = bs * _BATCHES_PER_CALL
        blocks = max(actors, min(-(-len(texts) // per_call), _MAX_BLOCKS))
        data = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)],
                                   override_num_blocks=blocks)
        pool = ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)
        vectors = data.map_batches(
            EmbedActor, fn_constructor_args=(settings, path), batch_format="numpy",
            batch_size=per_call, compute=pool, num_cpus=1, num_gpus=1 if gpus else 0)
        out = np.zeros((len(texts), self.local.dim), dtype=np.float32)
        self.workers = set()
        for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
            out[batch["row"]] = batch["vector"]
            self.workers.update(int(p) for p in np.unique(batch["pid"]))
            if progress:
                progress(len(batch["row"]))
        return out

    def _connect(self) -> None:
        ray = self._ray
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is the bar
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notes are not the user's
        if ray.is_initialized():
            return
        try:
            ray.init(address=None if self.address == LOCAL else self.address,
                     include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, **self.init_args)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise CitebotError(f"cannot reach the Ray cluster at {self.address}: {exc}") from exc


class EmbedActor:
    """One Ray actor: loads the model once, then embeds the batches Ray Data hands it."""

    def __init__(self, settings: dict[str, Any], path: str) -> None:
        import ray

        on_gpu = bool(ray.get_gpu_ids())
        self.embedder = Embedder(settings["model"], device="cuda" if on_gpu else "cpu",
                                 batch_size=settings["batch_size"], backend=settings["backend"],
                                 cache_dir=settings["cache_dir"], cpus=1)
        self.path = "torch" if on_gpu else path  # fp32 on the GPU: the reference itself
        if self.path == "onnx":
            self.embedder.prepare(measure_bulk=False)  # makes the export on a new machine
            if self.embedder.route(["x"]) != "onnx":
                self.path = "torch"  # no usable export here: the reference, as in-process
        self.embedder.encode_on(self.path, ["load the model now, once"])
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vecs = self.embedder.encode_on(self.path, [str(t) for t in batch["text"]])
        return {"row": batch["row"], "vector": vecs,
                "pid": np.full(len(vecs), self.pid, dtype=np.int64)}
