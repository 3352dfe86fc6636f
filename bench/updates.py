"""What an update costs as the index grows (issue 11), with a STAND-IN embedding.

Vectors come from a hash of each text (bench/standin.py), so only citebot's own work is timed;
tokenizer and chunker are the real ones. Articles are synthetic: about a dozen paragraphs drawn
from the SQuAD corpus (/work/shared/eval/squad/corpus; the seed articles when it is absent,
as in CI) plus a sentence of their own, one file each.

For each size the index is grown to (by updates of at most BATCH files, so it has the segments
and merges a growing index has), one article is added, edited and removed, each in a fresh
process that reports its own time and peak memory; a reader process measures warm search and
ask latency and its memory. Then the disk is measured against a fresh build where one is made.
Finally the SQuAD questions are run on a grown and on a fresh index of the SQuAD corpus: their
top-10 must be the same.

    python -m bench.updates                      # 6k, 60k, 250k, 1M chunks
    python -m bench.updates --sizes 6000,60000   # some sizes
    python -m bench.updates --smoke              # a minute, for CI
    python -m bench.updates --sizes 6000 --small 100000   # the small-file build only at size

The "build files/s" of the main table is for the synthetic articles (about 12 chunks each);
a second table times a build from a folder of small one-paragraph files (--small, 100,000 by
default), and one-article updates in an index of that many sources.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import OUT, ROOT, SEEDS, SQUAD, env, machine_line, table, write_report

BATCH = 5_000  # files per growing update
ARTICLE_PARAGRAPHS = 6  # SQuAD paragraphs are long: about 12 chunks an article
SIZES = (6_000, 60_000, 250_000, 1_000_000)
QUESTIONS = 50  # warm latency: median over these, after one warm-up round
FRESH_MAX = 60_000  # sizes up to this also get a fresh build, for the on-disk ratio
SMALL_FILES = 100_000  # one-paragraph files built from one folder (the files/s target)


def paragraphs() -> list[str]:
    """The paragraph pool: the SQuAD corpus, else the seed articles."""
    folder = SQUAD / "corpus"
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else sorted(SEEDS.glob("*.txt"))
    out = [p.strip() for f in files for p in f.read_text(encoding="utf-8").split("\n\n")]
    return [p for p in out if len(p) > 200]


def write_articles(folder: Path, first: int, count: int, pool: list[str]) -> list[Path]:
    """Synthetic articles first..first+count-1, one .md file each."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(first, first + count):
        rng = np.random.default_rng(n)
        chosen = rng.choice(len(pool), size=min(ARTICLE_PARAGRAPHS, len(pool)), replace=False)
        picked = [pool[i] for i in chosen]
        body = "\n\n".join(picked)
        file = folder / f"article-{n:07d}.md"
        file.write_text(f"# Article {n}\n\nThis is synthetic article number {n}.\n\n{body}\n",
                        encoding="utf-8")
        files.append(file)
    return files


def write_small_files(folder: Path, count: int, pool: list[str]) -> None:
    """count short documents, one SQuAD paragraph each (like a benchmark corpus of short
    documents, one file each)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (folder / f"doc-{n:07d}.txt").write_text(
            f"Document {n}\n\n{pool[n % len(pool)]} (Copy {n}.)\n", encoding="utf-8")


def small_files(work: Path, count: int, pool: list[str]) -> list[str]:
    """A build from a folder of count small files in one update (files/s, embedding
    excluded), then one article added, edited and removed in that index of count sources."""
    folder, index = work / "small-files", work / "small-index"
    for old in (folder, index):
        shutil.rmtree(old, ignore_errors=True)
    write_small_files(folder, count, pool)
    built = run_child("update", index, folder)
    ops = one_article_ops(index, work / "small-single", 9_500_000 + count, pool)
    row = [f"{count:,}", f"{built['chunks']:,}",
           f"{built['files'] / max(1e-9, built['load_seconds']):,.0f}",
           f"{built['files'] / own(built):,.0f}",
           *(f"{own(ops[k]):.2f}" for k in ("add", "edit", "remove")),
           f"{built['rss_mb']:,.0f} / {max(op['rss_mb'] for op in ops.values()):,.0f}"]
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(index, ignore_errors=True)
    return row


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# -- the child process: one operation, its own time and peak memory --------------------------

def child(argv: list[str]) -> None:
    """Run one operation on an index and print {"seconds", "rss_mb", ...} as JSON."""
    from bench.standin import HashEmbedder
    from index.library import Library

    op, index, *rest = argv
    embedder = HashEmbedder()
    spent = [0.0]
    encode = embedder.encode

    def timed_encode(texts, **kw):
        began = time.perf_counter()
        try:
            return encode(texts, **kw)
        finally:
            spent[0] += time.perf_counter() - began

    embedder.encode = timed_encode
    lib = Library(Path(index), embedder)
    loading = [0.0]  # discovering, reading, hashing, planning and chunking (Library._load)
    load = lib._load

    def timed_load(*a, **kw):
        began = time.perf_counter()
        try:
            return load(*a, **kw)
        finally:
            loading[0] += time.perf_counter() - began

    lib._load = timed_load  # type: ignore[method-assign]
    out: dict[str, object] = {}
    began = time.perf_counter()
    if op == "update":  # rest: files or folders to add
        report = lib.update(rest)
        out.update(chunks=report.chunks_total, files=len(report.added) + len(report.changed),
                   merge_seconds=report.merge_seconds, merges=report.merges,
                   update_seconds=report.seconds)
    elif op == "remove":
        report = lib.remove(rest)
        out.update(merge_seconds=report.merge_seconds, update_seconds=report.seconds)
    elif op == "ask":  # rest: a JSON file of questions
        questions = json.loads(Path(rest[0]).read_text())
        lib.search(questions[0])  # open the snapshot
        times: dict[str, list[float]] = {"search": [], "ask": []}
        for rnd in range(2):
            for q in questions:
                for name, run in (("search", lambda q=q: lib.search(q, k=10)),
                                  ("ask", lambda q=q: lib.ask(q))):
                    t = time.perf_counter()
                    run()
                    if rnd:
                        times[name].append(time.perf_counter() - t)
        out.update({f"{k}_ms": 1000 * float(np.median(v)) for k, v in times.items()})
    elif op == "top10":  # rest: questions file; prints each question's top-10
        questions = json.loads(Path(rest[0]).read_text())
        out["top"] = [[(h.source.path.rsplit("/", 1)[-1], h.chunk.start, round(h.score, 5))
                       for h in hits] for hits in lib.search_many(questions, 10)]
    out["seconds"] = time.perf_counter() - began
    out["embedding_seconds"] = spent[0]
    out["load_seconds"] = loading[0]
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def run_child(*args: str) -> dict:
    done = subprocess.run(["nice", sys.executable, "-m", "bench.updates", "--child",
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          env=env())
    if done.returncode != 0:
        raise RuntimeError(f"bench child {args[:2]} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def reader_rss_mb(index: Path, questions_file: Path) -> dict:
    return run_child("ask", index, questions_file)


# -- the stages ------------------------------------------------------------------------------

def grow(index: Path, work: Path, chunks_now: int, target: int, next_article: int,
         pool: list[str], per_article: float) -> tuple[int, int, dict]:
    """Add articles until the index holds target chunks; (chunks, next article, build figures)."""
    files = seconds = embedding = 0.0
    while chunks_now < target:
        count = int(min(BATCH, max(1, (target - chunks_now) / per_article + 1)))
        batch = write_articles(work / f"batch-{next_article:07d}", next_article, count, pool)
        got = run_child("update", index, batch[0].parent)
        next_article += count
        chunks_now = int(got["chunks"])
        files += got["files"]
        seconds += got["seconds"]
        embedding += got["embedding_seconds"]
    rate = files / max(1e-9, seconds - embedding) if files else 0.0
    return chunks_now, next_article, {"files": files, "seconds": seconds - embedding,
                                      "files_per_s": rate}


def one_article_ops(index: Path, work: Path, n: int, pool: list[str]) -> dict[str, dict]:
    """Add, edit, then remove one article, each in its own process."""
    folder = work / f"single-{n}"
    (file,) = write_articles(folder, n, 1, pool)
    added = run_child("update", index, file)
    file.write_text(file.read_text(encoding="utf-8") + "\n\nAn edited closing line.\n",
                    encoding="utf-8")
    edited = run_child("update", index, file)
    removed = run_child("remove", index, file)
    return {"add": added, "edit": edited, "remove": removed}


def own(op: dict) -> float:
    """citebot's own seconds of an operation: its time without the stand-in embedding."""
    return op["seconds"] - op["embedding_seconds"]


def squad_equality(work: Path, pool_files: list[Path], questions: list[str]) -> tuple[int, int]:
    """(questions whose top-10 match, questions) between a grown and a fresh SQuAD index."""
    folder = work / "squad-articles"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    qfile = work / "squad-questions.json"
    qfile.write_text(json.dumps(questions))
    grown, fresh = work / "squad-grown", work / "squad-fresh"
    for ix in (grown, fresh):
        shutil.rmtree(ix, ignore_errors=True)
    # Grown: a third at a time, then an edit and a removal, then the rest back.
    thirds = [pool_files[i::3] for i in range(3)]
    for part in thirds:
        for f in part:
            shutil.copy(f, folder / f.name)
        run_child("update", grown, folder)
    edited = folder / pool_files[0].name
    edited.write_text(edited.read_text(encoding="utf-8") + "\n\nA line added later.\n",
                      encoding="utf-8")
    run_child("update", grown, folder)
    gone = folder / pool_files[1].name
    saved = gone.read_bytes()
    gone.unlink()
    run_child("remove", grown, gone)
    gone.write_bytes(saved)
    run_child("update", grown, folder)
    run_child("update", fresh, folder)
    a = run_child("top10", grown, qfile)["top"]
    b = run_child("top10", fresh, qfile)["top"]

    def norm(hits: list) -> list:
        return sorted(map(tuple, hits), key=lambda h: (-h[2], h))

    same = sum(norm(x) == norm(y) for x, y in zip(a, b, strict=True))
    return same, len(questions)


def main(argv: list[str] | None = None) -> str:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    args.add_argument("--work", type=Path, default=OUT / "updates")
    args.add_argument("--out", type=Path)
    args.add_argument("--resume", action="store_true",
                      help="grow the index a previous run left in --work (larger sizes only)")
    args.add_argument("--equality-only", action="store_true",
                      help="only compare a grown and a fresh index of the SQuAD corpus")
    args.add_argument("--small", type=int, default=SMALL_FILES,
                      help="small files to build from a folder (0: none)")
    args.add_argument("--child", nargs=argparse.REMAINDER)
    opts = args.parse_args(argv)
    if opts.child:
        child(opts.child)
        return ""
    sizes = [300, 600] if opts.smoke else [int(s) for s in opts.sizes.split(",") if s]
    sizes = [] if opts.equality_only else sizes
    work = opts.work if not opts.smoke else opts.work.with_name("updates-smoke")
    if not opts.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    pool = paragraphs()
    from bench.common import squad_questions

    questions = squad_questions(QUESTIONS) if (SQUAD / "queries.jsonl").exists() else [
        "who defended Darroch?", "why did Darroch resign?", "what did Corbyn say?"]
    qfile = work / "questions.json"
    qfile.write_text(json.dumps(questions[:10] if opts.smoke else questions))
    index = work / "index"
    rows, chunks, next_article, per_article = [], 0, 0, 12.0
    if opts.resume and index.exists():
        from index.store import open_snapshot

        snap = open_snapshot(index)
        chunks = snap.manifest.chunks
        snap.close()
        numbers = [int(p.stem.split("-")[1]) for p in (work / "articles").glob("batch-*/*.md")]
        next_article = max(numbers, default=-1) + 1
    for size in sizes:
        began = time.perf_counter()
        before = chunks
        chunks, next_article_after, build = grow(index, work / "articles", chunks, size,
                                                 next_article, pool, per_article)
        per_article = max(1.0, (chunks - before) / max(1, next_article_after - next_article))
        next_article = next_article_after
        ops = one_article_ops(index, work / "articles", 9_000_000 + size, pool)
        reader = reader_rss_mb(index, qfile)
        on_disk = folder_bytes(index)
        ratio = "n/a"
        if size <= FRESH_MAX:
            fresh = work / "fresh"
            shutil.rmtree(fresh, ignore_errors=True)
            run_child("update", fresh, *sorted(str(p) for p in (work / "articles").glob(
                "batch-*")))
            ratio = f"{on_disk / folder_bytes(fresh):.2f}"
            shutil.rmtree(fresh)
        peak = max(op["rss_mb"] for op in ops.values())
        rows.append([f"{chunks:,}", f"{build['files_per_s']:,.0f}",
                     *(f"{own(ops[k]):.2f}" for k in ("add", "edit", "remove")),
                     f"{max(op['merge_seconds'] for op in ops.values()):.2f}",
                     f"{peak:,.0f} / {reader['rss_mb']:,.0f}", f"{on_disk / 1e6:,.0f}", ratio,
                     f"{reader['search_ms']:.1f}", f"{reader['ask_ms']:.1f}"])
        print(f"[{size:,}: {time.perf_counter() - began:,.0f} s] " + " | ".join(rows[-1]),
              file=sys.stderr, flush=True)
    small = small_files(work, 200 if opts.smoke else opts.small, pool) \
        if (opts.smoke or opts.small) and not opts.equality_only else None
    if small:
        print("[small files] " + " | ".join(small), file=sys.stderr, flush=True)
    files = sorted((SQUAD / "corpus").glob("*.txt")) if (SQUAD / "corpus").is_dir() \
        else sorted(SEEDS.glob("*.txt"))
    eq_questions = json.loads(qfile.read_text()) if opts.smoke else squad_questions()
    same, total = squad_equality(work, files, eq_questions)
    corpus = "SQuAD corpus" if (SQUAD / "corpus").is_dir() else "seed articles"
    header = ["chunks", "build files/s", "add one s", "edit one s", "remove one s",
              "merge after s", "peak MB update / reader", "on disk MB", "disk / fresh build",
              "search ms", "ask ms"]
    if opts.equality_only:
        text = f"Same top-10: {same} of {total} questions ({corpus}, stand-in vectors)\n"
        print(text)
        return text
    text = (f"# Updates as the index grows (issue 11)\n\n{machine_line()}\n\n"
            "STAND-IN EMBEDDING: vectors from a hash of the text (bench/standin.py); times are "
            "citebot's own work, embedding excluded. Real tokenizer and chunker; synthetic "
            "articles of SQuAD paragraphs (seed articles when SQuAD is absent).\n\n"
            + table(header, rows) +
            f"\n\nSame top-10 as a fresh build after adds, an edit and a removal: "
            f"{same} of {total} questions ({corpus}, stand-in vectors, ties aside)\n")
    if small:
        text += ("\nSmall files: one SQuAD paragraph each, built from one folder in one "
                 "update; then one article added, edited and removed in that index.\n\n"
                 "\"load files/s\" counts discovering, reading, hashing, planning and "
                 "chunking (the target's scope); \"build files/s\" the whole update without "
                 "embedding: also the sentence spans, BM25 postings, FAISS index and SQLite "
                 "rows.\n\n"
                 + table(["files", "chunks", "load files/s", "build files/s", "add one s",
                          "edit one s",
                          "remove one s", "peak MB build / update"], [small]) + "\n")
    write_report(text, "updates", opts.out, opts.smoke)
    if opts.smoke:
        shutil.rmtree(work, ignore_errors=True)
    return text


if __name__ == "__main__":
    main()
