"""Measure answer.said_alike on the SQuAD training questions: how close, in the model's last
layer, a question word comes to the same word in its best three sentences.

A question word no passage holds counts as said in other words when a word of the best
sentences comes as close to it as the same word usually does (index/answer.py, said_otherwise).
This prints the percentiles of the cosine between a question word and its closest word in the
best three sentences, for the words those sentences hold (the same word in another context)
and for those they do not; said_alike is the 5th percentile of the first (0.70 on 2026-12-05).

usage: python -m training.said_alike --index /tmp/squad-index [--train FILE] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from index.answer import closest_words, read_sentences  # noqa: E402
from index.answer_model import load_model, text_stems  # noqa: E402
from index.library import Library, Settings  # noqa: E402
from index.retrieve import candidates, ranked_hits  # noqa: E402
from training.train_answer_model import TRAIN  # noqa: E402


def closest(lib: Library, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Each question word's best cosine to a word of its best three sentences: for the words
    those sentences hold, and for the others."""
    snap, model, settings = lib.snapshot(), load_model(), lib.settings
    same, other = [], []
    for r in rows:
        q = lib._normalise(snap, r["query"])
        v = lib.embedder.encode_query(q)
        cands = candidates(snap, q, v, settings.retrieval.rerank, settings.retrieval)
        hits = ranked_hits(snap, cands, model.passage.logits(cands.features),
                           settings.answer.passages, settings.retrieval.sentence_slot)
        stored = snap.sentences([h.chunk.id for h in hits])
        read = read_sentences(q, hits, v, stored, snap.lexical, settings.answer, model,
                              cands.terms)
        if read is None:
            continue
        top = [s.text for s in sorted(read.sentences, key=lambda s: -s.score)[:3]]
        held = set().union(*(text_stems(t) for t in top))
        for stem, best in closest_words(q, cands.terms, top, lib.embedder.word_vectors):
            (same if stem in held else other).append(best)
    return np.array(same), np.array(other)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="an index of ../shared/eval/squad/corpus")
    ap.add_argument("--train", default=str(TRAIN))
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions")
    args = ap.parse_args(argv)
    from bot.app import embedder_for
    from bot.config import Config

    rows = [json.loads(x) for x in Path(args.train).read_text(encoding="utf-8").splitlines()
            if x.strip()][: args.limit or None]
    lib = Library(Path(args.index), embedder_for(Config()), Settings())
    same, other = closest(lib, rows)
    print(f"{len(rows)} questions; {len(same)} words the best sentences hold, {len(other)} not")
    print("| percentile | same word | other words |\n| --- | --- | --- |")
    for p in (1, 5, 10, 25, 50):
        print(f"| {p} | {np.percentile(same, p):.3f} | {np.percentile(other, p):.3f} |")
    print(f"said_alike (5th percentile of the same word): {np.percentile(same, 5):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
