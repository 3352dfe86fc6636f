"""The Discord bot's own SQLite file, apart from the index: the answers it sent (so that the
buttons under them keep working after a restart) and the 👍/👎 feedback on them."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from index import Answer, Citation, Source, now_iso

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    question TEXT NOT NULL,
    record TEXT NOT NULL,          -- the whole Answer (with keywords and more), as JSON
    user_id INTEGER,
    channel_id INTEGER,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    answer_id INTEGER NOT NULL REFERENCES answers(id),
    question TEXT NOT NULL,
    answer TEXT NOT NULL,          -- the answer as `citebot ask --json` prints it
    user_id INTEGER NOT NULL,
    vote INTEGER NOT NULL CHECK (vote IN (-1, 1)),
    created_at TEXT NOT NULL,
    UNIQUE (answer_id, user_id)    -- a second click changes the vote, it does not add one
);
"""


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
    """One SQLite file; every method is a short blocking call (run it off the event loop)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def save_answer(self, answer: Answer, *, user_id: int | None = None,
                    channel_id: int | None = None) -> int:
        """Store an answer the bot is about to send; returns its id for the buttons."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT INTO answers (question, record, user_id, channel_id, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (answer.question, answer_to_record(answer), user_id, channel_id, now_iso()))
            return int(cur.lastrowid)

    def answer(self, answer_id: int) -> Answer | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM answers WHERE id = ?",
                                   (answer_id,)).fetchone()
        return answer_from_record(row[0]) if row else None

    def vote(self, answer_id: int, user_id: int, vote: int) -> bool:
        """Record +1 or -1 from a user on an answer; False when the answer is unknown."""
        if vote not in (-1, 1):
            raise ValueError("vote must be +1 or -1")
        answer = self.answer(answer_id)
        if answer is None:
            return False
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO feedback (answer_id, question, answer, user_id, vote, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (answer_id, user_id) DO UPDATE SET "
                "vote = excluded.vote, created_at = excluded.created_at",
                (answer_id, answer.question, json.dumps(answer.to_json(), ensure_ascii=False),
                 user_id, vote, now_iso()))
        return True

    def feedback(self) -> list[dict]:
        """Every feedback row, oldest first."""
        with self._lock:
            cur = self._db.execute("SELECT answer_id, question, answer, user_id, vote, created_at "
                                   "FROM feedback ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
