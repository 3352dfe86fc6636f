"""The stages together with real SQLite, FAISS, BM25 and the real model."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from bot.app import make_library
from index.errors import IndexCorrupt, ModelMismatch, SourceUnreadable
from index.library import Library, Settings
from index.store import current_generation

from .conftest import SEEDS, seeds_config


def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


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


def test_unchanged_build_embeds_nothing_and_writes_nothing(index_copy, seeds_library):
    lib = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    before = current_generation(index_copy)
    report = lib.update([str(SEEDS)])
    assert report.chunks_embedded == 0 and not report.wrote
    assert len(report.unchanged) == 5
    assert current_generation(index_copy) == before


def test_edited_article_reembeds_only_its_changed_chunks(tmp_path, seeds_library):
    folder = tmp_path / "articles"
    shutil.copytree(SEEDS, folder)
    lib = Library(tmp_path / "index", seeds_library.embedder, seeds_library.settings)
    first = lib.update([str(folder)])
    target = folder / "003_7d9a2ce0f383324a.txt"
    text = target.read_text()
    target.write_text(text.replace("TRT World spoke to Olly Barratt for more on the story.",
                                   "TRT World spoke to a correspondent about the story."))
    second = lib.update([str(folder)])
    assert second.changed == [str(target)] and len(second.unchanged) == 4
    assert 1 <= second.chunks_embedded <= 3 < first.chunks_embedded
    assert any("correspondent" in h.chunk.text for h in lib.search("TRT World correspondent"))


def test_duplicate_under_another_name_is_skipped(tmp_path, index_copy, seeds_library):
    lib = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    twin = tmp_path / "copy.txt"
    twin.write_bytes((SEEDS / "002_41119d82aa048747.txt").read_bytes())
    report = lib.update([str(twin)])
    assert report.duplicates and report.duplicates[0][0] == str(twin)
    assert len(lib.sources()) == 5


def test_remove_and_rebuild(index_copy, seeds_library):
    lib = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    gone = next(s for s in lib.sources() if s.publisher == "TRT World")
    report = lib.remove([gone.path])
    assert report.removed == [gone.path]
    assert all(h.source.id != gone.id for h in lib.search("Alan Duncan under the bus", k=10))
    assert lib.check() == []
    report = lib.update([str(SEEDS)], rebuild=True)
    assert len(lib.sources()) == 5 and report.chunks_embedded == report.chunks_total


def test_other_settings_are_refused_by_name(index_copy, seeds_library):
    other = Library(index_copy, seeds_library.embedder,
                    replace(seeds_library.settings, target_tokens=64))
    with pytest.raises(ModelMismatch, match="target_tokens.*--rebuild"):
        other.search("anything")


def test_bad_source_leaves_the_index_as_it_was(tmp_path, index_copy, seeds_library):
    lib = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    before = _tree(index_copy)
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10)
    with pytest.raises(SourceUnreadable):
        lib.update([str(SEEDS), str(binary)])
    assert _tree(index_copy) == before


@pytest.mark.parametrize("damage", ["vectors", "sqlite", "manifest", "current"])
def test_damaged_index_is_a_named_error_and_check_says_rebuild(index_copy, seeds_library,
                                                               damage):
    gen = current_generation(index_copy)
    if damage == "vectors":
        (gen / "vectors.faiss").write_bytes(b"garbage")
    elif damage == "sqlite":
        (gen / "index.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    elif damage == "manifest":
        (gen / "manifest.json").write_text("{")
    else:
        (index_copy / "CURRENT").write_text("gen-999999\n")
    lib = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    with pytest.raises(IndexCorrupt):
        lib.search("who resigned?")
    problems = lib.check()
    assert problems and "--rebuild" in problems[-1]
    lib.update([str(SEEDS)], rebuild=True)
    assert lib.check() == [] and lib.search("who resigned?")


def test_readers_switch_to_a_new_generation_without_restart(index_copy, seeds_library,
                                                            tmp_path):
    lib = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    reader = Library(index_copy, seeds_library.embedder, seeds_library.settings)
    assert len(reader.sources()) == 5
    extra = tmp_path / "note.md"
    extra.write_text("# Penguin report\n\nThe emperor penguins of Antarctica huddle for warmth.")
    lib.update([str(extra)])
    assert len(reader.sources()) == 6
    assert reader.search("emperor penguins huddle", k=1)[0].source.title == "Penguin report"


def test_defaults_config_builds_from_seeds(tmp_path):
    lib = make_library(seeds_config(tmp_path / "ix"))
    assert not lib.exists()
    assert isinstance(lib.settings, Settings)
