"""Sentence splitting and chunking: offsets are exact, no chunk exceeds the model's limit."""

from __future__ import annotations

from index.chunk import chunk_text, split_sentences
from index.ingest import load_path

from .conftest import SEEDS


def test_sentences_respect_abbreviations_and_quotes():
    text = ('The U.S. envoy met Mr. Smith at 5 p.m. on Monday. "It is over," he said. '
            "Then he left!\n\nA new paragraph")
    got = [text[a:b] for a, b in split_sentences(text)]
    assert got == ["The U.S. envoy met Mr. Smith at 5 p.m. on Monday.",
                   '"It is over," he said.', "Then he left!", "A new paragraph"]


def test_every_seed_chunks_within_the_limit_with_exact_offsets(embedder):
    limit = embedder.max_tokens - 2
    for path in sorted(SEEDS.glob("*.txt")):
        doc = load_path(path)
        chunks = chunk_text(doc.text, doc.source.id, embedder.token_counts)
        assert len(chunks) >= 3, path
        sizes = embedder.token_counts([c.text for c in chunks])
        assert max(sizes) <= limit
        for c in chunks:
            assert doc.text[c.start:c.end] == c.text
        # Together the chunks cover every sentence of the article.
        covered = set()
        for c in chunks:
            covered.update(range(c.start, c.end))
        for a, b in split_sentences(doc.text):
            assert a in covered and b - 1 in covered


def test_consecutive_chunks_overlap_by_a_sentence(embedder):
    doc = load_path(SEEDS / "003_7d9a2ce0f383324a.txt")
    chunks = chunk_text(doc.text, "s", embedder.token_counts, target_tokens=80,
                        overlap_sentences=1)
    overlapping = sum(1 for a, b in zip(chunks, chunks[1:], strict=False) if b.start < a.end)
    assert overlapping >= len(chunks) // 2


def test_giant_sentence_and_giant_word_are_cut_to_fit(embedder):
    limit = 254
    text = ("word " * 2000).strip() + ". " + "x" * 5000 + " end."
    chunks = chunk_text(text, "s", embedder.token_counts, target_tokens=128, max_tokens=limit)
    assert max(embedder.token_counts([c.text for c in chunks])) <= limit
    assert all(text[c.start:c.end] == c.text for c in chunks)
    assert "".join(c.text for c in chunks).replace(" ", "").replace(".", "") == \
        text.replace(" ", "").replace(".", "")


def test_additive_counting_gives_the_same_chunks_with_fewer_counts(embedder):
    """The model's tokenizer splits at whitespace first, so whole chunks need no second count;
    the chunks are exactly those made by counting every chunk again, giant words included."""
    assert embedder.counts_add_up
    texts = [load_path(p).text for p in sorted(SEEDS.glob("*.txt"))]
    texts.append(("word " * 600).strip() + ". " + "x" * 3000 + " end. Short one. And more.")
    for text in texts:
        counted: dict[bool, list[str]] = {False: [], True: []}
        made = {}
        for additive in (False, True):
            def count(parts, seen=counted[additive]):
                seen.extend(parts)
                return embedder.token_counts(parts)
            made[additive] = chunk_text(text, "s", count, target_tokens=100, additive=additive)
        assert made[True] == made[False]
        assert len(counted[True]) < len(counted[False])
        assert max(embedder.token_counts([c.text for c in made[True]])) <= embedder.max_tokens - 2
