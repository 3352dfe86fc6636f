"""Warm queries: what one more question costs inside a running citebot, against the reference.

    python bench/queries.py            # 1,000 SQuAD questions; writes results/queries.md
    python bench/queries.py --smoke    # the seeds and 5 questions: checks that it all runs

Cost per question: the wall time of `citebot search --queries FILE -k 10 --json` over all the
questions, minus the same command on one question (start-up, index load, one question), over
the questions after the first. The reference: sentence-transformers embedding one question
alone (`SentenceTransformer(path).encode([q])`), median over 200 questions, with torch on one
thread like citebot's ONNX sessions (also shown: torch's default threads). Command runs and
reference rounds alternate, so load from other processes slows both alike.

The SQuAD index is built once into bench/out/squad-index and reused while `citebot index
check` accepts it. In-process, a stage breakdown times `Library.search_many` with a timer
around the embedder, then the JSON output, and `Library.ask` one question at a time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    OUT,
    SEEDS,
    SMOKE_QUESTIONS,
    SQUAD,
    build_index,
    citebot_cmd,
    index_ok,
    machine_line,
    median,
    question_ms,
    squad_questions,
    table,
    timed,
    verdict,
    write_report,
)

TARGET = 1.5  # cost per warm question: at most this many reference embeddings
SQUAD_INDEX = OUT / "squad-index"


def ensure_index(index_dir: Path, sources: list[Path]) -> str:
    """Build the index unless a usable one is there; says which."""
    if index_ok(index_dir):
        return f"reused the index in {index_dir}"
    # One that is there but unusable is stale (other settings or format): rebuilt whole.
    seconds = build_index(index_dir, sources, rebuild=index_dir.exists())
    return f"built the index in {index_dir} ({seconds:.0f} s)"


def reference_model():
    """The reference: plain sentence-transformers on the model citebot uses, on CPU."""
    from sentence_transformers import SentenceTransformer

    from bot.app import embedder_for
    from bot.config import Config

    path = embedder_for(Config()).path
    return SentenceTransformer(str(path), device="cpu")


def batch_costs(index_dir: Path, questions: list[str], ref_questions: list[str], st,
                rounds: int, cwd: Path) -> dict:
    """Interleaved: the one-question command, the batch command, the reference."""
    many, one = cwd / "questions.jsonl", cwd / "one.jsonl"
    many.write_text("".join(json.dumps({"id": str(i), "query": q}) + "\n"
                            for i, q in enumerate(questions)), encoding="utf-8")
    one.write_text(json.dumps({"id": "0", "query": questions[0]}) + "\n", encoding="utf-8")
    cmd = [*citebot_cmd(), "--index", str(index_dir), "search", "-k", "10", "--json",
           "--queries"]
    st.encode(ref_questions[:4], show_progress_bar=False)  # warm-up
    if rounds > 1:
        timed([*cmd, str(one)], cwd=cwd)  # file cache and .pyc files
    one_s, many_s, refs = [], [], []
    for r in range(rounds):
        steps = ["one", "many", "ref"]
        for step in steps[r % 3:] + steps[:r % 3]:
            if step == "ref":
                refs.append(question_ms(st, ref_questions))
                continue
            seconds, done = timed([*cmd, str(one if step == "one" else many)], cwd=cwd)
            lines = done.stdout.splitlines()
            want = 1 if step == "one" else len(questions)
            if len(lines) != want or not json.loads(lines[-1])["results"]:
                raise RuntimeError(f"search printed {len(lines)} lines for {want} questions")
            (one_s if step == "one" else many_s).append(seconds)
    return {"one_s": one_s, "many_s": many_s, "ref": refs,
            "per_q_ms": 1000 * (median(many_s) - median(one_s)) / (len(questions) - 1)}


def stages(index_dir: Path, questions: list[str], ask_questions: list[str]) -> dict:
    """In-process: search_many with its embedding timed apart, the JSON output, then ask."""
    from bot.app import make_library
    from bot.config import Config, IndexConfig

    lib = make_library(Config(index=IndexConfig(dir=str(index_dir))))
    lib.search_many(questions[:2], 10)  # warm-up: snapshot, sessions, BM25
    lib.ask(questions[0])
    embedder = lib.embedder
    spent = {"embed": 0.0}
    original = embedder.encode

    def encode(texts, **kw):
        began = time.perf_counter()
        try:
            return original(texts, **kw)
        finally:
            spent["embed"] += time.perf_counter() - began

    embedder.encode = encode
    try:
        began = time.perf_counter()
        results = lib.search_many(questions, 10)
        search_s = time.perf_counter() - began
    finally:
        del embedder.encode  # the instance attribute; the method is back
    began = time.perf_counter()
    for q, hits in zip(questions, results, strict=True):
        json.dumps({"query": q, "results": [h.to_json() for h in hits]}, ensure_ascii=False)
    output_s = time.perf_counter() - began
    ask_ms = []
    answered = 0
    for q in ask_questions:
        began = time.perf_counter()
        ans = lib.ask(q)
        ask_ms.append(1000 * (time.perf_counter() - began))
        answered += bool(ans.answered)
    ask_sorted = sorted(ask_ms)
    n = len(questions)
    return {"embed_ms": 1000 * spent["embed"] / n,
            "retrieve_ms": 1000 * (search_s - spent["embed"]) / n,
            "output_ms": 1000 * output_s / n, "ask_p50": median(ask_ms),
            "ask_mean": sum(ask_ms) / len(ask_ms),
            "ask_p90": ask_sorted[min(len(ask_sorted) - 1, int(0.9 * len(ask_sorted)))],
            "ask_n": len(ask_ms), "answered": answered, "embedder": embedder.backend_used}


def report(b: dict, s: dict, *, n: int, n_ref: int, rounds: int, smoke: bool, note: str) -> str:
    ref1 = median([r["1"] for r in b["ref"]])
    refd = median([r["default"] for r in b["ref"]])
    threads = b["ref"][0]["threads"]
    cost = b["per_q_ms"]
    ratio = cost / ref1
    ok = None if smoke else ratio <= TARGET
    rows = [
        ["citebot search, cost per warm question (batch − start-up) / (n − 1)", f"{cost:.2f}",
         f"{ratio:.3f}", f"≤ {TARGET:g}×", verdict(ok)],
        ["reference: sentence-transformers, one question, torch 1 thread", f"{ref1:.2f}",
         "1.000", "", ""],
        [f"sentence-transformers, one question, torch {threads} threads (default)",
         f"{refd:.2f}", f"{refd / ref1:.3f}", "", ""],
        ["in-process: embedding (search_many's encode)", f"{s['embed_ms']:.2f}",
         f"{s['embed_ms'] / ref1:.3f}", "", ""],
        ["in-process: retrieval (FAISS + BM25 + fusion + rows)", f"{s['retrieve_ms']:.2f}",
         f"{s['retrieve_ms'] / ref1:.3f}", "", ""],
        ["in-process: JSON output", f"{s['output_ms']:.2f}", f"{s['output_ms'] / ref1:.3f}",
         "", ""],
        [f"in-process: `Library.ask`, one question at a time (median of {s['ask_n']})",
         f"{s['ask_p50']:.1f}", f"{s['ask_p50'] / ref1:.2f}", "none", ""],
    ]
    lines = [f"# Warm queries{' (smoke)' if smoke else ''}", "", machine_line(), "",
             f"{n:,} questions; {note}. Commands: median of {rounds} interleaved rounds; "
             f"reference: median over {n_ref} questions per round.", "",
             table(["measure", "ms per question", "× reference", "target", "result"], rows,
                   "lrrll"), "",
             f"- `search --queries` over {n:,} questions: {median(b['many_s']):.2f} s; on one "
             f"question: {median(b['one_s']):.2f} s (runs: "
             f"{', '.join(f'{x:.2f}' for x in b['many_s'])} / "
             f"{', '.join(f'{x:.2f}' for x in b['one_s'])}).",
             f"- in-process `search_many`: {s['embed_ms'] + s['retrieve_ms']:.2f} ms per question"
             f" (embedding path: {s['embedder']}).",
             f"- `Library.ask` warm: median {s['ask_p50']:.1f} ms, mean {s['ask_mean']:.1f} ms, "
             f"p90 {s['ask_p90']:.1f} ms, {1000 / s['ask_mean']:.1f} questions/s on one thread; "
             f"{s['answered']} of {s['ask_n']} answered.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the seeds, 5 questions, for CI")
    parser.add_argument("--index", type=Path, help="an existing index matching the questions "
                        "(default: bench/out/squad-index, or a seeds index when smoking)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference-questions", type=int, default=200)
    parser.add_argument("--ask-questions", type=int, default=100)
    parser.add_argument("--out", type=Path, help="markdown file (default for full runs: "
                        "bench/results/queries.md)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="citebot-queries-") as tmp:
        cwd = Path(tmp)
        if args.smoke:
            questions = SMOKE_QUESTIONS
            ref_q, ask_q, rounds = questions, questions, 1
            default, sources = cwd / "index", [SEEDS]
        else:
            questions = squad_questions()
            ref_q = questions[:args.reference_questions]
            ask_q = questions[:args.ask_questions]
            rounds = args.rounds
            default, sources = SQUAD_INDEX, [SQUAD / "corpus"]
        index_dir = args.index or default
        note = (f"the index in {index_dir}" if args.index
                else ensure_index(index_dir, sources))
        st = reference_model()
        b = batch_costs(index_dir, questions, ref_q, st, rounds, cwd)
        s = stages(index_dir, questions, ask_q)
    text = report(b, s, n=len(questions), n_ref=len(ref_q), rounds=rounds, smoke=args.smoke,
                  note=note)
    write_report(text, "queries", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
