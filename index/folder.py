"""The index folder's control files: CURRENT, the writer's lock, and how files are written.

Everything here is about the folder, not the data: which generation is live, one writer at a
time (flock on .lock), SQLite connections whose URI survives any path ('#', '?', '%'), files
written and synced before anything names them, and failures turned into one line each (a full
disk, a read-only folder, a lock or index path that is not what it should be).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CitebotError, DiskFull, IndexBusy, IndexCorrupt, IndexNotFound

STORE = "store.sqlite"


def os_error(exc: OSError, where: Path) -> CitebotError:
    """One line for a failed file operation on the index folder."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull("the disk is full: the index was left as it was", path=where)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CitebotError(f"cannot write to the index folder: {os.strerror(exc.errno).lower()}",
                            path=where)
    if exc.errno == errno.ENOTDIR:
        return CitebotError("the index folder is a file, not a folder", path=where)
    return CitebotError(f"the index folder cannot be used: {exc.strerror or exc}", path=where)


def sqlite_error(exc: sqlite3.Error, where: Path) -> CitebotError:
    if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
        return DiskFull("the disk is full: the index was left as it was", path=where)
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).replace("-", ""):
        return CitebotError("cannot write to the index folder: read-only", path=where)
    return IndexCorrupt("the index database is damaged", path=where / STORE)


def current_generation(index_dir: Path) -> Path | None:
    """The live generation folder, or None when the folder holds no index."""
    pointer = Path(index_dir) / "CURRENT"
    try:
        name = pointer.read_bytes().decode("ascii").strip()
    except FileNotFoundError:
        return None
    except NotADirectoryError as exc:
        raise IndexNotFound("the index folder is a file, not a folder", path=index_dir) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorrupt("the index's CURRENT file is damaged", path=pointer) from exc
    if not name.startswith("gen-") or not name[4:].isdigit():
        raise IndexCorrupt("the index's CURRENT file is damaged", path=pointer)
    return Path(index_dir) / name


@contextmanager
def write_lock(index_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the index folder's one-writer lock (created with the folder if need be)."""
    index_dir = Path(index_dir)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        fh = open(index_dir / ".lock", "a+")  # noqa: SIM115 -- closed below, after unlocking
    except FileExistsError as exc:
        raise CitebotError("the index folder is a file, not a folder", path=index_dir) from exc
    except IsADirectoryError as exc:
        raise CitebotError("the index's lock file is a folder: remove it and try again",
                           path=index_dir / ".lock") from exc
    except OSError as exc:
        raise os_error(exc, index_dir) from exc
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise IndexBusy("another update of this index is running; try again when "
                            "it has finished") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sqlite_uri(path: Path, **params: str) -> str:
    """A SQLite file: URI; the path escaped, so '#', '?' and '%' in it stay part of it."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{urllib.parse.quote(str(path.absolute()))}" + (f"?{query}" if query else "")


def storable(text: str) -> bool:
    """Whether SQLite can hold the text: undecodable bytes (argv, a file name, a JSON escape)
    arrive as lone surrogates, which UTF-8 cannot encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """A connection that manages its own transactions (isolation_level None)."""
    if not readonly:
        db = sqlite3.connect(sqlite_uri(path, mode="rw"), uri=True, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: a commit is durable at the checkpoint
        return db
    try:
        db = sqlite3.connect(sqlite_uri(path, mode="ro"), uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        return db
    except sqlite3.OperationalError:
        if os.access(path.parent, os.W_OK):
            raise
    # A read-only folder or mount: WAL readers cannot make their shared-memory file, and no
    # writer can change the database either, so it is opened as immutable.
    return sqlite3.connect(sqlite_uri(path, mode="ro", immutable="1"), uri=True,
                           isolation_level=None, check_same_thread=False)


def write_file(path: Path, data: bytes) -> None:
    """Every file a writer creates besides SQLite's goes through here, written and synced."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reraise(exc: BaseException, where: Path) -> None:
    """Raise a failed write's error: one line for the disk or the folder, others as they were."""
    if isinstance(exc, OSError):
        raise os_error(exc, where) from exc
    if isinstance(exc, sqlite3.Error):
        raise sqlite_error(exc, where) from exc
    raise exc


def publish(index_dir: Path, tmp: Path, final: Path) -> None:
    """Make a complete new generation the live one: rename it, then switch CURRENT."""
    fsync_dir(tmp)
    pointer = index_dir / f".CURRENT.{os.getpid()}"
    try:
        write_file(pointer, (final.name + "\n").encode())
    except OSError:
        pointer.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    current = index_dir / "CURRENT"
    if current.is_dir() and not current.is_symlink():  # damage a rebuild repairs
        shutil.rmtree(current)
    os.replace(pointer, current)
    fsync_dir(index_dir)


def next_number(index_dir: Path) -> int:
    numbers = [int(p.name[4:]) for p in index_dir.glob("gen-*") if p.name[4:].isdigit()]
    return max(numbers, default=0) + 1


def collect_garbage(index_dir: Path) -> None:
    """Drop generations that are not live and leftovers of killed writers (under the lock).

    With a damaged CURRENT nothing is dropped but leftovers: the rebuild that repairs it
    collects the rest next time.
    """
    try:
        live = current_generation(index_dir)
    except CitebotError:
        live = index_dir  # unknown: keep every generation
    for leftover in list(index_dir.glob(".tmp-gen-*")) + list(index_dir.glob(".CURRENT.*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if live is None or live == index_dir:
        return
    for old in index_dir.glob("gen-*"):
        if old != live:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
