"""Embedding benchmark: throughput, agreement with the reference and start-up time per path.

    python bench/embed.py             # ~1500 SQuAD chunks, a few minutes; writes results/embed.md
    python bench/embed.py --smoke     # 64 chunks and one cold start: checks that it all runs

Paths run interleaved slice by slice, so load from other processes slows them alike; the
ratios measured in one run are what to compare, not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    SQUAD,
    machine_line,
    median,
    question_ms,
    squad_questions,
    table,
    timed,
    write_report,
)
from index.embed import Embedder  # noqa: E402

CORPUS = SQUAD / "corpus"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "citebot-bench-embed-cache"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def load_chunks(embedder: Embedder, corpus: Path, limit: int) -> list[str]:
    """Paragraphs of the corpus files, long ones split at sentence ends; a seeded sample."""
    budget = embedder.max_tokens - 2
    chunks: list[str] = []
    for file in sorted(corpus.glob("*.txt")):
        paragraphs = file.read_text(encoding="utf-8").split("\n\n")[1:]  # first: the title
        for para in (p.strip() for p in paragraphs):
            if not para:
                continue
            if embedder.token_counts([para])[0] <= budget:
                chunks.append(para)
                continue
            sentences = _SENTENCE_END.split(para)
            sizes = embedder.token_counts(sentences)
            part, used = [], 0
            for sentence, size in zip(sentences, sizes, strict=True):
                if part and used + size > budget:
                    chunks.append(" ".join(part))
                    part, used = [], 0
                part.append(sentence)
                used += size
            chunks.append(" ".join(part))
    order = np.random.default_rng(0).permutation(len(chunks))[:limit]
    return [chunks[i] for i in order]


def interleaved(paths: dict[str, Callable[[list[str]], np.ndarray]], texts: list[str],
                slice_size: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seconds and vectors per path, running every path on each slice in rotating order."""
    for run in paths.values():
        run(texts[:8])  # warm-up
    seconds = dict.fromkeys(paths, 0.0)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in paths}
    names = list(paths)
    for n, start in enumerate(range(0, len(texts), slice_size)):
        piece = texts[start:start + slice_size]
        for name in names[n % len(names):] + names[:n % len(names)]:
            began = time.perf_counter()
            parts[name].append(paths[name](piece))
            seconds[name] += time.perf_counter() - began
    return seconds, {name: np.concatenate(p) for name, p in parts.items()}


def cold_seconds(code: str, runs: int) -> tuple[float, str]:
    """Median wall time of a fresh Python running code, and its last output line."""
    times, out = [], ""
    for _ in range(runs):
        seconds, done = timed([sys.executable, "-c", code])
        times.append(seconds)
        out = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return median(times), out


def cold_table(cold_import: float, cold_st: float | None, cold_ours: float, ours: str) -> str:
    """Cold starts against `import sentence_transformers` alone, the floor of the reference."""
    rows = [("`import sentence_transformers`", cold_import),
            *([] if cold_st is None else
              [("sentence-transformers: load, embed one question", cold_st)]),
            (ours, cold_ours)]
    return table(["process", "seconds", "× `import sentence_transformers`"],
                 [[label, f"{s:.2f}", f"{s / cold_import:.2f}"] for label, s in rows])


def machine() -> str:
    import onnxruntime
    import torch

    return (f"{machine_line()}; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1500, help="chunks to embed")
    parser.add_argument("--smoke", action="store_true", help="tiny and quick, for CI")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="kept between runs, so only the first run exports")
    parser.add_argument("--fresh", action="store_true", help="empty the cache first")
    parser.add_argument("--out", type=Path, help="markdown file for the results "
                        "(default for full runs: bench/results/embed.md)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download; set before models load
    limit, slice_size, n_queries, cold_runs = ((64, 64, 20, 1) if args.smoke
                                               else (args.limit, 250, 200, 5))
    if args.fresh:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
    lines = [f"# Embedding benchmark{' (smoke)' if args.smoke else ''}", "", machine(), ""]

    warm = any(args.cache_dir.glob("onnx/*/meta.json"))
    began = time.perf_counter()
    auto = Embedder(backend="auto", cache_dir=args.cache_dir)
    auto.prepare()
    first_prepare = time.perf_counter() - began
    began = time.perf_counter()
    Embedder(backend="auto", cache_dir=args.cache_dir).prepare()
    again_prepare = time.perf_counter() - began

    texts = load_chunks(auto, args.corpus, limit)
    tokens = auto.token_counts(texts)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(auto.path), device="cpu")
    bf16 = Embedder(backend="bf16")
    onnx = Embedder(backend="onnx", cache_dir=args.cache_dir)
    bulk = Embedder(backend="auto", cache_dir=args.cache_dir)
    for embedder in (bf16, onnx, bulk):
        embedder.small_chars = 0  # each slice is bulk work, even in a smoke run
    paths = {
        "sentence-transformers fp32, batch 32 (reference)":
            lambda t: st.encode(t, batch_size=32, normalize_embeddings=True,
                                show_progress_bar=False),
        "bf16": bf16.encode,
        "ONNX fp32": onnx.encode,
        "citebot auto": bulk.encode,
    }
    seconds, vecs = interleaved(paths, texts, slice_size)
    ref_name = next(iter(paths))
    ref = vecs[ref_name]
    lines += [f"{len(texts)} chunks of {args.corpus.name}, {np.mean(tokens):.0f} word pieces "
              f"on average (max {max(tokens)}), in slices of {slice_size}; the auto choice "
              f"here: **{bulk.backend_used}**.", ""]
    cosines = {name: (vecs[name] * ref).sum(1) for name in paths}
    lines.append(table(["path", "chunks/s", "× reference", "min cosine", "mean cosine"],
                       [[name, f"{len(texts) / seconds[name]:.1f}",
                         f"{seconds[ref_name] / seconds[name]:.2f}", f"{cos.min():.6f}",
                         f"{cos.mean():.6f}"] for name, cos in cosines.items()]))

    questions = squad_questions(n_queries)
    latency = question_ms(st, questions, {"citebot": auto.encode_query})
    model_arg = json.dumps(str(auto.path))
    cache_arg = json.dumps(str(args.cache_dir))
    ours = ("import sys; from index.embed import Embedder; "
            f"e = Embedder(cache_dir={cache_arg}); e.encode_query('Where was "
            "Tesla\\'s new lab?'); print(e.backend_used, 'torch' in sys.modules)")
    full_st = ("from sentence_transformers import SentenceTransformer; "
               f"SentenceTransformer({model_arg}).encode(['Where was Tesla\\'s new lab?'])")
    cold_import, _ = cold_seconds("import sentence_transformers", cold_runs)
    cold_st = None if args.smoke else cold_seconds(full_st, cold_runs)[0]
    cold_ours, said = cold_seconds(ours, cold_runs)
    used, torch_loaded = said.split()
    lines += ["", f"Query embedding, median of {len(questions)} questions, interleaved: "
              f"sentence-transformers {latency['default']:.1f} ms with {latency['threads']} torch "
              f"threads, {latency['1']:.1f} ms with 1; citebot ({auto.backend_used}) "
              f"{latency['citebot']:.1f} ms.", "",
              f"Cold start, median of {cold_runs} fresh processes:", "",
              cold_table(cold_import, cold_st, cold_ours,
                         f"citebot: Embedder + encode_query ({used}; torch imported: "
                         f"{torch_loaded})"), "",
              f"prepare(): {first_prepare:.1f} s with "
              f"{'a warm cache' if warm else 'an empty cache (ONNX export + bulk measurement)'}"
              f"; {again_prepare:.2f} s in a second Embedder once the cache is filled.", ""]
    write_report("\n".join(lines), "embed", args.out, args.smoke)
    if torch_loaded != "False":
        sys.exit("the query path imported torch")


if __name__ == "__main__":
    main()
