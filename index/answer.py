"""From ranked passages to an Answer: the sentences that answer, numbered verbatim citations,
near-duplicate passages grouped as "also in"."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .chunk import answer_units
from .lexical import Lexical, tokenize
from .records import Answer, Citation, Hit, Source
from .settings import setting
from .store import ChunkSentences

NOT_FOUND = "I could not find that in the sources."
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class AnswerSettings:
    """Thresholds and sizes of an answer."""

    min_score: float = setting(0.5, min=-1, max=1)
    max_citations: int = setting(5, min=1, max=100)
    more_citations: int = setting(5, max=100)
    passages: int = setting(20, min=1, max=1000)
    answer_sentences: int = setting(2, min=1, max=100)
    duplicate_overlap: float = setting(0.5, max=1)
    duplicate_similarity: float = setting(0.85, max=1)
    quote_similarity: float = setting(0.5, max=1)
    max_unknown: float = 0.55
    number_passages: int = setting(10, max=1000)


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
                 stored: Mapping[int, ChunkSentences],
                 settings: AnswerSettings = AnswerSettings(),
                 encode: Callable[[list[str]], np.ndarray] | None = None,
                 lexical: Lexical | None = None) -> Answer:
    """Pick answer sentences from the top passages and cite them, or say nothing answers.

    Args:
        stored: the index's sentences of the hits' chunks, by chunk id; a chunk missing from
            it has its sentences embedded with encode (or is skipped without one).
        lexical: the index's BM25 model, whose word counts tell which question words the
            sources never use; without it that test is skipped.
    """
    keywords = tuple(dict.fromkeys(tokenize(question)))
    sentences, vecs = _candidate_sentences(hits[: settings.passages], stored, encode)
    if not sentences:
        return Answer(question=question, answered=False, answer=NOT_FOUND, keywords=keywords)
    wants = _answer_type(question)
    _score(sentences, qvec, vecs, keywords, wants)
    best = max(s.score for s in sentences)
    unknown = unknown_share(keywords, lexical) if lexical is not None else 0.0
    best_passages = [h.chunk.text for h in hits[: settings.number_passages]]
    missing = missing_numbers(question, best_passages) if settings.number_passages > 0 else []
    if best < settings.min_score or unknown >= settings.max_unknown or missing:
        return Answer(question=question, answered=False, answer=NOT_FOUND,
                      keywords=keywords, score=best)
    citations = _citations(sentences, vecs, settings, people=wants == "who")
    shown = citations[: settings.max_citations]
    more = citations[settings.max_citations: settings.max_citations + settings.more_citations]
    answer = _answer_text(sentences, settings)
    return Answer(question=question, answered=True, answer=answer, citations=tuple(shown),
                  keywords=keywords, score=best, more=tuple(more))


def unknown_share(stems: Sequence[str], lexical: Lexical) -> float:
    """The share of a question's weight (IDF) in words that no indexed passage contains.

    "When was Darroch born?" is about the articles, and close to many of their sentences,
    but nothing in them says "born": that is what tells an unanswerable question from an
    answerable one, which the sources nearly always answer in some of its own words.
    """
    if not stems:
        return 1.0
    df = lexical.doc_freqs(list(stems))
    idf = np.log((lexical.n_docs + 1) / (df + 0.5))
    return float(idf[df == 0].sum() / idf.sum()) if idf.sum() > 0 else 0.0


_NUMBER_TOKEN = re.compile(r"(?<![\w.,])\d[\d,.]*\d(?![\w]|[.,]\d)")


def missing_numbers(question: str, passages: Sequence[str]) -> list[str]:
    """The numbers of two or more digits in a question (a year, an amount) that none of the
    passages holds.

    "Who was Warsaw's mayor in 2022?" finds passages about Warsaw's mayors that are close to
    it in every other way; that none of them says 2022 is what shows they do not answer it.
    Single digits are left out: text often spells them ("three branches").
    """
    def numbers(text: str) -> set[str]:
        return {m.group().replace(",", "") for m in _NUMBER_TOKEN.finditer(text)}

    asked = numbers(question)
    if not asked:
        return []
    found = set().union(*(numbers(p) for p in passages))
    return sorted(asked - found)


def _candidate_sentences(hits: list[Hit], stored: Mapping[int, ChunkSentences],
                         encode: Callable[[list[str]], np.ndarray] | None
                         ) -> tuple[list[_Sentence], np.ndarray]:
    """The quotable sentences of the hits, each once, with their vectors."""
    seen: set[tuple[str, int]] = set()
    out: list[_Sentence] = []
    rows: list[np.ndarray] = []
    for hit in hits:
        c = hit.chunk
        got = stored.get(c.id) if c.id is not None else None
        if got is None:
            if encode is None:
                continue
            spans = tuple((c.start + a, c.start + b) for a, b in answer_units(c.text))
            got = ChunkSentences(spans, encode([c.text[a - c.start:b - c.start]
                                                for a, b in spans]))
        for (a, b), vec in zip(got.spans, got.vectors, strict=True):
            key = (c.source_id, a)
            if key in seen:
                continue
            seen.add(key)
            # A slice of the chunk, which is itself a slice of the source: verbatim by
            # construction.
            out.append(_Sentence(hit, a, b, c.text[a - c.start:b - c.start]))
            rows.append(vec)
    if not rows:
        return out, np.zeros((0, 1), dtype=np.float32)
    return out, np.stack(rows).astype(np.float32, copy=False)


def _score(sentences: list[_Sentence], qvec: np.ndarray, vecs: np.ndarray,
           keywords: tuple[str, ...], wants: str | None) -> None:
    cos = vecs @ qvec.astype(np.float32)
    keys = set(keywords)
    for s, c in zip(sentences, cos, strict=True):
        overlap = len(keys & set(tokenize(s.text))) / len(keys) if keys else 0.0
        s.score = float(0.6 * c + 0.25 * overlap + 0.15 * s.hit.score)
        if wants:
            s.score += _type_bonus(s.text, wants, keys)


_TYPES = [
    ("who", re.compile(r"^\s*(who|whom|whose)\b|\bwhich (people|person|politicians?|"
                       r"officials?|leaders?)\b", re.I)),
    ("number", re.compile(r"^\s*how (old|many|much|long|far|big|large)\b", re.I)),
    ("time", re.compile(r"^\s*(when|what (year|date|day|time))\b", re.I)),
]
_NUMBER = re.compile(r"\b\d[\d,.]*\b|\b(one|two|three|four|five|six|seven|eight|nine|ten|"
                     r"dozen|hundred|thousand|million|billion)\b", re.I)
_TIME = re.compile(r"\b(1[6-9]\d\d|20\d\d|monday|tuesday|wednesday|thursday|friday|"
                   r"saturday|sunday|january|february|march|april|may|june|july|august|"
                   r"september|october|november|december|yesterday|today|tomorrow|week|month|"
                   r"year|century|decade)s?\b", re.I)
_CAPITAL = re.compile(r"\b[A-Z][a-z]+\b")
_AFTER_PLACE = re.compile(r"\b(in|on|at|into|across|near|from)\s+$")
# Capitalised words that are seldom people: calendar words, places, institutions, sentence
# openers. A cheap stand-in for named-entity recognition that needs no second model.
_NOT_NAMES = frozenset(tokenize(
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April "
    "June July August September October November December Britain British America American "
    "United States Kingdom House White Office Foreign Party Commons Parliament Government "
    "Embassy Twitter Washington London Europe European Union Minister Prime President "
    "Secretary Ambassador Sir Mr Mrs Ms Dr Following Amid During After Before Since While "
    "Although However Perhaps Meanwhile Responding Addressing Praising Employing Covering "
    "Questions Extracts Memos Trade Labour Conservative Opposition Head Senior Former Ex "
    "Department State Street News Times Daily Sunday Mail"))


def _answer_type(question: str) -> str | None:
    return next((name for name, rx in _TYPES if rx.search(question)), None)


def _type_bonus(text: str, wants: str, question_keys: set[str]) -> float:
    """Reward a sentence that holds the kind of thing asked for: a name, a number, a date."""
    if wants != "who":
        return 0.05 if (_NUMBER if wants == "number" else _TIME).search(text) else 0.0
    names = _names(text)
    bonus = 0.05 if set(names) - question_keys else -0.05
    # "Darroch said ..." tells what Darroch did, not who acted on him.
    return bonus - (0.03 if names and names[0] in question_keys else 0.0)


def _names(text: str) -> list[str]:
    """Stems of the words of a sentence that may name people, in order: the last word of each
    run of capitalised words ("Kim Darroch" is darroch, "Theresa May" is may).

    A word right after "in", "on", "at"... is a place more often than a person ("a strike on
    Iran", "in Washington"), unless it owns something ("in May's government").
    """
    return list(_name_stems(text))


@functools.lru_cache(maxsize=4096)
def _name_stems(text: str) -> tuple[str, ...]:
    # Cached: a "who" question reads each sentence's names to score it and again to order it.
    out: list[str] = []
    run_end = -1
    for m in _CAPITAL.finditer(text):
        stems = tokenize(m.group())
        if not stems or stems[0] in _NOT_NAMES:
            continue
        if _AFTER_PLACE.search(text, 0, m.start()) and not text.startswith("'s", m.end()):
            continue
        if out and text[run_end:m.start()] == " ":
            out[-1] = stems[0]  # the same name, continued
        else:
            out.append(stems[0])
        run_end = m.end()
    return tuple(out)


def _answer_text(sentences: list[_Sentence], settings: AnswerSettings) -> str:
    ranked = sorted(sentences, key=lambda s: -s.score)
    picked: list[_Sentence] = [ranked[0]]
    for s in ranked[1:]:
        if len(picked) >= settings.answer_sentences or s.score < ranked[0].score - 0.05:
            break
        if all(_overlap(s.text, p.text) < settings.duplicate_overlap for p in picked):
            picked.append(s)
    return " ".join(p.text for p in picked)


def _citations(sentences: list[_Sentence], vecs: np.ndarray, settings: AnswerSettings,
               people: bool = False) -> list[Citation]:
    """Distinct, diverse sentences, best first; near-duplicates in other sources grouped.

    For a "who" question, close runners-up that name someone not yet cited come first
    (_people_first): MMR would push away the other people who did the same thing, since
    their sentences are alike.
    """
    sims = vecs @ vecs.T
    order = _people_first(sentences) if people else _diverse(sentences, sims)
    # Only the first groups are ever shown; later sentences still join them as "also in".
    limit = settings.max_citations + settings.more_citations
    groups: list[tuple[int, list[Source]]] = []
    per_chunk: dict[int | None, int] = {}
    for i in order:
        s = sentences[i]
        for j, also in groups:
            lead = sentences[j]
            if _same_report(s.text, lead.text, float(sims[i, j]), settings):
                if s.hit.source.id != lead.hit.source.id and \
                        all(o.id != s.hit.source.id for o in also):
                    also.append(s.hit.source)
                break
        else:
            if len(groups) < limit and per_chunk.get(s.hit.chunk.id, 0) < 2:
                per_chunk[s.hit.chunk.id] = per_chunk.get(s.hit.chunk.id, 0) + 1
                groups.append((i, []))
    return [Citation(n=n, quote=s.text, source=s.hit.source, start=s.start, end=s.end,
                     score=round(s.score, 4), also_in=tuple(also))
            for n, (s, also) in enumerate(((sentences[j], a) for j, a in groups), 1)]


# For "who": a sentence naming someone new moves up only if it scores within this much of the
# best; a name in at least this share of the candidates is the story's subject, not an answer.
_PEOPLE_GAP = 0.25
_TOPIC_SHARE = 0.2


def _people_first(sentences: list[_Sentence]) -> list[int]:
    """The best sentence, then close runners-up that name someone not named yet, then the rest
    by score.

    "Who defended Darroch?" is answered by several people; citing each once beats citing
    one of them thrice. Names the candidates share widely ("Darroch", "Trump" in a story
    about both) are who the story is about, so they do not make a sentence new.
    """
    order = sorted(range(len(sentences)), key=lambda i: -sentences[i].score)
    names = [set(_names(s.text)) for s in sentences]
    counts = Counter(n for found in names for n in found)
    common = {n for n, c in counts.items() if c >= max(3, _TOPIC_SHARE * len(sentences))}
    lead, floor = order[0], sentences[order[0]].score - _PEOPLE_GAP
    named = names[lead] | common
    fresh, rest = [], []
    for i in order[1:]:
        if sentences[i].score >= floor and names[i] - named:
            fresh.append(i)
            named |= names[i]
        else:
            rest.append(i)
    return [lead, *fresh, *rest]


def _same_report(a: str, b: str, similarity: float, settings: AnswerSettings) -> bool:
    """Whether two sentences report the same thing: mostly the same words, or the same
    quotation with similar content, or very similar content.

    Wire copies reword the frame around a quote ("Hunt tweeted that he was "deeply
    saddened"", "Hunt said he was "deeply saddened" by Darroch's decision"), so shared words
    alone miss them; the quotation they share and their embeddings do not.
    """
    if _overlap(a, b) >= settings.duplicate_overlap or \
            similarity >= settings.duplicate_similarity:
        return True
    return similarity >= settings.quote_similarity and bool(_quoted(a) & _quoted(b))


_QUOTED = re.compile(r'["“”]([^"“”]{4,}?)["“”]')


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> frozenset[tuple[str, ...]]:
    """Word trigrams inside quotation marks (a two-word quote counts whole), leaving out
    those of stop words alone ("it is a"), which any two quotes may share."""
    out: set[tuple[str, ...]] = set()
    for m in _QUOTED.finditer(text):
        words = [w.lower() for w in _WORDS.findall(m.group(1))]
        if len(words) >= 2:
            out |= {sh for sh in _shingles(" ".join(words)) if tokenize(" ".join(sh))}
    return frozenset(out)


def _diverse(sentences: list[_Sentence], sims: np.ndarray, penalty: float = 0.3) -> list[int]:
    """Maximal marginal relevance: each next sentence is relevant but unlike those before.

    sims: the sentences' pairwise cosines. Each sentence's likeness to the chosen ones is
    kept as a running maximum, so a pick costs one pass, not one pass per chosen sentence.
    """
    left = list(range(len(sentences)))
    chosen: list[int] = []
    nearest = np.full(len(sentences), -np.inf, dtype=sims.dtype)
    while left:
        def gain(i: int) -> float:
            like = nearest[i] if chosen else 0.0
            return sentences[i].score - penalty * max(0.0, like - 0.5)

        best = max(left, key=gain)
        chosen.append(best)
        left.remove(best)
        np.maximum(nearest, sims[best], out=nearest)
    return chosen


@functools.lru_cache(maxsize=4096)
def _shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    # Cached: grouping compares every new sentence with every group's lead.
    words = [w.lower() for w in _WORDS.findall(text.replace("info-icon", " "))]
    if len(words) < n:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _overlap(a: str, b: str) -> float:
    """Shared word trigrams over the longer text's: a quote inside a longer, different
    sentence is not the same passage."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / max(1, len(sa), len(sb))
