"""The stages together with real SQLite, FAISS, BM25 and the real model."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from bot.app import make_library
from index.errors import BadQuery, CitebotError, IndexCorrupt, ModelMismatch, SourceUnreadable
from index.folder import STORE, current_generation
from index.library import Library, Settings

from .conftest import SEEDS, index_files, library, seeds_config


def test_seeds_index_holds_every_article(seeds_library):
    sources = seeds_library.sources()
    assert len(sources) == 5
    titles = {s.publisher for s in sources}
    assert "Los Angeles Times" in titles
    assert all(s.chunks > 0 for s in sources)
    assert seeds_library.check() == []


def test_names_are_found_lexically(seeds_library):
    for name, phrase in [("Corbyn", "beyond unfair and wrong"), ("Duncan", "under the bus")]:
        hits = seeds_library.search(f"what did {name} say?", k=3)
        assert any(phrase in h.chunk.text for h in hits), name


def test_search_results_quote_their_source_exactly(seeds_library):
    snap = seeds_library.snapshot()
    for hit in seeds_library.search("why did the ambassador resign?", k=10):
        assert snap.source_text(hit.source.id)[hit.chunk.start:hit.chunk.end] == hit.chunk.text


def test_remove_and_rebuild(index_copy, seeds_library):
    lib = library(index_copy, seeds_library)
    gone = next(s for s in lib.sources() if s.publisher == "TRT World")
    report = lib.remove([gone.path])
    assert report.removed == [gone.path]
    assert all(h.source.id != gone.id for h in lib.search("Alan Duncan under the bus", k=10))
    assert lib.check() == []
    report = lib.update([str(SEEDS)], rebuild=True)
    assert len(lib.sources()) == 5 and report.chunks_embedded == report.chunks_total


@pytest.mark.parametrize("made", ["other-settings", "old-format"])
def test_an_index_made_otherwise_is_refused_with_a_rebuild_hint(index_copy, seeds_library, made):
    """Other chunking settings (named in the error), or an index in the format before segments
    (one whole generation per update): it is refused, not read wrongly, not rebuilt silently
    and not lost, and the one command the error names upgrades it."""
    if made == "other-settings":
        lib = Library(index_copy, seeds_library.embedder,
                      replace(seeds_library.settings, target_tokens=64))
        hint = "target_tokens"
    else:  # what format 2 left: CURRENT -> gen-N holding manifest.json, vectors.faiss, bm25/
        old = index_copy / "gen-000042"
        (old / "bm25").mkdir(parents=True)
        (old / "manifest.json").write_text(json.dumps({"format_version": 2}))
        (old / "index.sqlite").write_bytes(b"SQLite format 3\x00")
        (old / "vectors.faiss").write_bytes(b"old vectors")
        (index_copy / "CURRENT").write_text("gen-000042\n")
        lib = library(index_copy, seeds_library)
        hint = "older format"
    before = index_files(index_copy)
    with pytest.raises(ModelMismatch, match=hint) as caught:
        lib.search("who defended Darroch?")
    assert caught.value.remedy == "rebuild" and "--rebuild" not in str(caught.value)
    with pytest.raises(ModelMismatch, match=hint):
        lib.update([str(SEEDS)])
    assert index_files(index_copy) == before  # nothing rebuilt or dropped behind the user's back
    lib.update([str(SEEDS)], rebuild=True)
    assert lib.check() == [] and len(lib.sources()) == 5


def test_bad_source_leaves_the_index_as_it_was(tmp_path, index_copy, seeds_library):
    lib = library(index_copy, seeds_library)
    before = index_files(index_copy)
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    with pytest.raises(SourceUnreadable):
        lib.update([str(SEEDS), str(binary)])
    assert index_files(index_copy) == before


def _damage(index: Path, damage: str) -> None:
    gen = current_generation(index)
    if damage == "vectors":
        next(gen.glob("seg-*/vectors.faiss")).write_bytes(b"garbage")
    elif damage == "postings":
        next(gen.glob("seg-*/docs.npy")).write_bytes(b"garbage")
    elif damage == "sqlite":
        (gen / STORE).write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    elif damage == "manifest":
        db = sqlite3.connect(gen / STORE)
        db.execute("UPDATE meta SET value = '{' WHERE key = 'manifest'")
        db.commit()
        db.close()
    elif damage == "current":
        (index / "CURRENT").write_text("gen-999999\n")
    elif damage == "current-bytes":
        (index / "CURRENT").write_bytes(b"gen-\xff\n")
    elif damage == "current-folder":
        (index / "CURRENT").unlink()
        (index / "CURRENT").mkdir()
        (index / "CURRENT" / "x").write_text("x")
    elif damage == "store-folder":
        (gen / STORE).unlink()
        (gen / STORE).mkdir()


DAMAGES = ["vectors", "postings", "sqlite", "manifest", "current", "current-bytes",
           "current-folder", "store-folder"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_index_is_a_named_error_and_rebuild_repairs_it(index_copy, seeds_library,
                                                                 damage):
    """Any damage to the data or the control files: one named error for readers and
    writers, `index check` says rebuild, and --rebuild repairs it whatever it was."""
    _damage(index_copy, damage)
    lib = library(index_copy, seeds_library)
    with pytest.raises(CitebotError) as err:
        lib.search("who resigned?")
    assert isinstance(err.value, IndexCorrupt | ModelMismatch), err.value
    assert err.value.remedy == "rebuild" and "\n" not in str(err.value)
    assert str(index_copy) not in str(err.value)
    assert lib.check()
    lib.update([str(SEEDS)], rebuild=True)
    assert lib.check() == [] and lib.search("who resigned?")
    assert (index_copy / "CURRENT").is_file()


def test_defaults_config_builds_from_seeds(tmp_path):
    lib = make_library(seeds_config(tmp_path / "ix"))
    assert not lib.exists()
    assert isinstance(lib.settings, Settings)


def test_progress_counts_chunks_with_their_sentences(tmp_path, seeds_library):
    """The build's progress bar is in chunks: its total is the chunks to embed, it only moves
    forward, and it reaches the end once the sentences (a second pass) are embedded too."""
    calls: list[tuple[int, int]] = []
    lib = library(tmp_path / "index", seeds_library)
    report = lib.update([str(p) for p in sorted(SEEDS.glob("*.txt"))[:2]],
                        progress=lambda done, total: calls.append((done, total)))
    assert report.chunks_embedded > 0
    assert {total for _, total in calls} == {report.chunks_embedded}
    dones = [done for done, _ in calls]
    assert dones == sorted(set(dones)) and dones[-1] == report.chunks_embedded
    # The chunk pass alone does not fill the bar: the sentences' pass moves it on.
    assert len(dones) > 2 and dones[0] < report.chunks_embedded


@pytest.mark.parametrize("question", ["", "   \n", "x" * 2001, "who defended \udcff Darroch?",
                                      "\ud800"])
def test_questions_that_cannot_be_asked_are_refused_by_the_library_itself(seeds_library,
                                                                           question):
    """Every interface (Discord included) gets the same refusal: an empty, oversized or
    undecodable question (lone surrogates) never reaches the tokenizer."""
    for call in (seeds_library.search, seeds_library.ask):
        with pytest.raises(BadQuery) as err:
            call(question)
        assert "\n" not in str(err.value) and len(str(err.value)) < 120
    assert seeds_library.ask("who defended Darroch?").answered
