"""Named errors of the library; the CLI and the bot turn them into one line for people."""


class CitebotError(Exception):
    """Base of every error a user can cause and fix; the message is a whole sentence."""


class SourceUnreadable(CitebotError):
    """A file or URL could not be read (missing, binary, not UTF-8, unreachable, too big)."""


class UnsupportedSource(CitebotError):
    """A file type citebot does not index."""


class IndexNotFound(CitebotError):
    """No index at the given folder."""


class IndexCorrupt(CitebotError):
    """The index files are damaged or inconsistent; rebuilding repairs it."""


class ModelMismatch(CitebotError):
    """The index was built with another model or other settings than the ones asked for."""


class BadQuery(CitebotError):
    """An empty or oversized question."""


class IndexBusy(CitebotError):
    """Another process is updating the index."""


class DiskFull(CitebotError):
    """An update ran out of disk space; what it had written is removed, the index is as it was."""


class BadQuestionFile(CitebotError):
    """A labelled question file (for `citebot eval`) that is missing, malformed or unlabelled."""


class StoreUnavailable(CitebotError):
    """The index's store (a Milvus server) cannot be reached."""
