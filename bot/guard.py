"""The CLI's last line of defence: the log file, output that may fail, streams that never do.

An unexpected exception becomes one line naming the log file, which holds the traceback;
library warnings go to that file, not to the terminal; writing to a full disk or a closed
pipe is told apart from the command's own failures.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

LOG_NAME = "citebot.log"


@contextmanager
def guarded() -> Iterator[Output]:
    """Tolerant streams, library logging to the log file, and stdout watched for failed
    writes (restored on the way out, for callers that run several commands in a process)."""
    _tolerant_streams()
    out = sys.stdout = Output(sys.stdout)
    try:
        with _logging_to_file():
            yield out
    finally:
        sys.stdout = out.stream


def log_path() -> Path:
    """Where details of unexpected errors and library warnings go: $XDG_STATE_HOME/citebot/
    citebot.log (XDG_STATE_HOME defaults to ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    return Path(base) / "citebot" / LOG_NAME


@contextmanager
def _logging_to_file() -> Iterator[None]:
    """Library warnings (pypdf on a damaged PDF, the watcher's failures) go to the log file,
    created only if something is logged, not to the terminal."""
    root = logging.getLogger()
    handler = _FileHandler(log_path())
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()


class _FileHandler(logging.FileHandler):
    """A FileHandler that makes its folder on first use, and never complains about it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True, encoding="utf-8", errors="backslashreplace")

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:  # an unwritable log is no crash
        pass


@contextmanager
def log_to_stderr() -> Iterator[None]:
    """The bot's running commentary (INFO and up) on stderr, beside the log file, while the
    block runs; afterwards logging is as it was (a later command in the same process, such as
    a test's, does not inherit a handler on a stream that may be gone)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def crash_report(exc: BaseException) -> str:
    """Write exc's traceback to the log; where it went, for the one line the user sees."""
    text = (f"--- {datetime.now(UTC).isoformat(timespec='seconds')} citebot "
            f"{_argv_text()}\n{''.join(traceback.format_exception(exc))}")
    for path in (log_path(), Path(tempfile.gettempdir()) / f"citebot-{os.getuid()}.log"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(text)
            return str(path)
        except OSError:
            continue
    return "nowhere (the log could not be written)"


def _argv_text() -> str:
    return " ".join(repr(a) if not a.isprintable() or " " in a else a for a in sys.argv[1:])


def one_line(exc: object) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _tolerant_streams() -> None:
    """Output never fails on a character the terminal's encoding lacks (it is written as an
    escape), and undecodable input bytes arrive as surrogates for the question check."""
    for stream, errors in ((sys.stdout, "backslashreplace"), (sys.stderr, "backslashreplace"),
                           (sys.stdin, "surrogateescape")):
        try:
            stream.reconfigure(errors=errors)
        except (AttributeError, ValueError, OSError):  # not a text file, or already used
            pass


class Output:
    """sys.stdout, remembering a failed write: a full disk under `> file` or /dev/full is
    the output's failure, told apart from the index's own OSErrors."""

    def __init__(self, stream) -> None:
        self.stream, self.failed = stream, False

    def write(self, text: str) -> int:
        return self._guard(self.stream.write, text)

    def flush(self) -> None:
        self._guard(self.stream.flush)

    def _guard(self, call, *args):
        try:
            return call(*args)
        except OSError:
            self.failed = True
            raise

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

    def silence(self) -> None:
        """Send what is still buffered, and Python's flush at exit, to /dev/null."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
            pass
