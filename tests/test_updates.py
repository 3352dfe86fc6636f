"""New sources while the index serves: watching folders, readers during updates, crashes.

Real model, SQLite, FAISS and files in tmp_path; the crash tests SIGKILL a real
`citebot index build` process at chosen points of an update.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bot.botdata import BotData
from bot.cli import main
from index.chunk import answer_units
from index.errors import CitebotError
from index.folder import current_generation
from index.library import Library
from index.records import Answer
from index.store import ChunkSentences, Snapshot
from index.watch import Watcher, fingerprint

from .conftest import ROOT, SEEDS, library

ANIMALS = [("owls", "Snowy owls nest on low hummocks of the tundra near Tromso every spring."),
           ("badgers", "Badgers dig their setts under old beech trees in Wytham Woods."),
           ("otters", "Sea otters off the coast of Monterey hold hands while they sleep."),
           ("herons", "Grey herons build their nests in tall trees in colonies called heronries."),
           ("beavers", "Beavers on the river Tay fell willow trees to build their lodges."),
           ("puffins", "Atlantic puffins return to the cliffs of Skomer island each April.")]


def note(animal: str, fact: str, version: int = 0) -> str:
    return (f"# The {animal} report\n\n{fact} Observers have logged them for {10 + version} "
            f"years.\n\nThe {animal} survey of edition {version} counted more of them than the "
            f"survey before it, the wardens said.\n")


def wait_until(condition, timeout: float = 15.0) -> float:
    """Seconds it took for condition() to hold; fails after timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def titles(lib: Library) -> set[str]:
    return {s.title for s in lib.sources()}


# -- watching folders ------------------------------------------------------------------------------

def test_watch_follows_added_edited_and_deleted_files(tmp_path, seeds_library):
    folder = tmp_path / "articles"
    folder.mkdir()
    shutil.copy(SEEDS / "002_41119d82aa048747.txt", folder)
    lib = library(tmp_path / "index", seeds_library)
    errors: list[CitebotError] = []
    watcher = Watcher(lib, [str(folder)], quiet=0.5, interval=0.1, on_error=errors.append)
    thread = watcher.start()
    try:
        wait_until(lambda: lib.exists() and len(lib.sources()) == 1)  # the catch-up round

        (folder / "owls.md").write_text(note(*ANIMALS[0]))
        took = wait_until(lambda: "The owls report" in titles(lib))
        assert took < 5

        (folder / "owls.md").write_text(note(*ANIMALS[0], version=7))
        wait_until(lambda: any("edition 7" in h.chunk.text
                               for h in lib.search("owls survey edition", k=3)))
        assert len(lib.sources()) == 2

        (folder / "owls.md").unlink()
        wait_until(lambda: "The owls report" not in titles(lib))
        assert all("owls" not in h.chunk.text for h in lib.search("snowy owls tundra", k=5))

        assert errors == []
        for f in folder.iterdir():  # an index of nothing is refused, and the watching goes on
            f.unlink()
        wait_until(lambda: errors)
        assert "no sources" in str(errors[0]) and len(lib.sources()) == 1
        (folder / "herons.md").write_text(note(*ANIMALS[3]))
        wait_until(lambda: titles(lib) == {"The herons report"})
    finally:
        watcher.stop()
        thread.join(5)
    assert not thread.is_alive() and lib.check() == []


def test_watch_waits_for_quiet_and_folds_a_burst_into_one_update(tmp_path, seeds_library):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "a.md").write_text(note(*ANIMALS[1]))
    now = [0.0]
    lib = library(tmp_path / "index", seeds_library)
    watcher = Watcher(lib, [str(folder)], quiet=2.0, clock=lambda: now[0])
    assert watcher.poll().added  # the first round catches up at once
    assert watcher.poll() is None  # nothing changed

    for i, (animal, fact) in enumerate(ANIMALS[2:5]):  # a burst of new files, 0.5 s apart
        (folder / f"{animal}.md").write_text(note(animal, fact))
        now[0] += 0.5
        assert watcher.poll() is None, f"updated {i} files into the burst"
    now[0] += 1.9
    assert watcher.poll() is None  # 1.9 s of quiet is not 2
    now[0] += 0.2
    report = watcher.poll()
    assert report is not None and len(report.added) == 3 and watcher.updates == 2
    assert len(lib.sources()) == 4


def test_watch_sees_same_size_edits_and_ignores_other_files(tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    article = folder / "a.txt"
    article.write_text("one two three")
    before = fingerprint([str(folder)])
    (folder / "notes.xlsx").write_bytes(b"not indexed")
    (folder / ".hidden.txt").write_text("editor swap file")
    assert fingerprint([str(folder)]) == before
    article.write_text("one two four!")  # same length as before
    os.utime(article, ns=(before[str(article)][0] + 1_000_000, before[str(article)][0]
                          + 1_000_000))
    assert fingerprint([str(folder)]) != before
    assert fingerprint(["https://example.com/a.html"]) == {}  # URLs are not polled


def test_watch_cli_updates_then_stops_on_ctrl_c(tmp_path):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "owls.md").write_text(note(*ANIMALS[0]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "index", "watch", str(folder), "--quiet", "0.3",
         "--index", str(tmp_path / "index")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        assert "1 added" in lines.get(timeout=60)  # the catch-up round
        (folder / "herons.md").write_text(note(*ANIMALS[3]))
        line = lines.get(timeout=15)
        assert line.startswith("1 added, 0 changed, 0 removed, 1 unchanged; 1 chunks embedded")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    err = proc.stderr.read()
    assert proc.returncode == 0 and "Traceback" not in err
    assert "watching" in err


# -- readers during updates ------------------------------------------------------------------------

def _state(lib: Library) -> dict:
    """What a reader may see of the index as it is now: chunks (with their row ids) and texts."""
    snap = lib.snapshot()
    chunks = {(c.id, c.source_id, c.start, c.end, c.text) for c, _ in snap.all_chunks()}
    texts = {sid: snap.source_text(sid) for sid in snap.sources()}
    assert snap.manifest.chunks == len(chunks) == snap.vectors.live
    assert snap.manifest.sources == len(texts)
    return {"chunks": chunks, "texts": texts}


def _consistent(result, gen: dict) -> bool:
    """Whether one search or ask result could have come from this generation alone."""
    if isinstance(result, Answer):
        return all(c.source.id in gen["texts"]
                   and gen["texts"][c.source.id][c.start:c.end] == c.quote
                   and all(o.id in gen["texts"] for o in c.also_in)
                   for c in result.citations)
    return all((h.chunk.id, h.source.id, h.chunk.start, h.chunk.end, h.chunk.text)
               in gen["chunks"] for h in result)


def test_questions_are_answered_throughout_ten_updates(tmp_path, seeds_library):
    folder = tmp_path / "articles"
    folder.mkdir()
    for name in ("002_41119d82aa048747.txt", "004_f51d83ee9a022f67.txt"):
        shutil.copy(SEEDS / name, folder)
    (folder / "owls.md").write_text(note(*ANIMALS[0]))
    writer = library(tmp_path / "index", seeds_library)
    first = writer.update([str(folder)])
    generations = {first.generation: _state(writer)}

    reader = library(tmp_path / "index", seeds_library)  # another Library, as the bot has
    questions = ["who defended Darroch?", "where do snowy owls nest?",
                 "what do badgers dig?", "which animals hold hands while asleep?",
                 "how many years have observers logged them?", "what did the wardens say?"]
    results: list = []
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def read(ask: bool) -> None:
        i = 0
        while not stop.is_set():
            q = questions[i % len(questions)]
            i += 1
            try:
                seen.append(reader.snapshot().generation)
                results.append(reader.ask(q) if ask else reader.search(q, k=10))
            except BaseException as exc:  # every failure counts, whatever it is
                failures.append(exc)

    threads = [threading.Thread(target=read, args=(ask,)) for ask in (False, True)]
    for t in threads:
        t.start()
    try:
        notes = ["owls.md"]
        for i in range(10):
            if i % 3 == 2 and len(notes) > 1:
                (folder / notes.pop(0)).unlink()
            elif i % 3 == 1:
                animal, fact = ANIMALS[len(notes) % len(ANIMALS)]
                (folder / notes[-1]).write_text(note(animal, fact, version=i))
            else:
                animal, fact = ANIMALS[(i + 1) % len(ANIMALS)]
                notes.append(f"{animal}-{i}.md")
                (folder / notes[-1]).write_text(note(animal, fact, version=i))
            report = writer.update([str(folder)], prune=True)
            assert report.wrote, i
            assert writer.snapshot().generation == report.generation
            generations[report.generation] = _state(writer)
            time.sleep(0.3)  # let the readers ask a few questions of each generation
    finally:
        stop.set()
        for t in threads:
            t.join(60)

    assert failures == []
    assert len(generations) == 11 and len(results) >= 20
    assert len(set(seen)) >= 5, "the reader did not follow the new generations"
    assert seen[-1] == writer.snapshot().generation
    mixed = [r for r in results if not any(_consistent(r, g) for g in generations.values())]
    assert mixed == [], "a result mixes generations or shows a half-built one"
    assert sum(isinstance(r, Answer) and r.answered for r in results) > 0
    # Without a restart, the reader now has what the writer wrote last, and finds it.
    assert reader.sources() == writer.sources() and len(reader.sources()) > 3
    question = "where do beavers on the river Tay fell willow trees?"
    assert reader.search(question, k=3) == writer.search(question, k=3)
    assert reader.search(question, k=1)[0].source.path.endswith("beavers-9.md")
    assert reader.check() == []


# -- crashes ---------------------------------------------------------------------------------------

# Runs `citebot index build` with one store function replaced by a pause that announces itself
# (writes the marker file), so the test can SIGKILL the process at exactly that point.
CRASH_SCRIPT = r"""
import os, sys, time
from pathlib import Path

import index.embed
import index.folder
import index.segments
from bot.cli import main

point, marker = sys.argv[1], Path(sys.argv[2])


def pause(*args, **kwargs):
    marker.write_text(str(os.getpid()))
    time.sleep(600)


commits = []
real_commit, real_write = index.segments._commit, index.folder.write_file
if point == "embedding":
    index.embed.Embedder.encode = pause
elif point == "segment":  # half the new segment's files are written
    index.folder.write_file = lambda p, d: pause() if p.name == "docs.npy" else real_write(p, d)
elif point == "committing":  # rows inserted, segment written, the transaction not committed
    index.segments._commit = pause
elif point == "merging":  # the update committed; the merged segment written, not committed
    index.segments.MERGE_FACTOR, index.segments._tier = 2, lambda chunks: 0
    index.segments._commit = lambda db: pause() if commits else commits.append(real_commit(db))
elif point == "switching":  # a rebuild's generation complete, CURRENT not yet switched
    index.folder.publish = pause
sys.exit(main(sys.argv[3:]))
"""


def _extra_folder(tmp_path: Path) -> Path:
    extra = tmp_path / "extra"
    extra.mkdir()
    for animal, fact in ANIMALS[:3]:
        (extra / f"{animal}.md").write_text(note(animal, fact))
    return extra


def _kill_at(point: str, argv: list[str], marker: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, point, str(marker), *argv],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the build never reached the kill point"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", ["embedding", "segment", "committing", "merging",
                                   "switching"])
def test_an_update_killed_midway_leaves_the_old_index_answering(index_copy, tmp_path,
                                                                 seeds_library, capsys, point):
    """SIGKILL of a real `citebot index build` at each step of an update, of the merge that
    follows it, and of a rebuild: readers keep the whole previous index (or, once the update
    committed, the whole new one), `index check` passes, and the next update needs no repair."""
    extra = _extra_folder(tmp_path)
    lib = library(index_copy, seeds_library)
    before = _state(lib)
    answer_before = lib.ask("who defended Darroch?")
    gen = current_generation(index_copy)
    argv = ["index", "build", str(extra), "--index", str(index_copy)]
    if point == "switching":
        argv = ["index", "build", str(SEEDS), "--rebuild", "--index", str(index_copy)]
    _kill_at(point, argv, tmp_path / "paused")

    segments = {p.name for p in gen.glob("seg-*")}
    if point in ("segment", "committing", "merging"):
        assert len(segments) > len(lib.snapshot().segments)  # killed mid-write indeed
    if point == "switching":
        assert [p.name for p in index_copy.glob(".tmp-gen-*")]  # complete, not live
    assert current_generation(index_copy) == gen
    if point == "merging":  # the update itself had committed: all of it, and all before
        assert len(lib.sources()) == 8 and before["chunks"] < _state(lib)["chunks"]
    else:
        assert _state(lib) == before and lib.ask("who defended Darroch?") == answer_before
    assert main(["index", "check", "--index", str(index_copy)]) == 0
    assert "index is sound" in capsys.readouterr().out

    (extra / "herons.md").write_text(note(*ANIMALS[3]))
    report = lib.update([str(extra)], wait=False)  # the dead writer's lock is gone
    assert report.wrote and any("herons" in a for a in report.added)
    assert not [p for p in index_copy.iterdir() if p.name.startswith((".tmp", ".CURRENT."))]
    live = set(lib.snapshot().segments)
    assert {p.name for p in current_generation(index_copy).glob("seg-*")} == live
    assert lib.check() == [] and len(lib.sources()) == 9
    assert lib.search("sea otters hold hands", k=1)[0].source.title == "The otters report"


# -- what an update costs --------------------------------------------------------------------------

def test_unchanged_build_embeds_nothing_writes_nothing_and_says_so(index_copy, seeds_library,
                                                                    capsys):
    before = library(index_copy, seeds_library).snapshot().generation
    report = library(index_copy, seeds_library).update([str(SEEDS)])
    assert report.chunks_embedded == 0 and not report.wrote and len(report.unchanged) == 5
    assert library(index_copy, seeds_library).snapshot().generation == before
    assert main(["index", "build", str(SEEDS), "--index", str(index_copy)]) == 0
    out = capsys.readouterr().out
    assert "0 chunks embedded" in out and "5 unchanged" in out
    assert "nothing changed, index left as it was" in out
    assert library(index_copy, seeds_library).snapshot().generation == before


def _sentences_by_hash(snap: Snapshot) -> dict[str, ChunkSentences]:
    return {c.hash: got for c, _ in snap.all_chunks()
            for got in [snap.sentences([c.id])[c.id]]}


def _check_sentences(snap: Snapshot, old: dict[str, ChunkSentences], new: str) -> None:
    """Every chunk has its answer units stored; an unchanged chunk keeps the vectors it had
    (copied over, not embedded again); the new text is among the stored sentences."""
    chunks = [c for c, _ in snap.all_chunks()]
    stored = snap.sentences([c.id for c in chunks])
    assert set(stored) == {c.id for c in chunks}
    for c in chunks:
        assert [(a - c.start, b - c.start) for a, b in stored[c.id].spans] == \
            answer_units(c.text)
        if c.hash in old:
            assert np.array_equal(stored[c.id].vectors, old[c.hash].vectors)
    assert any(new in snap.source_text(c.source_id)[a:b]
               for c in chunks for a, b in stored[c.id].spans)


def test_an_edit_reembeds_only_the_chunks_whose_text_changed(tmp_path, seeds_library):
    folder = tmp_path / "articles"
    shutil.copytree(SEEDS, folder)
    lib = library(tmp_path / "index", seeds_library)
    first = lib.update([str(folder)])
    target = folder / "000_cc900589cab259ee.txt"

    def in_the_middle(old: str, new: str) -> str:
        """The article with old replaced by new once, in its middle paragraph."""
        paragraphs = target.read_text(encoding="utf-8").split("\n\n")
        middle = len(paragraphs) // 2
        assert old in paragraphs[middle]
        paragraphs[middle] = paragraphs[middle].replace(old, new, 1)
        return "\n\n".join(paragraphs)

    def edit(text: str, new: str) -> tuple[int, int, int]:
        """Writes the article as text (new: words only it has); returns embedded chunks,
        chunks whose text is new to the index, and chunks of the article."""
        old = _sentences_by_hash(lib.snapshot())
        target.write_text(text, encoding="utf-8")
        report = lib.update([str(folder)])
        assert report.changed == [str(target)] and len(report.unchanged) == 4
        snap = lib.snapshot()
        assert report.chunks_total == snap.manifest.chunks
        _check_sentences(snap, old, new)
        assert any(new in h.chunk.text for h in lib.search(new, k=3)), new
        sid = next(s.id for s in snap.sources().values() if s.path.endswith(target.name))
        fresh = [c for c, _ in snap.all_chunks() if c.hash not in old]
        assert all(c.source_id == sid for c in fresh)
        article = [c for c, _ in snap.all_chunks() if c.source_id == sid]
        return report.chunks_embedded, len(fresh), len(article)

    embedded, new_text, chunks = edit(in_the_middle("veteran", "seasoned"), "seasoned")
    assert embedded == new_text and 1 <= embedded <= 2 and chunks >= 10  # a one-word fix
    assert embedded < first.chunks_embedded == first.chunks_total  # the first embedded all
    embedded, new_text, chunks = edit(in_the_middle(".", ", the wire service reported."),
                                      "the wire service reported")  # a longer sentence
    assert embedded == new_text and 1 <= embedded and 2 * embedded <= chunks
    embedded, new_text, _ = edit(target.read_text(encoding="utf-8") + "\n\nA new closing "
                                 "paragraph about the embassy garden was added later.\n",
                                 "embassy garden")  # a paragraph at the end
    assert embedded == new_text and 1 <= embedded <= 2


def test_a_copy_under_a_new_name_is_skipped_and_reported(index_copy, tmp_path, seeds_library,
                                                          capsys):
    twin = tmp_path / "same-story.txt"
    twin.write_bytes((SEEDS / "002_41119d82aa048747.txt").read_bytes())
    assert main(["index", "build", str(twin), "--index", str(index_copy)]) == 0
    out = capsys.readouterr().out
    assert "0 chunks embedded" in out and "1 duplicate(s) skipped" in out
    assert f"duplicate: {twin} has the same text as" in out
    assert "002_41119d82aa048747.txt" in out
    assert len(library(index_copy, seeds_library).sources()) == 5


# -- the bot's own data ----------------------------------------------------------------------------

def test_bot_data_survives_every_update_and_rebuild(tmp_path, seeds_library):
    folder = tmp_path / "articles"
    folder.mkdir()
    shutil.copy(SEEDS / "002_41119d82aa048747.txt", folder)
    index = tmp_path / "index"
    lib = library(index, seeds_library)
    lib.update([str(folder)])
    # Beside the index (the default layout) and, the worst case, inside the index folder.
    stores = [BotData(tmp_path / "bot.sqlite"), BotData(index / "bot.sqlite")]
    answer = lib.ask("who defended Darroch?")
    ids = [(d, d.save_answer(answer, user_id=1, channel_id=2)) for d in stores]
    for d, answer_id in ids:
        assert d.vote(answer_id, 7, 1)
        d.close()

    (folder / "owls.md").write_text(note(*ANIMALS[0]))
    watcher = Watcher(lib, [str(folder)], quiet=0)
    assert watcher.poll().added
    (folder / "owls.md").unlink()
    assert watcher.poll().removed
    lib.update([str(folder)], rebuild=True)
    lib.update([str(folder)], rebuild=True)  # twice: old generations are collected
    assert lib.check() == []

    for path, (_, answer_id) in zip([tmp_path / "bot.sqlite", index / "bot.sqlite"], ids,
                                    strict=True):
        data = BotData(path)
        try:
            assert [(r["question"], r["vote"]) for r in data.feedback()] == \
                [("who defended Darroch?", 1)]
            assert data.answer(answer_id) == answer
        finally:
            data.close()
