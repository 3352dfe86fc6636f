"""bot/asker.py: who may ask where and how often, and answering without Discord.

Plain asyncio with a scripted library (no model, no Discord); BotData is the real SQLite file.
"""

from __future__ import annotations

import asyncio

import pytest

from bot import asker as asking
from bot.asker import Asker, Cooldown, Place, mention_question
from bot.botdata import BotData
from bot.config import ConversationConfig, DiscordConfig
from index.errors import IndexCorrupt
from index.records import Answer


class Recording:
    """A library that answers every question and remembers the context it was given."""

    def __init__(self, fail: Exception | None = None):
        self.contexts: list[tuple[str, tuple[str, ...]]] = []
        self.fail = fail

    def ask(self, question: str, *, context=()) -> Answer:
        if self.fail:
            raise self.fail
        self.contexts.append((question, tuple(t.question for t in context)))
        return Answer(question=question, answered=False, answer="")

    def sources(self):
        return []


def test_cooldown_window():
    now = [0.0]
    cd = Cooldown(2, 30, clock=lambda: now[0])
    assert cd.wait(1) == 0 and cd.wait(1) == 0
    assert cd.wait(1) == pytest.approx(30)
    assert cd.wait(2) == 0  # per user
    now[0] = 30.5
    assert cd.wait(1) == 0


def test_mention_question():
    assert mention_question("<@42> who defended Darroch?", 42) == "who defended Darroch?"
    assert mention_question("hey <@!42>  why?", 42) == "hey why?"
    assert mention_question("<@&7> why?", 42, (7,)) == "why?"
    assert mention_question("no mention", 42) is None
    assert mention_question("@everyone why?", 42) is None
    assert mention_question("in a DM", 42, is_dm=True) == "in a DM"


def test_refusals():
    asker = Asker(None, None, DiscordConfig(allowed_channels=[5], allow_dms=False))
    assert asker.refusal(Place(5)) is None
    assert asker.refusal(Place(6, parent_id=5)) is None  # a thread of an allowed channel
    assert asker.refusal(Place(6)) == asking.NOT_HERE
    assert asker.refusal(Place(9, is_dm=True)) == asking.NO_DMS
    asker.close()


def test_follow_ups_see_only_their_own_users_recent_turns_in_that_channel(tmp_path):
    now = [0.0]
    library, data = Recording(), BotData(tmp_path / "bot.sqlite")
    asker = Asker(library, data, DiscordConfig(), ConversationConfig(turns=2, idle_minutes=1),
                  clock=lambda: now[0])

    async def ask(question: str, user: int, channel: int) -> None:
        reply = await asker.ask(question, user_id=user, channel_id=channel)
        assert reply.answer is not None and data.answer(reply.answer_id) == reply.answer

    async def main() -> None:
        for q in ("a", "b", "c"):
            await ask(q, 1, 10)
        await ask("other user", 2, 10)
        await ask("other channel", 1, 11)
        await ask("d", 1, 10)
        now[0] = 61  # a minute of quiet ends the conversation
        await ask("e", 1, 10)

    try:
        asyncio.run(main())
    finally:
        asker.close()
        data.close()
    seen = dict(library.contexts)
    assert seen["c"] == ("a", "b") and seen["d"] == ("b", "c")  # the last two turns only
    assert seen["other user"] == () and seen["other channel"] == ()
    assert seen["e"] == ()


def test_a_library_error_reaches_the_member_without_commands_or_paths(tmp_path):
    library = Recording(IndexCorrupt("/srv/citebot/index/gen-3/index.sqlite is damaged: "
                                     "rebuild with `citebot index build --rebuild`"))
    data = BotData(tmp_path / "bot.sqlite")
    asker = Asker(library, data, DiscordConfig())
    try:
        reply = asyncio.run(asker.ask("who?", user_id=1, channel_id=2))
    finally:
        asker.close()
        data.close()
    assert reply.answer is None
    assert reply.notice.startswith("Sorry, I can't answer that: the index needs rebuilding")
    assert "/srv" not in reply.notice and "citebot index" not in reply.notice


def test_buttons_read_stored_answers_and_say_when_the_data_is_unreachable(tmp_path):
    data = BotData(tmp_path / "bot.sqlite")
    asker = Asker(Recording(), data, DiscordConfig())
    answer_id = data.save_answer(Answer(question="q?", answered=False, answer=""))

    async def main() -> list:
        shown = [await asker.more(answer_id), await asker.more(answer_id + 1),
                 await asker.vote(answer_id, 7, 1), await asker.vote(answer_id + 1, 7, 1)]
        data.close()  # as if the database went away
        return shown + [await asker.more(answer_id), await asker.vote(answer_id, 7, -1)]

    try:
        more, gone, thanks, unknown, more_down, vote_down = asyncio.run(main())
    finally:
        asker.close()
    assert isinstance(more, dict) and more["title"].startswith("More sources")
    assert gone == unknown == asking.EXPIRED and thanks == asking.THANKS[1]
    assert more_down == vote_down == asking.NO_DATA
