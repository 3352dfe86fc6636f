"""Milvus store against the local store: quality parity and latency per question, side by side.

Builds the same corpus into a local index folder and into a Milvus Lite 2.5 file with the real
model (once; reused while it passes `index check`), then asks every question of both, one
question at a time, interleaved so that both see the same load:

    python bench/milvus.py                 # SQuAD: 48 articles, 1,000 questions (~15 minutes)
    python bench/milvus.py --smoke         # the seeds and their 15 questions
    python bench/milvus.py --scale 100000  # the store alone at 100,000 chunks (stand-in vectors)

Reported: recall@1/@5/@10 by the reference hit rule, how often the top 10 and the `ask` answer
are the same, and median/p95 milliseconds per question of search (the question embedded),
of retrieval alone (vector given) and of ask.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SEEDS, SQUAD, machine_line, table, write_report  # noqa: E402

TARGET_RECALL = 0.01  # recall@1 and @5 within this of the local store's
TARGET_SAME_ANSWER = 0.95


def libraries(work: Path, corpus: Path) -> tuple[dict, dict[str, str]]:
    """The local and the Milvus Library over the corpus, built if need be; build notes."""
    from bot.app import make_library, store_for
    from bot.config import Config, IndexConfig, StoreConfig

    libs, notes = {}, {}
    for name, store in (("local", StoreConfig()),
                        ("milvus", StoreConfig(backend="milvus", uri=str(work / "milvus.db")))):
        cfg = Config(index=IndexConfig(dir=str(work / "local"), sources=[str(corpus)]),
                     store=store, base_dir=ROOT)
        lib = make_library(cfg)
        if lib.exists() and not lib.check():
            notes[name] = "reused"
        else:
            began = time.perf_counter()
            report = lib.update([str(corpus)], rebuild=lib.exists())
            notes[name] = f"built in {time.perf_counter() - began:.0f} s " \
                          f"({report.chunks_total} chunks)"
        libs[name] = (lib, store_for(cfg))
    return libs, notes


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def run(libs: dict, questions) -> dict:
    """Per backend: hits (k 20), answers and per-question milliseconds."""
    from index.retrieve import hybrid_search

    out = {name: {"hits": [], "answers": [], "search": [], "retrieve": [], "ask": []}
           for name in libs}
    for lib, _ in libs.values():  # warm: the model's fast path, caches, the engine
        lib.search(questions[0].query, 20)
        lib.ask(questions[0].query)
    for q in questions:
        qvec = next(iter(libs.values()))[0].embedder.encode_query(q.query)
        for name, (lib, _) in libs.items():
            r = out[name]
            began = time.perf_counter()
            r["hits"].append(lib.search(q.query, 20))
            r["search"].append(1000 * (time.perf_counter() - began))
            snap = lib.snapshot()
            began = time.perf_counter()
            hybrid_search(snap, q.query, qvec, 10, lib.settings.retrieval)
            r["retrieve"].append(1000 * (time.perf_counter() - began))
            began = time.perf_counter()
            r["answers"].append(lib.ask(q.query))
            r["ask"].append(1000 * (time.perf_counter() - began))
    return out


def milvus_rss_mb(store) -> float | None:
    """Resident memory of the Milvus Lite engine process this process started."""
    try:
        from milvus_lite.server_manager import server_manager_instance

        server = server_manager_instance._servers[str(Path(store.uri).resolve())]
        status = Path(f"/proc/{server._p.pid}/status").read_text()
        return int(next(ln.split()[1] for ln in status.splitlines()
                        if ln.startswith("VmRSS"))) / 1024
    except (ImportError, KeyError, AttributeError, OSError, StopIteration):
        return None


def report(questions, results: dict, notes: dict, extra: dict, corpus: Path) -> str:
    from index.evaluate import evaluate

    local, milvus = results["local"], results["milvus"]
    evals = {}
    for name, r in results.items():
        by_query = {q.query: h for q, h in zip(questions, r["hits"], strict=True)}
        evals[name] = evaluate(questions, lambda qs, k, by=by_query: [by[q] for q in qs])
    n = len(questions)
    same_top10 = sum([(h.source.id, h.chunk.start) for h in a[:10]] ==
                     [(h.source.id, h.chunk.start) for h in b[:10]]
                     for a, b in zip(local["hits"], milvus["hits"], strict=True)) / n
    same_answer = sum((a.answered, a.answer) == (b.answered, b.answer)
                      for a, b in zip(local["answers"], milvus["answers"], strict=True)) / n
    same_json = sum(a.to_json() == b.to_json()
                    for a, b in zip(local["answers"], milvus["answers"], strict=True)) / n
    rows = []
    for label, key in (("recall@1", 1), ("recall@5", 5), ("recall@10", 10)):
        lo, mi = evals["local"].recall(key), evals["milvus"].recall(key)
        ok = "" if key == 10 else ("pass" if abs(lo - mi) <= TARGET_RECALL else "**fail**")
        rows.append((label, f"{lo:.3f}", f"{mi:.3f}", f"{mi - lo:+.3f}", ok))
    for label, key in (("search, ms (question embedded)", "search"),
                       ("retrieval alone, ms (vector given)", "retrieve"),
                       ("ask, ms", "ask")):
        for stat, q in (("median", 50), ("p95", 95)):
            lo, mi = percentile(local[key], q), percentile(milvus[key], q)
            rows.append((f"{label}, {stat}", f"{lo:.1f}", f"{mi:.1f}", f"{mi - lo:+.1f}", ""))
    verdict = "pass" if same_answer >= TARGET_SAME_ANSWER else "**fail**"
    lines = [
        "# Milvus store against the local store (bench/milvus.py)", "",
        f"Machine: {machine_line()}.",
        f"Corpus: {corpus} ({n} questions). Real model; Milvus Lite 2.5.1 (embedded C++ "
        f"engine, FLAT index, BM25 by Milvus's full-text function) in this process's child.",
        f"Local index: {notes['local']}. Milvus: {notes['milvus']}.", "",
        table(["", "local", "milvus", "difference", "target"], rows, "lrrrl"), "",
        f"- same top 10 (source and offset, in order): {same_top10:.1%}",
        f"- same `ask` answer (answered, answer text): {same_answer:.1%} ({verdict}, target "
        f"at least {TARGET_SAME_ANSWER:.0%}); same `ask --json` as a whole, citations "
        f"included: {same_json:.1%}",
    ]
    lines += [f"- {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def scale(n: int, work: Path, questions: list[str]) -> str:
    """Milvus Lite alone at n chunks: write rate, per-question candidates and reads, sizes.

    STAND-IN vectors (a hash of the text, bench/standin.py's rule): this times the store, not
    the model. Chunk texts are SQuAD paragraphs' sentences, numbered so that each is new.
    """
    import hashlib

    from bot.app import embedder_for
    from bot.config import Config
    from index.chunk import answer_units
    from index.milvus_store import MilvusStore
    from index.records import Chunk, Source
    from index.store import ChunkSentences, Manifest, SourceRows

    dim = embedder_for(Config()).dim

    def vectors(texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    paragraphs = [p for f in sorted((SQUAD / "corpus").glob("*.txt"))
                  for p in f.read_text().split("\n\n") if len(p) > 200]
    path = work / f"scale-{n}.db"
    path.unlink(missing_ok=True)
    store = MilvusStore(str(path), name="scale")
    gen = store.create(Manifest(model="stand-in", dim=dim, max_tokens=254, target_tokens=128,
                                overlap_sentences=1))
    began, done, article = time.perf_counter(), 0, 0
    while done < n:  # updates of 100 "articles" of 12 chunks, each chunk a paragraph
        rows, vecs, sents = [], [], []
        for _ in range(100):
            if done >= n:
                break
            sid = f"a{article:07d}"
            text, chunks = "", []
            for j in range(min(12, n - done)):
                para = f"{paragraphs[(article * 12 + j) % len(paragraphs)]} ({article}.{j})"
                chunks.append(Chunk(sid, para, len(text), len(text) + len(para),
                                    hashlib.sha1(para.encode()).hexdigest()))
                text += para + "\n\n"
            for c in chunks:
                units = [(c.start + a, c.start + b) for a, b in answer_units(c.text)]
                sents.append(ChunkSentences(tuple(units), vectors([text[a:b] for a, b in units])))
            rows.append(SourceRows(Source(id=sid, title=sid, content_hash=sid), text, chunks))
            vecs.append(vectors([c.text for c in chunks]))
            done += len(chunks)
            article += 1
        gen.put(rows, np.concatenate(vecs), sents)
    build = time.perf_counter() - began
    store.publish(gen.gen)
    times = []
    for q in questions:
        qvec = vectors([q])[0]
        t0 = time.perf_counter()
        got = gen.candidates(q, qvec, 50)
        gen.sentences(got.ids.tolist())
        gen.chunks(got.ids[:10].tolist())
        times.append(1000 * (time.perf_counter() - t0))
    rss = milvus_rss_mb(store)
    size = path.stat().st_size / 1e6
    store.close()
    path.unlink(missing_ok=True)
    return (f"# Milvus Lite 2.5.1 alone at {n:,} chunks (bench/milvus.py --scale)\n\n"
            f"Machine: {machine_line()}.\nSTAND-IN vectors (a hash of each text); "
            f"{len(questions)} SQuAD questions, one at a time.\n\n" + table(
                ["", "value"],
                [("chunks written, per second (with their sentences, 100 articles per update)",
                  f"{n / build:,.0f}"),
                 ("candidates + sentences + rows per question, median ms",
                  f"{percentile(times, 50):.1f}"),
                 ("the same, p95 ms", f"{percentile(times, 95):.1f}"),
                 ("Milvus Lite file, MB", f"{size:,.0f}"),
                 ("engine process resident, MB", f"{rss:,.0f}" if rss else "n/a")]) + "\n")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the seeds and their questions")
    parser.add_argument("--questions", type=int, default=None, help="ask only the first N")
    parser.add_argument("--work", type=Path, default=None,
                        help="where both indexes are built and kept (default: a /tmp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument("--scale", type=int, default=None, metavar="N",
                        help="time the Milvus store alone at N chunks (stand-in vectors)")
    args = parser.parse_args(argv)
    from index.evaluate import load_questions

    if args.scale:
        work = args.work or Path("/tmp/citebot-bench-milvus-scale")
        work.mkdir(parents=True, exist_ok=True)
        qs = [q.query for q in load_questions(SQUAD / "queries.jsonl")][:args.questions or 200]
        text = scale(args.scale, work, qs)
        write_report(text, f"milvus-scale-{args.scale}", args.out, smoke=False)
        return text

    if args.smoke:
        corpus, qfile = SEEDS, ROOT / "tests" / "data" / "eval" / "dev_qa.jsonl"
    else:
        corpus, qfile = SQUAD / "corpus", SQUAD / "queries.jsonl"
    work = args.work or Path(f"/tmp/citebot-bench-milvus-{'seeds' if args.smoke else 'squad'}")
    work.mkdir(parents=True, exist_ok=True)
    questions = [q for q in load_questions(qfile) if q.answerable][:args.questions]
    libs, notes = libraries(work, corpus)
    results = run(libs, questions)
    store = libs["milvus"][1]
    size = os.path.getsize(store.uri) / 1e6
    local_size = sum(p.stat().st_size for p in (work / "local").rglob("*") if p.is_file()) / 1e6
    extra = {"on disk": f"local {local_size:.0f} MB, Milvus Lite file {size:.0f} MB"}
    rss = milvus_rss_mb(store)
    if rss is not None:
        extra["Milvus Lite engine process, resident"] = f"{rss:.0f} MB"
    text = report(questions, results, notes, extra, corpus)
    store.close()
    write_report(text, "milvus", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
