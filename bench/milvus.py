"""Milvus store against the local store: quality parity and latency per question, side by side.

Builds the same corpus into a local index folder and into a Milvus Lite 2.5 file with the real
model (once; reused while it passes `index check`), then asks every question of both, one
question at a time, interleaved so that both see the same load:

    python bench/milvus.py                 # SQuAD: 48 articles, 1,000 questions (~15 minutes)
    python bench/milvus.py --smoke         # the seeds and their 15 questions

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


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the seeds and their questions")
    parser.add_argument("--questions", type=int, default=None, help="ask only the first N")
    parser.add_argument("--work", type=Path, default=None,
                        help="where both indexes are built and kept (default: a /tmp folder)")
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    from index.evaluate import load_questions

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
