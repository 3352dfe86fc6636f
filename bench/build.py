"""Index build throughput: citebot's chosen bulk path against plain sentence-transformers.

    python bench/build.py            # SQuAD chunks; writes results/build.md
    python bench/build.py --smoke    # the seeds' chunks: checks that it all runs

The chunks are citebot's own (index.ingest + index.chunk with the default settings) over the
SQuAD corpus, a seeded sample of --limit. Paths run interleaved slice by slice
(bench/embed.py's `interleaved`): the reference, `SentenceTransformer.encode(batch_size=32)` in
fp32; the path citebot chose on this machine (the Embedder the CLI builds, with its bulk choice
from ~/.cache/citebot); and, for comparison, each bulk path forced. A fresh calibration (the
choice as `prepare()` would make it now, in a scratch cache) is shown beside the cached one.

Then `citebot index build` of the whole corpus runs as a new process under `script`, a pseudo
terminal, so its progress bar is drawn: the table gives its chunks/s end to end (reading,
chunking, embedding, writing) and the report quotes the bar's last frame.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SEEDS,
    SQUAD,
    citebot_cmd,
    machine_line,
    table,
    timed,
    verdict,
    write_report,
)
from bench.embed import interleaved

TARGET_SPEEDUP = 2.5
MIN_COSINE = 0.999
# tqdm's frame: "embedding:  40%|####      | 1632/4079 [00:41<01:02, 39.1chunk/s]"; any unit
FRAME = re.compile(r"(\d+)/(\d+) \[(\d+:\d+(?::\d+)?)<(\d+:\d+(?::\d+)?|\?), *"
                   r"([\d.]+|\?)(?:[a-z]+/s| ?s/[a-z]+)\]")


def citebot_chunks(corpus: Path, embedder) -> list[str]:
    """The chunk texts `citebot index build` would embed for these sources."""
    from index import ingest
    from index.chunk import chunk_text
    from index.library import Settings

    s = Settings()
    texts = []
    for doc in ingest.iter_documents([str(corpus)], timeout=s.fetch_timeout,
                                     max_bytes=s.fetch_max_bytes):
        texts += [c.text for c in chunk_text(doc.text, doc.source.id, embedder.token_counts,
                                             target_tokens=s.target_tokens,
                                             max_tokens=embedder.max_tokens - 2,
                                             overlap_sentences=s.overlap_sentences)]
    return texts


def cached_choice(embedder) -> dict:
    """What ~/.cache/citebot says about the bulk path (the measurement behind the choice)."""
    file = embedder.cache_dir / "bulk-backend.json" if embedder.cache_dir else None
    try:
        saved = json.loads(file.read_text()) if file else {}
    except (OSError, ValueError):
        return {}
    here = [v for k, v in saved.items() if embedder.onnx_dir and embedder.onnx_dir.name in k]
    return here[-1] if here else {}


def fresh_calibration(embedder, tmp: Path) -> dict:
    """The choice prepare() makes now, in a scratch cache holding only the ONNX export."""
    from index.embed import Embedder

    if embedder.onnx_dir is None or not embedder.onnx_dir.exists():
        return {}
    scratch = tmp / "cache"
    shutil.copytree(embedder.onnx_dir, scratch / "onnx" / embedder.onnx_dir.name)
    probe = Embedder(embedder.name if embedder.path is None else str(embedder.path),
                     cache_dir=scratch)
    probe.prepare()
    return cached_choice(probe)


def arithmetic_ceiling(model, mean_tokens: float, cores: int, batch: int = 32) -> dict:
    """What the matrix products alone allow: each layer's four weight products timed on one
    thread, in fp32 and bf16, on a batch of `batch` chunks of `mean_tokens` tokens.

    Nearly all of a chunk's arithmetic is in those products (attention adds ~5 %), so
    cores × product rate / a chunk's product FLOPs is the most chunks/s a path could reach if
    everything else were free. The ratio of the two ceilings is what this CPU's bf16 can give
    over fp32 at best.
    """
    import torch
    import torch.nn.functional as F

    cfg = model.config
    d, ffn, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    rows = batch * round(mean_tokens)
    shapes = [(d, 3 * d), (d, d), (d, ffn), (ffn, d)]  # q/k/v, attention out, FFN in, FFN out
    flops_per_token = sum(2 * i * o for i, o in shapes)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict = {"flops_per_chunk": flops_per_token * layers * mean_tokens, "cores": cores}
    try:
        with torch.inference_mode():
            for dtype in (torch.float32, torch.bfloat16):
                pairs = [(torch.randn(rows, i, dtype=dtype), torch.randn(o, i, dtype=dtype))
                         for i, o in shapes]
                best = float("inf")
                for _ in range(4):  # best of four: the least disturbed by other processes
                    began = time.perf_counter()
                    for x, w in pairs:
                        F.linear(x, w)
                    best = min(best, time.perf_counter() - began)
                rate = flops_per_token * rows / best
                out[str(dtype).split(".")[-1]] = {
                    "gflops_core": rate / 1e9,
                    "ceiling": cores * rate / out["flops_per_chunk"]}
    finally:
        torch.set_num_threads(old)
    return out


def build_under_tty(corpus: Path, index_dir: Path) -> dict:
    """`citebot index build` as a new process on a pseudo terminal: seconds, chunks, bar."""
    cmd = [*citebot_cmd(), "--index", str(index_dir), "index", "build", str(corpus)]
    tty = shutil.which("script")
    if tty:  # a pseudo terminal of 0x0 would make tqdm draw nothing: give it a size
        cmd = [tty, "-q", "-e", "-c", f"stty cols 120 rows 40; {shlex.join(cmd)}", "/dev/null"]
    seconds, done = timed(cmd)
    _, stats = timed([*citebot_cmd(), "--index", str(index_dir), "index", "stats", "--json"])
    found = list(FRAME.finditer(done.stdout + done.stderr))
    frames = [m.groups() for m in found]
    # Quote the last frame drawn mid-way (with a rate and time left), else the last one.
    mid = [m for m in found if m[1] != m[2] and m[4] != "?" and m[5] != "?"] or found
    shown = mid[-1].group(0) if mid else ""
    return {"seconds": seconds, "chunks": json.loads(stats.stdout)["chunks"], "tty": bool(tty),
            "bar_total": int(frames[-1][1]) if frames else None,
            "frames": len(frames), "shown": shown,
            "rate_shown": bool(frames) and any(f[4] != "?" for f in frames),
            "eta_shown": bool(frames) and any(f[3] != "?" for f in frames)}


def measure(corpus: Path, limit: int, slice_size: int, calibrate: bool, tmp: Path,
            forced: bool = True) -> dict:
    from sentence_transformers import SentenceTransformer

    from bot.app import embedder_for
    from bot.config import Config
    from index.embed import Embedder
    from index.machine import usable_cpus

    chosen = embedder_for(Config())  # what `citebot index build` uses
    chosen.prepare()  # reads the cached bulk choice (measures it if there is none)
    texts = citebot_chunks(corpus, chosen)
    n_chunks = len(texts)
    order = np.random.default_rng(0).permutation(len(texts))[:limit]
    sample = [texts[i] for i in order]
    tokens = chosen.token_counts(sample)
    st = SentenceTransformer(str(chosen.path), device="cpu")
    chosen.small_chars = 0  # every slice is bulk work, as in a build
    others = {}
    for backend in ("bf16", "onnx", "torch") if forced else ():
        e = Embedder(str(chosen.path), backend=backend, cache_dir=chosen.cache_dir)
        e.small_chars = 0
        others[backend] = e
    paths = {
        "reference": lambda t: st.encode(t, batch_size=32, normalize_embeddings=True,
                                         show_progress_bar=False),
        "chosen": chosen.encode,
        **{f"forced {b}": e.encode for b, e in others.items()},
    }
    ceiling = arithmetic_ceiling(st[0].auto_model, float(np.mean(tokens)) + 2, usable_cpus())
    began = time.perf_counter()
    seconds, vecs = interleaved(paths, sample, slice_size)
    paths_s = time.perf_counter() - began
    ref = vecs["reference"]
    rates = {n: len(sample) / s for n, s in seconds.items()}
    cos = {n: (v * ref).sum(1) for n, v in vecs.items()}
    return {"n_chunks": n_chunks, "n_sample": len(sample), "tokens": tokens, "rates": rates,
            "cos_min": {n: float(c.min()) for n, c in cos.items()},
            "cos_mean": {n: float(c.mean()) for n, c in cos.items()},
            "chosen": chosen.backend_used, "cached": cached_choice(chosen),
            "fresh": fresh_calibration(chosen, tmp) if calibrate else {},
            "paths_s": paths_s, "ceiling": ceiling}


def report(m: dict, e2e: dict | None, *, smoke: bool, corpus: Path, slice_size: int) -> str:
    ref = m["rates"]["reference"]
    label = {"reference": "sentence-transformers fp32, batch 32 (reference)",
             "chosen": f"**citebot's chosen bulk path: {m['chosen']}**",
             "forced bf16": "bf16 (forced)", "forced onnx": "ONNX fp32 (forced)",
             "forced torch": "citebot torch fp32 (forced)"}
    rows = []
    for name, rate in m["rates"].items():
        target = result = ""
        if name == "chosen":
            target = f"≥ {TARGET_SPEEDUP:g}×, cosine ≥ {MIN_COSINE}"
            ok = rate / ref >= TARGET_SPEEDUP and m["cos_min"][name] >= MIN_COSINE
            result = "" if smoke else verdict(ok)
        rows.append([label[name], f"{rate:.1f}", f"{rate / ref:.2f}", f"{m['cos_min'][name]:.6f}",
                     f"{m['cos_mean'][name]:.6f}", target, result])
    if e2e:
        rate = e2e["chunks"] / e2e["seconds"]
        rows.append([f"`citebot index build` end to end, {e2e['files']} files, "
                     f"{e2e['chunks']:,} chunks (new process)",
                     f"{rate:.1f}", f"{rate / ref:.2f}", "", "", "", ""])
    tok = m["tokens"]
    lines = [f"# Index build throughput{' (smoke)' if smoke else ''}", "", machine_line(), "",
             f"{m['n_sample']:,} of the {m['n_chunks']:,} chunks citebot makes of "
             f"{corpus}, {np.mean(tok):.0f} word pieces on average (max {max(tok)}), in slices "
             f"of {slice_size}, paths interleaved ({m['paths_s']:.0f} s).", "",
             table(["path", "chunks/s", "× reference", "min cosine", "mean cosine", "target",
                    "result"], rows, "lrrrrll"), ""]
    lines += ceiling_lines(m)
    for what, c in (("cached in ~/.cache/citebot (what builds use)", m["cached"]),
                    ("a fresh calibration now (scratch cache)", m["fresh"])):
        if c:
            lines.append(f"- bulk choice {what}: **{c.get('backend')}**, measured "
                         f"{c.get('measured', '?')}, calibration chunks/s "
                         f"{json.dumps(c.get('chunks_per_s'))}, min cosine "
                         f"{json.dumps(c.get('min_cosine'))}.")
    if e2e:
        if e2e["tty"]:
            lines.append(f"- progress bar on a terminal (`script`): {e2e['frames']} frames; "
                         f"rate shown: {'yes' if e2e['rate_shown'] else 'no'}; time left "
                         f"shown: {'yes' if e2e['eta_shown'] else 'no'}; a late frame: "
                         f"`{e2e['shown']}`; the bar's total: {e2e['bar_total']:,} for "
                         f"{e2e['chunks']:,} chunks (a chunk counts with its sentences).")
        else:
            lines.append("- progress bar not checked: no `script` command for a pseudo terminal.")
        lines.append(f"- `citebot index build`: {e2e['seconds']:.1f} s for {e2e['chunks']:,} "
                     "chunks, including reading, chunking, the bulk choice and writing.")
    return "\n".join(lines) + "\n"


def ceiling_lines(m: dict) -> list[str]:
    """The arithmetic ceiling table and what it means for the target."""
    c = m["ceiling"]
    ref, chosen = m["rates"]["reference"], m["rates"]["chosen"]
    fp32, bf16 = c["float32"], c["bfloat16"]
    rows = [["matrix products, GFLOP/s per core (one thread)", f"{fp32['gflops_core']:.0f}",
             f"{bf16['gflops_core']:.0f}"],
            [f"ceiling, chunks/s on {c['cores']} cores (products only, everything else free)",
             f"{fp32['ceiling']:.0f}", f"{bf16['ceiling']:.0f}"],
            ["measured, chunks/s (reference; citebot's bulk path)", f"{ref:.1f}",
             f"{chosen:.1f}"],
            ["share of the ceiling reached", f"{ref / fp32['ceiling']:.0%}",
             f"{chosen / bf16['ceiling']:.0%}"]]
    need = TARGET_SPEEDUP * ref / bf16["ceiling"]
    return [f"What the arithmetic allows ({c['flops_per_chunk'] / 1e9:.2f} GFLOP of "
            "matrix products per chunk):", "",
            table(["", "fp32", "bf16"], rows, "lrr"), "",
            f"- bf16 over fp32 at best on this CPU: {bf16['ceiling'] / fp32['ceiling']:.2f}× "
            f"(products alone). {TARGET_SPEEDUP:g}× the reference needs the bf16 path at "
            f"{need:.0%} of its ceiling, the reference being at "
            f"{ref / fp32['ceiling']:.0%} of its own.", ""]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=SQUAD / "corpus")
    parser.add_argument("--limit", type=int, default=1000, help="chunks in the path comparison")
    parser.add_argument("--slice", type=int, default=200, help="chunks per interleaved slice")
    parser.add_argument("--no-build", action="store_true", help="skip the end-to-end build")
    parser.add_argument("--build-files", type=int, default=8,
                        help="files of the corpus in the end-to-end build (0: all)")
    parser.add_argument("--no-calibrate", action="store_true", help="skip the fresh calibration")
    parser.add_argument("--smoke", action="store_true", help="one seed article, for CI")
    parser.add_argument("--out", type=Path, help="markdown file (default for full runs: "
                        "bench/results/build.md)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download
    with tempfile.TemporaryDirectory(prefix="citebot-build-") as tmp:
        corpus, limit, slice_size = args.corpus, args.limit, args.slice
        if args.smoke:  # one seed article: a few chunks, a build of seconds
            corpus, limit, slice_size = Path(tmp) / "corpus", 8, 8
            corpus.mkdir()
            first = sorted(SEEDS.glob("*.txt"))[0]
            shutil.copy(first, corpus / first.name)
        m = measure(corpus, limit, slice_size, not (args.smoke or args.no_calibrate),
                    Path(tmp), forced=not args.smoke)
        e2e = None
        if not args.no_build:
            files = sorted(p for p in corpus.iterdir() if p.is_file())
            part = corpus
            if 0 < args.build_files < len(files):  # a whole build takes many minutes
                part = Path(tmp) / "part"
                part.mkdir()
                for f in files[:args.build_files]:
                    shutil.copy(f, part / f.name)
            e2e = build_under_tty(part, Path(tmp) / "index")
            e2e["files"] = f"{min(len(files), args.build_files or len(files))} of {len(files)}"
    text = report(m, e2e, smoke=args.smoke, corpus=corpus, slice_size=slice_size)
    write_report(text, "build", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
