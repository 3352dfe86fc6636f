"""Answering for the bot, without Discord: who may ask where and how often, then the answer.

`Asker` is plain asyncio: the cog hands it a question with the asker's ids and sends back the
`Reply` it gets. Questions run on a `FairQueue` off the event loop; each user's recent turns in
a channel (never shared between users) give follow-up questions their context; answers are
stored in `BotData` so that the buttons under them work after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from index import Answer, CitebotError, ConversationStore, Source, Turn

from . import discord_render as render
from .botdata import BotData
from .config import ConversationConfig, DiscordConfig
from .discord_errors import member_error_text
from .fair_queue import Busy, FairQueue

log = logging.getLogger("citebot.discord")

CONVERSATIONS = 5000  # users' conversations kept at once; the longest idle are forgotten first

EMPTY = "Ask me a question after the mention, for example: @citebot who defended Darroch?"
BUSY = "I'm answering a lot of questions right now; please ask again in a minute."
OOPS = "Sorry, something went wrong on my side while answering; the error is in the bot's log."
NOT_HERE = "I only answer questions in the channels I've been set up for."
NO_DMS = "I don't answer direct messages; ask me in a server channel."
EXPIRED = "I no longer have that answer; please ask the question again."
NO_DATA = "Sorry, I can't reach my records right now; please try again in a minute."
THANKS = {1: "Thanks for the feedback 👍", -1: "Thanks, noted 👎. Rephrasing the question "
          "sometimes finds a better passage."}


class Answerer(Protocol):
    """What the bot needs of index.library.Library."""

    def ask(self, question: str, *, context: tuple[Turn | str, ...] = ()) -> Answer: ...
    def sources(self) -> list[Source]: ...


# -- rules: who may ask, how often -----------------------------------------------------------

@dataclass(frozen=True)
class Place:
    """Where a question was asked."""

    channel_id: int
    parent_id: int | None = None  # a thread's channel
    is_dm: bool = False


class Cooldown:
    """At most `count` questions per user in any `seconds`-long window."""

    def __init__(self, count: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.count, self.seconds, self.clock = count, seconds, clock
        self._times: dict[int, deque[float]] = {}

    def wait(self, user_id: int) -> float:
        """0 and the question is counted, or the seconds until the user may ask again."""
        if self.count <= 0:
            return 0.0
        now = self.clock()
        times = self._times.setdefault(user_id, deque())
        while times and times[0] <= now - self.seconds:
            times.popleft()
        if len(times) >= self.count:
            return times[0] + self.seconds - now
        times.append(now)
        if len(self._times) > 10_000:  # forget users who have been quiet for a whole window
            self._times = {u: t for u, t in self._times.items() if t and t[-1] > now - self.seconds}
        return 0.0


def mention_question(content: str, bot_id: int, role_ids: tuple[int, ...] = (),
                     *, is_dm: bool = False) -> str | None:
    """The question in a message addressed to the bot (mention stripped), or None if not."""
    roles = "".join(f"|<@&{r}>" for r in role_ids)
    mention = re.compile(rf"<@!?{bot_id}>{roles}")
    if not is_dm and not mention.search(content):
        return None
    return " ".join(mention.sub(" ", content).split())


# -- answering ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """What to send back: a short notice, or an answer (stored under answer_id for the
    buttons) with its embed already drawn."""

    notice: str | None = None
    answer: Answer | None = None
    answer_id: int = 0
    embed: dict | None = None


class Asker:
    """Answers questions for the bot: rules, fair queueing off the event loop, storage."""

    def __init__(self, library: Answerer, data: BotData, settings: DiscordConfig,
                 conversation: ConversationConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.library, self.data, self.settings, self.clock = library, data, settings, clock
        self.queue = FairQueue(settings.max_concurrent)
        self.cooldown = Cooldown(settings.cooldown_questions, settings.cooldown_seconds, clock)
        conv = conversation or ConversationConfig()
        # Keyed by (user, channel): two users in one channel never share a conversation.
        self.conversations = ConversationStore(conv.turns, conv.idle_minutes * 60, CONVERSATIONS)

    def refusal(self, place: Place) -> str | None:
        """Why the bot does not answer here, or None."""
        if place.is_dm:
            return None if self.settings.allow_dms else NO_DMS
        allowed = self.settings.allowed_channels
        if allowed and place.channel_id not in allowed and place.parent_id not in allowed:
            return NOT_HERE
        return None

    def admit(self, user_id: int) -> str | None:
        """None when the user may ask now (the question is counted), else a polite wait."""
        wait = self.cooldown.wait(user_id)
        if not wait:
            return None
        return (f"You've asked {self.settings.cooldown_questions} questions in the last "
                f"{self.settings.cooldown_seconds:g} seconds; please wait {max(1, round(wait))} "
                f"more seconds before the next one.")

    async def ask(self, question: str, *, user_id: int, channel_id: int) -> Reply:
        question = question.strip()
        if not question:
            return Reply(notice=EMPTY)
        context = self.conversations.context((user_id, channel_id), self.clock())
        try:
            answer = await self.queue.run(
                user_id, partial(self.library.ask, question, context=context))
            answer_id, embed = await asyncio.to_thread(self._keep_and_draw, answer,
                                                       user_id, channel_id)
        except Busy:
            return Reply(notice=BUSY)
        except CitebotError as exc:
            return Reply(notice=sorry(exc))
        except Exception:  # the asker must hear back whatever broke; the log gets the traceback
            log.exception("answering %r failed", question)
            return Reply(notice=OOPS)
        self.conversations.remember((user_id, channel_id), question, answer, self.clock())
        return Reply(answer=answer, answer_id=answer_id, embed=embed)

    def _keep_and_draw(self, answer: Answer, user_id: int, channel_id: int) -> tuple[int, dict]:
        """Store the answer and draw its embed (a worker thread's job: both can take a while)."""
        answer_id = self.data.save_answer(answer, user_id=user_id, channel_id=channel_id)
        return answer_id, render.answer_embed(answer)

    async def more(self, answer_id: int) -> dict | str:
        """The embed of the next citations of a stored answer, or a notice why not."""
        def draw() -> dict | str:
            answer = self.data.answer(answer_id)
            return render.more_embed(answer) if answer else EXPIRED
        return await self._with_data(draw)

    async def vote(self, answer_id: int, user_id: int, vote: int) -> str:
        """Record a 👍/👎; the thanks (or a notice) for the voter."""
        def record() -> str:
            return THANKS[vote] if self.data.vote(answer_id, user_id, vote) else EXPIRED
        return await self._with_data(record)

    async def _with_data(self, call: Callable[[], dict | str]) -> dict | str:
        # The bot data may be a database server that is down for a moment: the member hears so.
        try:
            return await asyncio.to_thread(call)
        except Exception:
            log.exception("the bot's data could not be read or written")
            return NO_DATA

    async def sources(self) -> list[Source]:
        try:
            return await asyncio.to_thread(self.library.sources)
        except CitebotError as exc:
            log.warning("listing sources failed: %s", exc)
            return []

    def close(self) -> None:
        self.queue.close()


def sorry(exc: CitebotError) -> str:
    return f"Sorry, I can't answer that: {member_error_text(exc)}"
