"""Vector index benchmark: build time, memory, latency and recall@10 of each kind at scale.

    python bench/scale.py --sizes 100000 1000000 --markdown bench/results/scale.md  # ~16 min
    python bench/scale.py --smoke                                  # 5,000 vectors, seconds

Every kind is built by index.vectors, the code citebot runs. Latency is one query at a time,
like a user, with FAISS on 1 thread (what VectorIndex.search does) and on 2; recall@10 is
against exact search. With --embed-model, the chosen kind is also timed end to end: the real
model embeds a question, then the index answers it.

The vectors are synthetic, 384-d and unit length: topics, documents of ~20 chunks each and
chunks, drawn with a power-law spectrum under a random rotation; a question is a noisy point
between a chunk and its document. The constants were fitted to MiniLM embeddings of 12,000
Python docstrings (summary line as the question) and of the 2,067 SQuAD paragraphs and 1,000
questions: similarity to the 1st/10th/100th neighbour (0.67/0.56/0.32 synthetic against
0.70/0.52/0.32 real), question-to-passage similarity (0.63 against 0.62-0.66), variance in the
top 30 components, and above all the recall of IVF and HNSW at 12,000 vectors (IVF128
nprobe 4: 0.71 against 0.74 real; HNSW8 efSearch 16: 0.80 against 0.77). Plain Gaussian
clusters came out far easier (IVF nprobe 4: 0.95), and recall figures on them mean little.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import faiss
import numpy as np

from index.vectors import (
    FLAT_MAX,
    HNSW_EF_SEARCH,
    IVF_PROBE_FRACTION,
    REFINE_CANDIDATES,
    VectorIndex,
    choose_kind,
    ivf_lists,
    omp_threads,
)

DIM = 384

# Search effort tried per kind; the value citebot ships is marked * in the table.
# pq_sq8's is a k_factor at this bench's k = 10: REFINE_CANDIDATES / 10 candidates re-ranked.
SHIPPED: dict[str, float | None] = {"flat": None, "sq8": None, "pq_sq8": REFINE_CANDIDATES / 10,
                                    "hnsw_sq8": HNSW_EF_SEARCH, "ivf_sq8": IVF_PROBE_FRACTION}
SWEEPS: dict[str, list[float | None]] = {
    "flat": [None],
    "sq8": [None],
    "pq_sq8": sorted({20, 50, 100, REFINE_CANDIDATES / 10}),
    "hnsw_sq8": sorted({256, 512, HNSW_EF_SEARCH, 2048}),
    "ivf_sq8": sorted({1 / 16, 1 / 8, IVF_PROBE_FRACTION}),
}


def synthetic(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n unit chunk vectors and n_queries unit question vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
    spread = np.arange(1, DIM + 1, dtype=np.float32) ** -0.4375  # variance ∝ rank^-0.875
    spread /= np.linalg.norm(spread)

    def noise(rows: int, scale: float) -> np.ndarray:
        z = rng.standard_normal((rows, DIM), dtype=np.float32)
        z *= spread * scale
        return z @ rotation

    mean = rng.standard_normal(DIM).astype(np.float32)
    mean *= 0.075 / np.linalg.norm(mean)
    topics = mean + noise(max(1, n // 500), 0.5)
    n_docs = max(1, n // 20)
    docs = topics[rng.integers(0, len(topics), n_docs)] + noise(n_docs, 1.0)
    doc_of = rng.integers(0, n_docs, n)
    chunks = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 65_536):  # blocks keep the peak memory near the output's size
        block = docs[doc_of[start:start + 65_536]] + noise(min(65_536, n - start), 1.0)
        chunks[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    gold = rng.integers(0, n, n_queries)
    near = docs[doc_of[gold]]
    questions = (0.65 * chunks[gold] * np.linalg.norm(near, axis=1, keepdims=True)
                 + 0.35 * near + noise(n_queries, 1.25))
    questions /= np.linalg.norm(questions, axis=1, keepdims=True)
    return chunks, questions


def rss_mb() -> float:
    """Resident memory of this process in MB (10^6 bytes)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def machine() -> dict[str, str | int]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return {"nproc": os.cpu_count() or 0, "cpu": cpu, "faiss": faiss.__version__,
            "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load_avg": " ".join(f"{x:.1f}" for x in os.getloadavg())}


def set_effort(vi: VectorIndex, value: float | None) -> str:
    """Apply one sweep value to the index; returns the setting as a label."""
    inner = vi.index
    if isinstance(inner, faiss.IndexIDMap):
        inner = faiss.downcast_index(inner.index)
    mark = "*" if value == SHIPPED[vi.kind] else ""
    if vi.kind == "pq_sq8":
        vi.candidates = 10 * value  # k_factor `value` at k = 10
        return f"PQ{faiss.downcast_index(inner.base_index).pq.M}x4fs, k_factor {value:g}{mark}"
    if vi.kind == "hnsw_sq8":
        inner.hnsw.efSearch = int(value)
        return f"M {inner.hnsw.nb_neighbors(1)}, efSearch {int(value)}{mark}"
    if vi.kind == "ivf_sq8":
        inner.nprobe = max(1, round(inner.nlist * value))
        return f"nlist {inner.nlist}, nprobe {inner.nprobe}{mark}"
    return "exact" if vi.kind == "flat" else "8-bit codes"


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(np.intersect1d(f[:10], t[:10])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / 10


def percentiles(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> tuple[float, float]:
    """p50 and p99 in ms of fn over the queries, one at a time, after 5 warm-up calls."""
    for q in queries[:5]:
        fn(q[None])
    times = []
    for q in queries:
        start = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - start)
    p50, p99 = np.percentile(times, [50, 99]) * 1e3
    return float(p50), float(p99)


@dataclass
class Row:
    """One line of the table: a kind at one size and one search effort."""

    n: int
    kind: str
    setting: str
    build_s: float
    index_mb: float
    rss_delta_mb: float
    recall10: float
    p50_1t: float
    p99_1t: float
    p50_2t: float
    p99_2t: float


def bench_kind(kind: str, chunks: np.ndarray, questions: np.ndarray, truth: np.ndarray,
               timed: int, save_to: Path | None = None) -> list[Row]:
    """Build one kind, then sweep its search effort; save_to keeps the built index."""
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    vi = VectorIndex.build(chunks, np.arange(len(chunks), dtype=np.int64), kind)
    build_s = time.perf_counter() - start
    gc.collect()
    rss_delta = rss_mb() - before
    index_mb = faiss.serialize_index(vi.index).nbytes / 1e6
    if save_to:
        vi.save(save_to)
    rows = []
    for value in SWEEPS[kind]:
        setting = set_effort(vi, value)
        _, found = vi.search(questions, 10)  # batched, all threads: only recall counts
        p50_1, p99_1 = percentiles(lambda q: vi.search(q, 10), questions[:timed])
        with omp_threads(2):
            p50_2, p99_2 = percentiles(lambda q: vi.faiss_search(q, 10), questions[:timed])
        rows.append(Row(len(chunks), kind, setting, build_s, index_mb, rss_delta,
                        recall_at_10(found, truth), p50_1, p99_1, p50_2, p99_2))
        print(table([rows[-1]], header=False), flush=True)
    return rows


def resident(path: Path, kind: str, questions: np.ndarray) -> dict:
    """RSS growth of loading a saved index, copied and memory-mapped, and of 200 queries."""
    out = {}
    for mmap in (False, True):
        gc.collect()
        before = rss_mb()
        start = time.perf_counter()
        vi = VectorIndex.load(path, kind, mmap=mmap)
        load_s = time.perf_counter() - start
        loaded = rss_mb() - before
        for q in questions[:200]:
            vi.search(q, 10)
        label = "mmap" if mmap else "copy"
        out[label] = {"load_s": load_s, "rss_loaded_mb": loaded,
                      "rss_after_queries_mb": rss_mb() - before}
        del vi
    return out


def end_to_end(model: str, kind: str, chunks: np.ndarray, timed: int) -> dict[str, float]:
    """p50/p99 ms of embedding a question alone, and embedding + search on FAISS 1 or 2."""
    from index.embed import Embedder

    embedder = Embedder(model)
    vi = VectorIndex.build(chunks, np.arange(len(chunks), dtype=np.int64), kind)
    words = "when did who which what the river empire treaty battle dynasty cell".split()
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(words, 8)) + "?" for _ in range(timed)]
    embedder.encode(texts[:5])
    runs = {"embed": lambda q, k: None, "1t": vi.search, "2t": vi.index.search}
    out: dict[str, float] = {}
    for label, search in runs.items():
        times = []
        with omp_threads(2):
            for text in texts:
                start = time.perf_counter()
                search(embedder.encode([text]), 10)
                times.append(time.perf_counter() - start)
        out[f"p50_{label}"], out[f"p99_{label}"] = np.percentile(times, [50, 99]) * 1e3
    return out


def table(rows: list[Row], header: bool = True) -> str:
    lines = ["| n | kind | setting | build s | index MB | RSS Δ MB | recall@10 "
             "| p50 ms 1T | p99 ms 1T | p50 ms 2T | p99 ms 2T |",
             "|---|---|---|---|---|---|---|---|---|---|---|"] if header else []
    for r in rows:
        lines.append(f"| {r.n:,} | {r.kind} | {r.setting} | {r.build_s:.1f} | {r.index_mb:.0f} "
                     f"| {r.rss_delta_mb:.0f} | {r.recall10:.3f} | {r.p50_1t:.2f} | "
                     f"{r.p99_1t:.2f} | {r.p50_2t:.2f} | {r.p99_2t:.2f} |")
    return "\n".join(lines)


def render(report: dict) -> str:
    """The report as markdown: machine, table, then per size the chosen kind's extras."""
    m = report["machine"]
    lines = [
        "# Vector index at scale",
        "",
        f"`python bench/scale.py {report['args']}` on {m['nproc']} cores ({m['cpu']}), "
        f"FAISS {m['faiss']}, {m['date']}; load average {m['load_avg']} at the start, "
        f"{m['load_avg_end']} at the end.",
        "",
        "Build: `VectorIndex.build`, all threads. Index MB: `faiss.serialize_index` size; "
        "RSS Δ: resident growth over the build. Recall@10 against exact search, "
        f"{report['queries']} questions; latency one question at a time, {report['timed']} "
        "questions, FAISS on 1 thread (1T, what citebot does) or 2 (2T). * marks the "
        "shipped setting.",
        "",
        table([Row(**r) for r in report["rows"]]),
        "",
    ]
    for n, size in report["sizes"].items():
        lines.append(f"**{int(n):,} vectors**: `choose_kind` gives `{size['chosen']}`.")
        for how, r in size.get("resident", {}).items():
            lines.append(f"- loaded by {how}: {r['load_s']:.3f} s, RSS +{r['rss_loaded_mb']:.0f} "
                         f"MB, +{r['rss_after_queries_mb']:.0f} MB after 200 questions")
        if "end_to_end" in size:
            e = size["end_to_end"]
            lines.append(f"- a question end to end ({report['embed_model']} embedding + search):"
                         f" p50 {e['p50_1t']:.1f} ms, p99 {e['p99_1t']:.1f} ms with FAISS on 1"
                         f" thread; p50 {e['p50_2t']:.1f} ms, p99 {e['p99_2t']:.1f} ms on 2;"
                         f" the embedding alone p50 {e['p50_embed']:.1f} ms,"
                         f" p99 {e['p99_embed']:.1f} ms")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=list(SWEEPS), choices=list(SWEEPS))
    parser.add_argument("--queries", type=int, default=1000, help="questions scored for recall")
    parser.add_argument("--timed", type=int, default=200, help="questions timed one at a time")
    parser.add_argument("--embed-model", help="also time embedding + search with this model")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--markdown", type=Path, help="write the report here")
    parser.add_argument("--smoke", action="store_true", help="5,000 vectors, 50 timed queries")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.queries, args.timed = [5_000], 200, 50

    info = machine()
    print(f"{info['nproc']} cores, {info['cpu']}, FAISS {info['faiss']}, {info['date']}, "
          f"load {info['load_avg']}; FLAT_MAX={FLAT_MAX:,}\n")
    print(table([]), flush=True)
    rows: list[Row] = []
    report: dict = {"machine": info, "args": " ".join(sys.argv[1:]), "queries": args.queries,
                    "timed": args.timed, "embed_model": args.embed_model, "sizes": {}}
    for n in args.sizes:
        start = time.perf_counter()
        chunks, questions = synthetic(n, args.queries)
        gen_s = time.perf_counter() - start
        start = time.perf_counter()
        exact = faiss.IndexFlatIP(DIM)
        exact.add(chunks)
        truth = exact.search(questions, 10)[1]
        del exact
        size = {"generate_s": gen_s, "truth_s": time.perf_counter() - start,
                "chosen": choose_kind(n), "ivf_lists": ivf_lists(n)}
        saved = Path(tempfile.gettempdir()) / f"citebot-scale-{os.getpid()}.faiss"
        for kind in args.kinds:
            keep = saved if kind == size["chosen"] else None
            rows += bench_kind(kind, chunks, questions, truth, args.timed, keep)
        if saved.exists():
            size["resident"] = resident(saved, size["chosen"], questions)
            saved.unlink()
        if args.embed_model:
            size["end_to_end"] = end_to_end(args.embed_model, size["chosen"], chunks, args.timed)
        report["sizes"][n] = size
        print(f"\nn={n:,}: choose_kind -> {size['chosen']}; "
              f"{json.dumps(size, default=float)}\n", flush=True)
    report["rows"] = [asdict(r) for r in rows]
    report["machine"]["load_avg_end"] = machine()["load_avg"]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    if args.markdown:
        args.markdown.write_text(render(report))


if __name__ == "__main__":
    main()
