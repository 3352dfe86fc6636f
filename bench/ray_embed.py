"""Bulk embedding on Ray against the in-process path: what a local two-worker Ray costs here.

    python bench/ray_embed.py            # 1000 SQuAD chunks; writes results/ray_embed.md
    python bench/ray_embed.py --smoke    # 64 seed chunks: checks that it all runs

The chunks are citebot's own (bench/build.py's `citebot_chunks`). The in-process path is the
Embedder `index build` uses, with every call counted as bulk work (its measured bulk path);
the Ray runs send the same texts through `RayEmbedder` on a local Ray started with
`num_cpus=2`, two actors of one CPU each. Runs alternate (in-process, Ray, in-process, Ray), so
load from other processes hits both alike; each Ray job starts its actor pool, so its time
includes the actors' start and model load, which a job of 16 texts shows alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.build import citebot_chunks  # noqa: E402
from bench.common import SEEDS, SQUAD, machine_line, median, table, write_report  # noqa: E402
from bench.embed import DEFAULT_CACHE  # noqa: E402


def measure(texts: list[str], cache: Path, rounds: int, actors: int) -> dict:
    import ray

    from index.embed import Embedder
    from index.ray_embed import RayEmbedder

    local = Embedder(cache_dir=cache)
    local.prepare()  # the export and the bulk verdict, as `index build` has them
    local.small_chars = 0  # every call is bulk work, as in a large build
    local.encode(texts[:16])  # warm-up: the model loaded in this process
    with tempfile.TemporaryDirectory(prefix="citebot-ray-") as tmp:
        began = time.perf_counter()
        ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, _temp_dir=tmp)
        init_s = time.perf_counter() - began
        try:
            on_ray = RayEmbedder(local, actors=actors, min_chars=0)
            times: dict[str, list[float]] = {"in-process": [], "ray": []}
            vecs: dict[str, np.ndarray] = {}
            for _ in range(rounds):
                for name, run in (("in-process", local.encode), ("ray", on_ray.encode)):
                    began = time.perf_counter()
                    vecs[name] = run(texts)
                    times[name].append(time.perf_counter() - began)
            workers = len(on_ray.workers)
            began = time.perf_counter()
            on_ray.encode(texts[:16])
            fixed_s = time.perf_counter() - began
        finally:
            ray.shutdown()
    cos = (vecs["ray"] * vecs["in-process"]).sum(1)
    return {"n": len(texts), "path": local.backend_used, "init_s": init_s, "fixed_s": fixed_s,
            "times": times, "cos_min": float(cos.min()), "workers": workers,
            "ray": ray.__version__}


def report(m: dict, *, smoke: bool, corpus: Path, actors: int) -> str:
    base = median(m["times"]["in-process"])
    rows = []
    for name, label in (("in-process", f"in-process ({m['path']}), this process's threads"),
                        ("ray", f"Ray Data, {actors} actors of 1 CPU ({m['path']}), "
                                "actor start and model load included")):
        s = median(m["times"][name])
        rows.append([label, f"{s:.1f}", f"{m['n'] / s:.1f}", f"{s / base:.2f}",
                     f"{s - base:+.1f}"])
    rows.append(["Ray Data job of 16 texts (the fixed cost of a job)", f"{m['fixed_s']:.1f}",
                 "", "", ""])
    rows.append([f"`ray.init(num_cpus={actors})`: a local Ray starting", f"{m['init_s']:.1f}",
                 "", "", ""])
    runs = len(m["times"]["ray"])
    return "\n".join([
        f"# Bulk embedding on a local Ray{' (smoke)' if smoke else ''}", "",
        f"{machine_line()}; Ray {m['ray']}", "",
        f"{m['n']:,} chunks citebot makes of {corpus}; median of {runs} alternating runs.", "",
        table(["run", "seconds", "chunks/s", "× in-process time", "overhead s"], rows), "",
        f"Ray's vectors against the in-process ones: min cosine {m['cos_min']:.6f} "
        f"(target ≥ 0.9999); {m['workers']} actor processes did the work.", ""])


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=1000, help="chunks to embed")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each")
    parser.add_argument("--actors", type=int, default=2, help="Ray CPUs and actors")
    parser.add_argument("--smoke", action="store_true", help="tiny and quick, for CI")
    parser.add_argument("--corpus", type=Path, default=SQUAD / "corpus")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="kept between runs, so only the first run exports and measures")
    parser.add_argument("--out", type=Path, help="markdown file for the results "
                        "(default for full runs: bench/results/ray_embed.md)")
    args = parser.parse_args(argv)
    corpus = SEEDS if args.smoke else args.corpus
    limit, rounds = (64, 1) if args.smoke else (args.limit, args.rounds)
    from index.embed import Embedder

    chunks = citebot_chunks(corpus, Embedder(cache_dir=args.cache_dir))
    order = np.random.default_rng(0).permutation(len(chunks))[:limit]
    m = measure([chunks[i] for i in order], args.cache_dir, rounds, args.actors)
    text = report(m, smoke=args.smoke, corpus=corpus, actors=args.actors)
    write_report(text, "ray_embed", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
