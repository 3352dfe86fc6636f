"""From ranked passages to an Answer: the sentences that answer, numbered verbatim citations,
near-duplicate passages grouped as "also in".

Which sentences answer, and whether any does, is decided by the learned scorers of
answer_model (fitted on SQuAD training questions by training/train_answer_model.py).
About 390 lines: the answer's four steps (extract, highlight, group, cite) share the scored
sentence record and are read in order here; the scorers themselves live in answer_model.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .answer_model import (
    SENTENCE_FEATURES,
    AnswerModel,
    Terms,
    load_model,
    question_terms,
    sentence_features,
    sigmoid,
    text_stems,
)
from .lexical import Lexical, tokenize
from .records import Answer, Citation, Hit, Source
from .settings import setting
from .store import ChunkSentences

NOT_FOUND = "I could not find that in the sources."
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class AnswerSettings:
    """Thresholds and sizes of an answer.

    Args:
        min_score: answer only when the learned answerability reaches this probability; the
            training script calibrates the model so that 0.5 keeps false refusals rare.
        min_cosine: refuse when no sentence comes this close to the question (off the topic).
        answer_gap: a second answer sentence joins the first when its score (a logit) is
            within this of the first's.
        contradiction_penalty: taken off the score of a sentence that negates or swaps the
            question's words (answer_model.contradicts), so it is neither answer nor citation
            unless nothing else comes close.
        max_unknown: refuse when the question's words that no indexed passage holds carry
            this share of its weight or more (unknown_share)...
        said_alike: ...unless a word of the best sentences says them in other words: its
            contextual vector within this cosine of the question word's (said_otherwise).
            Above 1 turns it off.
        hedge: a question whose answerability is under min_score but not under the
            model's hedge_below (where 1% of answerable training questions fall) gets its
            best answer marked as hedged ("not sure the sources answer this") instead of a
            refusal: a false refusal costs a user more than a hedged answer. The other
            refusals (off the topic, unknown words, a number no passage has) stay refusals.
    """

    min_score: float = setting(0.5, min=-1, max=1)
    min_cosine: float = setting(0.25, min=-1, max=1)
    max_citations: int = setting(5, min=1, max=100)
    more_citations: int = setting(5, max=100)
    passages: int = setting(10, min=1, max=1000)
    answer_sentences: int = setting(2, min=1, max=100)
    answer_gap: float = setting(1.0, max=100)
    contradiction_penalty: float = setting(2.0, max=100)
    duplicate_overlap: float = setting(0.5, max=1)
    duplicate_similarity: float = setting(0.85, max=1)
    quote_similarity: float = setting(0.5, max=1)
    max_unknown: float = setting(0.55, max=100)
    said_alike: float = setting(0.7, max=100)
    number_passages: int = setting(10, max=1000)
    hedge: bool = True


@dataclass
class _Sentence:
    hit: Hit
    start: int  # offsets in the source's text
    end: int
    text: str
    context: str = ""  # the sentence with its neighbours in the passage
    first: bool = False  # the passage's first sentence
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
                 lexical: Lexical | None = None, model: AnswerModel | None = None,
                 words: WordVectors | None = None) -> Answer:
    """Pick answer sentences from the top passages and cite them, or say nothing answers.

    Args:
        stored: the index's sentences of the hits' chunks, by chunk id (stored when the index
            was built); a chunk missing from it has no sentence to quote.
        lexical: the index's BM25 model: its word counts weigh the question's words and tell
            which ones the sources never use; without it every word weighs the same.
        model: the learned scorers (the committed answer_model.json when None).
        words: texts to their words' contextual vectors (Embedder.word_vectors), to tell an
            unknown word the best sentences say in other words; without it none is.
    """
    model = model or load_model()
    terms = question_terms(question, lexical)
    keywords = terms.stems
    read = read_sentences(question, hits[: settings.passages], qvec, stored, lexical,
                          settings, model, terms)
    if read is None:
        return Answer(question=question, answered=False, answer=NOT_FOUND, keywords=keywords)
    sentences, vecs, p = read.sentences, read.vectors, read.answerable
    hedge_below = model.hedge_below if model is not None and settings.hedge else \
        settings.min_score
    hedged = hedge_below <= p < settings.min_score
    refuse = (p < settings.min_score and not hedged) or read.cosine < settings.min_cosine or \
        read.missing
    unknown = read.unknown
    # Words in other words are looked for (a model call) only when they alone would refuse.
    if not refuse and unknown >= settings.max_unknown and words is not None and \
            lexical is not None and settings.said_alike <= 1:
        said = said_otherwise(question, terms, sentences, words, settings.said_alike)
        unknown = unknown_share(terms.stems, lexical, said)
    if refuse or unknown >= settings.max_unknown:
        return Answer(question=question, answered=False, answer=NOT_FOUND,
                      keywords=keywords, score=p)
    cite_within = model.cite_within if model is not None else 0.1
    shown, more = _citations(sentences, vecs, settings, cite_within)
    answer = _answer_text(sentences, settings, terms)
    return Answer(question=question, answered=True, answer=answer, citations=tuple(shown),
                  keywords=keywords, score=p, more=tuple(more), hedged=hedged)


@dataclass(frozen=True)
class Reading:
    """The candidate sentences of an answer, scored, and how answerable the question looks."""

    sentences: list[_Sentence]
    vectors: np.ndarray
    features: np.ndarray  # one row of SENTENCE_FEATURES per sentence
    question: np.ndarray  # the ANSWERABLE_FEATURES row
    answerable: float  # the answerable head's probability (1.0 without a model)
    cosine: float  # the best sentence cosine: nothing close at all is off the topic
    unknown: float  # unknown_share of the question's words
    missing: bool  # a number of the question that none of the best passages holds


def read_sentences(question: str, hits: list[Hit], qvec: np.ndarray,
                   stored: Mapping[int, ChunkSentences], lexical: Lexical | None,
                   settings: AnswerSettings, model: AnswerModel | None,
                   terms: Terms | None = None) -> Reading | None:
    """Score every quotable sentence of the hits and the question's answerability (None when
    the hits hold no sentence)."""
    terms = terms or question_terms(question, lexical)
    sentences, vecs = _candidate_sentences(hits, stored)
    if not sentences:
        return None
    cos = vecs @ qvec.astype(np.float32)
    covs = [terms.coverage(text_stems(s.text)) for s in sentences]
    cos_top, cov_top = float(cos.max()), max(covs)
    feats = np.array([sentence_features(terms, s.text, float(c), cos_top, s.context,
                                        s.hit.chunk.text, _logit(s.hit.score), s.hit.rank,
                                        s.first, cov_top)
                      for s, c in zip(sentences, cos, strict=True)], dtype=np.float64)
    if model is not None:
        logits = model.sentence.logits(feats)
    else:
        logits = cos.astype(np.float64)
    col_contradicts = SENTENCE_FEATURES.index("contradicts")
    for s, score, f in zip(sentences, logits, feats, strict=True):
        s.score = float(score)
        if settings.contradiction_penalty and f[col_contradicts]:
            s.score -= settings.contradiction_penalty
    unknown = unknown_share(terms.stems, lexical) if lexical is not None else 0.0
    # Only passages about the rest of the question count: a note on owls in 2022 does not
    # say what Hunt said of Darroch in 2022.
    passages = [h.chunk.text for h in hits[: settings.number_passages]
                if _about(terms, h.chunk.text)]
    # ...or the sentence that reads best, whatever its passage: "who was US president in
    # 1856 according to McDonald?" is answered by his quotation, "... was 1856 when the
    # incumbent ...", in a passage that names neither a president nor McDonald.
    passages.append(sentences[int(np.argmax(logits))].text)
    missing = bool(missing_numbers(question, passages)) if settings.number_passages else False
    qrow = answerable_features(len(terms.stems), [_logit(h.score) for h in hits[:2]], feats,
                               logits, unknown, missing)
    p = float(sigmoid(model.answerable.logits(qrow))[0]) if model is not None else 1.0
    return Reading(sentences, vecs, feats, qrow, p, cos_top, unknown, missing)


def answerable_features(words: int, passage_logits: Sequence[float], feats: np.ndarray,
                        logits: np.ndarray, unknown: float, missing: bool) -> np.ndarray:
    """The ANSWERABLE_FEATURES row: how well the best sentences fit the question.

    Args:
        words: how many distinct stems the question has.
        passage_logits: the passage scorer's logits of the best two passages.
        feats, logits: the sentences' features and the sentence scorer's logits.
    """
    col = {n: i for i, n in enumerate(SENTENCE_FEATURES)}
    order = np.argsort(-logits, kind="stable")
    top = feats[order[0]]
    second = float(logits[order[1]]) if len(order) > 1 else float(logits[order[0]]) - 5.0
    margin = passage_logits[0] - passage_logits[1] if len(passage_logits) > 1 else 5.0
    return np.array([float(logits[order[0]]), float(logits[order[0]]) - second,
                     passage_logits[0] if len(passage_logits) else 0.0, margin,
                     float(feats[:, col["cosine"]].max()), top[col["coverage"]],
                     top[col["rare_missing"]], top[col["context_coverage"]],
                     top[col["kind_match"]], top[col["kind_asked"]], unknown, float(missing),
                     float(np.log1p(words)), top[col["negation_mismatch"]],
                     top[col["passage_coverage"]], top[col["names_missing"]], top[col["bigrams"]],
                     top[col["context_rare_missing"]], top[col["question_negated"]],
                     float(feats[order[:3], col["context_coverage"]].max()),
                     top[col["contradicts"]],
                     # a negated question whose best sentence has no negation ("what did he
                     # not ..."); one the sentence shares ("never let") is a plain question
                     top[col["question_negated"]] * top[col["negation_mismatch"]]],
                    dtype=np.float64)


def _about(terms: Terms, text: str) -> bool:
    """Whether a passage holds at least half the weight of the question's words that are not
    numbers."""
    words = [(s, w) for s, w in zip(terms.stems, terms.idf, strict=True) if not s[0].isdigit()]
    total = sum(w for _, w in words)
    stems = text_stems(text)
    return total <= 0 or sum(w for s, w in words if s in stems) >= 0.5 * total


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


# Words a question is framed with rather than about: adverbs, particles and placeholders
# ("what kind of documents got leaked", "did trump even know him", "acc to mcdonald"). A few
# articles may never use them, which says nothing about whether they answer the question, so
# unknown_share never counts them as unknown.
_FRAME_WORDS = """
according again already always ever even still yet once before anything something everything
anyone someone everyone anybody somebody everybody else far whole kind sort type thing things
stuff happen happened happens happening actually really exactly basically get gets got getting
lot lots maybe perhaps probably ago though although either each every another other back up
down out off over away around
""".split()


@functools.lru_cache(maxsize=1)
def _frame_stems() -> frozenset[str]:
    return frozenset(s for w in _FRAME_WORDS for s in tokenize(w))


def unknown_share(stems: Sequence[str], lexical: Lexical,
                  said: frozenset[str] = frozenset()) -> float:
    """The share of a question's weight (IDF) in words that no indexed passage contains
    (leaving out said: words the best sentences say in other words).

    "When was Darroch born?" is about the articles, and close to many of their sentences,
    but nothing in them says "born": that is what tells an unanswerable question from an
    answerable one, which the sources nearly always answer in some of its own words.
    """
    if not stems:
        return 1.0
    df = lexical.doc_freqs(list(stems))
    idf = np.log((lexical.n_docs + 1) / (df + 0.5))
    frames = _frame_stems()
    frame = np.array([s in frames for s in stems])
    # A frame word no passage uses is left out altogether: neither unknown nor, with the
    # weight of the rarest word, diluting the words that are ("what did macron say about the
    # whole thing"). One the passages use weighs as usual.
    idf = np.where(frame & (df == 0), 0.0, idf)
    unknown = (df == 0) & ~frame & np.array([s not in said for s in stems])
    return float(idf[unknown].sum() / idf.sum()) if idf.sum() > 0 else 1.0


# Texts to each one's words and their contextual vectors (Embedder.word_vectors).
WordVectors = Callable[[list[str]], list[tuple[list[str], np.ndarray]]]


def said_otherwise(question: str, terms: Terms, sentences: Sequence[_Sentence],
                   words: WordVectors, alike: float, best: int = 3) -> frozenset[str]:
    """The question's stems that a word of its best sentences says in other words: the two
    words' vectors in context (the model's last layer) within cosine alike.

    "which tory mp said boris threw darroch under the bus?" uses "threw", which no article
    does; "... had thrown Darroch under the bus" says it ("threw" and "thrown" 0.77). "When
    was Darroch born?" has no such word ("born" and the closest, "speculation", 0.15).
    """
    top = [s.text for s in sorted(sentences, key=lambda s: -s.score)[:best]]
    return frozenset(stem for stem, cos in closest_words(question, terms, top, words)
                     if cos >= alike)


def closest_words(question: str, terms: Terms, texts: Sequence[str], words: WordVectors
                  ) -> list[tuple[str, float]]:
    """Each word of the question that is one of its terms, as its stem, with its best cosine
    in context to a word of texts (-1 when texts have no word)."""
    (qwords, qvecs), *rest = words([question, *texts])
    keys = set(terms.stems)
    out = []
    for w, v in zip(qwords, qvecs, strict=True):
        stem = tokenize(w)
        if stem and stem[0] in keys:
            out.append((stem[0], max((float((sv @ v).max()) for _, sv in rest if len(sv)),
                                     default=-1.0)))
    return out


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


def _candidate_sentences(hits: list[Hit], stored: Mapping[int, ChunkSentences]
                         ) -> tuple[list[_Sentence], np.ndarray]:
    """The quotable sentences of the hits, each once, with their vectors."""
    seen: set[tuple[str, int]] = set()
    out: list[_Sentence] = []
    rows: list[np.ndarray] = []
    for hit in hits:
        c = hit.chunk
        got = stored.get(c.id) if c.id is not None else None
        if got is None:
            continue
        # Slices of the chunk, which is itself a slice of the source: verbatim by construction.
        texts = [c.text[a - c.start:b - c.start] for a, b in got.spans]
        for j, ((a, b), vec) in enumerate(zip(got.spans, got.vectors, strict=True)):
            key = (c.source_id, a)
            if key in seen:
                continue
            seen.add(key)
            out.append(_Sentence(hit, a, b, texts[j], context=" ".join(texts[max(0, j - 1):j + 2]),
                                 first=j == 0))
            rows.append(vec)
    if not rows:
        return out, np.zeros((0, 1), dtype=np.float32)
    return out, np.stack(rows).astype(np.float32, copy=False)


def _answer_text(sentences: list[_Sentence], settings: AnswerSettings,
                 terms: Terms | None = None) -> str:
    ranked = sorted(sentences, key=lambda s: -s.score)
    picked: list[_Sentence] = [ranked[0]]
    said = _continuation(ranked[0], sentences)
    if said is not None and settings.answer_sentences > 1:
        picked.append(said)
    for s in ranked[1:]:
        if len(picked) >= settings.answer_sentences or \
                s.score < ranked[0].score - settings.answer_gap:
            break
        if s is not said and \
                all(_overlap(s.text, p.text) < settings.duplicate_overlap for p in picked):
            picked.append(s)
    text = " ".join(p.text for p in picked)
    # "who said ...?" answered by words quoted under a heading that names the speaker: the
    # answer starts with the heading, the one place that says who.
    speaker = _speaker(ranked[0]) if terms is not None and terms.kind == "who" else None
    return f"{speaker} {text}" if speaker else text


# A line that only names someone: "British Trade Minister Liam Fox", "UK PM Theresa May",
# "Head of UK's Diplomatic Service Simon McDonald" (capitalised words and a few small ones,
# no sentence mark).
_SMALL = r"(?:of|the|and|for|to|at|in|on|de|von|van)"
_NAME_LINE = re.compile(rf"^(?:[A-Z][\w'’.-]*\s+|{_SMALL}\s+)+[A-Z][\w'’-]*$")
_OPENS_QUOTE = re.compile(r"^\s*[\"“‘]")
_SAYS = re.compile(r"\b(?:said|says|told|tells|wrote|writes|added|adds|tweeted|stated)\b")


def _speaker(best: _Sentence) -> str | None:
    """The line naming who speaks in best, when best is a quotation with no name of its own,
    set under a heading that names the speaker (a list of reactions: "British Trade Minister
    Liam Fox", then a paragraph or two of his words); None otherwise. Only the best
    sentence's passage is read: a heading in the passage before is not seen."""
    if _SAYS.search(best.text):
        return None
    chunk = best.hit.chunk
    before = chunk.text[: max(0, best.start - chunk.start)]
    paragraphs = before.split("\n")
    opening = paragraphs[-1] if paragraphs[-1].strip() else best.text
    if not _OPENS_QUOTE.match(opening):
        return None
    for line in reversed(paragraphs[:-1]):
        line = line.strip()
        if not line or _OPENS_QUOTE.match(line):  # blank, or the same speaker's words before
            continue
        return line if len(line.split()) <= 10 and _NAME_LINE.match(line) else None
    return None


# A sentence that goes on with the same speaker's words: 'he added: "..."', 'Employing
# colourful language, she said ...', "He went on".
_GOES_ON = re.compile(r"^(?:[^.!?\"“]{0,60},\s+)?(?:he|she)\s+(?:added|continued|went on|also said|"
                      r"said|wrote|told)\b", re.I)
_REPORTS = re.compile(r"[\"“”]|\b(?:said|says|told|wrote|added|tweeted|stated)\b")


def _continuation(best: _Sentence, sentences: Sequence[_Sentence]) -> _Sentence | None:
    """The sentence right after best in its source when best reports what someone said and
    that one carries on with the same speaker's words ("Johnson said whoever was behind the
    leak 'has done a grave disservice'. Employing colourful language, he added: 'I hope
    that whoever it is, is run down, caught and eviscerated.'"): the answer is both."""
    if not _REPORTS.search(best.text):
        return None
    source = best.hit.chunk.source_id
    after = [s for s in sentences if s.hit.chunk.source_id == source and s.start >= best.end]
    nxt = min(after, key=lambda s: s.start, default=None)
    if nxt is None or nxt.start - best.end > 3:
        return None
    # ...or best opens a quotation that the next sentence of the paragraph goes on with:
    # '"I was with Sir Kim last night in Washington. In a very difficult period, he was
    # showing his customary professionalism."'
    return nxt if _GOES_ON.search(nxt.text) or _open_quote(best.text) else None


def _open_quote(text: str) -> bool:
    """Whether text opens a quotation it does not close."""
    return text.count('"') % 2 == 1 or text.count("“") > text.count("”")


def _citations(sentences: list[_Sentence], vecs: np.ndarray, settings: AnswerSettings,
               cite_within: float) -> tuple[list[Citation], list[Citation]]:
    """The citations shown, and those behind "more": sentences that state the answer,
    distinct and diverse, best first; near-duplicates in other sources grouped.

    Only sentences scored within cite_within of the best are shown (the rest go behind
    "more"): a sentence that mentions the question's words without saying the answer scores
    low, so fewer, right citations beat five with two wrong.
    """
    sims = vecs @ vecs.T
    order = _diverse(sentences, sims)
    floor = max(s.score for s in sentences) - cite_within
    # Only the first groups are ever shown; later sentences still join them as "also in".
    groups: list[tuple[int, list[Source]]] = []
    shown = 0
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
            supports = s.score >= floor
            room = shown < settings.max_citations if supports else \
                len(groups) - shown < settings.more_citations
            if room and per_chunk.get(s.hit.chunk.id, 0) < 2:
                per_chunk[s.hit.chunk.id] = per_chunk.get(s.hit.chunk.id, 0) + 1
                groups.append((i, []))
                shown += supports
    # Supporting sentences are shown; the others only behind "more".
    groups.sort(key=lambda g: sentences[g[0]].score < floor)
    cited = [Citation(n=n, quote=s.text, source=s.hit.source, start=s.start, end=s.end,
                      score=round(s.score, 4), also_in=tuple(also))
             for n, (s, also) in enumerate(((sentences[j], a) for j, a in groups), 1)]
    return cited[:shown], cited[shown:]


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
    words = [w.lower() for w in _WORDS.findall(text)]
    if len(words) < n:
        return frozenset({tuple(words)})
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _overlap(a: str, b: str) -> float:
    """Shared word trigrams over the longer text's: a quote inside a longer, different
    sentence is not the same passage."""
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / max(1, len(sa), len(sb))
