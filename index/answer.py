"""From ranked passages to an Answer: the sentences that answer, numbered verbatim citations,
near-duplicate passages grouped as "also in"."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .chunk import split_sentences
from .lexical import tokenize
from .records import Answer, Citation, Hit, Source

NOT_FOUND = "I could not find that in the sources."
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class AnswerSettings:
    """Thresholds and sizes of an answer."""

    min_score: float = 0.35
    max_citations: int = 5
    more_citations: int = 5
    passages: int = 10
    answer_sentences: int = 2
    duplicate_overlap: float = 0.5


@dataclass
class _Sentence:
    hit: Hit
    start: int  # offsets in the source's text
    end: int
    text: str
    score: float = 0.0


def highlight_spans(text: str, keywords: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of the words in text whose stem is one of keywords."""
    keys = set(keywords)
    spans = []
    for m in _WORDS.finditer(text):
        stems = tokenize(m.group())
        if stems and stems[0] in keys:
            spans.append((m.start(), m.end()))
    return spans


def build_answer(question: str, hits: list[Hit], qvec: np.ndarray,
                 encode: Callable[[list[str]], np.ndarray],
                 settings: AnswerSettings = AnswerSettings()) -> Answer:
    """Pick answer sentences from the top passages and cite them."""
    keywords = tuple(dict.fromkeys(tokenize(question)))
    sentences = _candidate_sentences(hits[: settings.passages])
    if not sentences:
        return Answer(question=question, answered=False, answer=NOT_FOUND, keywords=keywords)
    _score(sentences, qvec, encode(["" + s.text for s in sentences]), keywords)
    best = max(s.score for s in sentences)
    if best < settings.min_score:
        return Answer(question=question, answered=False, answer=NOT_FOUND,
                      keywords=keywords, score=best)
    citations = _citations(sentences, settings)
    shown = citations[: settings.max_citations]
    more = citations[settings.max_citations: settings.max_citations + settings.more_citations]
    answer = _answer_text(sentences, settings)
    return Answer(question=question, answered=True, answer=answer, citations=tuple(shown),
                  keywords=keywords, score=best, more=tuple(more))


def _candidate_sentences(hits: list[Hit]) -> list[_Sentence]:
    seen: set[tuple[str, int]] = set()
    out = []
    for hit in hits:
        c = hit.chunk
        for a, b in split_sentences(c.text):
            key = (c.source_id, c.start + a)
            if key in seen or len(_WORDS.findall(c.text[a:b])) < 3:
                continue
            seen.add(key)
            out.append(_Sentence(hit, c.start + a, c.start + b, c.text[a:b]))
    return out


def _score(sentences: list[_Sentence], qvec: np.ndarray, vecs: np.ndarray,
           keywords: tuple[str, ...]) -> None:
    cos = vecs @ qvec.astype(np.float32)
    keys = set(keywords)
    for s, c in zip(sentences, cos, strict=True):
        overlap = len(keys & set(tokenize(s.text))) / len(keys) if keys else 0.0
        s.score = float(0.6 * c + 0.25 * overlap + 0.15 * s.hit.score)


def _answer_text(sentences: list[_Sentence], settings: AnswerSettings) -> str:
    ranked = sorted(sentences, key=lambda s: -s.score)
    picked: list[_Sentence] = [ranked[0]]
    for s in ranked[1:]:
        if len(picked) >= settings.answer_sentences or s.score < ranked[0].score - 0.05:
            break
        if all(_overlap(s.text, p.text) < settings.duplicate_overlap for p in picked):
            picked.append(s)
    return " ".join(p.text for p in picked)


def _citations(sentences: list[_Sentence], settings: AnswerSettings) -> list[Citation]:
    """One citation per passage, best first; near-duplicates from other sources grouped."""
    best_per_chunk: dict[int | None, _Sentence] = {}
    for s in sentences:
        cur = best_per_chunk.get(s.hit.chunk.id)
        if cur is None or s.score > cur.score:
            best_per_chunk[s.hit.chunk.id] = s
    groups: list[tuple[_Sentence, list[Source]]] = []
    for s in sorted(best_per_chunk.values(), key=lambda s: -s.score):
        for lead, also in groups:
            if _overlap(s.text, lead.text) >= settings.duplicate_overlap:
                if s.hit.source.id != lead.hit.source.id and \
                        all(o.id != s.hit.source.id for o in also):
                    also.append(s.hit.source)
                break
        else:
            groups.append((s, []))
    return [Citation(n=i, quote=s.text, source=s.hit.source, start=s.start, end=s.end,
                     score=round(s.score, 4), also_in=tuple(also))
            for i, (s, also) in enumerate(groups, 1)]


def _shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = [w.lower() for w in _WORDS.findall(text.replace("info-icon", " "))]
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _overlap(a: str, b: str) -> float:
    """How much of the shorter text's word trigrams the longer one shares."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / max(1, min(len(sa), len(sb)))
