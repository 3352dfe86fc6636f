"""Small typed records passed between the stages."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """One indexed article: where it came from and what it is called."""

    id: str
    title: str
    path: str | None = None
    url: str | None = None
    publisher: str | None = None
    date: str | None = None
    content_hash: str = ""
    added_at: str | None = None
    chunks: int = 0

    @property
    def location(self) -> str:
        return self.url or self.path or self.id

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "path": self.path, "url": self.url,
                "publisher": self.publisher, "date": self.date}


@dataclass(frozen=True)
class Document:
    """A loaded source with its cleaned text, before chunking."""

    source: Source
    text: str


@dataclass(frozen=True)
class Chunk:
    """A passage of a source: text is exactly source_text[start:end]."""

    source_id: str
    text: str
    start: int
    end: int
    hash: str
    id: int | None = None


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its fused score (higher is better)."""

    rank: int
    score: float
    chunk: Chunk
    source: Source
    dense: float = 0.0
    lexical: float = 0.0

    def to_json(self) -> dict:
        return {"rank": self.rank, "score": round(float(self.score), 4), "text": self.chunk.text,
                "source": self.source.to_json(), "start": self.chunk.start, "end": self.chunk.end}


@dataclass(frozen=True)
class Citation:
    """A numbered quote: verbatim source_text[start:end], plus other sources saying the same."""

    n: int
    quote: str
    source: Source
    start: int
    end: int
    score: float = 0.0
    also_in: tuple[Source, ...] = ()

    def to_json(self) -> dict:
        return {"n": self.n, "quote": self.quote, "source": self.source.to_json(),
                "start": self.start, "end": self.end,
                "also_in": [s.to_json() for s in self.also_in]}


@dataclass(frozen=True)
class Answer:
    """What every interface renders: the answer sentences and their citations."""

    question: str
    answered: bool
    answer: str
    citations: tuple[Citation, ...] = ()
    keywords: tuple[str, ...] = ()
    score: float = 0.0
    more: tuple[Citation, ...] = field(default=(), compare=False)
    # Answered, but the answerability was low: "not sure the sources answer this".
    hedged: bool = False

    def to_json(self) -> dict:
        return {"question": self.question, "answered": self.answered,
                "hedged": self.hedged, "answer": self.answer,
                "citations": [c.to_json() for c in self.citations],
                "score": round(float(self.score), 4)}
