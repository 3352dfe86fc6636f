"""Big sources: time and memory of indexing one source near the 20 MB cap, by stage.

    python bench/big_source.py            # 19 MB text and HTML, and a quarter of each
    python bench/big_source.py --smoke    # 200 kB: checks that it all runs

The sources are made here, deterministically: a .txt of sentences drawn from the seeds'
words, and an HTML page of 19 MB of markup (nested divs, spans, a script, a style sheet)
around three paragraphs of article text. Each is indexed in a fresh process with
`Library.update`, the real ingest, chunker and store, and the real model's tokenizer for
the chunk sizes; the vectors come from a **stand-in embedder** (vectors from a hash of the
text), since what is measured is everything but the model. The stages (load, chunk, the
sentences to embed) are timed in a second fresh process, so the peak of the first is the
update's alone. "beyond start" is the peak resident size minus the size once Python, the
library and the tokenizer are loaded. Targets (issue 12): peak beyond start under 1 GB, and
work linear in size (the quarter-size source takes about a quarter of the time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SEEDS, env, machine_line, table, verdict, write_report

LIMIT_MB = 1000
MB = 1_000_000
SMOKE_BYTES = 200_000


def make_text(size: int) -> str:
    """Sentences of 8-30 seed words, paragraphs of 3-8 sentences, about size bytes."""
    words = sorted(set(re.findall(r"[A-Za-z']+", " ".join(
        p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt"))))))
    rng = random.Random(12)
    out, used = [], 0
    while used < size:
        para = " ".join(
            " ".join(rng.choice(words) for _ in range(rng.randint(8, 30))).capitalize() + "."
            for _ in range(rng.randint(3, 8))) + "\n\n"
        out.append(para)
        used += len(para)
    return "".join(out)[:size]


def make_html(size: int) -> str:
    """Three paragraphs of article inside size bytes of markup and no other text."""
    paragraphs = "".join(f"<p>{p}</p>\n" for p in make_text(3000).split("\n\n")[:3])
    block = ('<div class="wrap"><div class="row"><span class="cell" data-x="1"></span>'
             '<span class="cell" data-x="2"></span><a href="#"></a></div></div>\n')
    head = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Big page</title>"
            "<style>" + ".c{color:red}" * 2000 + "</style></head><body>"
            "<script>" + "var a=1;" * 2000 + "</script>")
    article = f"<main><article><h1>Big page</h1>\n{paragraphs}</article></main>"
    filler = block * ((size - len(head) - len(article) - 20) // len(block))
    half = len(filler) // 2
    return head + filler[:half] + article + filler[half:] + "</body></html>"


class HashEmbedder:
    """Stand-in for the model: the real tokenizer for chunk sizes, vectors from a hash."""

    def __init__(self) -> None:
        from index.embed import Embedder

        self._real = Embedder()  # reads the model's config and tokenizer; no torch
        self.name, self.dim, self.max_tokens = "stand-in", self._real.dim, self._real.max_tokens

    def token_counts(self, texts):
        return self._real.token_counts(texts)

    @property
    def counts_add_up(self) -> bool:
        return self._real.counts_add_up

    def prepare(self, **_) -> None:
        pass

    def encode(self, texts, progress=None, **_):
        import numpy as np

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"),
                                                  digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        if progress:
            progress(len(texts))
        return out

    def encode_query(self, text):
        return self.encode([text])[0]


def _status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MB. Not ru_maxrss: Linux keeps it across
    exec, so a child of a big process (pytest) would report its parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024 / MB
    return 0.0


def child_update(path: str, index_dir: str) -> dict:
    """In a fresh process: Library.update of one source; seconds and memory."""
    from index.library import Library

    embedder = HashEmbedder()
    embedder.token_counts(["warm up the tokenizer"])
    start_mb = _status_mb("VmRSS")
    began = time.perf_counter()
    report = Library(Path(index_dir), embedder).update([path])  # type: ignore[arg-type]
    seconds = time.perf_counter() - began
    peak = _status_mb("VmHWM")
    return {"seconds": seconds, "start_mb": start_mb, "peak_mb": peak,
            "chunks": report.chunks_total, "skipped": [why for _, why in report.skipped]}


def child_stages(path: str) -> dict:
    """In a fresh process: the seconds of loading, chunking and finding the sentences."""
    from index.chunk import answer_units, chunk_text
    from index.ingest import load_path

    embedder = HashEmbedder()
    times = {}
    began = time.perf_counter()
    doc = load_path(path)
    times["load_s"] = time.perf_counter() - began
    began = time.perf_counter()
    chunks = chunk_text(doc.text, doc.source.id, embedder.token_counts,
                        max_tokens=embedder.max_tokens - 2)
    times["chunk_s"] = time.perf_counter() - began
    began = time.perf_counter()
    sentences = sum(len(answer_units(c.text)) for c in chunks)
    times["sentences_s"] = time.perf_counter() - began
    return {**times, "text_chars": len(doc.text), "sentences": sentences}


def _child(func: str, *args: str) -> dict:
    code = (f"import json, sys; from bench.big_source import {func}; "
            f"print(json.dumps({func}(*sys.argv[1:])))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env(), timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{func}{args} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(kind: str, size: int, tmp: Path) -> dict:
    path = tmp / f"big-{size}.{kind}"
    path.write_text(make_text(size) if kind == "txt" else make_html(size), encoding="utf-8")
    update = _child("child_update", str(path), str(tmp / f"index-{kind}-{size}"))
    stages = _child("child_stages", str(path))
    return {"kind": kind, "bytes": path.stat().st_size, **update, **stages}


def report(rows: list[dict], smoke: bool) -> str:
    header = ["source", "size", "text chars", "chunks", "load s", "chunk s", "sentences s",
              "update s", "start MB", "peak MB", "beyond start MB", f"< {LIMIT_MB} MB"]
    body = []
    for r in rows:
        beyond = r["peak_mb"] - r["start_mb"]
        body.append([f".{r['kind']}", f"{r['bytes'] / MB:.1f} MB", f"{r['text_chars']:,}",
                     f"{r['chunks']:,}", f"{r['load_s']:.1f}", f"{r['chunk_s']:.1f}",
                     f"{r['sentences_s']:.1f}", f"{r['seconds']:.1f}", f"{r['start_mb']:.0f}",
                     f"{r['peak_mb']:.0f}", f"{beyond:.0f}",
                     "" if smoke else verdict(beyond < LIMIT_MB)])
    lines = [f"# Big sources: one source near the size cap{' (smoke)' if smoke else ''}", "",
             machine_line(), "",
             "Indexing with `Library.update` in a fresh process; vectors from a stand-in "
             "embedder (a hash of the text), so the times and sizes are everything but the "
             "model. Stage times from a second fresh process.", "", table(header, body), ""]
    by_kind: dict[str, list[dict]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r)
    for kind, group in by_kind.items():
        if len(group) == 2:
            small, big = sorted(group, key=lambda r: r["bytes"])
            lines.append(f"- .{kind}: {big['bytes'] / small['bytes']:.1f}x the size took "
                         f"{big['seconds'] / max(small['seconds'], 1e-9):.1f}x the update time "
                         "(linear: about the same factor)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="200 kB sources, for CI")
    parser.add_argument("--out", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    sizes = [SMOKE_BYTES] if args.smoke else [19 * MB // 4, 19 * MB]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(kind, size, Path(tmp)) for kind in ("txt", "html") for size in sizes]
    text = report(rows, args.smoke)
    write_report(text, "big_source", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
