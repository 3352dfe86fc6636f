"""Retrieval metrics on a labelled question file, by the hit rule of ../shared/eval/score.py.

Two label styles are accepted, per line: seed style (`evidence`, `sources`, `answers`,
`answerable`) and SQuAD style (`source`, `gold_paragraph`, `answers`). A passage is a hit when
  seed : it contains an evidence string, or it comes from one of `sources` and contains an answer;
  SQuAD: it comes from `source`, contains an answer and shares an 8-word run with `gold_paragraph`.
Text is compared after NFKC, lower-casing, dropping `info-icon`, ASCII quotes and dashes and
removing all whitespace; sources by file base name, with or without extension.
"""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BadQuestionFile
from .ingest import read_bounded
from .records import Answer, Hit

SearchMany = Callable[[list[str], int], list[list[Hit]]]
Ask = Callable[[str], Answer]

CURVE_DEPTH = 20  # recall@1..20 for the plot; retrieval is always this deep (or k if deeper)
SNIPPET = 120
MAX_FILE_BYTES = 100_000_000

_TR = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "—": "-", "–": "-",
                     "\u00a0": " "})


def norm(text: str) -> str:
    """The comparison form of score.py: case, whitespace, quotes and dashes folded."""
    text = unicodedata.normalize("NFKC", text or "").lower().replace("info-icon", "")
    return re.sub(r"\s+", "", text.translate(_TR))


def _shingles(text: str, n: int = 8) -> set[tuple[str, ...]]:
    text = unicodedata.normalize("NFKC", text or "").lower().replace("info-icon", " ")
    words = re.findall(r"\w+", text.translate(_TR))
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _base(path: str | None) -> set[str]:
    name = os.path.basename(str(path or "").replace("\\", "/"))
    return {name, os.path.splitext(name)[0]}


@dataclass(frozen=True)
class Question:
    """One labelled question; gold_paragraph is set for SQuAD-style labels only."""

    id: str
    query: str
    answers: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    answerable: bool = True
    gold_paragraph: str | None = None

    def is_hit(self, text: str, source_path: str | None) -> bool:
        """Whether a retrieved passage answers this question, by the rule above."""
        t = norm(text)
        same_source = bool(_base(source_path) & {b for s in self.sources for b in _base(s)})
        has_answer = any(a in t for a in (norm(x) for x in self.answers) if a)
        if self.gold_paragraph is not None:
            return same_source and has_answer and \
                bool(_shingles(text) & _shingles(self.gold_paragraph))
        return any(norm(e) in t for e in self.evidence) or (same_source and has_answer)


def _strings(row: dict, key: str, where: str) -> tuple[str, ...]:
    value = row.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadQuestionFile(f"{where}: \"{key}\" should be a list of strings")
    return tuple(value)


def parse_question(row: object, where: str) -> Question:
    """A Question from one decoded line of a labelled file; where names it in errors."""
    if not isinstance(row, dict) or not isinstance(row.get("query"), str) or \
            not row["query"].strip():
        raise BadQuestionFile(f"{where}: expected a JSON object with a \"query\" string")
    answerable = row.get("answerable", True)
    if not isinstance(answerable, bool):
        raise BadQuestionFile(f"{where}: \"answerable\" should be true or false")
    qid = str(row.get("id", where))
    answers = _strings(row, "answers", where)
    if "gold_paragraph" in row:
        gold, source = row["gold_paragraph"], row.get("source")
        if not isinstance(gold, str) or not isinstance(source, str) or not answers:
            raise BadQuestionFile(f"{where}: a SQuAD-style question needs \"source\", "
                                  f"\"gold_paragraph\" and \"answers\"")
        return Question(qid, row["query"], answers, (), (source,), answerable, gold)
    evidence, sources = _strings(row, "evidence", where), _strings(row, "sources", where)
    if answerable and not evidence and not (sources and answers):
        raise BadQuestionFile(f"{where}: no labels: give \"evidence\", or \"sources\" and "
                              f"\"answers\" (or \"source\" and \"gold_paragraph\"), or "
                              f"\"answerable\": false")
    return Question(qid, row["query"], answers, evidence, sources, answerable)


def read_json_lines(path: str | Path) -> list[tuple[int, object]]:
    """(line number, value) of every non-blank line of a JSON-lines file; BadQuestionFile
    naming the line when one is not JSON. A pipe is fine; a device or an endless pipe named
    as the file stops at MAX_FILE_BYTES."""
    try:
        lines = read_bounded(path, MAX_FILE_BYTES, regular_only=False).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadQuestionFile(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") \
            from exc
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except ValueError as exc:
            raise BadQuestionFile(f"{path} line {n}: not valid JSON") from exc
        except RecursionError as exc:  # not a ValueError: very deep nesting
            raise BadQuestionFile(f"{path} line {n}: JSON nested too deeply") from exc
    return out


def load_questions(path: str | Path) -> list[Question]:
    """The labelled questions of a JSON-lines file."""
    out = [parse_question(row, f"{path} line {n}") for n, row in read_json_lines(path)]
    if not out:
        raise BadQuestionFile(f"{path} holds no questions")
    return out


@dataclass(frozen=True)
class Outcome:
    """What happened to one question: hit ranks, the top passage, the bot's answer."""

    question: Question
    hit_ranks: tuple[int, ...]  # 1-based ranks of every hit, up to the search depth
    top_source: str | None
    top_snippet: str
    top_score: float | None
    answered: bool | None  # None when answers were not asked for
    answer_hit: bool | None = None  # answered, and the answer or its first quote holds one
    hedged: bool = False  # answered with "not sure the sources answer this"


    @property
    def first_hit(self) -> int | None:
        return self.hit_ranks[0] if self.hit_ranks else None


@dataclass(frozen=True)
class EvalReport:
    """Recall@1/5/10, MRR@k and nDCG@k over answerable questions, the misses, refusal rates."""

    k: int
    outcomes: tuple[Outcome, ...]

    @property
    def answerable(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.question.answerable]

    @property
    def unanswerable(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.question.answerable]

    @property
    def cutoffs(self) -> list[int]:
        return [c for c in (1, 5, 10) if c <= self.k] or [self.k]

    def recall(self, at: int) -> float | None:
        """Share of answerable questions with a hit in the top `at` passages."""
        ans = self.answerable
        return _mean([o.first_hit is not None and o.first_hit <= at for o in ans])

    def mrr(self) -> float | None:
        return _mean([1.0 / o.first_hit if o.first_hit and o.first_hit <= self.k else 0.0
                       for o in self.answerable])

    def ndcg(self) -> float | None:
        """Binary gain for every hit in the top k; the ideal puts those hits first.

        The labels do not say how many passages answer, so the ideal ranking is that of the
        hits that were found (as trec_eval does for judged lists).
        """
        def one(o: Outcome) -> float:
            ranks = [r for r in o.hit_ranks if r <= self.k]
            dcg = sum(1.0 / math.log2(r + 1) for r in ranks)
            ideal = sum(1.0 / math.log2(i + 2) for i in range(len(ranks)))
            return dcg / ideal if ideal else 0.0
        return _mean([one(o) for o in self.answerable])

    def curve(self, depth: int = CURVE_DEPTH) -> list[float]:
        """recall@1..depth, for the plot."""
        return [self.recall(i) or 0.0 for i in range(1, depth + 1)]

    def misses(self) -> list[Outcome]:
        """Answerable questions without a hit in the top k."""
        return [o for o in self.answerable if not o.first_hit or o.first_hit > self.k]

    def _asked(self, answerable: bool) -> list[Outcome]:
        """The answerable (or unanswerable) questions the bot was asked to answer."""
        group = self.answerable if answerable else self.unanswerable
        return [o for o in group if o.answered is not None]

    def refusal_rate(self, answerable: bool) -> float | None:
        """Share of questions the bot declined (answered=false); None without answers."""
        return _mean([not o.answered for o in self._asked(answerable)])

    def hedged_rate(self, answerable: bool) -> float | None:
        """Share of questions answered hedged ("not sure the sources answer this"); hedged
        answers count as answered in the refusal rates and accuracy."""
        return _mean([o.hedged for o in self._asked(answerable)])

    def answer_hit_rate(self) -> float | None:
        """Share of answerable questions answered with an answer string in the answer text or
        the first citation (score_refusals.py's rule); None without answers."""
        asked = [o for o in self.answerable if o.answer_hit is not None]
        return _mean([bool(o.answer_hit) for o in asked])

    def accuracy(self) -> float | None:
        """(answerable answered with the answer + unanswerable refused) / all questions, as
        score_refusals.py counts it; None without answers."""
        asked = [o for o in self.outcomes if o.answered is not None]
        if not asked:
            return None
        return _mean([bool(o.answer_hit) if o.question.answerable else not o.answered
                      for o in asked])

    def top1_auroc(self) -> float | None:
        """How well the top-1 score separates answerable from unanswerable (score.py's)."""
        pos = [o.top_score for o in self.answerable if o.top_score is not None]
        neg = [o.top_score for o in self.unanswerable if o.top_score is not None]
        if not pos or not neg:
            return None
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        return wins / (len(pos) * len(neg))

    def to_json(self) -> dict:
        r4 = _round
        out: dict = {"questions": len(self.outcomes), "answerable": len(self.answerable),
                     "k": self.k}
        for c in self.cutoffs:
            out[f"recall@{c}"] = r4(self.recall(c))
        out[f"mrr@{self.k}"] = r4(self.mrr())
        out[f"ndcg@{self.k}"] = r4(self.ndcg())
        out["recall_curve"] = [round(x, 4) for x in self.curve(max(self.k, CURVE_DEPTH))]
        out["refusal_rate_unanswerable"] = r4(self.refusal_rate(False))
        out["false_refusal_rate"] = r4(self.refusal_rate(True))
        out["hedged_rate_unanswerable"] = r4(self.hedged_rate(False))
        out["hedged_rate_answerable"] = r4(self.hedged_rate(True))
        out["answer_hit"] = r4(self.answer_hit_rate())
        out["accuracy"] = r4(self.accuracy())
        out["top1_score_auroc"] = r4(self.top1_auroc())
        out["missed"] = [{"id": o.question.id, "query": o.question.query,
                          "first_hit_rank": o.first_hit, "top_source": o.top_source,
                          "top_snippet": o.top_snippet} for o in self.misses()]
        out["refused"] = [{"id": o.question.id, "query": o.question.query,
                           "answerable": o.question.answerable}
                          for o in self.outcomes if o.answered is False]
        return out


def _mean(values: Sequence[float | bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _snippet(text: str) -> str:
    text = " ".join(text.replace("info-icon", " ").split())
    return text if len(text) <= SNIPPET else text[:SNIPPET - 1].rstrip() + "…"


def holds_answer(question: Question, answer: Answer) -> bool:
    """Whether an answer was given and its text or first citation's quote holds one of the
    question's answers (score_refusals.py's answer hit)."""
    if not answer.answered:
        return False
    texts = [norm(answer.answer)]
    if answer.citations:
        texts.append(norm(min(answer.citations, key=lambda c: c.n).quote))
    return any(a in t for a in (norm(x) for x in question.answers) if a for t in texts)


def evaluate(questions: Sequence[Question], search_many: SearchMany, ask: Ask | None = None,
             *, k: int = 10) -> EvalReport:
    """Search every question (and ask it, when ask is given) and judge the passages.

    Args:
        search_many: the passages for a batch of queries, best first (Library.search_many).
        ask: the bot's answer (Library.ask), for refusal rates; None skips answering.
        k: the deepest rank the metrics count; the search goes to max(k, 20) for the curve.
    """
    if k < 1:
        raise BadQuestionFile(f"k must be at least 1, not {k}")
    depth = max(k, CURVE_DEPTH)
    hits_per = search_many([q.query for q in questions], depth)
    outcomes = []
    for q, hits in zip(questions, hits_per, strict=True):
        ranked = sorted(hits, key=lambda h: h.rank)[:depth]
        top = ranked[0] if ranked else None
        answer = ask(q.query) if ask else None
        outcomes.append(Outcome(
            question=q,
            hit_ranks=tuple(i for i, h in enumerate(ranked, 1)
                            if q.is_hit(h.chunk.text, h.source.path)),
            top_source=(top.source.path or top.source.url or top.source.title) if top else None,
            top_snippet=_snippet(top.chunk.text) if top else "",
            top_score=round(float(top.score), 4) if top else None,  # as search --json
            answered=answer.answered if answer else None,
            answer_hit=holds_answer(q, answer) if answer else None,
            hedged=bool(answer and answer.hedged)))
    return EvalReport(k=k, outcomes=tuple(outcomes))
