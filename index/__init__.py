"""citebot's retrieval library: ingest, chunk, embed, store, retrieve, answer.

Reads no config file and no environment: every function takes explicit arguments.
Heavy modules (torch, sentence-transformers) are imported only where embedding happens.

The names below are the library's public API, the only ones interfaces (bot/) import:
`from index import Library, Settings, IndexCorrupt`. Each is loaded on first use, so importing
an error class does not load FAISS, and `citebot --help` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> (module, name there)
_EXPORTS: dict[str, tuple[str, str]] = {
    # the front door and its settings
    "Library": ("library", "Library"),
    "Settings": ("library", "Settings"),
    "UpdateReport": ("library", "UpdateReport"),
    "RetrievalSettings": ("retrieve", "RetrievalSettings"),
    "AnswerSettings": ("answer", "AnswerSettings"),
    "Embedder": ("embed", "Embedder"),
    "BACKENDS": ("embed", "BACKENDS"),
    "DEFAULT_MODEL": ("embed", "DEFAULT_MODEL"),
    "resolve_model": ("embed", "resolve_model"),
    "RayEmbedder": ("ray_embed", "RayEmbedder"),  # loads Ray only when it embeds
    "MilvusStore": ("milvus_store", "MilvusStore"),  # loads pymilvus only when it connects
    "is_lite": ("milvus_store", "is_lite"),
    # records
    "Source": ("records", "Source"),
    "Document": ("records", "Document"),
    "Chunk": ("records", "Chunk"),
    "Hit": ("records", "Hit"),
    "Citation": ("records", "Citation"),
    "Answer": ("records", "Answer"),
    "now_iso": ("store", "now_iso"),
    # errors
    "CitebotError": ("errors", "CitebotError"),
    "SourceUnreadable": ("errors", "SourceUnreadable"),
    "UnsupportedSource": ("errors", "UnsupportedSource"),
    "IndexNotFound": ("errors", "IndexNotFound"),
    "IndexCorrupt": ("errors", "IndexCorrupt"),
    "ModelMismatch": ("errors", "ModelMismatch"),
    "BadQuery": ("errors", "BadQuery"),
    "IndexBusy": ("errors", "IndexBusy"),
    "BadQuestionFile": ("errors", "BadQuestionFile"),
    "DiskFull": ("errors", "DiskFull"),
    "StoreUnavailable": ("errors", "StoreUnavailable"),
    # what a setting may hold (bot/config.py derives the config file from it)
    "setting": ("settings", "setting"),
    "check_setting": ("settings", "check_setting"),
    "setting_default": ("settings", "setting_default"),
    "setting_types": ("settings", "setting_types"),
    # sources, folders, conversations, evaluation
    "is_web_url": ("ingest", "is_web_url"),
    "read_bounded": ("ingest", "read_bounded"),
    "read_json_lines": ("evaluate", "read_json_lines"),
    "path_within": ("library", "path_within"),
    "local_specs": ("watch", "local_specs"),
    "Watcher": ("watch", "Watcher"),
    "ConversationStore": ("conversation", "ConversationStore"),
    "Turn": ("conversation", "Turn"),
    "highlight_spans": ("answer", "highlight_spans"),
    "load_questions": ("evaluate", "load_questions"),
    # `evaluate` would be shadowed by the submodule of that name once it is imported
    "evaluate_questions": ("evaluate", "evaluate"),
    "EvalReport": ("evaluate", "EvalReport"),
    "CURVE_DEPTH": ("evaluate", "CURVE_DEPTH"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'index' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

