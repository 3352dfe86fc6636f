"""The Discord bot: a mention or /ask gets an answer with numbered, verbatim citations.

Three layers: `Asker` decides and answers (plain asyncio, no discord.py); `discord_render`
draws embeds (pure); the cog and the buttons are glue that turn Discord events into `Asker`
calls and send what the renderer drew. Every message goes out with no allowed mentions.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import discord
from discord import app_commands
from discord.ext import commands

from index import Answer, CitebotError, ConversationStore, Source, Turn

from . import discord_render as render
from .app import open_library, source_specs
from .botdata import BotData
from .config import Config, ConversationConfig, DiscordConfig
from .discord_admin import NO_PINGS, AdminCog, Updater, watch_sources
from .errors_text import for_members, for_terminal

log = logging.getLogger("citebot.discord")

MAX_WAITING = 500  # questions queued beyond this are turned away politely

NO_TOKEN = ("citebot bot: no Discord token. Create a bot at "
            "https://discord.com/developers/applications, then set DISCORD_TOKEN (or [discord] "
            "token in config.toml); see \"Discord bot\" in the README.")
BAD_TOKEN = ("citebot bot: Discord rejected the token. Copy a fresh one from the Bot page of "
             "your application into DISCORD_TOKEN; see \"Discord bot\" in the README.")
EMPTY = "Ask me a question after the mention, for example: @citebot who defended Darroch?"
BUSY = "I'm answering a lot of questions right now; please ask again in a minute."
OOPS = "Sorry, something went wrong on my side while answering; the error is in the bot's log."
NOT_HERE = "I only answer questions in the channels I've been set up for."
NO_DMS = "I don't answer direct messages; ask me in a server channel."
EXPIRED = "I no longer have that answer; please ask the question again."
THANKS = {1: "Thanks for the feedback 👍", -1: "Thanks, noted 👎. Rephrasing the question "
          "sometimes finds a better passage."}


class Answerer(Protocol):
    """What the bot needs of index.library.Library."""

    def ask(self, question: str, *, context: tuple[Turn | str, ...] = ()) -> Answer: ...
    def sources(self) -> list[Source]: ...


# -- rules: who may ask, how often, in what order -----------------------------------------------

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


class Conversations:
    """Each user's last few turns per channel (never shared between users), so that follow-up
    questions have context; index.conversation keeps them, on the bot's clock."""

    def __init__(self, keep: int = 3, ttl: float = 600.0, size: int = 5000,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.clock = ConversationStore(keep, ttl, size), clock

    def recent(self, user_id: int, channel_id: int) -> tuple[Turn, ...]:
        return self.store.context((user_id, channel_id), self.clock())

    def remember(self, user_id: int, channel_id: int, question: str,
                 answer: Answer | None = None) -> None:
        self.store.remember((user_id, channel_id), question, answer, self.clock())


class Busy(Exception):
    """Too many questions are already waiting."""


class FairQueue:
    """Runs blocking calls on a few threads. Waiting callers take turns by key (the user), so
    one user's burst does not hold up anyone else: a newcomer goes next, not last."""

    def __init__(self, workers: int, max_waiting: int = MAX_WAITING):
        self.workers, self.max_waiting = max(1, workers), max_waiting
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="citebot-ask")
        self._running = 0
        self._waiting: dict[Hashable, deque[asyncio.Future]] = {}  # in order of arrival
        self._turns: Counter = Counter()  # calls started per key while the pool has been busy

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    async def run(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        if self._running < self.workers and not self._waiting:
            self._running += 1
            self._turns[key] += 1
        else:
            await self._wait_turn(key, loop)
        try:
            return await loop.run_in_executor(self._executor, fn)
        finally:
            self._hand_over()

    async def _wait_turn(self, key: Hashable, loop: asyncio.AbstractEventLoop) -> None:
        if self.waiting >= self.max_waiting:
            raise Busy
        if key not in self._waiting:  # no banked credit: start level with those waiting
            floor = min((self._turns[k] for k in self._waiting), default=self._turns[key])
            self._turns[key] = max(self._turns[key], floor)
        turn = loop.create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._hand_over()  # the slot was ours already: pass it on
            else:
                queue = self._waiting.get(key)
                if queue and turn in queue:
                    queue.remove(turn)
                    if not queue:
                        del self._waiting[key]
            raise

    def _hand_over(self) -> None:
        """A call finished: give its thread to the waiting key with the fewest turns; among
        equals, the one with the fewest waiting (a newcomer), then the earliest."""
        key = min(self._waiting, key=lambda k: (self._turns[k], len(self._waiting[k])),
                  default=None)
        if key is None:
            self._running -= 1
            if not self._running:
                self._turns.clear()
            return
        queue = self._waiting[key]
        turn = queue.popleft()
        if not queue:
            del self._waiting[key]
        self._turns[key] += 1
        turn.set_result(None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- answering, without Discord ------------------------------------------------------------------

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
                 conversation: ConversationConfig | None = None):
        self.library, self.data, self.settings = library, data, settings
        self.queue = FairQueue(settings.max_concurrent)
        self.cooldown = Cooldown(settings.cooldown_questions, settings.cooldown_seconds)
        conv = conversation or ConversationConfig()
        self.conversations = Conversations(conv.turns, conv.idle_minutes * 60)

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
        context = self.conversations.recent(user_id, channel_id)
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
        self.conversations.remember(user_id, channel_id, question, answer)
        return Reply(answer=answer, answer_id=answer_id, embed=embed)

    def _keep_and_draw(self, answer: Answer, user_id: int, channel_id: int) -> tuple[int, dict]:
        """Store the answer and draw its embed (a worker thread's job: both can take a while)."""
        answer_id = self.data.save_answer(answer, user_id=user_id, channel_id=channel_id)
        return answer_id, render.answer_embed(answer)

    async def more(self, answer_id: int) -> dict | None:
        """The embed of the next citations of a stored answer; None if it is unknown."""
        def draw() -> dict | None:
            answer = self.data.answer(answer_id)
            return render.more_embed(answer) if answer else None
        return await asyncio.to_thread(draw)

    async def vote(self, answer_id: int, user_id: int, vote: int) -> str:
        known = await asyncio.to_thread(self.data.vote, answer_id, user_id, vote)
        return THANKS[vote] if known else EXPIRED

    async def sources(self) -> list[Source]:
        try:
            return await asyncio.to_thread(self.library.sources)
        except CitebotError as exc:
            log.warning("listing sources failed: %s", exc)
            return []

    def close(self) -> None:
        self.queue.close()


def sorry(exc: CitebotError) -> str:
    return f"Sorry, I can't answer that: {render.full_stop(for_members(exc).rstrip())}"


def mention_question(content: str, bot_id: int, role_ids: tuple[int, ...] = (),
                     *, is_dm: bool = False) -> str | None:
    """The question in a message addressed to the bot (mention stripped), or None if not."""
    roles = "".join(f"|<@&{r}>" for r in role_ids)
    mention = re.compile(rf"<@!?{bot_id}>{roles}")
    if not is_dm and not mention.search(content):
        return None
    return " ".join(mention.sub(" ", content).split())


# -- Discord glue ----------------------------------------------------------------------------------

def answer_payload(reply: Reply) -> dict:
    """Keyword arguments for send/edit: the answer embed with its buttons, or the notice."""
    if reply.answer is None:
        return {"content": render.notice(reply.notice or OOPS), "embed": None, "view": None,
                "allowed_mentions": NO_PINGS}
    view = discord.ui.View(timeout=None)
    view.add_item(MoreButton(reply.answer_id, disabled=not reply.answer.more))
    view.add_item(VoteButton(reply.answer_id, 1))
    view.add_item(VoteButton(reply.answer_id, -1))
    embed = reply.embed or render.answer_embed(reply.answer)
    return {"content": None, "embed": discord.Embed.from_dict(embed), "view": view,
            "allowed_mentions": NO_PINGS}


def sources_payload(sources: list[Source], page: int) -> dict:
    pages = render.page_count(len(sources))
    page = min(max(page, 1), pages)
    view = None
    if pages > 1:
        view = discord.ui.View(timeout=None)
        view.add_item(PageButton(page - 1, "◀ Prev", disabled=page <= 1))
        view.add_item(PageButton(page + 1, "Next ▶", disabled=page >= pages))
    return {"embed": discord.Embed.from_dict(render.sources_embed(sources, page)), "view": view,
            "allowed_mentions": NO_PINGS}


def place_of(channel: Any, *, is_dm: bool) -> Place:
    return Place(getattr(channel, "id", 0), getattr(channel, "parent_id", None), is_dm)


class MoreButton(discord.ui.DynamicItem[discord.ui.Button], template=r"citebot:more:(?P<id>\d+)"):
    """Shows the next citations, only to whoever clicks."""

    def __init__(self, answer_id: int, *, disabled: bool = False):
        super().__init__(discord.ui.Button(label="More sources", emoji="📚", disabled=disabled,
                                           custom_id=f"citebot:more:{answer_id}"))
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        embed = await interaction.client.asker.more(self.answer_id)
        kwargs = {"embed": discord.Embed.from_dict(embed)} if embed else {"content": EXPIRED}
        await interaction.response.send_message(**kwargs, ephemeral=True,
                                                allowed_mentions=NO_PINGS)


class VoteButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"citebot:vote:(?P<vote>up|down):(?P<id>\d+)"):
    """👍 or 👎 on an answer, stored with the question and the answer."""

    def __init__(self, answer_id: int, vote: int):
        word = "up" if vote > 0 else "down"
        super().__init__(discord.ui.Button(emoji="👍" if vote > 0 else "👎",
                                           custom_id=f"citebot:vote:{word}:{answer_id}"))
        self.answer_id, self.vote = answer_id, vote

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["id"]), 1 if match["vote"] == "up" else -1)

    async def callback(self, interaction: discord.Interaction) -> None:
        text = await interaction.client.asker.vote(self.answer_id, interaction.user.id, self.vote)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NO_PINGS)


class PageButton(discord.ui.DynamicItem[discord.ui.Button],
                 template=r"citebot:sources:(?P<page>\d+)"):
    """Turns the /sources listing to another page."""

    def __init__(self, page: int, label: str = "Page", *, disabled: bool = False):
        super().__init__(discord.ui.Button(label=label, disabled=disabled,
                                           custom_id=f"citebot:sources:{page}"))
        self.page = page

    @classmethod
    async def from_custom_id(cls, interaction, item, match):
        return cls(int(match["page"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        sources = await interaction.client.asker.sources()
        await interaction.edit_original_response(**sources_payload(sources, self.page))


class CitebotCog(commands.Cog):
    """Mentions, /ask and /sources: glue between Discord and the Asker."""

    def __init__(self, bot: CitebotBot):
        self.bot, self.asker = bot, bot.asker

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        is_dm = message.guild is None
        roles = (message.guild.self_role.id,) if not is_dm and message.guild.self_role else ()
        question = mention_question(message.content, self.bot.user.id, roles, is_dm=is_dm)
        if question is None or message.author.bot:
            return
        notice = self.asker.refusal(place_of(message.channel, is_dm=is_dm))
        if notice and not is_dm:
            return  # stay silent in channels the bot is not meant to talk in
        notice = notice or self.asker.admit(message.author.id)
        reply = Reply(notice=notice) if notice else await self.asker.ask(
            question, user_id=message.author.id, channel_id=message.channel.id)
        await message.channel.send(reference=message.to_reference(fail_if_not_exists=False),
                                   **answer_payload(reply))

    @app_commands.command(name="ask", description="Ask a question; the answer quotes the sources.")
    @app_commands.describe(question="What you want to know, e.g. who defended Darroch?")
    async def ask(self, interaction: discord.Interaction, question: str) -> None:
        place = place_of(interaction.channel, is_dm=interaction.guild_id is None)
        notice = self.asker.refusal(place) or self.asker.admit(interaction.user.id)
        if notice:
            await interaction.response.send_message(notice, ephemeral=True,
                                                    allowed_mentions=NO_PINGS)
            return
        await interaction.response.defer(thinking=True)
        reply = await self.asker.ask(question, user_id=interaction.user.id,
                                     channel_id=interaction.channel_id or 0)
        await interaction.edit_original_response(**answer_payload(reply))

    @app_commands.command(name="sources", description="List the articles the answers come from.")
    @app_commands.describe(page="Page of the listing (10 sources per page)")
    async def sources(self, interaction: discord.Interaction,
                      page: app_commands.Range[int, 1, 10_000] = 1) -> None:
        notice = self.asker.refusal(place_of(interaction.channel,
                                             is_dm=interaction.guild_id is None))
        if notice:
            await interaction.response.send_message(notice, ephemeral=True,
                                                    allowed_mentions=NO_PINGS)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        sources = await self.asker.sources()
        await interaction.edit_original_response(**sources_payload(sources, page))


class CitebotBot(commands.Bot):
    """The client: gets its Asker and settings injected; setup_hook wires and syncs commands."""

    def __init__(self, asker: Asker, settings: DiscordConfig, updater: Updater | None = None,
                 **options: Any):
        # No privileged intent: Discord delivers the text of messages that mention the bot
        # (and of DMs) without Message Content; slash commands need no intent at all.
        super().__init__(command_prefix=commands.when_mentioned, help_command=None,
                         intents=discord.Intents.default(), allowed_mentions=NO_PINGS, **options)
        self.asker, self.settings, self.updater = asker, settings, updater

    async def setup_hook(self) -> None:
        await self.add_cog(CitebotCog(self))
        if self.updater is not None:
            await self.add_cog(AdminCog(self.updater))
        self.add_dynamic_items(MoreButton, VoteButton, PageButton)
        guild = discord.Object(self.settings.guild_id) if self.settings.guild_id else None
        if guild:
            self.tree.copy_global_to(guild=guild)
        try:
            await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:  # mentions still work without slash commands
            log.warning("could not register slash commands (%s); was the bot invited with "
                        "the applications.commands scope?", exc)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: the cog treats a mention as a question."""



# -- entry point -----------------------------------------------------------------------------------

async def serve(bot: CitebotBot, token: str) -> int:
    """Run the bot until it is closed (SIGINT/SIGTERM close it cleanly); the exit code."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, lambda: loop.create_task(bot.close()))
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        async with bot:
            await bot.start(token)
    except discord.LoginFailure:
        print(BAD_TOKEN, file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired:
        print("citebot bot: Discord refused an intent the bot asked for.", file=sys.stderr)
        return 1
    except discord.ConnectionClosed as exc:
        print(f"citebot bot: Discord closed the connection (code {exc.code}).", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    return 0


def run_bot(cfg: Config, index_override: str | None = None) -> int:
    """`citebot bot`: answer questions on Discord until interrupted; returns the exit code."""
    token = cfg.discord_token()
    if not token:
        print(NO_TOKEN, file=sys.stderr)
        return 1
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        library = open_library(cfg, index_override)
    except CitebotError as exc:
        print(f"citebot bot: {for_terminal(exc)}", file=sys.stderr)
        return 1
    data = BotData(cfg.path(cfg.discord.data))
    asker = Asker(library, data, cfg.discord, cfg.conversation)
    specs = source_specs(cfg)
    updater = Updater(library, specs, cfg.discord, base=cfg.base_dir)
    watcher = watch_sources(library, cfg, specs) if cfg.index.watch else None
    try:
        return asyncio.run(serve(CitebotBot(asker, cfg.discord, updater), token))
    finally:
        if watcher:
            watcher.stop()
        asker.close()
        data.close()
