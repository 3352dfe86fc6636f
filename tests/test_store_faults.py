"""Full disks, read-only folders, odd index paths and mismatched files (issue 12, the store's
share): each fails in one line naming what to do, leaves the index as it was and nothing of
the failed update behind.

Real SQLite, FAISS and files; the labelled stand-in embedding (bench/standin.py). A full disk
is simulated at each write the store makes, and, where the platform lets a test mount one, is
a real small filesystem.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.standin import HashEmbedder
from index import folder as index_folder
from index.errors import CitebotError, DiskFull, IndexCorrupt, IndexNotFound
from index.folder import STORE, current_generation
from index.library import Library

from .conftest import run_cli
from .test_segments import article, articles


@pytest.fixture(scope="module")
def standin() -> HashEmbedder:
    return HashEmbedder()


def _built(tmp_path: Path, standin: HashEmbedder, n: int = 3) -> tuple[Library, Path]:
    folder = articles(tmp_path, n)
    lib = Library(tmp_path / "index", standin)
    lib.update([str(folder)])
    return lib, folder


def _state(lib: Library) -> tuple:
    """The committed index and every file beside it (SQLite's -wal/-shm aside)."""
    gen = current_generation(lib.index_dir)
    db = sqlite3.connect(gen / STORE)
    try:
        rows = tuple(tuple(db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                     for t in ("sources", "chunks", "sentences", "words", "segments", "dead"))
    finally:
        db.close()
    files = sorted(str(p.relative_to(lib.index_dir)) for p in lib.index_dir.rglob("*")
                   if not p.name.endswith(("-wal", "-shm", ".lock")))
    return rows, files


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text and len(text) < 300
    return text


def _full_at(k: int, calls: list[int]):
    real = index_folder.write_file

    def write(path: Path, data: bytes) -> None:
        calls.append(1)
        if len(calls) == k:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    return write


@pytest.mark.parametrize("rebuild", [False, True])
def test_a_full_disk_at_any_write_is_one_line_and_leaves_nothing(tmp_path, standin,
                                                                 monkeypatch, rebuild):
    lib, folder = _built(tmp_path, standin)
    (folder / "new.md").write_text(article(99))
    before = _state(lib)
    counted: list[int] = []
    monkeypatch.setattr(index_folder, "write_file", _full_at(0, counted))
    shutil.copytree(lib.index_dir, tmp_path / "count")  # how many writes this update makes
    Library(tmp_path / "count", standin).update([str(folder)], rebuild=rebuild)
    writes = len(counted)
    assert writes >= 6
    for k in range(1, writes + 1):
        monkeypatch.setattr(index_folder, "write_file", _full_at(k, []))
        with pytest.raises(DiskFull) as err:
            lib.update([str(folder)], rebuild=rebuild)
        assert _one_line(err.value).startswith("the disk is full")
        assert _state(lib) == before, f"write {k} of {writes} left something"
    monkeypatch.undo()
    assert lib.update([str(folder)], rebuild=rebuild).wrote and lib.check() == []


def test_sqlite_running_out_of_room_is_the_same_one_line(tmp_path, standin, monkeypatch):
    """SQLite's own writes fill the disk too: its SQLITE_FULL is the same one line, rolled back."""
    lib, folder = _built(tmp_path, standin)
    (folder / "new.md").write_text(article(99) * 5)
    before = _state(lib)
    real = index_folder.connect

    def cramped(path: Path, *, readonly: bool) -> sqlite3.Connection:
        db = real(path, readonly=readonly)
        if not readonly:  # no room for one more page
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(index_folder, "connect", cramped)
    with pytest.raises(DiskFull) as err:
        lib.update([str(folder)])
    assert _one_line(err.value).startswith("the disk is full")
    monkeypatch.undo()
    assert _state(lib) == before and lib.check() == []
    assert lib.update([str(folder)]).wrote


def _mount(where: Path, size: str) -> bool:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)  # lazy: open readers


def test_a_real_full_filesystem(tmp_path, standin):
    """On a 2 MB filesystem, articles are added until the disk is full: the update that does
    not fit fails in one line, leaves the index answering and sound, and once there is room
    the next one succeeds with no repair."""
    mnt = tmp_path / "small"
    if not _mount(mnt, "2m"):
        pytest.skip("mounting a small filesystem is not allowed here; see the simulated test")
    try:
        folder = tmp_path / "articles"
        folder.mkdir()
        lib = Library(mnt / "index", standin)
        (folder / "a0.md").write_text(article(0))
        lib.update([str(folder)])
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
                                    - 200_000))
        with pytest.raises(DiskFull) as err:
            for n in range(1, 200):
                (folder / f"a{n}.md").write_text(article(n) * 8)
                before = _state(lib)
                lib.update([str(folder)])
        assert _one_line(err.value).startswith("the disk is full")
        assert _state(lib) == before and lib.check() == []
        assert lib.search("otter river", k=3)
        filler.unlink()
        assert lib.update([str(folder)]).wrote and lib.check() == []
    finally:
        _unmount(mnt)


def test_a_read_only_index_folder_is_read_and_refuses_updates_in_one_line(tmp_path, standin):
    mnt = tmp_path / "ro"
    if not _mount(mnt, "8m"):
        pytest.skip("mounting a filesystem is not allowed here")
    try:
        lib, folder = _built(mnt, standin)  # no reader open: a busy mount cannot turn ro
        done = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True)
        assert done.returncode == 0, done.stderr
        reader = Library(mnt / "index", standin)
        hits = reader.search("Report 1 part 2 edition 0", k=3)
        assert hits[0].source.path.endswith("a1.md") and reader.check() == []
        (tmp_path / "more").mkdir()
        (tmp_path / "more" / "b.md").write_text(article(50))
        with pytest.raises(CitebotError) as err:
            reader.update([str(tmp_path / "more")])
        assert "cannot write to the index folder" in _one_line(err.value)
        assert "read-only" in str(err.value)
    finally:
        _unmount(mnt)


def test_a_lock_that_is_a_folder_and_an_index_that_is_a_file(tmp_path, standin, capsys):
    lib, folder = _built(tmp_path, standin)
    (lib.index_dir / ".lock").unlink()
    (lib.index_dir / ".lock").mkdir()
    with pytest.raises(CitebotError) as err:
        lib.update([str(folder)], rebuild=True)
    assert ".lock is a folder" in _one_line(err.value) and "remove it" in str(err.value)
    assert lib.search("otter", k=1)  # readers do not need the lock

    file = tmp_path / "notes.txt"
    file.write_text("not an index")
    on_file = Library(file, standin)
    with pytest.raises(CitebotError) as err:
        on_file.update([str(folder)])
    assert "is a file, not an index folder" in _one_line(err.value)
    with pytest.raises(IndexNotFound) as err:
        on_file.search("otter")
    assert "is a file, not an index folder" in _one_line(err.value)
    assert file.read_text() == "not an index"
    code, _, stderr = run_cli(capsys, "index", "list", "--index", file)
    assert code == 1 and stderr.count("\n") == 1 and "is a file" in stderr


@pytest.mark.parametrize("name", ["we#ird", "what?now", "100%", "a%20b#c?d=e"])
def test_an_index_path_with_uri_characters_builds_and_reads(tmp_path, standin, name):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "a.md").write_text(article(1))
    lib = Library(tmp_path / name / "index", standin)
    lib.update([str(folder)])
    assert Library(tmp_path / name / "index", standin).search("otter", k=1)
    assert lib.check() == []


def test_a_vector_whose_chunk_row_is_gone_is_refused_in_one_line(tmp_path, standin):
    lib, _ = _built(tmp_path, standin)
    db = sqlite3.connect(current_generation(lib.index_dir) / STORE)
    chunk = db.execute("SELECT id FROM chunks ORDER BY id LIMIT 1").fetchone()[0]
    db.execute("DELETE FROM sentences WHERE chunk_id = ?", (chunk,))
    db.execute("DELETE FROM chunks WHERE id = ?", (chunk,))
    db.commit()
    db.close()
    reader = Library(lib.index_dir, standin)
    with pytest.raises(IndexCorrupt) as err:
        reader.search("otter river survey", k=10)
    assert f"chunk {chunk}, which has no row" in _one_line(err.value)
    assert "--rebuild" in str(err.value)
    problems = reader.check()
    assert any("does not match the chunk rows" in p or "live vectors" in p for p in problems)


@pytest.mark.parametrize("bad", ["inf", "nan", "long", "sentence"])
def test_check_finds_infinite_and_unnormalised_vectors(tmp_path, standin, bad):
    lib, _ = _built(tmp_path, standin)
    db = sqlite3.connect(current_generation(lib.index_dir) / STORE)
    cid, blob = db.execute("SELECT id, embedding FROM chunks LIMIT 1").fetchone()
    vec = np.frombuffer(blob, dtype=np.float32).copy()
    if bad == "sentence":
        sid, sblob = db.execute("SELECT id, embedding FROM sentences LIMIT 1").fetchone()
        svec = np.frombuffer(sblob, dtype=np.float16) * np.float16(3)
        db.execute("UPDATE sentences SET embedding = ? WHERE id = ?", (svec.tobytes(), sid))
    else:
        vec[0] = {"inf": np.inf, "nan": np.nan, "long": 5.0}[bad]
        db.execute("UPDATE chunks SET embedding = ? WHERE id = ?", (vec.tobytes(), cid))
    db.commit()
    db.close()
    problems = lib.check()
    want = "infinite or NaN" if bad in ("inf", "nan") else "not normalised"
    assert any(want in p for p in problems), problems
    assert "--rebuild" in problems[-1]


@pytest.mark.parametrize("damage", ["bytes", "folder", "name"])
def test_cli_on_a_damaged_current_is_one_line_and_rebuild_repairs_it(tmp_path, capsys, damage):
    """Through the CLI: a non-UTF-8 CURRENT, a CURRENT that is a folder, or one naming nothing
    is one line for every command, and `index build --rebuild` repairs it."""
    article_file = tmp_path / "a.md"
    article_file.write_text(article(1))
    ix = ["--index", tmp_path / "index"]
    assert run_cli(capsys, "index", "build", article_file, *ix)[0] == 0
    current = tmp_path / "index" / "CURRENT"
    if damage == "bytes":
        current.write_bytes(b"gen-\xff\n")
    elif damage == "folder":
        current.unlink()
        current.mkdir()
    else:
        current.write_text("../../etc\n")
    for argv in (["search", "otter"], ["index", "list"], ["index", "add", article_file]):
        code, _, err = run_cli(capsys, *argv, *ix)
        assert code == 1 and err.count("\n") == 1 and "--rebuild" in err, (argv, err)
    code, _, err = run_cli(capsys, "index", "build", article_file, "--rebuild", *ix)
    assert code == 0, err
    assert current.is_file() and run_cli(capsys, "index", "check", *ix)[0] == 0
