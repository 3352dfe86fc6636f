"""The dev figures of docs/learned-answers.md: seeds, SQuAD v1.1 and SQuAD 2.0, all at once.

Never trained on: the questions here only measure. Each index is built beforehand, e.g.
    citebot index build seeds --index /tmp/seeds-index
    citebot index build ../shared/eval/squad/corpus --index /tmp/squad-index
    citebot index build ../shared/eval/squad2/corpus --index /tmp/squad2-index

usage: python -m training.dev_figures --seeds-index /tmp/seeds-index \\
           --squad-index /tmp/squad-index --squad2-index /tmp/squad2-index [--json OUT]
       python -m training.dev_figures --sample [--json tests/data/squad_sample/figures.json]

--sample measures the fixed sample that CI has (tests/data/squad_sample: four of the SQuAD
articles with their SQuAD v1.1 and 2.0 dev questions, and the seeds), on indexes it builds in
a temporary folder; tests/test_quality.py checks the committed weights still give them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from index.evaluate import evaluate, load_questions, norm  # noqa: E402
from index.library import Library, Settings  # noqa: E402
from index.records import Answer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT.parent / "shared" / "eval"  # as in CI; --eval names another copy
DATA = ROOT / "tests" / "data"


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def answer_hit(answers: Sequence[str], a: Answer) -> bool:
    """score_refusals.py's rule: the answer text or the first citation holds an answer."""
    texts = [norm(a.answer)] + ([norm(a.citations[0].quote)] if a.citations else [])
    return a.answered and any(norm(x) in t for x in answers if norm(x) for t in texts)


def holds(answers: Sequence[str], a: Answer) -> bool:
    """The answer text itself holds an answer (the seed figure)."""
    return a.answered and any(norm(x) and norm(x) in norm(a.answer) for x in answers)


def squad2_figures(lib: Library, rows: list[dict], keep: list | None = None) -> dict:
    """score_refusals.py's figures; keep, when given, receives each (row, Answer)."""
    asked = [(r, lib.ask(r["query"])) for r in rows]
    if keep is not None:
        keep.extend(asked)
    ans = [(r, a) for r, a in asked if r["answerable"]]
    unans = [(r, a) for r, a in asked if not r["answerable"]]
    hits = sum(answer_hit(r["answers"], a) for r, a in ans)
    refused = sum(not a.answered for _, a in unans)
    return {"questions": len(rows), "accuracy": (hits + refused) / len(rows),
            "refused_unanswerable": refused / len(unans),
            "false_refusals": sum(not a.answered for _, a in ans) / len(ans),
            "answer_hit": hits / len(ans),
            "hedged_answerable": sum(a.hedged for _, a in ans) / len(ans),
            "hedged_unanswerable": sum(a.hedged for _, a in unans) / len(unans)}


def retrieval(lib: Library, path: Path) -> dict:
    report = evaluate(load_questions(path), lib.search_many, k=10)
    return {"recall@1": report.recall(1), "recall@5": report.recall(5), "mrr@10": report.mrr()}


def seed_figures(lib: Library) -> dict:
    """Retrieval on the 15 dev questions; answers and refusals on those and the seed
    questions of tests/data/calibration.jsonl; the share of shown citations that support."""
    dev = jsonl(DATA / "eval" / "dev_qa.jsonl")  # a copy of ../shared/eval/dev_qa.jsonl
    cal = [q for q in jsonl(DATA / "calibration.jsonl") if q["set"] in ("seeds", "any")]
    answerable = [q for q in dev if q["answerable"]] + \
        [q for q in cal if q["kind"] == "answerable"]
    unanswerable = [q for q in dev if not q["answerable"]] + \
        [q for q in cal if q["kind"] == "unanswerable"]
    off = [q for q in cal if q["kind"] == "off_topic"]
    got = {q["query"]: lib.ask(q["query"]) for q in answerable + unanswerable + off}
    out = retrieval(lib, DATA / "eval" / "dev_qa.jsonl")
    out.update(answer_figures(got, answerable, unanswerable))
    out.update({"off_topic_refused": sum(not got[q["query"]].answered for q in off),
                "off_topic": len(off)})
    support = DATA / "citation_support.jsonl"
    if support.exists():
        out.update(citation_support(got, lib, jsonl(support)))
    return out


def typed_figures(lib: Library, name: str = "typed") -> dict:
    """The seed questions typed like a Discord user's (tests/data/typed_qa.jsonl; with name
    "holdout" or "holdout2", the held-out sets): retrieval, answers and refusals; and the
    follow-up conversations ({name}_followups.jsonl) whose last answer holds what it should,
    each asked with the earlier turns as context."""
    rows = jsonl(DATA / f"{name}_qa.jsonl")
    out = retrieval(lib, DATA / f"{name}_qa.jsonl")
    got = {q["query"]: lib.ask(q["query"]) for q in rows}
    out.update(answer_figures(got, [q for q in rows if q["answerable"]],
                              [q for q in rows if not q["answerable"]]))
    convs = jsonl(DATA / f"{name}_followups.jsonl")
    out.update({"follow_ups_right": sum(holds(c["answers"], converse(lib, c["turns"])[1])
                                        for c in convs),
                "follow_ups": len(convs)})
    return out


def converse(lib: Library, questions: Sequence[str]) -> tuple[str, Answer]:
    """Ask questions one after another as one conversation: the last query retrieved with
    (the follow-up rewrite) and the last answer."""
    from index.conversation import make_turn

    turns: list = []
    for q in questions:
        answer = lib.ask(q, context=turns)
        turns.append(make_turn(q, answer, turns))
    return turns[-1].query, answer


def answer_figures(got: dict[str, Answer], answerable: list[dict],
                   unanswerable: list[dict]) -> dict:
    """How many answers hold an answer string, and how many of each kind were refused."""
    return {"answer_holds": sum(holds(q["answers"], got[q["query"]]) for q in answerable),
            "answerable": len(answerable),
            "answerable_refused": sum(not got[q["query"]].answered for q in answerable),
            "unanswerable_refused": sum(not got[q["query"]].answered for q in unanswerable),
            "unanswerable": len(unanswerable),
            "answerable_hedged": sum(got[q["query"]].hedged for q in answerable),
            "unanswerable_hedged": sum(got[q["query"]].hedged for q in unanswerable)}


def citation_support(got: dict[str, Answer], lib: Library, labels: list[dict]) -> dict:
    """The share of shown citations that a labelled line says support the answer; quotes not
    labelled yet are counted apart."""
    by_quote = {(x["query"], x["quote"]): x["supports"] for x in labels}
    shown = supported = unlabelled = 0
    for q, a in got.items():
        if q not in {x["query"] for x in labels}:
            continue
        for c in lib.ask(q).citations if a is None else a.citations:
            label = by_quote.get((q, c.quote))
            if label is None:
                unlabelled += 1
                continue
            shown += 1
            supported += bool(label)
    return {"citations_shown": shown, "citations_supporting": supported,
            "citations_unlabelled": unlabelled}


SAMPLE = DATA / "squad_sample"
SETTINGS = Settings()


def sample_figures(seeds: Library, squad: Library, keep: list | None = None) -> dict:
    """The fixed sample's figures: seeds (the dev questions and those typed like a Discord
    user's, all three sets), and the sample's SQuAD v1.1 and 2.0 questions on
    squad, an index of SAMPLE / "corpus"; keep receives the SQuAD 2.0 answers."""
    return {"seeds": seed_figures(seeds), "typed": typed_figures(seeds),
            "holdout": typed_figures(seeds, "holdout"),
            "holdout2": typed_figures(seeds, "holdout2"),
            "squad": retrieval(squad, SAMPLE / "squad.jsonl"),
            "squad2": squad2_figures(squad, jsonl(SAMPLE / "squad2.jsonl"), keep)}


def main(argv: list[str] | None = None) -> int:
    global EVAL
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds-index")
    ap.add_argument("--sample", action="store_true", help="the fixed sample CI has")
    ap.add_argument("--squad-index")
    ap.add_argument("--squad2-index")
    ap.add_argument("--limit", type=int, default=0, help="only the first N SQuAD questions")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--eval", default=str(EVAL), help=f"the shared eval folder ({EVAL})")
    args = ap.parse_args(argv)
    EVAL = Path(args.eval)
    from bot.app import embedder_for
    from bot.config import Config, library_settings

    global SETTINGS
    SETTINGS = library_settings(Config())  # what citebot runs with
    embedder = embedder_for(Config())
    figures: dict = {}
    if args.sample:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            seeds = Library(Path(tmp) / "seeds", embedder, SETTINGS)
            seeds.update([str(ROOT / "seeds")])
            squad = Library(Path(tmp) / "squad", embedder, SETTINGS)
            squad.update([str(SAMPLE / "corpus")])
            figures = sample_figures(seeds, squad)
        print(json.dumps(figures, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        return 0
    if not args.seeds_index:
        ap.error("give --seeds-index (and --squad-index, --squad2-index) or --sample")
    seeds = Library(Path(args.seeds_index), embedder, SETTINGS)
    figures["seeds"] = seed_figures(seeds)
    print("seeds", json.dumps(figures["seeds"]), flush=True)
    for name in ("typed", "holdout", "holdout2"):
        figures[name] = typed_figures(seeds, name)
        print(name, json.dumps(figures[name]), flush=True)
    if args.squad_index:
        lib = Library(Path(args.squad_index), embedder, SETTINGS)
        path = EVAL / "squad" / "queries.jsonl"
        if args.limit:
            path = _head(path, args.limit)
        figures["squad"] = retrieval(lib, path)
        print("squad", json.dumps(figures["squad"]), flush=True)
    if args.squad2_index:
        lib = Library(Path(args.squad2_index), embedder, SETTINGS)
        rows = jsonl(EVAL / "squad2" / "queries.jsonl")
        figures["squad2"] = squad2_figures(lib, rows[: args.limit or None])
        print("squad2", json.dumps(figures["squad2"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


def _head(path: Path, n: int) -> Path:
    out = Path("/tmp") / f"head{n}-{path.parent.name}-{path.name}"
    out.write_text("".join(path.read_text(encoding="utf-8").splitlines(True)[:n]),
                   encoding="utf-8")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
