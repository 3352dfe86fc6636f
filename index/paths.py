"""The two folder rules of an index: "the same file spelled another way" and "inside a folder".

Both compare resolved paths (symlinks, "..", relative spellings). same_file_key gives the
lookup-table key of a source, so finding the indexed twin of a file is one dict lookup, not a
scan of every source (the scan made building from a folder quadratic in its files).
"""

from __future__ import annotations

import os

from .records import Source


def same_file_key(source: Source) -> str | None:
    """The key two spellings of one file (or one URL) share; None for neither."""
    if source.path:
        return "path:" + os.path.realpath(source.path)
    return "url:" + source.url if source.url else None


def key_within(key: str | None, folder: str) -> bool:
    """Whether a same_file_key names a file that is folder (resolved) or lies inside it."""
    if not key or not key.startswith("path:"):
        return False
    path = key[5:]
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def path_within(path: str, folder: str) -> bool:
    """Whether path is folder or lies inside it, both resolved (symlinks, "..")."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")
