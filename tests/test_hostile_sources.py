"""Hostile sources: special files, endless files, pathological text. Each is refused or handled
in one line, in bounded time and memory, and never holds the update lock for long."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import pytest

from index.chunk import chunk_text, split_sentences
from index.errors import SourceUnreadable
from index.ingest import clean_text, load_path, read_bounded
from index.watch import Watcher

from .conftest import library, run_cli

ARTICLE = ("The ambassador resigned on Wednesday after the leaked cables were published. "
           "Ministers defended him in the Commons the next day.\n")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _device(path: Path) -> Path:
    """A character device under a source's name: /dev/zero, which never ends."""
    path.symlink_to("/dev/zero")
    return path


def _in_time(seconds: float, call, *args):
    """call(*args) in a thread; fail (rather than hang the suite) if it takes longer."""
    out: dict = {}

    def run():
        try:
            out["value"] = call(*args)
        except BaseException as exc:  # handed to the test below
            out["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{call} still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.parametrize("make", [_fifo, _device], ids=["fifo", "device"])
def test_a_special_file_named_explicitly_is_refused_in_one_line(tmp_path, make):
    special = make(tmp_path / "special.txt")
    with pytest.raises(SourceUnreadable, match="not a regular file") as caught:
        _in_time(5, load_path, special)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("make", [_fifo, _device], ids=["fifo", "device"])
def test_a_special_file_in_a_source_folder_is_skipped_and_the_rest_indexed(
        capsys, tmp_path, index_copy, make):
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "article.txt").write_text(ARTICLE, encoding="utf-8")
    make(folder / "special.txt")
    code, out, err = _in_time(60, run_cli, capsys, "index", "add", folder, "--index", index_copy)
    assert code == 0, err
    assert "1 added" in out and "special.txt" in out and "not a regular file" in out


def test_the_watcher_keeps_indexing_beside_a_fifo(tmp_path, index_copy, seeds_library):
    folder = tmp_path / "watched"
    folder.mkdir()
    _fifo(folder / "pipe.txt")
    (folder / "first.txt").write_text(ARTICLE, encoding="utf-8")
    errors: list = []
    watcher = Watcher(library(index_copy, seeds_library), [str(folder)], quiet=0,
                      on_error=errors.append)
    report = _in_time(60, watcher.poll)
    assert report is not None and report.added == [f"{folder.as_posix()}/first.txt"]
    (folder / "second.txt").write_text("A second report said the cables were leaked by an "
                                       "official.\n", encoding="utf-8")
    report = _in_time(60, watcher.poll)
    assert report is not None and report.added == [f"{folder.as_posix()}/second.txt"]
    assert errors == []


def test_reads_are_bounded_while_reading_not_by_stat(tmp_path):
    """/dev/zero reports size 0 and never ends: the cap must stop the read itself."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SourceUnreadable, match="larger than 1,000,000 bytes"):
        _in_time(5, lambda: read_bounded("/dev/zero", 1_000_000, regular_only=False))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB
    zero = _device(tmp_path / "zero.txt")
    with pytest.raises(SourceUnreadable):
        _in_time(5, load_path, zero)
    big = tmp_path / "big.txt"
    big.write_bytes(b"word " * 1000)
    with pytest.raises(SourceUnreadable, match="larger than 100 bytes"):
        load_path(big, max_bytes=100)


def test_a_fifo_sidecar_does_not_hang_loading(tmp_path):
    (tmp_path / "a.txt").write_text(ARTICLE, encoding="utf-8")
    _fifo(tmp_path / "metadata.json")
    with pytest.raises(SourceUnreadable, match="metadata.json"):
        _in_time(5, load_path, tmp_path / "a.txt")


class _Counting:
    """A token counter that adds up the characters it was asked to count."""

    def __init__(self, count) -> None:
        self.count, self.chars = count, 0

    def __call__(self, texts):
        self.chars += sum(map(len, texts))
        return self.count(texts)


@pytest.mark.parametrize("run", ["x" * 400_000, "!?" * 100_000, ("w" * 300 + ". ") * 1000],
                         ids=["letters", "punctuation", "long-words"])
def test_chunking_work_is_linear_in_runs_without_whitespace(embedder, run):
    """The chunker may count each character a few times, not once per cut (quadratic: the
    old cutter counted the whole rest of a long word for every piece it cut off)."""
    counter = _Counting(embedder.token_counts)
    limit = embedder.max_tokens - 2
    chunks = chunk_text(run, "s", counter, max_tokens=limit)
    assert counter.chars < 10 * len(run), counter.chars / len(run)  # quadratic: ~400x
    assert all(run[c.start:c.end] == c.text for c in chunks)
    assert max(embedder.token_counts([c.text for c in chunks])) <= limit
    # The chunks cover the whole run in order.
    assert chunks[0].start == 0 and chunks[-1].end == len(run.rstrip())


def test_sentence_splitting_is_linear_in_punctuation_runs():
    """A run of stops with no space after it was rescanned from every character."""
    started = time.process_time()
    for n in (50_000, 200_000):
        assert split_sentences("a" + "." * n + "b") == [(0, n + 2)]
        assert split_sentences("?" * n + "\u2026" * n) == [(0, 2 * n)]
    assert time.process_time() - started < 5  # quadratic: minutes


def test_nested_junk_tokens_are_removed_in_linear_time():
    nested = "info-" * 20_000 + "icon" * 20_000
    started = time.process_time()
    assert clean_text("keep " + nested + " this") == "keep this"
    assert time.process_time() - started < 5  # one pass per nesting level: minutes


def test_big_source_bench_smoke(tmp_path):
    """bench/big_source.py runs and prints its table (the figures: bench/results)."""
    from bench import big_source
    from bench.common import parse_table

    text = big_source.main(["--smoke", "--out", str(tmp_path / "big.md")])
    rows = parse_table(text)
    assert [r["source"] for r in rows] == [".txt", ".html"]
    txt, html = rows
    assert int(txt["chunks"].replace(",", "")) > 100 and html["text chars"] == "1,926"
    for row in rows:
        assert 0 < float(row["peak MB"]) and float(row["beyond start MB"]) < 1000
