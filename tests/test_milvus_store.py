"""index.milvus_store against a real Milvus Lite 2.5 file in tmp: schema, upserts and deletes
of what changed, BM25 by Milvus's full-text function, sentences, the pointer switch.

Vectors come from a hash of the text (no model): these tests are about the engine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from index.chunk import answer_units
from index.errors import IndexNotFound, ModelMismatch
from index.lexical import Lexical, Postings, given_names, lexical_text
from index.milvus_generation import bm25_terms, chunk_id
from index.milvus_store import MilvusStore
from index.records import Chunk, Source
from index.store import ChunkSentences, Manifest, SourceRows

from .conftest import ROOT

DIM = 8
MANIFEST = Manifest(model="hash", dim=DIM, max_tokens=254, target_tokens=128,
                    overlap_sentences=1)
ARTICLES = {
    "owls": "Snowy owls nest on the tundra. Observers counted owls near Tromso.",
    "otters": "Sea otters hold hands while they sleep. Otters eat urchins off Monterey.",
    "herons": "Grey herons nest in heronries. Theresa May watched herons. May left early.",
}


def vec(text: str) -> np.ndarray:
    """A unit vector from a hash of the text: equal texts, equal vectors."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def source_rows(sid: str, text: str) -> tuple[SourceRows, np.ndarray, list[ChunkSentences]]:
    """One chunk per sentence, each with its sentence spans and vectors."""
    chunks = []
    for a, b in answer_units(text):
        piece = text[a:b]
        chunks.append(Chunk(sid, piece, a, b, hashlib.sha256(piece.encode()).hexdigest()[:16]))
    src = Source(id=sid, title=sid.title(), path=f"/data/{sid}.txt",
                 content_hash=hashlib.sha256(text.encode()).hexdigest())
    sentences = [ChunkSentences(((c.start, c.end),), vec(c.text).reshape(1, -1)) for c in chunks]
    return (SourceRows(src, text, chunks), np.stack([vec(c.text) for c in chunks]), sentences)


def put(gen, *parts) -> None:
    """Write several sources' source_rows() in one update."""
    gen.put([p[0] for p in parts], np.concatenate([p[1] for p in parts]),
            [s for p in parts for s in p[2]])


@pytest.fixture
def store(tmp_path):
    s = MilvusStore(str(tmp_path / "milvus.db"))
    yield s
    s.close()


@pytest.fixture
def live(store):
    gen = store.create(MANIFEST)
    put(gen, *[source_rows(sid, text) for sid, text in ARTICLES.items()])
    store.publish(gen.gen)
    return store.open(MANIFEST)


def test_rows_read_back_as_written(live):
    rows, embeddings, sentences = source_rows("otters", ARTICLES["otters"])
    assert set(live.sources()) == set(ARTICLES)
    src = live.sources(["otters"])["otters"]
    assert (src.title, src.path, src.url, src.chunks) == ("Otters", "/data/otters.txt", None, 2)
    got = live.source_chunks("otters")
    assert [(c.text, c.start, c.end, c.hash) for c in got] == \
        [(c.text, c.start, c.end, c.hash) for c in rows.chunks]
    ids = [c.id for c in got]
    assert ids == [chunk_id("otters", c.start, c.hash) for c in rows.chunks]
    assert np.allclose(live.embeddings(ids[::-1]), embeddings[::-1])
    stored = live.sentences(ids)
    for cid, want in zip(ids, sentences, strict=True):
        assert stored[cid].spans == want.spans
        assert np.allclose(stored[cid].vectors, want.vectors, atol=2e-3)  # half precision
    assert live.count() == sum(len(answer_units(t)) for t in ARTICLES.values())


def test_terms_hold_stems_and_words_of_chunks(live):
    assert live.word_counts(["otters", "heronries", "zebras"]) == {"otters": 2, "heronries": 1}
    assert live.knows("otter") and live.knows("nesting") and not live.knows("zebra")
    assert live.doc_freqs(["nest", "otter", "zebra"]).tolist() == [2, 2, 0]
    # Given names join the BM25 text of chunks that call someone by surname alone.
    left = next(c for c in live.source_chunks("herons") if c.text.startswith("May left"))
    assert "theresa" in live.client.query(live.names["chunks"], ids=[left.id],
                                          output_fields=["terms"])[0]["terms"]


def test_candidates_score_like_the_local_store(live):
    chunks = [c for sid in ARTICLES for c in live.source_chunks(sid)]
    texts = {sid: ARTICLES[sid] for sid in ARTICLES}
    postings = Postings.build(0, range(len(chunks)), [
        lexical_text(c.text, given_names(texts[c.source_id])) for c in chunks])
    local = Lexical([postings], np.zeros(0, np.int64), len(chunks),
                    int(postings.lengths.sum()), len(chunks))
    question = "where do owls nest"
    qvec = vec(chunks[0].text)
    found = live.candidates(question, qvec, pool=len(chunks))
    assert sorted(found.ids.tolist()) == sorted(c.id for c in chunks)
    pos = {c.id: i for i, c in enumerate(chunks)}
    want_lex = local.scores(question)[[pos[i] for i in found.ids.tolist()]]
    # Milvus's BM25 and bm25s's "lucene" differ by a constant factor (k1 + 1), not in ranking.
    assert np.allclose(found.lexical / found.lexical.max(), want_lex / want_lex.max(),
                       atol=1e-3)
    exact = live.embeddings(found.ids.tolist()) @ qvec
    assert np.allclose(found.dense, exact, atol=1e-6)
    assert found.ids[np.argmax(found.dense)] == chunks[0].id
    top = live.candidates(question, qvec, pool=1)
    # one dense and one BM25 hit, both scored both ways
    assert 1 <= len(top.ids) <= 2 and (top.lexical > 0).any()


def test_an_edit_writes_only_what_changed(live):
    before = {c.id: c for c in live.source_chunks("owls")}
    edited = ARTICLES["owls"].replace("Tromso", "Bodo")
    put(live, source_rows("owls", edited))
    after = {c.id: c for c in live.source_chunks("owls")}
    kept = set(before) & set(after)
    assert len(kept) == 1 and before[kept.pop()].text == "Snowy owls nest on the tundra."
    gone = set(before) - set(after)
    assert len(gone) == 1 and live.sentences(list(gone))[gone.pop()].spans == ()
    assert [c.text for c in after.values()][-1].endswith("Bodo.")
    assert live.word_counts(["tromso", "counted"]) == {"counted": 1}
    assert live.sources(["owls"])["owls"].content_hash == source_rows("owls", edited)[0] \
        .source.content_hash
    hits = live.candidates("Bodo", vec("x"), pool=5)
    assert hits.ids[np.argmax(hits.lexical)] in after


def test_remove_deletes_a_source_everywhere(live):
    ids = [c.id for c in live.source_chunks("otters")]
    live.remove(["otters"])
    assert "otters" not in live.sources() and live.source_chunks("otters") == []
    assert all(s.spans == () for s in live.sentences(ids).values())
    assert live.word_counts(["otters", "snowy"]) == {"snowy": 1}
    assert live.doc_freqs(["otter"]).tolist() == [0]
    assert not (live.candidates("otters urchins", vec("y"), pool=10).lexical > 0).any()


def test_a_rebuild_switches_readers_at_once(store, live):
    first = live.gen
    new = store.create(MANIFEST)
    put(new, source_rows("owls", ARTICLES["owls"]))
    assert store.live() == first and set(store.open().sources()) == set(ARTICLES)
    store.publish(new.gen)
    assert store.live() == new.gen and set(store.open().sources()) == {"owls"}
    third = store.create(MANIFEST)
    put(third, source_rows("herons", ARTICLES["herons"]))
    store.publish(third.gen)
    # the one it replaced stays for readers still on it; older ones are dropped
    assert store.generations() == [new.gen, third.gen]


def test_refuses_other_settings_and_reports_no_index(store, live):
    other = Manifest(**{**MANIFEST.__dict__, "target_tokens": 64})
    with pytest.raises(ModelMismatch, match="target_tokens"):
        store.open(other)
    with pytest.raises(IndexNotFound, match="no index yet") as caught:
        MilvusStore(store.uri, name="elsewhere").open()
    assert caught.value.remedy == "build" and caught.value.path == store.uri


def test_another_process_reads_what_was_written(store, live, tmp_path):
    """Milvus Lite: one process at a time; the file holds everything once the writer closes."""
    store.close()
    code = ("import sys; from index.milvus_store import MilvusStore; "
            "g = MilvusStore(sys.argv[1]).open(); "
            "print(sorted(g.sources()), g.count(), g.word_counts(['otters']))")
    result = subprocess.run([sys.executable, "-c", code, store.uri], cwd=ROOT, text=True,
                         capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    chunks = sum(len(answer_units(t)) for t in ARTICLES.values())
    assert out.strip() == f"['herons', 'otters', 'owls'] {chunks} {{'otters': 2}}"


def test_bm25_terms_are_citebots_tokens():
    assert bm25_terms("The owls were nesting!") == "owl nest"


def test_the_engine_logs_beside_its_file_not_in_the_temp_folder(tmp_path):
    """Milvus Lite's engine writes log files at every start: into /tmp (TMPDIR) unless told."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GLOG_log_dir"} | {"TMPDIR": str(temp)}
    code = ("import os, sys; from index.milvus_store import MilvusStore; "
            "MilvusStore(sys.argv[1]).close(); print('GLOG_log_dir' in os.environ)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.db")], cwd=ROOT,
                          env=env, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(temp.iterdir()) == []
    assert any(p.name.startswith("milvus") for p in (tmp_path / "m.db.logs").iterdir())
    assert done.stdout.strip() == "False"  # the process's environment is as it was
