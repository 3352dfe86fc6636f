"""bot/botdata.py: the bot's own data (answers for the buttons, feedback), in SQLite and in a
real PostgreSQL that the tests start (pgserver, from the test extra)."""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import replace

import pytest

from bot.botdata import BotData, answer_from_record, answer_to_record, open_bot_data
from index.errors import CitebotError

from .botharness import huge_answer, postgres


def test_answers_round_trip_through_bot_data(tmp_path):
    data = BotData(tmp_path / "b.sqlite")
    a = huge_answer("q?")
    assert answer_from_record(answer_to_record(a)) == a
    answer_id = data.save_answer(a, user_id=1, channel_id=2)
    assert data.answer(answer_id).more == a.more
    assert data.vote(answer_id, 7, 1) and data.vote(answer_id, 7, -1)
    assert not data.vote(answer_id + 1, 7, 1)
    rows = data.feedback()
    assert [(r["user_id"], r["vote"]) for r in rows] == [(7, -1)]
    assert json.loads(rows[0]["answer"])["question"] == "q?"
    data.close()


@pytest.fixture(scope="module")
def postgres_url():
    with postgres() as url:
        yield url


@pytest.fixture
def postgres_db(postgres_url) -> str:
    """The URL of a new, empty database on the test server."""
    import psycopg

    name = f"t{uuid.uuid4().hex}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return postgres_url.replace("/postgres?", f"/{name}?")


@pytest.fixture(params=["sqlite", "postgresql"])
def data_at(request, tmp_path):
    """Where bot data lives, for each backend: open_bot_data(data_at) opens it."""
    if request.param == "sqlite":
        return str(tmp_path / "bot.sqlite")
    return request.getfixturevalue("postgres_db")


def test_both_backends_keep_answers_and_votes(data_at):
    data = open_bot_data(data_at)
    a = huge_answer("q?")
    big = 1 << 62  # Discord ids are 64-bit: they need BIGINT columns in PostgreSQL
    first = data.save_answer(a, user_id=big, channel_id=big + 1)
    second = data.save_answer(replace(a, question="q2?"), user_id=1, channel_id=2)
    assert second != first and data.answer(first) == a
    assert data.answer(second).question == "q2?" and data.answer(second + first + 1) is None
    assert data.vote(first, big, 1) and data.vote(first, big, -1) and data.vote(second, 5, 1)
    assert not data.vote(second + first + 1, 5, 1)
    rows = data.feedback()
    assert [(r["answer_id"], r["user_id"], r["vote"]) for r in rows] == [
        (first, big, -1), (second, 5, 1)]
    assert json.loads(rows[0]["answer"])["question"] == "q?"
    with pytest.raises(ValueError):
        data.vote(first, 5, 0)
    data.close()


def test_processes_share_postgresql_bot_data(postgres_db):
    """Two BotData on one database (as two bot processes): an answer saved by one has its
    buttons work in the other, and both see every vote; a dropped connection is reopened."""
    one, two = open_bot_data(postgres_db), open_bot_data(postgres_db)
    answer_id = one.save_answer(huge_answer("q?"), user_id=1, channel_id=2)
    assert two.answer(answer_id).question == "q?"
    assert two.vote(answer_id, 7, 1)
    import psycopg

    with psycopg.connect(postgres_db, autocommit=True) as admin:  # as if the server restarted
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "datname = current_database() AND pid <> pg_backend_pid()")
    assert one.vote(answer_id, 8, -1)  # on a new connection
    assert [(r["user_id"], r["vote"]) for r in two.feedback()] == [(7, 1), (8, -1)]
    one.close()
    two.close()


def test_postgresql_without_the_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "bot.botdata_pg", raising=False)
    with pytest.raises(CitebotError, match=r"pip install 'citebot\[postgres\]'"):
        open_bot_data("postgresql://bot@db.example/citebot")


def test_the_bot_data_benchmark_runs(tmp_path, monkeypatch):
    from bench import botdata

    (tmp_path / "run").mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # pgserver's lock file
    from bench.common import parse_table

    text = botdata.main(["--smoke", "--out", str(tmp_path / "botdata.md")])
    rows = parse_table(text)
    assert rows[0]["backend"].startswith("SQLite") and len(rows) == 2
    for row in rows:
        if row["answer ms"] != "n/a":
            assert 0 < float(row["answer ms"]) and 0 < float(row["save_answer ms"]), row


def test_an_unreachable_postgresql_is_one_line_without_the_password():
    with pytest.raises(CitebotError) as err:
        open_bot_data("postgresql://bot:s3cret@127.0.0.1:1/citebot?connect_timeout=5")
    text = str(err.value)
    assert text.startswith("cannot connect to the bot's PostgreSQL database")
    assert "s3cret" not in text and "\n" not in text


def test_a_postgresql_user_who_may_not_create_tables_is_one_line(postgres_db):
    import psycopg

    with psycopg.connect(postgres_db, autocommit=True) as db:
        db.execute("CREATE ROLE reader LOGIN")
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with pytest.raises(CitebotError, match="refused its tables: permission denied"):
        open_bot_data(postgres_db.replace("postgres:@", "reader:@"))
