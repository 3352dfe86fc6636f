"""`citebot eval`: the same figures as the reference scorer, misses, refusal rates, the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.eval_render import render_eval
from index.errors import BadQuestionFile
from index.evaluate import Question, evaluate, load_questions, parse_question
from index.records import Answer, Chunk, Citation, Hit, Source

from .conftest import SEEDS, SHARED_EVAL, run_cli

DATA = Path(__file__).parent / "data" / "eval"
SCORE = DATA / "score.py"
SHARED = SHARED_EVAL


def hit(rank: int, text: str, path: str | None, score: float = 0.5) -> Hit:
    src = Source(id=path or "u", title="t", path=path)
    return Hit(rank=rank, score=score, chunk=Chunk("u", text, 0, len(text), "h"), source=src)


class Recorder:
    """A search_many that remembers what it returned, to feed the same output to score.py."""

    def __init__(self, search_many):
        self.search_many, self.queries, self.results = search_many, [], []

    def __call__(self, queries: list[str], k: int) -> list[list[Hit]]:
        out = self.search_many(queries, k)
        self.queries += queries
        self.results += out
        return out

    def write(self, path: Path) -> Path:
        with open(path, "w", encoding="utf-8") as fh:
            for q, hits in zip(self.queries, self.results, strict=True):
                fh.write(json.dumps({"query": q, "results": [h.to_json() for h in hits]}) + "\n")
        return path


def score_py(questions: Path, results: Path, k: int) -> dict:
    done = subprocess.run([sys.executable, str(SCORE), str(questions), str(results),
                           "--k", str(k)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_same_figures(report, ref: dict) -> None:
    mine = report.to_json()
    cutoffs = [c for c in (1, 5, 10) if c <= report.k]
    for c in cutoffs:
        assert mine[f"recall@{c}"] == ref[f"recall@{c}"], c
    assert mine[f"mrr@{report.k}"] == ref[f"mrr@{report.k}"]
    assert mine["answerable"] == ref["answerable"]
    if "top1_score_auroc" in ref:
        assert mine["top1_score_auroc"] == ref["top1_score_auroc"]


def test_seed_figures_equal_score_py(seeds_library, tmp_path):
    questions = load_questions(DATA / "dev_qa.jsonl")
    rec = Recorder(seeds_library.search_many)
    report = evaluate(questions, rec, k=10)
    ref = score_py(DATA / "dev_qa.jsonl", rec.write(tmp_path / "r.jsonl"), 10)
    assert_same_figures(report, ref)
    assert ref["recall@5"] > 0.5  # a real ranking, not an empty one that trivially agrees


def test_squad_style_labels_over_the_seeds_equal_score_py(seeds_library, tmp_path):
    paragraphs = (SEEDS / "003_7d9a2ce0f383324a.txt").read_text(encoding="utf-8").split("\n\n")
    age = next(p for p in paragraphs if "Darroch, 65" in p)
    rows = [
        {"id": "s1", "query": "how old is Darroch?", "answers": ["65"],
         "source": "003_7d9a2ce0f383324a.txt", "gold_paragraph": age},
        # Right source and answer string, but a gold paragraph no passage shares 8 words with:
        # never a hit by the SQuAD rule.
        {"id": "s2", "query": "who did TRT World speak to?", "answers": ["Olly Barratt"],
         "source": "003_7d9a2ce0f383324a.txt",
         "gold_paragraph": "Olly Barratt is named in a paragraph that no seed article holds."},
        {"id": "s3", "query": "who did TRT World speak to?", "answers": ["Olly Barratt"],
         "source": "003_7d9a2ce0f383324a.txt",
         "gold_paragraph": next(p for p in paragraphs if "Olly Barratt" in p)},
    ]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = Recorder(seeds_library.search_many)
    report = evaluate(load_questions(qfile), rec, k=5)
    assert_same_figures(report, score_py(qfile, rec.write(tmp_path / "r.jsonl"), 5))
    first = {o.question.id: o.first_hit for o in report.outcomes}
    assert first["s2"] is None and first["s3"] is not None


def test_squad_sample_rule_on_constructed_results_equals_score_py(tmp_path):
    questions = load_questions(DATA / "squad_sample.jsonl")
    assert all(q.gold_paragraph for q in questions)

    def search_many(queries, k):
        out = []
        for q in questions:
            gold, src = q.gold_paragraph, q.sources[0]
            out.append([
                hit(1, f"{q.answers[0]} appears here, in other words.", f"corpus/{src}"),
                hit(2, gold, "corpus/Elsewhere.txt"),  # the gold text from another article
                hit(3, gold, f"corpus/{src}"),
            ])
        return out

    rec = Recorder(search_many)
    report = evaluate(questions, rec, k=10)
    assert [o.first_hit for o in report.outcomes] == [3] * len(questions)
    assert_same_figures(report, score_py(DATA / "squad_sample.jsonl",
                                         rec.write(tmp_path / "r.jsonl"), 10))


def test_squad2_file_as_it_is_gives_score_refusals_figures(tmp_path):
    """The SQuAD 2.0 file, answerable and unanswerable mixed, reads as it is; eval's refusal
    rates, answer hit and accuracy equal score_refusals.py's on the same replies."""
    path = DATA.parent / "squad_sample" / "squad2.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    questions = load_questions(path)
    assert {q.answerable for q in questions} == {True, False}

    def ask(query: str) -> Answer:
        # Every third question refused; the rest answered, right for every other one.
        i = next(j for j, r in enumerate(rows) if r["query"] == query)
        row = rows[i]
        if i % 3 == 0:
            return Answer(question=query, answered=False, answer="no")
        right = row["answers"][0] if row["answers"] and i % 2 else "something else"
        cite = Citation(n=1, quote=f"it was {right}.", source=Source(id="s", title="t"),
                        start=0, end=5)
        return Answer(question=query, answered=True, answer="An answer.", citations=(cite,))

    replies = tmp_path / "ask.jsonl"
    replies.write_text("".join(json.dumps({"id": r["id"], **ask(r["query"]).to_json()}) + "\n"
                               for r in rows), encoding="utf-8")
    done = subprocess.run([sys.executable, str(DATA / "score_refusals.py"), str(path),
                           str(replies)], capture_output=True, text=True, check=True)
    ref = json.loads(done.stdout.strip().splitlines()[-1])
    report = evaluate(questions, lambda queries, k: [[] for _ in queries], ask, k=10)
    js = report.to_json()
    assert js["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-4)
    assert js["refusal_rate_unanswerable"] == pytest.approx(ref["refusal_rate_unanswerable"],
                                                            abs=1e-4)
    assert js["false_refusal_rate"] == pytest.approx(ref["false_refusal_rate"], abs=1e-4)
    assert js["answer_hit"] == pytest.approx(ref["answer_hit"], abs=1e-4)
    text = render_eval(report)
    assert "refusal rate, unanswerable" in text and f"{js['accuracy']:.2f}" in text


def test_misses_and_refusal_rates_on_a_constructed_case():
    qs = [parse_question(r, f"line {i}") for i, r in enumerate([
        {"id": "q1", "query": "alpha?", "evidence": ["Alpha  beta “gamma”"]},
        {"id": "q2", "query": "delta?", "answers": ["delta"], "sources": ["want.txt"]},
        {"id": "q3", "query": "nothing?", "answerable": False},
        {"id": "q4", "query": "none?", "answerable": False},
    ], 1)]
    ranked = {
        "alpha?": [hit(1, 'x alpha beta "gamma" y', "a.txt"), hit(2, "no", "a.txt"),
                   hit(3, 'ALPHA beta "Gamma"', "b.txt")],
        # delta is in the top result but from the wrong source; the real hit is at rank 12.
        "delta?": [hit(1, "delta, but from elsewhere " + "word " * 40, "seeds/x.txt")]
        + [hit(i, "filler", "want.txt") for i in range(2, 12)] + [hit(12, "delta", "want.txt")],
        "nothing?": [hit(1, "n", "a.txt", 0.2)],
        "none?": [hit(1, "n", "a.txt", 0.9)],
    }
    refused = {"delta?", "nothing?"}

    def ask(q: str) -> Answer:
        return Answer(question=q, answered=q not in refused, answer="")

    report = evaluate(qs, lambda queries, k: [ranked[q][:k] for q in queries], ask, k=10)
    assert report.recall(1) == report.recall(10) == 0.5 and report.recall(20) == 1.0
    assert report.mrr() == 0.5
    assert report.ndcg() == pytest.approx((1 + 0.5) / (1 + 1 / 1.5849625) / 2, abs=1e-6)
    assert report.refusal_rate(False) == 0.5 and report.refusal_rate(True) == 0.5
    assert report.top1_auroc() == 0.5
    js = report.to_json()
    assert [m["id"] for m in js["missed"]] == ["q2"]
    miss = js["missed"][0]
    assert miss["top_source"] == "seeds/x.txt" and miss["first_hit_rank"] == 12
    assert miss["top_snippet"].startswith("delta, but from elsewhere") and \
        len(miss["top_snippet"]) <= 120
    assert js["refusal_rate_unanswerable"] == 0.5 and js["false_refusal_rate"] == 0.5
    assert {r["id"] for r in js["refused"]} == {"q2", "q3"}
    assert js["recall_curve"][:12] == [0.5] * 11 + [1.0]
    text = render_eval(report)
    assert "q2" in text and "seeds/x.txt" in text and "first hit at 12" in text
    assert "0.50 of 2" in text


def test_cli_eval_json_and_plot(capsys, seeds_index, tmp_path):
    png = tmp_path / "recall.png"
    code, out, err = run_cli(capsys, "eval", DATA / "dev_qa.jsonl", "--json", "--plot", png,
                         "--index", seeds_index)
    assert code == 0, err
    obj = json.loads(out)
    assert obj["questions"] == 15 and obj["answerable"] == 13
    assert {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"} <= set(obj)
    assert obj["refusal_rate_unanswerable"] is not None and obj["false_refusal_rate"] is not None
    assert len(obj["recall_curve"]) == 20 and obj["recall_curve"][9] == obj["recall@10"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    code, out, _ = run_cli(capsys, "eval", DATA / "dev_qa.jsonl", "-k", 5, "--no-answers",
                       "--index", seeds_index)
    assert code == 0 and "recall@5=" in out and "MRR@5=" in out and "refusal" not in out


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    ('{"query": "a", "evidence": ["x"]}\n{"query": ', "line 2: not valid JSON"),
    ('{"query": "who?", "answers": ["May"]}\n', "no labels"),
    ('["not", "an", "object"]\n', "\"query\" string"),
    ('{"query": "q", "gold_paragraph": "p", "answers": ["a"]}\n', "SQuAD-style"),
])
def test_bad_question_files_are_one_line_errors(capsys, tmp_path, content, message):
    path = tmp_path / "qa.jsonl"
    if content is not None:
        path.write_text(content)
    code, out, err = run_cli(capsys, "eval", path, "--index", tmp_path / "no-index")
    assert code == 1 and out == ""
    assert err.startswith("citebot: error: ") and message in err and err.count("\n") == 1


def test_question_defaults_and_hit_rule():
    q = parse_question({"query": "q", "answers": ["Full Faith"], "sources": ["seeds/a.txt"]},
                       "line 1")
    assert q.id == "line 1" and q.answerable and q.gold_paragraph is None
    assert q.is_hit("she had\n full  faith in him", "/x/a.txt")
    assert q.is_hit("full faith", "a")  # base name without extension
    assert not q.is_hit("full faith", "b.txt")
    with pytest.raises(BadQuestionFile):
        evaluate([Question("x", "q", evidence=("e",))], lambda qs, k: [[]], k=0)


@pytest.mark.skipif(not (SHARED / "score.py").exists(), reason="no ../shared/eval here")
def test_vendored_eval_files_match_the_shared_ones():
    for name in ("score.py", "dev_qa.jsonl"):
        assert (DATA / name).read_bytes() == (SHARED / name).read_bytes(), name
