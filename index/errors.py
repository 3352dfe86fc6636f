"""Named errors of the library, each with a kind and a remedy that an interface can act on.

The message is a sentence anyone may read: it names no shell command and no server path. What
to do next is `remedy` ("rebuild": make the index again from its sources; "build": make a
first one; None: fix the input), the file or folder concerned is `path`, and `kind` names the
class for programs. Each interface says them its own way (bot/errors_text.py): the terminal
gets the command to run, a Discord member a sentence with no command and no path.
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

Remedy = Literal["rebuild", "build"] | None
_CLASS_DEFAULT = object()


class CitebotError(Exception):
    """Base of every error a user can cause and fix; the message is a whole sentence."""

    kind = "error"
    remedy: Remedy = None

    def __init__(self, message: str = "", *, remedy: Remedy | object = _CLASS_DEFAULT,
                 path: str | PathLike | None = None) -> None:
        super().__init__(message)
        if remedy is not _CLASS_DEFAULT:
            self.remedy = remedy  # type: ignore[assignment]
        self.path = None if path is None else str(path)


class SourceUnreadable(CitebotError):
    """A file or URL could not be read (missing, binary, not UTF-8, unreachable, too big)."""

    kind = "source_unreadable"


class UnsupportedSource(CitebotError):
    """A file type citebot does not index."""

    kind = "unsupported_source"


class IndexNotFound(CitebotError):
    """No index at the given folder."""

    kind = "index_not_found"
    remedy: Remedy = "build"


class IndexCorrupt(CitebotError):
    """The index files are damaged or inconsistent; rebuilding repairs it."""

    kind = "index_corrupt"
    remedy: Remedy = "rebuild"


class ModelMismatch(CitebotError):
    """The index was built with another model or other settings than the ones asked for."""

    kind = "model_mismatch"
    remedy: Remedy = "rebuild"


class BadQuery(CitebotError):
    """An empty or oversized question."""

    kind = "bad_query"


class IndexBusy(CitebotError):
    """Another process is updating the index."""

    kind = "index_busy"


class DiskFull(CitebotError):
    """An update ran out of disk space; what it had written is removed, the index is as it was."""

    kind = "disk_full"


class BadQuestionFile(CitebotError):
    """A question file (a batch, or labelled for `citebot eval`) that is missing, malformed or
    unlabelled."""

    kind = "bad_question_file"


class StoreUnavailable(CitebotError):
    """The index's store (a Milvus server) cannot be reached."""

    kind = "store_unavailable"
