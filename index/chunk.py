"""Sentence-aware chunks with character offsets, each within the model's sequence length."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from itertools import islice

from .records import Chunk

# Words after which a full stop does not end a sentence.
_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "gen", "col", "lt", "sgt", "capt",
    "gov", "sen", "rep", "rev", "hon", "no", "vs", "etc", "inc", "ltd", "co", "corp", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "e.g", "i.e", "u.s",
    "u.k", "u.n", "d.c", "a.m", "p.m", "fig", "approx", "est", "dept", "univ",
}
# A candidate boundary: terminal punctuation, optional closing quotes/brackets, then space.
# Matched only from the start of a run of punctuation, and possessively, so a long run
# without a space after it is scanned once, not once per character (which was quadratic).
_BOUNDARY = re.compile(r"""(?<![.!?…])[.!?…]++["'”’)\]]*+(?=\s)""")
_PARAGRAPH = re.compile(r"\n\s*\n")
_WORD_BEFORE = re.compile(r"([\w.]+)[.!?…]*[\"'”’)\]]*$")
_NEXT_START = re.compile(r"""\s+["'“‘(\[]*([\w$£€]?)""")
_WORDS = re.compile(r"\w+")
_WORD = re.compile(r"\S+")
_WINDOW = 8  # characters per token counted at once when cutting a long word (a token is >= 1)
_BATCH = 2048  # texts per call of count(), which holds all their encodings at once


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Sentence spans (start, end) of text[start:end], whitespace excluded."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    for p0, p1 in _paragraph_spans(text, start, end):
        cut = p0
        for m in _BOUNDARY.finditer(text, p0, p1):
            if _is_sentence_end(text, m.start(), m.end(), p1):
                spans.append((cut, m.end()))
                cut = m.end()
        spans.append((cut, p1))
    return [s for s in (_strip(text, a, b) for a, b in spans) if s[1] > s[0]]


def answer_units(text: str) -> list[tuple[int, int]]:
    """The spans that can be quoted as an answer: sentences of at least three words.

    A short line standing alone as a paragraph ("Conservative Lawmaker Alan Duncan" above a
    quote) says who speaks, so it is joined to the sentence that follows rather than kept
    alone. One that ends the text (a chunk cut after it) is left out when the text has
    sentences of its own: the next chunk, which overlaps, holds it with its sentence. The
    index embeds exactly these spans, so answering embeds nothing.
    """
    out: list[tuple[int, int]] = []
    label: int | None = None
    end = len(text.rstrip())
    for a, b in split_sentences(text):
        if _is_label(text, a, b, end):
            label = a
            continue
        if label is not None:
            a, label = label, None
        if len(_WORDS.findall(text[a:b])) >= 3:
            out.append((a, b))
    if label is not None and not out:  # a text that is only a short line
        span = _strip(text, label, len(text))
        if len(_WORDS.findall(text[span[0]:span[1]])) >= 3:
            out.append(span)
    return out


def _is_label(text: str, a: int, b: int, end: int) -> bool:
    """A short line standing alone as a paragraph, without closing punctuation (end: where
    the text's last word ends)."""
    line = text[a:b]
    alone = (text[b:b + 2] == "\n\n" or b >= end) and (a == 0 or text[a - 2:a] == "\n\n")
    return alone and len(_WORDS.findall(line)) <= 10 and line[-1:] not in '.!?"\'”’:;,'


def _paragraph_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    out, cut = [], start
    for m in _PARAGRAPH.finditer(text, start, end):
        out.append((cut, m.start()))
        cut = m.end()
    out.append((cut, end))
    return out


def _is_sentence_end(text: str, p: int, q: int, limit: int) -> bool:
    word = _WORD_BEFORE.search(text, max(0, p - 20), q)
    if text[p] == "." and word:
        w = word.group(1).lower().rstrip(".")
        if w in _ABBREV or (len(w) == 1 and w.isalpha()):
            return False
    nxt = _NEXT_START.match(text, q, limit)
    # A lower-case word after the stop means it was not a sentence end ("U.S. officials").
    return not (nxt and nxt.group(1) and nxt.group(1).islower())


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


def _sizes(text: str, spans: Sequence[tuple[int, int]],
           count: Callable[[Sequence[str]], list[int]]) -> list[int]:
    """count() of each span's text, a batch at a time: count holds all its encodings at once,
    which for a 19 MB source was gigabytes."""
    out: list[int] = []
    for i in range(0, len(spans), _BATCH):
        out += count([text[a:b] for a, b in spans[i:i + _BATCH]])
    return out


def _split_long(text: str, span: tuple[int, int], limit: int,
                count: Callable[[Sequence[str]], list[int]]) -> list[tuple[int, int]]:
    """Cut a span that is longer than limit tokens at word boundaries."""
    pieces: list[tuple[int, int]] = []
    known: list[int | None] = []  # a one-word piece's size is its word's; others are recounted
    first = last = used = words_in = 0
    words = _WORD.finditer(text, *span)  # streamed: the span may be a whole 19 MB file
    while batch := [m.span() for m in islice(words, _BATCH)]:
        for (a, b), size in zip(batch, count([text[a:b] for a, b in batch]), strict=True):
            if words_in and used + size > limit:
                pieces.append((first, last))
                known.append(used if words_in == 1 else None)
                words_in = 0
            if not words_in:
                first, used = a, 0
            used += size
            last = b
            words_in += 1
    if words_in:
        pieces.append((first, last))
        known.append(used if words_in == 1 else None)
    recount = iter(_sizes(text, [p for p, k in zip(pieces, known, strict=True) if k is None],
                          count))
    # A single "word" longer than the limit (a URL, a long number) is cut by characters,
    # counting a window of a few times the limit, never the whole rest of the word, so a
    # 2-million-character run costs linear time.
    out: list[tuple[int, int]] = []
    for (a, b), size in zip(pieces, known, strict=True):
        if (size if size is not None else next(recount)) <= limit:
            out.append((a, b))
            continue
        step = _WINDOW * limit
        while a < b:
            end = min(b, a + step)
            size = count([text[a:end]])[0]
            while size > limit and end - a > 1:
                end = a + max(1, (end - a) * limit // (size + 1))
                size = count([text[a:end]])[0]
            out.append((a, end))
            step = (end - a) + (end - a) // 8 + 1  # the next cut likely fits about as much
            a = end
    return out


def chunk_text(text: str, source_id: str, count: Callable[[Sequence[str]], list[int]], *,
               target_tokens: int = 128, max_tokens: int = 254,
               overlap_sentences: int = 1, additive: bool = False) -> list[Chunk]:
    """Pack sentences into chunks of about target_tokens, never more than max_tokens.

    count(texts) returns the token count of each text. Consecutive chunks share up to
    overlap_sentences sentences, so an answer that straddles a boundary is still whole in one.
    Time and memory are linear in the text, whatever it holds.

    additive: the tokenizer splits at whitespace first, so texts joined by whitespace count
    as the sum of their parts, and whole chunks need no second count (half the tokenizer's
    work on short articles). Without it, every chunk of more than one span is counted again.
    """
    target = min(target_tokens, max_tokens)
    spans: list[tuple[int, int]] = []
    sizes: list[int] = []
    sentences = split_sentences(text)
    for span, size in zip(sentences, _sizes(text, sentences, count), strict=True):
        if size <= max_tokens:
            spans.append(span)
            sizes.append(size)
        else:
            parts = _split_long(text, span, max_tokens, count)
            spans += parts
            sizes += _sizes(text, parts, count)
    del sentences
    chunks: list[Chunk] = []
    known: list[int | None] = []  # a chunk's size when it is its spans' sum
    i = 0
    while i < len(spans):
        j, used = i, 0
        while j < len(spans) and (j == i or used + sizes[j] <= target):
            used += sizes[j]
            j += 1
        chunks.append(_make_chunk(text, source_id, spans[i][0], spans[j - 1][1]))
        # One span is the very text counted; spans with whitespace between them (not the
        # pieces of a word cut by characters) add up when the tokenizer is additive.
        apart = additive and all(spans[k][0] > spans[k - 1][1] for k in range(i + 1, j))
        known.append(used if j == i + 1 or apart else None)
        if j >= len(spans):
            break
        # Step back for overlap, but always move forward by at least one sentence.
        back = min(overlap_sentences, j - i - 1)
        while back > 0 and sum(sizes[j - back:j]) > target // 2:
            back -= 1
        i = j - back
    return _fit(text, source_id, chunks, count, max_tokens, known)


def _fit(text: str, source_id: str, chunks: list[Chunk],
         count: Callable[[Sequence[str]], list[int]], max_tokens: int,
         known: Sequence[int | None]) -> list[Chunk]:
    """Check whole chunks, since joining sentences can tokenise differently from the parts;
    known holds the sizes that need no count (None: count it)."""
    out: list[Chunk] = []
    counted = iter(_sizes(text, [(c.start, c.end) for c, k in zip(chunks, known, strict=True)
                                 if k is None], count))
    whole = [k if k is not None else next(counted) for k in known]
    for chunk, size in zip(chunks, whole, strict=True):
        if size <= max_tokens:
            out.append(chunk)
        else:
            out.extend(_make_chunk(text, source_id, a, b)
                       for a, b in _split_long(text, (chunk.start, chunk.end), max_tokens, count))
    return out


def _make_chunk(text: str, source_id: str, start: int, end: int) -> Chunk:
    body = text[start:end]
    return Chunk(source_id=source_id, text=body, start=start, end=end,
                 hash=hashlib.sha1(body.encode("utf-8")).hexdigest())
