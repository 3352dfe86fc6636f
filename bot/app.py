"""Wiring shared by every interface: config values in, a ready Library out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from index import (
    DEFAULT_MODEL,
    CitebotError,
    Embedder,
    IndexNotFound,
    Library,
    is_web_url,
    resolve_model,
)

from .config import Config, library_settings

# Nothing may download from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def index_dir(cfg: Config, override: str | None = None) -> Path:
    return Path(override).expanduser() if override else cfg.path(cfg.index.dir)


def source_specs(cfg: Config) -> list[str]:
    """The configured sources, resolved against the config file's folder."""
    return [s if is_web_url(s) else _rel(cfg.path(s))
            for s in cfg.index.sources]


def _rel(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


_EMBEDDERS: dict[tuple, Embedder] = {}


def embedder_for(cfg: Config) -> Embedder:
    """One loaded model per process and model settings, shared by every Library."""
    cache = cache_dir(cfg)
    key = (cfg.model.name, cfg.model.device, cfg.model.batch_size, cfg.model.backend, cache)
    if key not in _EMBEDDERS:
        try:
            _EMBEDDERS[key] = Embedder(cfg.model.name, device=cfg.model.device,
                                       batch_size=cfg.model.batch_size,
                                       backend=cfg.model.backend, cache_dir=cache)
        except CitebotError as exc:
            if resolve_model(cfg.model.name)[1] is not None:  # a folder or the packaged one
                raise
            raise CitebotError(  # the hub's several lines about offline mode, said plainly
                f"unknown model {cfg.model.name!r} (config key model.name): give "
                f"{DEFAULT_MODEL} or a folder holding a sentence-transformers model; "
                "citebot downloads nothing") from exc
    return _EMBEDDERS[key]


def cache_dir(cfg: Config) -> Path:
    """The model cache folder: model.cache_dir, else $XDG_CACHE_HOME/citebot."""
    if cfg.model.cache_dir:
        return cfg.path(cfg.model.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "citebot"


def make_library(cfg: Config, index_override: str | None = None) -> Library:
    return Library(index_dir(cfg, index_override), embedder_for(cfg), library_settings(cfg),
                   store=store_for(cfg, index_override))


_STORES: dict[tuple, object] = {}


def store_for(cfg: Config, override: str | None = None):
    """The Milvus store when [store] backend = "milvus" (--index then names its uri), one per
    process; None for the index folder. The token comes from MILVUS_TOKEN only."""
    if cfg.store.backend == "local":
        return None
    from index import MilvusStore, is_lite

    uri = override or cfg.store.uri
    uri = str(cfg.path(uri)) if is_lite(uri) and not override else uri
    key = (uri, cfg.store.collection, cfg.store.index_type)
    if key not in _STORES:
        _STORES[key] = MilvusStore(uri, name=cfg.store.collection,
                                   token=os.environ.get("MILVUS_TOKEN", ""),
                                   index_type=cfg.store.index_type)
    return _STORES[key]


def progress_bar(embedder: Embedder):
    """A tqdm progress callback(done, total) on a terminal; None when stderr is not a TTY.

    Also says when this first build will prepare the model's fast paths, which takes about a
    minute once per machine.
    """
    if not sys.stderr.isatty():
        return None
    if embedder.needs_export:
        print("citebot: preparing the model for this machine (once, about a minute)",
              file=sys.stderr)
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="embedding", unit="chunk", file=sys.stderr, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def open_library(cfg: Config, index_override: str | None = None, *,
                 build_if_missing: bool = True) -> Library:
    """A Library over the configured index, built from the configured sources if missing."""
    lib = make_library(cfg, index_override)
    if build_if_missing and not lib.exists():
        specs = source_specs(cfg)
        if not any(is_web_url(s) or os.path.exists(s) for s in specs):
            where = lib.store.uri if lib.store else lib.index_dir
            raise IndexNotFound(f"there is no index yet, and no configured sources to build one "
                                f"from ({', '.join(specs) or 'none'})", path=where)
        print(f"citebot: no index yet, building one from {', '.join(cfg.index.sources)}",
              file=sys.stderr)
        lib.update(specs, progress=progress_bar(lib.embedder))
    return lib
