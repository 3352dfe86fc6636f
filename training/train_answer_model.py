"""Fit citebot's answer scorers (index/answer_model.json) on the SQuAD training questions.

Three scorers, fitted in turn in numpy (deterministic: the same index and questions give the
same weights): the passage one a small network (one hidden layer of 16), the other two logistic
regressions fitted by Newton's method.
  1. passage: is a fused candidate a passage that answers (the hit rule of score.py)?
  2. sentence: does a sentence of the best passages state the answer (holds an answer string
     and lies in the gold paragraph)?
  3. answerable: does the question have an answer at all (SQuAD 2.0's unanswerable ones not)?
Then the refusal threshold: the one that gets most training questions right (answered with
the answer, or rightly refused) while refusing at most --max-false-refusals of the answerable
ones; the answerable head's bias is shifted so that this threshold is probability 0.5.

Features come from the library's own retrieval and answering code on an index of the 48 SQuAD
articles, built once beforehand:
    citebot index build ../shared/eval/squad/corpus --index /tmp/squad-index

usage: python -m training.train_answer_model --index /tmp/squad-index \\
           [--train ../shared/eval/train/squad_train.jsonl] [--out index/answer_model.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from index.answer import answerable_features, read_sentences  # noqa: E402
from index.answer_model import (  # noqa: E402
    ANSWERABLE_FEATURES,
    PASSAGE_FEATURES,
    SENTENCE_FEATURES,
    AnswerModel,
    Head,
    sigmoid,
)
from index.evaluate import norm, parse_question  # noqa: E402
from index.library import Library, Settings  # noqa: E402
from index.retrieve import candidates, ranked_hits  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "eval" / "train" / "squad_train.jsonl"


def fit_logistic(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], l2: float = 1.0,
                 iterations: int = 30) -> Head:
    """L2-regularised logistic regression by Newton's method on standardised features."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    Z = np.hstack([(X - mean) / scale, np.ones((len(X), 1))])
    w = np.zeros(Z.shape[1])
    reg = np.full(Z.shape[1], l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = sigmoid(Z @ w)
        grad = Z.T @ (p - y) + reg * w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Head(names, mean, scale, w[:-1], float(w[-1]))


def fit_mlp(X: np.ndarray, y: np.ndarray, names: tuple[str, ...], hidden: int = 16,
            l2: float = 1e-3, steps: int = 1500, rate: float = 0.01, seed: int = 0) -> Head:
    """A logistic output over one tanh hidden layer, by full-batch Adam from a fixed seed
    (the same data gives the same weights)."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    Z = (X - mean) / scale
    rng = np.random.default_rng(seed)
    params = [rng.normal(scale=0.3, size=(Z.shape[1], hidden)), np.zeros(hidden),
              rng.normal(scale=0.3, size=hidden), np.zeros(1)]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        W, b, v, c = params
        H = np.tanh(Z @ W + b)
        e = (sigmoid(H @ v + c[0]) - y) / len(y)
        dH = np.outer(e, v) * (1 - H ** 2)
        grads = [Z.T @ dH + l2 * W, dH.sum(axis=0), H.T @ e + l2 * v, np.array([e.sum()])]
        for p, g, a, s in zip(params, grads, m1, m2, strict=True):
            a *= 0.9
            a += 0.1 * g
            s *= 0.999
            s += 0.001 * g ** 2
            p -= rate * (a / (1 - 0.9 ** t)) / (np.sqrt(s / (1 - 0.999 ** t)) + 1e-8)
    W, b, v, c = params
    return Head(names, mean, scale, v, float(c[0]), W, b)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Extractor:
    """Features of the training questions, through the library's retrieval and answering."""

    def __init__(self, lib: Library, rows: list[dict]):
        self.lib, self.rows = lib, rows
        self.snap = lib.snapshot()
        self.queries = [lib._normalise(self.snap, r["query"]) for r in rows]
        self.qvecs = lib.embedder.encode(self.queries)

    def passages(self) -> dict[str, np.ndarray]:
        """Passage features and hit labels of the answerable questions' candidates."""
        settings = self.lib.settings.retrieval
        sources = self.snap.sources()
        X, y, group = [], [], []
        for n, (r, q, v) in enumerate(zip(self.rows, self.queries, self.qvecs, strict=True)):
            if not r["answerable"]:
                continue
            cands = candidates(self.snap, q, v, settings.rerank, settings)
            question = parse_question(r, r["id"])
            for c, f in zip(cands.chunks, cands.features, strict=True):
                X.append(f)
                y.append(question.is_hit(c.text, sources[c.source_id].path))
                group.append(n)
            if n % 1000 == 0:
                _log(f"  passages: {n}/{len(self.rows)}")
        return {"X": np.array(X), "y": np.array(y, dtype=float), "group": np.array(group)}

    def sentences(self, passage: Head) -> dict[str, np.ndarray]:
        """Sentence features and labels (of every question), and what else the answerable
        head reads, per question."""
        settings = self.lib.settings
        X, y, group, hit, V = [], [], [], [], []
        per_q: dict[str, list] = {"words": [], "unknown": [], "missing": [], "p0": [], "p1": [],
                                  "question": []}
        for n, (r, q, v) in enumerate(zip(self.rows, self.queries, self.qvecs, strict=True)):
            cands = candidates(self.snap, q, v, settings.retrieval.rerank, settings.retrieval)
            logits = passage.logits(cands.features)
            hits = ranked_hits(self.snap, cands, logits, settings.answer.passages,
                               settings.retrieval.sentence_slot)
            stored = self.snap.sentences([h.chunk.id for h in hits])
            read = read_sentences(q, hits, v, stored, self.snap.lexical, settings.answer,
                                  None, cands.terms)
            if read is None:
                continue
            answers = [norm(a) for a in r.get("answers") or [] if norm(a)]
            gold = norm(r["gold_paragraph"])
            for s, f in zip(read.sentences, read.features, strict=True):
                t = norm(s.text)
                has = any(a in t for a in answers)
                X.append(f)
                hit.append(has)
                y.append(has and t in gold)
                group.append(n)
            V.append(read.vectors.astype(np.float16))
            top = np.sort(logits)[::-1]
            per_q["words"].append(len(cands.terms.stems))
            per_q["unknown"].append(read.unknown)
            per_q["missing"].append(float(read.missing))
            per_q["p0"].append(top[0])
            per_q["p1"].append(top[1] if len(top) > 1 else top[0] - 5.0)
            per_q["question"].append(n)
            if n % 1000 == 0:
                _log(f"  sentences: {n}/{len(self.rows)}")
        out = {"X": np.array(X), "y": np.array(y, dtype=float), "group": np.array(group),
               "hit": np.array(hit, dtype=float), "V": np.concatenate(V),
               "qvec": self.qvecs[np.array(per_q["question"])].astype(np.float16)}
        out.update({k: np.array(v) for k, v in per_q.items()})
        return out


def question_rows(data: dict[str, np.ndarray], sentence: Head) -> tuple[np.ndarray, np.ndarray]:
    """The ANSWERABLE_FEATURES rows of the questions that had sentences, and whether each
    one's best sentence holds an answer."""
    logits = sentence.logits(data["X"])
    rows, hit = [], []
    groups = data["group"]
    bounds = np.flatnonzero(np.diff(groups)) + 1
    for j, (a, b) in enumerate(zip(np.r_[0, bounds], np.r_[bounds, len(groups)], strict=True)):
        rows.append(answerable_features(int(data["words"][j]),
                                        [data["p0"][j], data["p1"][j]], data["X"][a:b],
                                        logits[a:b], float(data["unknown"][j]),
                                        bool(data["missing"][j])))
        hit.append(bool(data["hit"][a + int(np.argmax(logits[a:b]))]))
    return np.array(rows), np.array(hit)


def refusal_threshold(p: np.ndarray, answerable: np.ndarray, hit: np.ndarray,
                      max_false: float) -> float:
    """The probability threshold that gets most questions right (answered with the answer,
    or rightly refused) with at most max_false of the answerable ones refused."""
    best, best_t = -1.0, 0.5
    for t in np.unique(np.round(p, 3)):
        answered = p >= t
        if (~answered[answerable]).mean() > max_false:
            continue
        right = (answered & answerable & hit).sum() + (~answered & ~answerable).sum()
        if right > best:
            best, best_t = right, float(t)
    return best_t


def citation_gap(data: dict[str, np.ndarray], sentence: Head, answerable_q: np.ndarray,
                 min_share: float = 0.2, width: float = 0.25) -> float:
    """How far below the best sentence's logit a sentence may score and still be cited: the
    start of the first band of that width in which fewer than min_share of the answerable
    questions' runner-up sentences hold an answer."""
    logits = sentence.logits(data["X"])
    groups = data["group"]
    bounds = np.flatnonzero(np.diff(groups)) + 1
    gaps, holds = [], []
    for j, (a, b) in enumerate(zip(np.r_[0, bounds], np.r_[bounds, len(groups)], strict=True)):
        if not answerable_q[j]:
            continue
        order = np.argsort(-logits[a:b])
        gaps.extend(logits[a + order[0]] - logits[a + order[1:]])
        holds.extend(data["hit"][a + order[1:]])
    gaps_a, holds_a = np.array(gaps), np.array(holds)
    edge = 0.0
    while True:
        band = (gaps_a >= edge) & (gaps_a < edge + width)
        if not band.any() or holds_a[band].mean() < min_share:
            return edge
        edge += width


def _accuracy(answered: np.ndarray, answerable: np.ndarray, hit: np.ndarray) -> float:
    return float(((answered & answerable & hit).sum() + (~answered & ~answerable).sum())
                 / len(answered))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", required=True, help="an index of ../shared/eval/squad/corpus")
    ap.add_argument("--train", default=str(TRAIN))
    ap.add_argument("--out", default=str(ROOT / "index" / "answer_model.json"))
    ap.add_argument("--max-false-refusals", type=float, default=0.05,
                    help="the most answerable training questions the threshold may refuse: "
                         "a false refusal costs a user more than a hedged answer")
    ap.add_argument("--hedge-false-refusals", type=float, default=0.01,
                    help="the share of answerable training questions still refused outright: "
                         "those between it and the threshold are answered with a warning")
    ap.add_argument("--cache", help="keep the extracted features in this folder and reuse them")
    args = ap.parse_args(argv)
    from bot.app import embedder_for
    from bot.config import Config

    started = time.monotonic()
    rows = [json.loads(x) for x in Path(args.train).read_text(encoding="utf-8").splitlines()
            if x.strip()]
    cache = Path(args.cache) if args.cache else None
    ex: Extractor | None = None

    def extractor() -> Extractor:
        nonlocal ex
        if ex is None:
            lib = Library(Path(args.index), embedder_for(Config()), Settings())
            ex = Extractor(lib, rows)
            _log(f"{len(rows)} questions embedded ({time.monotonic() - started:.0f} s)")
        return ex

    passages = _cached(cache, "passages", lambda: extractor().passages())
    passage = fit_mlp(passages["X"], passages["y"], PASSAGE_FEATURES)
    _log(f"passage head: {len(passages['X'])} candidates, {int(passages['y'].sum())} hits")
    data = _cached(cache, "sentences", lambda: extractor().sentences(passage))
    answerable_q = np.array([rows[n]["answerable"] for n in data["question"]])
    keep = answerable_q[np.searchsorted(data["question"], data["group"])]
    sentence = fit_logistic(data["X"][keep], data["y"][keep], SENTENCE_FEATURES)
    _log(f"sentence head: {int(keep.sum())} sentences, {int(data['y'].sum())} answer")
    Q, hit = question_rows(data, sentence)
    answerable = fit_logistic(Q, answerable_q.astype(float), ANSWERABLE_FEATURES)
    p = sigmoid(answerable.logits(Q))
    t = refusal_threshold(p, answerable_q, hit, args.max_false_refusals)
    # Shift the bias so that the chosen threshold is probability 0.5 (AnswerSettings.min_score).
    answerable = replace(answerable, bias=answerable.bias - float(np.log(t / (1 - t))))
    cite_within = citation_gap(data, sentence, answerable_q)
    _log(f"citations: within {cite_within} of the best sentence's logit")
    p = sigmoid(answerable.logits(Q))  # with the shifted bias: 0.5 is the threshold
    hedge_below = round(float(np.quantile(p[answerable_q], args.hedge_false_refusals)), 3)
    _log(f"hedged answers from probability {hedge_below}: "
         f"{(p[~answerable_q] < hedge_below).mean():.3f} of the unanswerable refused below it")
    model = AnswerModel(passage, sentence, answerable, cite_within=cite_within,
                        trained_on=f"{Path(args.train).name}: {len(rows)} questions",
                        hedge_below=hedge_below)
    model.save(Path(args.out))
    answered = p >= 0.5
    _log(f"answerable head: threshold {t:.3f}; on the training questions: "
         f"false refusals {(~answered[answerable_q]).mean():.3f}, "
         f"unanswerable refused {(~answered[~answerable_q]).mean():.3f}, accuracy "
         f"{_accuracy(answered, answerable_q, hit):.3f}")
    _log(f"wrote {args.out} ({time.monotonic() - started:.0f} s)")
    return 0


def _cached(folder: Path | None, name: str, make) -> dict[str, np.ndarray]:
    path = folder / f"{name}.npz" if folder else None
    if path and path.exists():
        with np.load(path) as f:
            return dict(f)
    data = make()
    if path:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)
    return data


if __name__ == "__main__":
    raise SystemExit(main())
