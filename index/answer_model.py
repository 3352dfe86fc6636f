"""The learned part of answering: three small scorers over features citebot computes anyway.

- passage: how likely a retrieved passage answers the question (re-ranks the fused candidates);
- sentence: how likely a sentence of the best passages states the answer (answer text, citations);
- answerable: whether the best sentences answer the question at all (refusal).

Each is a logistic regression (optionally with one small hidden layer) over standardised
features, fitted by training/train_answer_model.py on SQuAD training questions and stored in
answer_model.json beside this file. Scoring is numpy only: no torch, no scikit-learn.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .lexical import Lexical, tokenize

MODEL_FILE = Path(__file__).with_name("answer_model.json")

# What kind of thing a question asks for, by its opening words. "other" asks for anything.
_KINDS = [
    ("who", re.compile(r"^\s*(who|whom|whose)\b|\bwhich (people|person|politicians?|officials?|"
                       r"leaders?|man|woman|king|president|company|group)\b|^\s*what (is|was) "
                       r"the name of\b", re.I)),
    ("number", re.compile(r"\bhow (old|many|much|long|far|big|large|high|tall|deep|wide|"
                          r"often)\b|\bwhat (percentage|proportion|number|amount)\b", re.I)),
    # "when" later in a question asks for a time only before a verb like "did" or at the end
    # ("so when did he quit", "until when?"); "what were mps shouting when may spoke" and
    # "how old was Chopin when he moved" ask for something else.
    ("time", re.compile(r"^\s*(when)\b|\b(what|which) (years?|dates?|days?|time|months?|"
                        r"century|centuries|decades?|period)\b|\bwhen (did|does|do|was|were|"
                        r"is|are|will|would|had|has|have|can|could|should)\b|"
                        r"\bwhen\W*$", re.I)),
    ("place", re.compile(r"^\s*where\b|\b(what|which) (country|countries|city|cities|states?|"
                         r"places?|regions?|continents?|areas?|towns?|locations?)\b|\bwhere\b",
                         re.I)),
]
KINDS = ("who", "number", "time", "place", "other")

_NUMBER = re.compile(r"\b\d[\d,.]*\b|\b(one|two|three|four|five|six|seven|eight|nine|ten|"
                     r"eleven|twelve|twenty|thirty|forty|fifty|hundred|thousand|million|"
                     r"billion|dozen|half)\b", re.I)
_TIME = re.compile(r"\b(1[0-9]\d\d|20\d\d|\d{2,4}s|january|february|march|april|may|june|july|"
                   r"august|september|october|november|december|monday|tuesday|wednesday|"
                   r"thursday|friday|saturday|sunday|century|centuries|decade|bc|ad|"
                   r"yesterday|today|tomorrow)\b", re.I)
_CAPITAL = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'’-]+")
_ANY_CAPITAL = re.compile(r"\b[A-Z][\w'’-]+")
# A question asking yes or no opens with an auxiliary verb ("did", "was", "has"). Not "may":
# people type "may said ..." for Theresa May.
_YES_NO = re.compile(r"^\W*(do|does|did|is|are|was|were|has|have|had|can|could|will|would|"
                     r"should|shall)\b", re.I)
# Words that turn a statement round: "failure to stand up for", "did not defend".
_NEGATION = re.compile(r"\b(not|no|never|none|nobody|nothing|neither|nor|without|cannot|"
                       r"failure|failed|fails|fail|refused|refuses|refuse|declined|declines|"
                       r"decline|lack|lacked|unable|against)\b|n['’]t\b", re.I)


def question_kind(question: str) -> str:
    """who / number / time / place, or other."""
    return next((name for name, rx in _KINDS if rx.search(question)), "other")


@dataclass(frozen=True)
class Terms:
    """A question's stems with their weights (IDF in the index), its kind and polarity."""

    stems: tuple[str, ...]
    idf: np.ndarray
    kind: str
    negated: bool
    numbers: frozenset[str]
    capitals: frozenset[str]  # stems of the question's capitalised words
    bigrams: frozenset[tuple[str, str]] = frozenset()  # consecutive stems
    yes_no: bool = False  # "did Hunt back him?": a negated sentence answers it ("no")

    def bigram_share(self, text: str) -> float:
        """The share of the question's consecutive word pairs that the text has together."""
        return len(self.bigrams & text_bigrams(text)) / len(self.bigrams) if self.bigrams else 0.0

    def names_missing(self, stems: frozenset[str]) -> float:
        """The share of the question's capitalised words (names) the text lacks."""
        names = self.capitals & set(self.stems)
        return len(names - stems) / len(names) if names else 0.0

    def coverage(self, stems: set[str] | frozenset[str]) -> float:
        """The share of the question's weight in words the text holds."""
        total = float(self.idf.sum())
        if not self.stems or total <= 0:
            return 0.0
        return float(sum(w for s, w in zip(self.stems, self.idf, strict=True) if s in stems)
                     / total)

    def rare_missing(self, stems: set[str] | frozenset[str]) -> float:
        """The largest weight of a question word the text lacks, over the largest of all."""
        top = float(self.idf.max()) if len(self.idf) else 0.0
        missing = [w for s, w in zip(self.stems, self.idf, strict=True) if s not in stems]
        return float(max(missing) / top) if missing and top > 0 else 0.0


def question_terms(question: str, lexical: Lexical | None) -> Terms:
    """The question's stems, weighted by how rare they are in the index (1 without one)."""
    stems = tuple(dict.fromkeys(tokenize(question)))
    if lexical is not None and stems:
        df = lexical.doc_freqs(list(stems))
        idf = np.log((lexical.n_docs + 1) / (df + 0.5)).clip(min=0.1)
    else:
        idf = np.ones(len(stems))
    return Terms(stems, idf, question_kind(question), bool(_NEGATION.search(question)),
                 frozenset(_numbers(question)), frozenset(_capital_stems(question, first=True)),
                 text_bigrams(question), bool(_YES_NO.match(question)))


@functools.lru_cache(maxsize=8192)
def text_stems(text: str) -> frozenset[str]:
    return frozenset(tokenize(text))


@functools.lru_cache(maxsize=8192)
def text_bigrams(text: str) -> frozenset[tuple[str, str]]:
    words = tokenize(text)
    return frozenset(zip(words, words[1:], strict=False))


def _numbers(text: str) -> set[str]:
    return {m.group().lower().replace(",", "") for m in _NUMBER.finditer(text)}


@functools.lru_cache(maxsize=8192)
def _capital_stems(text: str, first: bool = False) -> frozenset[str]:
    rx = _ANY_CAPITAL if first else _CAPITAL
    return frozenset(s for m in rx.finditer(text) for s in tokenize(m.group()))


# A capitalised word after a sentence's end, followed by a name or a verb of speaking or being.
# It starts with the punctuation, not a look-behind, so re scans for it quickly (4x).
_OPENING_NAME = re.compile(r"[.!?]\s([A-Z][\w'’-]+)"
                           r"(?=\s+[A-Z]|\s+(?:said|says|is|was|has|had|told|wrote|added)\b)")


@functools.lru_cache(maxsize=8192)
def _name_stems(text: str) -> frozenset[str]:
    """The capitalised words of a text, with one that opens a sentence when a name or a verb
    of speaking or being follows it ("Hunt is one of the two candidates", "Jeremy Hunt said")."""
    return _capital_stems(text) | frozenset(s for m in _OPENING_NAME.finditer(". " + text)
                                            for s in tokenize(m.group(1)))


def has_kind(text: str, terms: Terms) -> float:
    """Whether a text holds a thing of the kind asked for that the question does not name."""
    if terms.kind == "number":
        return float(bool(_numbers(text) - terms.numbers))
    if terms.kind == "time":
        return float(any(m.group().lower() not in terms.numbers for m in _TIME.finditer(text)))
    if terms.kind in ("who", "place"):
        return float(bool(_name_stems(text) - terms.capitals - set(terms.stems)))
    return 0.0


_RAW_WORDS = re.compile(r"[\w'’]+")


def contradicts(terms: Terms, text: str) -> bool:
    """Whether a sentence says the opposite of what the question asks about, though it holds
    its words: a negation just before one of them when the question has none ("failure to
    stand up for Darroch", "did not defend him", "refused to back"), or the question's words
    in swapped roles ("Darroch defended ..." for "who defended Darroch?"). A negation does
    not contradict a yes-or-no question: "was his position tenable?" is answered by "his
    position was no longer tenable".
    """
    words = [w.lower() for w in _RAW_WORDS.findall(text)]
    stems = [s[0] if (s := tokenize(w)) else "" for w in words]
    keys = set(terms.stems)
    if not terms.negated and not terms.yes_no:
        for i, w in enumerate(words):
            if _NEGATION.fullmatch(w) or w.endswith("n't"):
                if any(st in keys for st in stems[i + 1:i + 6]):
                    return True
    # Adjacent words only: "the company was founded by" (passive) keeps its roles.
    pairs = set(zip(stems, stems[1:], strict=False))
    return any((b, a) in pairs and (a, b) not in pairs for a, b in terms.bigrams)


PASSAGE_FEATURES = ("dense", "dense_gap", "lexical", "best_sentence", "best_sentence_gap",
                    "second_sentence", "coverage", "sentence_coverage", "rare_missing",
                    "fused_rank", "kind_match", "kind_asked", "bigrams", "window_coverage",
                    "names_missing", "coverage_gap", "bigrams_gap", "window_gap")


def passage_features(terms: Terms, text: str, dense: float, dense_top: float, lexical: float,
                     sentence_cos: np.ndarray, sentence_texts: Sequence[str], best_top: float,
                     fused_rank: int) -> list[float]:
    """Features of one candidate passage (PASSAGE_FEATURES but the last three, the gaps to
    the best candidate, which passage_matrix adds)."""
    stems = text_stems(text)
    cos = np.sort(sentence_cos)[::-1] if len(sentence_cos) else np.zeros(1)
    best = float(cos[0])
    second = float(cos[1]) if len(cos) > 1 else best
    sentence_cov = max((terms.coverage(text_stems(s)) for s in sentence_texts), default=0.0)
    pairs = [" ".join(sentence_texts[i:i + 2]) for i in range(max(1, len(sentence_texts) - 1))]
    window = max((terms.coverage(text_stems(p)) for p in pairs), default=0.0)
    return [dense, dense - dense_top, lexical, best, best - best_top, second,
            terms.coverage(stems), sentence_cov, terms.rare_missing(stems),
            1.0 / fused_rank, has_kind(text, terms), float(terms.kind != "other"),
            terms.bigram_share(text), window, terms.names_missing(stems)]


def passage_matrix(rows: list[list[float]]) -> np.ndarray:
    """The candidates' feature rows with each one's gap to the best candidate in coverage,
    word pairs and best two-sentence window."""
    if not rows:
        return np.zeros((0, len(PASSAGE_FEATURES)))
    X = np.array(rows, dtype=np.float64)
    cols = [PASSAGE_FEATURES.index(n) for n in ("coverage", "bigrams", "window_coverage")]
    return np.hstack([X, X[:, cols] - X[:, cols].max(axis=0)])


SENTENCE_FEATURES = ("cosine", "cosine_gap", "coverage", "coverage_gap", "context_coverage",
                     "rare_missing", "novelty", "kind_match", "kind_asked", "negation_mismatch",
                     "passage", "passage_rank", "length", "first_in_passage",
                     "passage_coverage", "names_missing", "bigrams", "context_rare_missing",
                     "question_negated", "contradicts")


def sentence_features(terms: Terms, text: str, cosine: float, cosine_top: float,
                      context: str, passage: str, passage_score: float, passage_rank: int,
                      first: bool, coverage_top: float) -> list[float]:
    """Features of one candidate sentence (see SENTENCE_FEATURES).

    Args:
        context: the sentence with its neighbours in the passage, whose words may be the
            ones the question takes from around the answer.
        passage: the text of the sentence's passage.
        passage_score: the passage scorer's logit for the sentence's passage.
    """
    stems = text_stems(text)
    around = text_stems(context)
    passage_stems = text_stems(passage)
    cov = terms.coverage(stems)
    novelty = len(stems - set(terms.stems)) / max(1, len(stems))
    negation_mismatch = float(bool(_NEGATION.search(text)) != terms.negated)
    return [cosine, cosine - cosine_top, cov, cov - coverage_top,
            terms.coverage(around), terms.rare_missing(stems), novelty,
            has_kind(text, terms), float(terms.kind != "other"), negation_mismatch,
            passage_score, 1.0 / passage_rank, float(np.log1p(len(text.split()))), float(first),
            terms.coverage(passage_stems), terms.names_missing(passage_stems),
            terms.bigram_share(context), terms.rare_missing(around), float(terms.negated),
            float(contradicts(terms, text))]


ANSWERABLE_FEATURES = ("top_sentence", "sentence_margin", "top_passage", "passage_margin",
                       "best_cosine", "best_coverage", "best_rare_missing", "context_coverage",
                       "kind_match", "kind_asked", "unknown_share", "missing_numbers",
                       "question_words", "negation_mismatch", "passage_coverage",
                       "names_missing", "bigrams", "context_rare_missing", "question_negated",
                       "top3_coverage", "contradicts", "negation_unmatched")


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


@dataclass(frozen=True)
class Head:
    """One scorer: standardise, an optional tanh hidden layer, then a logistic output."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (d,) or, with a hidden layer, (h,)
    bias: float
    hidden: np.ndarray | None = None  # (d, h)
    hidden_bias: np.ndarray | None = None  # (h,)

    def logits(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64).reshape(-1, len(self.names)) - self.mean) / self.scale
        if self.hidden is not None:
            Z = np.tanh(Z @ self.hidden + self.hidden_bias)
        return Z @ self.weights + self.bias

    def to_json(self) -> dict:
        out = {"features": list(self.names), "mean": self.mean.tolist(),
               "scale": self.scale.tolist(), "weights": self.weights.tolist(),
               "bias": self.bias}
        if self.hidden is not None and self.hidden_bias is not None:
            out["hidden"] = self.hidden.tolist()
            out["hidden_bias"] = self.hidden_bias.tolist()
        return out

    @classmethod
    def from_json(cls, d: dict) -> Head:
        hidden = d.get("hidden")
        return cls(tuple(d["features"]), np.array(d["mean"]), np.array(d["scale"]),
                   np.array(d["weights"]), float(d["bias"]),
                   np.array(hidden) if hidden is not None else None,
                   np.array(d["hidden_bias"]) if hidden is not None else None)


@dataclass(frozen=True)
class AnswerModel:
    """The three heads and the citation threshold chosen with them.

    The answerable head's bias is set so that probability 0.5 is the refusal threshold chosen
    on the training questions.

    Args:
        cite_within: cite a sentence whose logit is within this of the best sentence's.
        hedge_below: the answerable probability under which 1% of the answerable training
            questions fall. Between it and the refusal threshold a question is answered with
            a warning instead of refused (AnswerSettings.hedge); 0.5, no band, in files
            written before it was chosen.
    """

    passage: Head
    sentence: Head
    answerable: Head
    cite_within: float
    trained_on: str = ""
    hedge_below: float = 0.5

    def to_json(self) -> dict:
        return {"trained_on": self.trained_on, "cite_within": self.cite_within,
                "hedge_below": self.hedge_below,
                "passage": self.passage.to_json(), "sentence": self.sentence.to_json(),
                "answerable": self.answerable.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> AnswerModel:
        return cls(Head.from_json(d["passage"]), Head.from_json(d["sentence"]),
                   Head.from_json(d["answerable"]), float(d["cite_within"]),
                   str(d.get("trained_on", "")), float(d.get("hedge_below", 0.5)))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")


@functools.lru_cache(maxsize=4)
def load_model(path: Path = MODEL_FILE) -> AnswerModel | None:
    """The committed model, or None when there is none (answering falls back to the fused
    ranking and cosine scores)."""
    try:
        return AnswerModel.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
