"""The Discord bot's own data, apart from the index: the answers it sent (so that the buttons
under them keep working after a restart) and the 👍/👎 feedback on them.

One interface, two small backends: a SQLite file beside the bot (one machine), or PostgreSQL
(`[discord] data = "postgresql://…"`) when bot processes on several machines must share it, so
that a button works whichever process receives the click. The SQL is the same for both except
for what `_Backend` hides: placeholders, the id column and how a connection is made.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from index import Answer, Citation, CitebotError, Source, now_iso

SCHEMA_VERSION = 1
_TABLES = """
CREATE TABLE IF NOT EXISTS answers (
    id {id},
    question TEXT NOT NULL,
    record TEXT NOT NULL,          -- the whole Answer (with keywords and more), as JSON
    user_id BIGINT,
    channel_id BIGINT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id {id},
    answer_id BIGINT NOT NULL REFERENCES answers(id),
    question TEXT NOT NULL,
    answer TEXT NOT NULL,          -- the answer as `citebot ask --json` prints it
    user_id BIGINT NOT NULL,
    vote INTEGER NOT NULL CHECK (vote IN (-1, 1)),
    created_at TEXT NOT NULL,
    UNIQUE (answer_id, user_id)    -- a second click changes the vote, it does not add one
);
"""
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
NEEDS_EXTRA = ("[discord] data names a PostgreSQL database, which needs the postgres extra: "
               "pip install 'citebot[postgres]'")


def answer_to_record(answer: Answer) -> str:
    return json.dumps(asdict(answer), ensure_ascii=False)


def _source(d: dict) -> Source:
    return Source(**d)


def _citation(d: dict) -> Citation:
    return Citation(**{**d, "source": _source(d["source"]),
                       "also_in": tuple(_source(s) for s in d.get("also_in", ()))})


def answer_from_record(text: str) -> Answer:
    d = json.loads(text)
    return Answer(**{**d, "citations": tuple(_citation(c) for c in d.get("citations", ())),
                     "keywords": tuple(d.get("keywords", ())),
                     "more": tuple(_citation(c) for c in d.get("more", ()))})


class BotData:
    """The bot's answers and feedback; every method is a short blocking call (run it off the
    event loop). `BotData(path)` is the SQLite file; `open_bot_data` picks the backend."""

    def __init__(self, path: str | Path):
        self._backend: _Backend = _SQLite(Path(path))

    def save_answer(self, answer: Answer, *, user_id: int | None = None,
                    channel_id: int | None = None) -> int:
        """Store an answer the bot is about to send; returns its id for the buttons."""
        rows = self._backend.run(
            "INSERT INTO answers (question, record, user_id, channel_id, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (answer.question, answer_to_record(answer), user_id, channel_id, now_iso()))
        return int(rows[0][0])

    def answer(self, answer_id: int) -> Answer | None:
        rows = self._backend.run("SELECT record FROM answers WHERE id = ?", (answer_id,))
        return answer_from_record(rows[0][0]) if rows else None

    def vote(self, answer_id: int, user_id: int, vote: int) -> bool:
        """Record +1 or -1 from a user on an answer; False when the answer is unknown."""
        if vote not in (-1, 1):
            raise ValueError("vote must be +1 or -1")
        answer = self.answer(answer_id)
        if answer is None:
            return False
        self._backend.run(
            "INSERT INTO feedback (answer_id, question, answer, user_id, vote, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (answer_id, user_id) DO UPDATE SET "
            "vote = excluded.vote, created_at = excluded.created_at",
            (answer_id, answer.question, json.dumps(answer.to_json(), ensure_ascii=False),
             user_id, vote, now_iso()))
        return True

    def feedback(self) -> list[dict]:
        """Every feedback row, oldest first."""
        names = ("answer_id", "question", "answer", "user_id", "vote", "created_at")
        rows = self._backend.run(f"SELECT {', '.join(names)} FROM feedback ORDER BY id")
        return [dict(zip(names, row, strict=True)) for row in rows]

    def close(self) -> None:
        self._backend.close()


def open_bot_data(where: str, base: Path | None = None) -> BotData:
    """The bot data `[discord] data` names: a postgresql:// URL, else a SQLite file (relative
    to base, the config file's folder)."""
    if where.startswith(POSTGRES_SCHEMES):
        try:
            from .botdata_pg import PostgresBotData
        except ImportError as exc:
            raise CitebotError(NEEDS_EXTRA) from exc
        return PostgresBotData(where)
    path = Path(where).expanduser()
    return BotData(path if path.is_absolute() or base is None else base / path)


class _Backend:
    """A connection, a lock for the bot's threads, and one statement at a time."""

    def run(self, sql: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; the rows it returns."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SQLite(_Backend):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_TABLES.format(id="INTEGER PRIMARY KEY"))
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def run(self, sql: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._db:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
