"""The Discord bot: the real client against a fake Discord.

The pure parts have their own files: test_asker.py, test_fair_queue.py, test_discord_render.py,
test_discord_errors.py, test_botdata.py.

The integration tests run the unmodified discord.py client in its own thread against
tests/fakediscord.py on 127.0.0.1, with the real Library (real model, real FAISS) built once
per session over seeds/. Nothing here reaches the internet.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench.common import SEED_QUESTIONS
from bot import asker as asking
from bot import discord_bot
from bot import discord_render as render
from bot.config import Config, DiscordConfig
from bot.discord_bot import run_bot
from index.ingest import clean_text
from index.records import Answer, Source

from .botharness import assert_fits, huge_answer, plain, running_bot
from .conftest import SEEDS
from .fakediscord import FakeDiscord, Request

QUESTIONS = SEED_QUESTIONS[:10]


# -- shared fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def report(request):
    """Lines shown in pytest's terminal summary (so CI output has the latency numbers)."""
    lines: list[str] = []

    class Reporter:
        def pytest_terminal_summary(self, terminalreporter):
            if lines:
                terminalreporter.write_sep("-", "citebot Discord bot")
                for line in lines:
                    terminalreporter.write_line(line)

    request.config.pluginmanager.register(Reporter(), "citebot-discord-report")
    return lines


@pytest.fixture(scope="module")
def harness(seeds_library, tmp_path_factory):
    """One fake Discord and one running bot, shared by the integration tests."""
    fake = FakeDiscord(heartbeat_ms=500)
    data_path = tmp_path_factory.mktemp("discord-bot") / "bot.sqlite"
    settings = DiscordConfig(guild_id=fake.guild_id, allowed_channels=[fake.general],
                             allow_dms=True, cooldown_questions=5, cooldown_seconds=30,
                             max_concurrent=2, data=str(data_path))
    with running_bot(fake, seeds_library, settings) as run:
        yield run


class Scripted:
    """The real library, except for scripted answers and an optional longer source list."""

    def __init__(self, real, answers: dict[str, Answer] | None = None,
                 sources: list[Source] | None = None):
        self.real, self.answers, self.listing = real, answers or {}, sources

    def ask(self, question: str, *, context=()) -> Answer:
        if question in self.answers:
            return self.answers[question]
        return self.real.ask(question, context=context)

    def sources(self) -> list[Source]:
        return self.listing if self.listing is not None else self.real.sources()


def pings_nobody(body: dict) -> bool:
    """The body's allowed_mentions lets no mention notify anyone (Discord's parse == [])."""
    allowed = body.get("allowed_mentions")
    return (isinstance(allowed, dict) and allowed.get("parse") == []
            and not allowed.get("users") and not allowed.get("roles")
            and not allowed.get("replied_user"))


def seed_text() -> str:
    """All seed articles as ingest cleans them, whitespace collapsed."""
    return " ".join(" ".join(clean_text(p.read_text(encoding="utf-8")).split())
                    for p in SEEDS.glob("*.txt"))


def embed_of(rec: Request) -> dict:
    body = rec.body.get("data", rec.body) if rec.path.endswith("/callback") else rec.body
    return body["embeds"][0]


# -- the real client against the fake Discord ----------------------------------------------------

def test_slash_commands_are_synced_to_the_guild(harness):
    fake = harness.fake
    names = {c["name"]: c for c in fake.commands[fake.guild_id]}
    assert set(names) == {"ask", "sources"}
    assert names["ask"]["options"][0]["name"] == "question"


def test_mention_gets_a_reply_with_verbatim_citations(harness):
    rec = harness.mention("who defended Darroch?")
    assert rec.status == 200
    e = embed_of(rec)
    assert e["title"] == "who defended Darroch?"
    assert "Darroch" in plain(e["description"])
    assert e["fields"], "citations"
    text = seed_text()
    for f in e["fields"]:
        assert re.match(r"\[\d+\] ", f["name"])
        quote = plain(f["value"].split("\n")[0]).strip("“”").rstrip("…")
        assert quote and quote in text, quote
    custom_ids = [c["custom_id"] for row in rec.body["components"] for c in row["components"]]
    assert custom_ids[0].startswith("citebot:more:") and len(custom_ids) == 3


def test_slash_ask_is_deferred_then_edited(harness):
    fake = harness.fake
    inter = fake.slash("ask", user_id=harness.user(), question="why did Darroch resign?")
    cb = fake.callback(inter)
    assert cb.body == {"type": 5}
    assert inter.callback_at - inter.sent_at < 3  # Discord's deadline for the first response
    edit = fake.original_edit(inter)
    assert edit.status == 200 and pings_nobody(edit.body)
    assert "resign" in plain(embed_of(edit)["description"]).lower()


def test_more_sources_is_ephemeral_and_feedback_is_stored(harness):
    fake = harness.fake
    rec = harness.mention("why did Darroch resign?")
    mid = int(rec.response["id"])
    more_id, up_id, down_id = [c["custom_id"] for c in rec.body["components"][0]["components"]]

    more = fake.click(mid, more_id, user_id=harness.user())
    cb = fake.callback(more)
    assert cb.body["type"] == 4 and cb.body["data"]["flags"] == 64
    shown = {f["value"].split("\n")[0] for f in embed_of(rec)["fields"]}
    extra = embed_of(cb)
    assert extra["title"].startswith("More sources")
    assert extra.get("fields") and not shown & {f["value"].split("\n")[0]
                                                for f in extra["fields"]}

    voter, other = harness.user(), harness.user()
    for user, button in ((voter, up_id), (other, down_id), (voter, down_id)):
        cb = fake.callback(fake.click(mid, button, user_id=user))
        assert cb.body["type"] == 4 and cb.body["data"]["flags"] == 64
        assert "Thanks" in cb.body["data"]["content"]
    with sqlite3.connect(harness.data_path) as db:
        rows = db.execute("SELECT question, answer, user_id, vote, created_at FROM feedback "
                          "WHERE user_id IN (?, ?) ORDER BY user_id", (voter, other)).fetchall()
    assert {(r[2], r[3]) for r in rows} == {(voter, -1), (other, -1)}  # a second click re-votes
    assert all(r[0] == "why did Darroch resign?" for r in rows)
    stored = json.loads(rows[0][1])
    assert stored["question"] == "why did Darroch resign?" and stored["citations"]


def test_sources_lists_the_index_and_pages(harness, seeds_library, monkeypatch):
    fake = harness.fake
    inter = fake.slash("sources", user_id=harness.user())
    assert fake.callback(inter).body == {"type": 5, "data": {"flags": 64}}
    e = embed_of(fake.original_edit(inter))
    assert e["title"] == f"Indexed sources ({len(seeds_library.sources())})"
    for s in seeds_library.sources():
        assert render.escape(s.title, line_start=False) in e["description"]
    assert "passages" in e["description"] and "added " in e["description"]

    many = [replace(seeds_library.sources()[0], id=str(i), title=f"Article {i:02}")
            for i in range(23)]
    monkeypatch.setattr(harness.asker, "library", Scripted(seeds_library, sources=many))
    inter = fake.slash("sources", user_id=harness.user(), page=2)
    edit = fake.original_edit(inter)
    assert "Article 10" in embed_of(edit)["description"]
    assert embed_of(edit)["footer"]["text"].startswith("Page 2 of 3")
    buttons = edit.body["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == ["citebot:sources:1", "citebot:sources:3"]
    msg_id = inter.original_id
    click = fake.click(msg_id, "citebot:sources:3", user_id=harness.user())
    assert fake.callback(click).body == {"type": 6}
    page3 = embed_of(fake.original_edit(click))
    assert "Article 22" in page3["description"] and "Page 3 of 3" in page3["footer"]["text"]


def test_nobody_is_pinged(harness):
    fake = harness.fake
    victim = fake.user(harness.user(), "victim")
    rec = harness.mention(f"@everyone @here <@&{fake.bot_role}> <@{victim['id']}> "
                          "who defended Darroch?")
    title = embed_of(rec)["title"]
    assert "@\u200beveryone" in title and "\\<@" in title
    bodies = fake.message_bodies()
    assert len(bodies) >= 2
    for body in bodies:
        assert pings_nobody(body), body


def test_an_answer_longer_than_every_limit_is_cut_to_fit(harness, seeds_library, monkeypatch):
    question = "give me everything " * 50
    monkeypatch.setattr(harness.asker, "library",
                        Scripted(seeds_library,
                                 {" ".join(question.split()): huge_answer(question)}))
    rec = harness.mention(question)
    assert rec.status == 200, rec.response
    assert_fits(embed_of(rec))
    click = harness.fake.click(int(rec.response["id"]),
                               rec.body["components"][0]["components"][0]["custom_id"],
                               user_id=harness.user())
    cb = harness.fake.callback(click)
    assert cb.status == 200 and cb.body["data"]["flags"] == 64
    assert_fits(embed_of(cb))


def test_cooldown_is_answered_politely(harness):
    fake, user = harness.fake, harness.user()
    mids = [fake.say(f"<@{fake.bot_id}> who is Kim Darroch?", user_id=user) for _ in range(6)]
    replies = [fake.reply_to(mid) for mid in mids]
    assert sum(bool(r.body.get("embeds")) for r in replies) == 5
    notices = [r.body["content"] for r in replies if r.body.get("content")]
    assert len(notices) == 1 and "please wait" in notices[0]
    inter = fake.slash("ask", user_id=user, question="who is Kim Darroch?")
    cb = fake.callback(inter)
    assert cb.body["type"] == 4 and cb.body["data"]["flags"] == 64
    assert "please wait" in cb.body["data"]["content"]


def test_channel_allow_list_and_direct_messages(harness, monkeypatch):
    fake, user = harness.fake, harness.user()
    ignored = fake.say(f"<@{fake.bot_id}> who is Kim Darroch?", user_id=user,
                       channel_id=fake.other)
    harness.mention("who is Kim Darroch?", user_id=user)  # answered after the ignored one
    time.sleep(0.2)
    with pytest.raises(TimeoutError):
        fake.reply_to(ignored, timeout=0.1)
    inter = fake.slash("ask", user_id=user, channel_id=fake.other, question="who is Darroch?")
    assert fake.callback(inter).body["data"]["content"] == asking.NOT_HERE

    dm = fake.reply_to(fake.say("who defended Darroch?", user_id=harness.user(), dm=True))
    assert dm.body.get("embeds") and "/channels/" in dm.path
    monkeypatch.setattr(harness.asker.settings, "allow_dms", False)
    dm = fake.reply_to(fake.say("who defended Darroch?", user_id=harness.user(), dm=True))
    assert dm.body["content"] == asking.NO_DMS


def test_resumes_after_a_gateway_disconnect(harness):
    fake = harness.fake
    identifies, resumes = fake.identifies, fake.resumes
    fake.drop(4000)
    fake.wait_until(lambda: fake.resumes == resumes + 1 and fake.connected)
    assert harness.mention("who defended Darroch?").status == 200

    fake.drop(None)  # abrupt: no close frame; the question arrives while the bot is away
    mid = fake.say(f"<@{fake.bot_id}> why did Darroch resign?", user_id=harness.user())
    fake.wait_until(lambda: fake.resumes == resumes + 2)
    assert fake.reply_to(mid).status == 200  # replayed on RESUME, then answered
    assert fake.identifies == identifies  # resumed, never re-identified


def test_burst_of_100_questions(harness, report):
    """100 questions from 20 users (5 each, the cooldown's allowance) and one newcomer."""
    fake, bot_id = harness.fake, harness.fake.bot_id
    users = [harness.user() for _ in range(20)]
    started = time.monotonic()
    sent = []
    for i in range(100):
        mid = fake.say(f"<@{bot_id}> {QUESTIONS[i % len(QUESTIONS)]}", user_id=users[i % 20])
        sent.append((mid, time.monotonic()))
    ids = {str(mid) for mid, _ in sent}

    def replied() -> int:
        return sum(1 for r in list(fake.requests) if r.method == "POST"
                   and str((r.body or {}).get("message_reference", {}).get("message_id")) in ids)

    fake.wait_until(lambda: replied() >= 5, timeout=600)
    newcomer = fake.say(f"<@{bot_id}> who defended Darroch?", user_id=harness.user())
    newcomer_at = time.monotonic()
    slash = fake.slash("ask", user_id=harness.user(), question="who is Kim Darroch?")
    fake.callback(slash)
    newcomer_reply = fake.reply_to(newcomer, timeout=600)
    replies = {mid: fake.reply_to(mid, timeout=900) for mid, _ in sent}
    finished = max(r.at for r in replies.values())

    assert all(r.status == 200 and r.body.get("embeds") for r in replies.values())
    latencies = sorted(replies[mid].at - at for mid, at in sent)
    median, worst = statistics.median(latencies), latencies[-1]
    beats = [b for b in fake.heartbeats if started <= b <= finished]
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)] or [0.0]
    line = (f"burst: 100 questions answered in {finished - started:.1f} s; reply latency "
            f"median {median:.2f} s, worst {worst:.2f} s; newcomer answered in "
            f"{newcomer_reply.at - newcomer_at:.2f} s, {finished - newcomer_reply.at:.1f} s "
            f"before the burst finished; /ask deferred in "
            f"{(slash.callback_at - slash.sent_at) * 1000:.0f} ms; {len(beats)} heartbeats "
            f"ACKed, largest gap {max(gaps):.2f} s (interval 0.5 s)")
    print("\n" + line)
    report.append(line)
    assert newcomer_reply.at - newcomer_at < (finished - started) / 2
    assert slash.callback_at - slash.sent_at < 1.0, "a slash command was not deferred at once"
    assert fake.original_edit(slash, timeout=600).status == 200
    assert max(gaps) < 2.0, "the event loop stalled: heartbeats were late"
    assert len(beats) >= (finished - started) / 0.5 * 0.6
    assert harness.bot.latency < 2.0


# -- the entry point -----------------------------------------------------------------------------

def _config(tmp_path: Path, fake: FakeDiscord | None = None) -> Config:
    cfg = Config(base_dir=tmp_path)
    cfg.discord.data = str(tmp_path / "bot.sqlite")
    if fake:
        cfg.discord.guild_id = fake.guild_id
    return cfg


def test_run_bot_without_a_token_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert run_bot(_config(tmp_path)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DISCORD_TOKEN" in err and "README" in err


def test_run_bot_with_a_rejected_token_fails_in_one_line(tmp_path, monkeypatch, capsys,
                                                         seeds_library):
    fake = FakeDiscord().start()
    monkeypatch.setenv("DISCORD_TOKEN", "wrong-secret-token")
    monkeypatch.setattr(discord_bot, "open_library", lambda cfg, index=None: seeds_library)
    try:
        with fake.redirect():
            assert run_bot(_config(tmp_path, fake)) == 1
    finally:
        fake.stop()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rejected the token" in err
    assert "wrong-secret-token" not in err and "Traceback" not in err


def test_run_bot_shuts_down_cleanly_on_sigterm(tmp_path, monkeypatch, seeds_library):
    fake = FakeDiscord().start()
    monkeypatch.setenv("DISCORD_TOKEN", fake.token)
    monkeypatch.setattr(discord_bot, "open_library", lambda cfg, index=None: seeds_library)

    def terminate_when_connected() -> None:
        fake.wait_until(lambda: fake.identifies == 1 and fake.connected)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_connected, daemon=True).start()
    try:
        with fake.redirect():
            started = time.monotonic()
            assert run_bot(_config(tmp_path, fake)) == 0
            assert time.monotonic() - started < 30
    finally:
        fake.stop()
    assert (tmp_path / "bot.sqlite").exists()
