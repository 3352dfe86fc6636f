"""The update rules as a pure plan: plain Source records in, decisions out; no model, no store."""

from __future__ import annotations

import os

import pytest

from index import paths
from index.errors import CitebotError
from index.plan import Planner, chunks_to_embed
from index.records import Chunk, Source

NOW = "2026-12-05T00:00:00Z"


def src(name: str, text: str = "", *, folder: str = "/data", sid: str | None = None,
        url: str | None = None) -> Source:
    path = None if url else f"{folder}/{name}"
    return Source(id=sid or f"id-{name}", title=name, path=path, url=url,
                  content_hash=f"h-{text or name}", added_at="2020-01-01T00:00:00Z")


def indexed(*sources: Source) -> dict[str, Source]:
    return {s.id: s for s in sources}


def test_added_changed_unchanged_and_duplicates():
    old = indexed(src("a.md"), src("b.md"))
    p = Planner(old, NOW)
    assert p.offer(src("a.md")) is None  # same text
    changed = p.offer(src("b.md", "new text"))
    added = p.offer(src("c.md"))
    assert p.offer(src("copy-of-a.md", "a.md")) is None  # a's text under another name
    assert p.offer(src("copy-of-c.md", "c.md")) is None  # a twin of one added just now
    plan = p.plan
    assert plan.unchanged == ["/data/a.md"]
    assert plan.changed == [changed] and changed.added_at == "2020-01-01T00:00:00Z"
    assert plan.added == [added] and added.added_at == NOW
    assert plan.duplicates == [("/data/copy-of-a.md", "/data/a.md"),
                               ("/data/copy-of-c.md", "/data/c.md")]
    assert plan.dropped_ids == ["id-b.md"] and plan.writes


def test_the_same_file_spelled_another_way_keeps_its_id(tmp_path):
    (tmp_path / "a.md").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path)
    old = indexed(src("a.md", folder=str(tmp_path), sid="first"))
    p = Planner(old, NOW)
    again = src("a.md", "edited", folder=str(tmp_path / "link"), sid="second")
    got = p.offer(again)
    assert got.id == "first" and got.path == str(tmp_path / "a.md")
    assert p.plan.changed == [got] and p.plan.dropped_ids == ["first"]


def test_remove_by_path_folder_url_or_id_and_prune():
    web = src("w", url="https://example.com/w")
    old = indexed(src("a.md"), src("b.md", folder="/data/sub"), src("c.md", folder="/other"),
                  web)
    p = Planner(old, NOW)
    p.remove("/data/sub")
    p.remove("https://example.com/w")
    p.remove("id-a.md")
    with pytest.raises(CitebotError, match="not in the index"):
        p.remove("/nowhere.md")
    assert [s.id for s in p.plan.removed] == ["id-b.md", web.id, "id-a.md"]
    assert p.sources_left() == 1 and p.current("id-c.md") is not None


def test_prune_drops_only_vanished_files_under_the_given_folders(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    old = indexed(src("a.md", folder=str(data)), src("b.md", folder=str(data)),
                  src("c.md", folder=str(tmp_path / "elsewhere")))
    p = Planner(old, NOW)
    p.prune([str(data)], [str(data / "a.md")])
    assert [s.id for s in p.plan.removed] == ["id-b.md"]


def test_prune_uses_resolved_folders_like_remove(tmp_path):
    """A source indexed through a symlinked or relative spelling of the folder is pruned when
    its file is gone, and kept when it is there under the other spelling."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "kept.md").write_text("x")
    (tmp_path / "link").symlink_to(data)
    old = indexed(src("kept.md", folder=str(tmp_path / "link")),
                  src("gone.md", folder=str(tmp_path / "link")),
                  src("other.md", folder=str(tmp_path / "elsewhere")))
    p = Planner(old, NOW)
    p.prune([str(data), str(tmp_path / "link")], [str(data / "kept.md")])
    assert [s.id for s in p.plan.removed] == ["id-gone.md"]


def test_an_edit_into_a_twin_is_a_duplicate_and_a_freed_text_can_be_reused():
    old = indexed(src("a.md", "one"), src("b.md", "two"))
    p = Planner(old, NOW)
    assert p.offer(src("a.md", "two")) is None  # a now says what b says
    assert p.plan.duplicates == [("/data/a.md", "/data/b.md")]
    p.remove("id-b.md")
    assert p.offer(src("c.md", "two")) is not None  # b's text is free again


def test_chunks_to_embed_are_those_with_new_text():
    chunks = [Chunk("s", t, 0, len(t), f"h{t}") for t in ("x", "y", "z")]
    assert chunks_to_embed(chunks, {"hy"}) == [0, 2]


def test_planning_is_linear_in_the_sources(monkeypatch):
    """Each offered file is looked up, not compared with every indexed one: at most one
    realpath per source (the old scan made n² of them)."""
    calls = []
    real = os.path.realpath
    monkeypatch.setattr(paths.os.path, "realpath", lambda p: calls.append(p) or real(p))
    n = 3000
    old = indexed(*(src(f"f{i}.md") for i in range(n)))
    keys = {sid: paths.same_file_key(s) for sid, s in old.items()}
    calls.clear()
    p = Planner(old, NOW, keys)
    for i in range(n + 500):
        p.offer(src(f"f{i}.md", f"edited {i}" if i % 10 == 0 else ""))
    assert len(p.plan.unchanged) == n - n // 10 and len(p.plan.added) == 500
    assert len(calls) <= n + 500
    calls.clear()
    p.remove("/data/f7.md")  # by path: resolved once, then compared with stored keys
    assert len(calls) == 1 and [s.id for s in p.plan.removed] == ["id-f7.md"]


def test_merge_policy_makes_big_segments_of_big_batches():
    """Segments of one size tier merge by MERGE_FACTOR; big batches (each under half the
    largest merged size) merge once they add up to a big segment, never past MAX_MERGED."""
    from index import segments

    def seg(i: int, n: int) -> tuple[str, int, int, int]:
        return (f"seg-{i}", i * 1000, i * 1000 + n, n)

    half = segments.MAX_MERGED // 2
    batches = [seg(0, half + 10), seg(1, half // 3), seg(2, half // 3), seg(3, half // 3),
               seg(4, half // 3), seg(5, 12)]
    run = segments._big_run(batches)
    assert [r[0] for r in run] == ["seg-1", "seg-2", "seg-3", "seg-4"]
    assert half <= sum(r[3] for r in run) <= segments.MAX_MERGED
    assert segments._big_run([seg(0, half // 3), seg(1, 12)]) is None
