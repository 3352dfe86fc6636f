"""Wiring shared by every interface: config values in, a ready Library out."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from index.answer import AnswerSettings
from index.embed import BACKENDS, Embedder
from index.errors import CitebotError
from index.ingest import is_web_url
from index.library import Library, Settings
from index.retrieve import RetrievalSettings

from .config import Config

# Nothing may download from a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def settings_from(cfg: Config) -> Settings:
    return Settings(
        target_tokens=cfg.chunking.target_tokens,
        overlap_sentences=cfg.chunking.overlap_sentences,
        fetch_timeout=cfg.fetch.timeout,
        fetch_max_bytes=cfg.fetch.max_bytes,
        max_query_chars=cfg.answer.max_question_chars,
        retrieval=RetrievalSettings(candidates=cfg.retrieval.candidates,
                                    dense_weight=cfg.retrieval.dense_weight,
                                    sentence_weight=cfg.retrieval.sentence_weight,
                                    correct_spelling=cfg.retrieval.correct_spelling),
        answer=AnswerSettings(min_score=cfg.answer.min_score, max_unknown=cfg.answer.max_unknown,
                              number_passages=cfg.answer.number_passages,
                              max_citations=cfg.answer.max_citations),
    )


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
        if cfg.model.backend not in BACKENDS:
            raise CitebotError(f"config key model.backend should be one of {', '.join(BACKENDS)}"
                               f", not {cfg.model.backend!r}")
        _EMBEDDERS[key] = Embedder(cfg.model.name, device=cfg.model.device,
                                   batch_size=cfg.model.batch_size, backend=cfg.model.backend,
                                   cache_dir=cache)
    return _EMBEDDERS[key]


def cache_dir(cfg: Config) -> Path:
    """The model cache folder: model.cache_dir, else $XDG_CACHE_HOME/citebot."""
    if cfg.model.cache_dir:
        return cfg.path(cfg.model.cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "citebot"


def make_library(cfg: Config, index_override: str | None = None) -> Library:
    return Library(index_dir(cfg, index_override), embedder_for(cfg), settings_from(cfg),
                   store=store_for(cfg, index_override))


_STORES: dict[tuple, object] = {}


def store_for(cfg: Config, override: str | None = None):
    """The Milvus store when [store] backend = "milvus" (--index then names its uri), one per
    process; None for the index folder. The token comes from MILVUS_TOKEN only."""
    if cfg.store.backend == "local":
        return None
    if cfg.store.backend != "milvus":
        raise CitebotError(f"config key store.backend should be \"local\" or \"milvus\", not "
                           f"{cfg.store.backend!r}")
    from index.milvus_store import MilvusStore, is_lite

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
            raise CitebotError(f"no index at {where}, and no configured sources to "
                               f"build one from ({', '.join(specs) or 'none'}): run "
                               "`citebot index build PATH...`")
        print(f"citebot: no index yet, building one from {', '.join(cfg.index.sources)}",
              file=sys.stderr)
        lib.update(specs, progress=progress_bar(lib.embedder))
    return lib
