"""The segment store: updates write only what changed, results do not depend on how the
index was built, and BM25 statistics are those of a fresh build.

Real SQLite, FAISS and files; the model is the real one where answers matter, the labelled
stand-in (bench/standin.py: vectors from a hash of the text, real tokenizer) where only the
store is checked.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bench.standin import HashEmbedder
from index import library as library_module
from index import segments
from index.folder import STORE, current_generation
from index.lexical import Lexical, Postings, lexical_text, tokenize
from index.library import Library

from .conftest import SEEDS, library

WORDS = ("river otter heron beaver owl badger puffin tundra willow lodge colony cliff island "
         "spring survey warden nest tree coast sleep hold hands fell build return count").split()


def article(n: int, version: int = 0) -> str:
    """A small article of its own: three paragraphs, words drawn by its number."""
    rng = np.random.default_rng(n * 1000 + version)
    paragraphs = []
    for p in range(3):
        words = rng.choice(WORDS, size=40)
        paragraphs.append(f"Report {n} part {p} edition {version}: " + " ".join(words) + ".")
    return f"# Article {n}\n\n" + "\n\n".join(paragraphs) + "\n"


def articles(tmp_path: Path, n: int) -> Path:
    """A folder of articles a0.md..a{n-1}.md."""
    folder = tmp_path / "articles"
    folder.mkdir()
    for i in range(n):
        (folder / f"a{i}.md").write_text(article(i))
    return folder


@pytest.fixture(scope="module")
def standin() -> HashEmbedder:
    return HashEmbedder()


def _top(lib: Library, queries: list[str], k: int = 10) -> list[list[tuple]]:
    """Each query's hits as (path, start, end, score rounded), comparable across indexes."""
    return [[(h.source.path, h.chunk.start, h.chunk.end, round(h.score, 5))
             for h in hits] for hits in lib.search_many(queries, k)]


def _same_ranking(a: list[tuple], b: list[tuple]) -> bool:
    """Equal hits and scores; hits of equal score may come in either order (ties aside)."""
    return sorted(a, key=lambda h: (-h[3], h)) == sorted(b, key=lambda h: (-h[3], h))


def _near_ranking(a: list[tuple], b: list[tuple], tol: float = 2e-3) -> bool:
    """Scores rank by rank within tol, and the same hits wherever no near-tie could swap them."""
    if len(a) != len(b) or any(abs(x[3] - y[3]) > tol for x, y in zip(a, b, strict=True)):
        return False
    floor = min(h[3] for h in a + b) + tol
    return {h[:3] for h in a if h[3] > floor} == {h[:3] for h in b if h[3] > floor}


def _lexical_view(lib: Library) -> tuple:
    """BM25 statistics and every live chunk's score for a few queries, by (path, start)."""
    snap = lib.snapshot()
    where = {c.id: (snap.sources()[c.source_id].path, c.start) for c, _ in snap.all_chunks()}
    scores = []
    for q in ("otter river survey", "heron heron colony", "edition 3 warden"):
        s = snap.lexical.scores(q)
        scores.append(sorted((where[i], round(float(s[i]), 5)) for i in where))
    stems = tokenize(" ".join(WORDS))
    return (snap.lexical.n_docs, round(snap.lexical.avgdl, 9),
            snap.lexical.doc_freqs(stems).tolist(), scores,
            snap.word_counts(sorted({w for w in WORDS if len(w) >= 5})))


def test_results_equal_a_fresh_rebuild_after_adds_edits_and_removals(tmp_path, standin,
                                                                     monkeypatch):
    """Many small updates (with merges along the way) leave the same top-10, the same BM25
    statistics and the same spelling vocabulary as one fresh build of the final folder."""
    monkeypatch.setattr(segments, "MERGE_FACTOR", 3)
    folder = articles(tmp_path, 4)
    lib = Library(tmp_path / "grown", standin)
    lib.update([str(folder)])
    merges = 0
    for step in range(12):
        if step % 4 == 3:
            (folder / f"a{step // 4}.md").unlink()  # removed
        elif step % 4 == 1:
            (folder / f"a{step + 9}.md").write_text(article(step + 9, version=step))  # edited
        else:
            (folder / f"a{step + 10}.md").write_text(article(step + 10))  # added
        report = lib.update([str(folder)], prune=True)
        assert report.wrote
        merges += report.merges
    assert merges >= 2, "the series should have merged segments"
    assert lib.snapshot().vectors.ntotal > lib.snapshot().vectors.live  # ids left behind
    assert lib.check() == []

    fresh = Library(tmp_path / "fresh", standin)
    fresh.update([str(folder)])
    assert len(fresh.snapshot().segments) == 1
    queries = ["otter river survey", "heron colony on the cliff", "edition 5 warden count",
               "Article 12", "beaver lodge willow", "part 2 puffin"]
    for got, want in zip(_top(lib, queries), _top(fresh, queries), strict=True):
        assert _same_ranking(got, want)
    assert _lexical_view(lib) == _lexical_view(fresh)


def test_a_first_build_writes_in_parts_that_readers_see_only_together(tmp_path, standin,
                                                                     monkeypatch):
    """A first build bigger than a part embeds and writes one part at a time, each a segment
    of a generation that is published only at the end, and ranks as a build in one part
    does; an update of a live index stays one commit however big it is."""
    folder = articles(tmp_path, 9)
    whole = Library(tmp_path / "whole", standin)
    whole.update([str(folder)])
    total = whole.snapshot().vectors.live
    assert len(whole.snapshot().segments) == 1

    monkeypatch.setattr(library_module, "BUILD_PART", 2)  # chunks
    parted = Library(tmp_path / "parted", standin)
    applied: list[tuple[int, int, Path | None]] = []  # (chunks, sources, live generation)
    apply = segments.Writer.apply

    def spy(self, dropped, rows, embeddings, sentences):
        applied.append((sum(len(r.chunks) for r in rows), len(rows),
                        current_generation(parted.index_dir)))
        return apply(self, dropped, rows, embeddings, sentences)

    monkeypatch.setattr(segments.Writer, "apply", spy)
    shown: list[tuple[int, int]] = []
    report = parted.update([str(folder)], progress=lambda n, t: shown.append((n, t)))
    # parts of at most 2 chunks, but for a source of more on its own
    assert len(applied) >= 3 and all(n <= 2 or srcs == 1 for n, srcs, _ in applied)
    assert all(live is None for *_, live in applied), "a reader saw part of the first build"
    assert sum(n for n, *_ in applied) == report.chunks_embedded == total
    assert shown[-1] == (total, total) and [n for n, _ in shown] == sorted(n for n, _ in shown)
    assert {t for _, t in shown} == {total}
    assert parted.check() == []
    queries = ["otter river survey", "heron colony on the cliff", "Article 3", "part 2 puffin"]
    for got, want in zip(_top(parted, queries), _top(whole, queries), strict=True):
        assert _same_ranking(got, want)
    assert _lexical_view(parted) == _lexical_view(whole)

    applied.clear()
    more = tmp_path / "more"
    more.mkdir()
    for n in range(20, 26):
        (more / f"a{n}.md").write_text(article(n))
    parted.update([str(more)])
    assert len(applied) == 1 and applied[0][0] > 2  # one commit, not parts


def test_real_model_answers_equal_a_fresh_rebuilds(tmp_path, seeds_library, monkeypatch):
    """The same with the real model and the seed articles: an edit, an addition and a removal
    later, search and ask give what a fresh build gives."""
    monkeypatch.setattr(segments, "MERGE_FACTOR", 2)
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS, folder)
    grown = library(tmp_path / "grown", seeds_library)
    grown.update([str(p) for p in sorted(folder.glob("*.txt"))[:3]])
    grown.update([str(folder)])
    target = sorted(folder.glob("*.txt"))[1]
    target.write_text(target.read_text(encoding="utf-8").replace("the", "this", 3),
                      encoding="utf-8")
    grown.update([str(folder)])
    gone = sorted(folder.glob("*.txt"))[0]
    gone.unlink()
    grown.update([str(folder)], prune=True)
    fresh = library(tmp_path / "fresh", seeds_library)
    fresh.update([str(folder)])
    questions = ["who defended Darroch?", "why did Darroch resign?", "what did Corbyn say?",
                 "what did the leaked cables say?", "who is Nigel Farage?"]
    # The model's vectors of one text differ in the last bits with the batch it was embedded
    # in (here: across updates), so scores are compared to a tolerance, not to the bit.
    for got, want in zip(_top(grown, questions), _top(fresh, questions), strict=True):
        assert _near_ranking(got, want)
    for q in questions[:2]:
        a, b = grown.ask(q), fresh.ask(q)
        assert a.answered == b.answered and a.citations[0].quote == b.citations[0].quote


def test_bm25_scores_equal_bm25s_lucene_on_the_same_chunks():
    """The segmented BM25 is Lucene's BM25 as bm25s computes it, across segments and with
    removed chunks left out of every statistic."""
    import bm25s

    texts = [article(n).replace("\n", " ") for n in range(30)] + ["", "the and of"]
    keep = [i for i in range(len(texts)) if i % 7 != 3]  # chunks 3, 10, 17... removed
    parts = [Postings.build(0, list(range(12)), texts[:12]),
             Postings.build(12, list(range(12, len(texts))), texts[12:])]
    dead = np.array([i for i in range(len(texts)) if i not in keep])
    lengths = {i: len(tokenize(texts[i]) or ["x"]) for i in keep}
    lex = Lexical(parts, dead, len(keep), sum(lengths.values()), len(texts))

    ref = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    ref.index([tokenize(texts[i]) or ["\x00empty"] for i in keep], show_progress=False)
    for query in ("otter river survey", "heron heron colony", "Report 12 edition", "zzz"):
        ids = [ref.vocab_dict[t] for t in tokenize(query) if t in ref.vocab_dict]
        want = ref.get_scores_from_ids(ids) if ids else np.zeros(len(keep))
        got = lex.scores(query)
        np.testing.assert_allclose(got[keep], want, rtol=1e-5, atol=1e-6)
        assert not got[dead].any()
    merged = Postings.merge(parts, 0, len(texts), dead)
    one = Lexical([merged], np.zeros(0, np.int64), len(keep), sum(lengths.values()),
                  len(texts))
    np.testing.assert_array_equal(one.scores("otter heron Report 12"),
                                  lex.scores("otter heron Report 12"))
    assert lexical_text("Johnson said", {"Johnson": {"Boris"}}).endswith("Boris")


def _rows(index: Path) -> dict[str, list]:
    db = sqlite3.connect(current_generation(index) / STORE)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("sources", "chunks", "sentences")}
    finally:
        db.close()


def test_an_update_of_one_article_writes_only_that_articles_rows_and_vectors(tmp_path,
                                                                             standin):
    folder = articles(tmp_path, 40)
    lib = Library(tmp_path / "index", standin)
    lib.update([str(folder)])
    before = _rows(lib.index_dir)
    gen = current_generation(lib.index_dir)
    old_files = {p: p.stat().st_mtime_ns for p in gen.glob("seg-*/*")}

    (folder / "a7.md").write_text(article(7, version=1))
    report = lib.update([str(folder)])
    assert report.changed == [str(folder / "a7.md")] and len(report.unchanged) == 39
    after = _rows(lib.index_dir)
    sid = next(s.id for s in lib.sources() if s.path.endswith("a7.md"))
    new_chunks = [r for r in after["chunks"] if r not in before["chunks"]]
    gone_chunks = [r for r in before["chunks"] if r not in after["chunks"]]
    assert new_chunks and {r[1] for r in new_chunks} == {sid}  # only its rows are new
    assert {r[1] for r in gone_chunks} == {sid}  # and only its old rows went
    assert [r for r in after["sources"] if r not in before["sources"]][0][0] == sid
    old_ids = {r[0] for r in gone_chunks}
    assert all(r[1] not in old_ids for r in after["sentences"])
    # The segment files already there are untouched; the new segment holds its vectors only.
    assert {p: p.stat().st_mtime_ns for p in old_files} == old_files
    snap = lib.snapshot()
    new_segment = snap.vectors.parts[-1]
    assert new_segment.ntotal == len(new_chunks) == report.chunks_total - (
        len(before["chunks"]) - len(gone_chunks))
    assert sorted(snap.segment_ids(snap.segments[-1])[0]) == sorted(r[0] for r in new_chunks)
    assert lib.check() == []


def test_merging_keeps_every_chunk_and_drops_the_removed(tmp_path, standin, monkeypatch):
    monkeypatch.setattr(segments, "MERGE_FACTOR", 2)
    folder = articles(tmp_path, 0)
    lib = Library(tmp_path / "index", standin)
    for n in range(6):  # one update, one segment each
        (folder / f"a{n}.md").write_text(article(n))
        lib.update([str(folder)])
    (folder / "a2.md").unlink()
    lib.update([str(folder)], prune=True)
    snap = lib.snapshot()
    assert len(snap.segments) < 6 and lib.check() == []
    held = sum(p.ntotal for p in snap.vectors.parts) - len(snap.vectors.dead)
    assert held == snap.vectors.live == len(snap.all_chunks())
    assert {s.path.rsplit("/", 1)[1] for s in lib.sources()} == \
        {f"a{n}.md" for n in (0, 1, 3, 4, 5)}
    assert not [p for p in current_generation(lib.index_dir).glob("seg-*")
                if p.name not in snap.segments]


def test_equal_bm25_scores_are_cut_by_text_not_by_id():
    """Chunks of equal score at the candidate cut are taken by a key of their text, so an
    index whose ids were assigned in another order (grown, merged) takes the same ones."""
    texts = [f"otter number{i} alpha" for i in range(20)]  # one "otter" each, equal lengths
    forward = Lexical.build(texts)
    order = list(reversed(range(20)))
    backward = Lexical([Postings.build(0, order, texts)], np.zeros(0, np.int64), 20,
                       int(forward.parts[0].lengths.sum()), 20)
    a, b = forward.scores("otter"), backward.scores("otter")
    assert len(set(a.tolist())) == 1  # all tied
    picked_a = {texts[i] for i in forward.top(a, 5)}
    picked_b = {texts[order.index(i)] for i in backward.top(b, 5)}
    assert picked_a == picked_b and len(picked_a) == 5


def test_search_takes_the_same_top_as_scoring_every_chunk():
    """Lexical.search finds its top among the chunks holding the query's stems, from a floor
    set by the rarest ones; it must take exactly top(scores()), with removed chunks, repeated
    words, ties at the cut and fewer matches than asked."""
    texts = [article(n).replace("\n", " ") for n in range(40)]
    texts += [f"otter number{i} alpha" for i in range(30)] + ["", "the and of"]
    parts = [Postings.build(0, list(range(25)), texts[:25]),
             Postings.build(25, list(range(25, len(texts))), texts[25:])]
    dead = np.array([i for i in range(len(texts)) if i % 9 == 4])
    kept = [i for i in range(len(texts)) if i not in set(dead.tolist())]
    length = sum(len(tokenize(texts[i]) or ["x"]) for i in kept)
    lex = Lexical(parts, dead, len(kept), length, len(texts))
    for query in ("otter river survey", "heron heron colony", "otter", "alpha number3",
                  "Report 12 edition", "puffin", "zzz"):
        scores = lex.scores(query)
        for k in (1, 5, 12, 50, 200):
            ids, got = lex.search(query, k)
            want = lex.top(scores, k)
            assert sorted(ids.tolist()) == sorted(want.tolist()), (query, k)
            np.testing.assert_array_equal(got, scores)
            assert not set(ids.tolist()) & set(dead.tolist())


def _source_statements(tmp_path: Path, standin: HashEmbedder, n: int, monkeypatch) -> list[str]:
    """The SQL an update of one new file runs on the sources table of an index of n articles."""
    tmp_path.mkdir()
    lib = Library(tmp_path / "index", standin)
    lib.update([str(articles(tmp_path, n))])
    extra = tmp_path / "extra.md"
    extra.write_text(article(10_000))
    seen: list[str] = []
    connect = segments.folder.connect

    def traced(path: Path, *, readonly: bool) -> sqlite3.Connection:
        db = connect(path, readonly=readonly)
        db.set_trace_callback(seen.append)
        return db

    monkeypatch.setattr(segments.folder, "connect", traced)
    assert lib.update([str(extra)]).added == [str(extra)]
    monkeypatch.setattr(segments.folder, "connect", connect)
    return [s for s in seen if "sources" in s and not s.lstrip().startswith(("CREATE", "DROP"))]


def test_planning_one_file_reads_its_own_records_not_every_source(tmp_path, standin,
                                                                   monkeypatch):
    """Planning looks the offered file up by id, resolved path and hash in SQLite: as many
    statements at 90 sources as at 30, and none of them scans the sources table."""
    small = _source_statements(tmp_path / "small", standin, 30, monkeypatch)
    big = _source_statements(tmp_path / "big", standin, 90, monkeypatch)
    assert small and len(big) == len(small) <= 12
    db = sqlite3.connect(current_generation(tmp_path / "big" / "index") / STORE)
    try:
        for sql in big:
            plan = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)]
            assert not [p for p in plan if p.startswith("SCAN sources")], (sql, plan)
    finally:
        db.close()


def test_search_with_a_helper_thread_gives_the_hits_of_one_thread(tmp_path, standin,
                                                                  monkeypatch):
    """With a free CPU, the vector segments are searched beside BM25 and the BM25
    candidates' rows are read meanwhile (retrieve._gather); the hits, scores and answers are
    those of one thread doing it all."""
    import index.vectors as vectors

    folder = articles(tmp_path, 6)
    lib = Library(tmp_path / "index", standin)
    for n in range(6, 9):  # three more updates: four segments
        lib.update([str(folder)])
        (folder / f"a{n}.md").write_text(article(n))
    lib.update([str(folder)])
    assert len(lib.snapshot().segments) >= 3
    queries = ["otter river survey", "heron colony on the cliff", "edition 0 warden count",
               "Article 7", "beaver lodge willow"]
    helped: list[bool] = []
    search_segments = vectors.search_segments

    def traced(parts, query, ks, beside):
        return search_segments(parts, query, ks,
                               lambda shared: (helped.append(shared), beside(shared))[1])

    monkeypatch.setattr(vectors, "search_segments", traced)
    monkeypatch.setattr(vectors, "SHARED_MIN", 0)
    monkeypatch.setattr(vectors, "cpu_free", lambda: False)
    alone = _top(lib, queries), [lib.ask(q).to_json() for q in queries]
    monkeypatch.setattr(vectors, "cpu_free", lambda: True)
    shared = _top(lib, queries), [lib.ask(q).to_json() for q in queries]
    assert helped == [False] * 10 + [True] * 10
    assert shared == alone


def test_big_segments_of_a_big_index_are_approximate(tmp_path, standin, monkeypatch):
    """Past FLAT_MAX vectors in all (where a fresh build is approximate anyway), a segment
    of more than SEGMENT_FLAT_MAX is written pq_sq8 (here by an update); a small one
    stays exact, and so does every segment of an index up to FLAT_MAX."""
    import index.vectors as vectors

    monkeypatch.setattr(vectors, "FLAT_MAX", 60)
    monkeypatch.setattr(vectors, "SEGMENT_FLAT_MAX", 20)
    monkeypatch.setitem(vectors.MIN_VECTORS, "pq_sq8", 16)
    monkeypatch.setattr(segments, "MERGE_FACTOR", 100)  # no merges: one segment an update
    folder = tmp_path / "articles"
    folder.mkdir()
    lib = Library(tmp_path / "index", standin)

    def add(first: int, count: int) -> list[tuple[str, int]]:
        for n in range(first, first + count):
            (folder / f"a{n}.md").write_text(article(n))
        lib.update([str(folder)])
        snap = lib.snapshot()
        return [(p.kind, p.ntotal) for p in snap.vectors.parts]

    first = add(0, 16)
    assert [k for k, _ in first] == ["flat"] and 20 < first[0][1] <= 60
    grown = add(16, 16)
    assert sum(n for _, n in grown) > 60 and grown[1][1] > 20
    assert [k for k, _ in grown] == ["flat", "pq_sq8"]
    small = add(32, 1)
    assert small[-1][0] == "flat" and small[-1][1] <= 20
