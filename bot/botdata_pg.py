"""The bot's data in PostgreSQL, for bot processes on several machines (the postgres extra).

Imported only when `[discord] data` is a postgresql:// URL, so psycopg is needed only then.
Each process keeps one connection (statements are short and serialised by a lock, as with
SQLite) and opens it again if the server dropped it.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

from index import CitebotError

from .botdata import _TABLES, SCHEMA_VERSION, BotData, _Backend

# Any fixed number: processes starting together take turns creating the tables.
_SCHEMA_LOCK = 0x63697465626F74


class _Postgres(_Backend):
    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._db = self._connect()
        try:
            with self._lock, self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _TABLES.format(id="BIGINT GENERATED ALWAYS AS IDENTITY "
                                                    "PRIMARY KEY").split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                # SQLite keeps it in PRAGMA user_version; PostgreSQL has no such slot.
                self._db.execute(f"COMMENT ON TABLE answers IS 'citebot bot data "
                                 f"{SCHEMA_VERSION}'")
        except psycopg.Error as exc:  # e.g. a user who may not create tables
            self._db.close()
            raise CitebotError(f"the bot's PostgreSQL database refused its tables: "
                               f"{_first_line(exc)}") from exc

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            # The message names the host, never the password (psycopg leaves it out).
            raise CitebotError(f"cannot connect to the bot's PostgreSQL database: "
                               f"{_first_line(exc)}") from exc

    def run(self, sql: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._run(sql, params)
            except psycopg.OperationalError:
                if not (self._db.closed or self._db.broken):
                    raise
                # The server restarted or dropped the connection: once more on a new one. Each
                # statement commits alone: a retried vote is an upsert, an answer a spare row.
                return self._run(sql, params)

    def _run(self, sql: str, params: tuple) -> list[tuple[Any, ...]]:
        if self._db.closed or self._db.broken:
            self._db = self._connect()
        cur = self._db.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PostgresBotData(BotData):
    """BotData in a PostgreSQL database named by a postgresql:// URL."""

    def __init__(self, url: str):
        self._backend = _Postgres(url)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
