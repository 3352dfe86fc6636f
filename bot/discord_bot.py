"""The Discord bot: a mention or /ask gets an answer with numbered, verbatim citations.

This module is the discord.py glue only. `bot.asker.Asker` decides and answers (plain asyncio,
no discord.py); `discord_render` draws embeds (pure); the cog and the buttons here turn Discord
events into `Asker` calls and send what the renderer drew. Every message goes out with no
allowed mentions.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from index import CitebotError, Source

from . import discord_render as render
from .app import open_library, source_specs
from .asker import OOPS, Asker, Place, Reply, mention_question
from .botdata import open_bot_data
from .config import Config, DiscordConfig
from .discord_admin import NO_PINGS, AdminCog, Updater, watch_sources
from .errors_text import for_terminal

log = logging.getLogger("citebot.discord")

NO_TOKEN = ("citebot bot: no Discord token. Create a bot at "
            "https://discord.com/developers/applications, then set DISCORD_TOKEN (or [discord] "
            "token in config.toml); see \"Discord bot\" in the README.")
BAD_TOKEN = ("citebot bot: Discord rejected the token. Copy a fresh one from the Bot page of "
             "your application into DISCORD_TOKEN; see \"Discord bot\" in the README.")


# -- payloads and buttons ------------------------------------------------------------------------

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
        more = await interaction.client.asker.more(self.answer_id)
        kwargs = ({"embed": discord.Embed.from_dict(more)} if isinstance(more, dict)
                  else {"content": more})
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


# -- the cog and the clients ---------------------------------------------------------------------

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
        if not syncs_commands(self.settings):
            return
        try:
            await self.tree.sync(guild=guild)
        except discord.HTTPException as exc:  # mentions still work without slash commands
            log.warning("could not register slash commands (%s); was the bot invited with "
                        "the applications.commands scope?", exc)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: the cog treats a mention as a question."""


class ShardedCitebotBot(CitebotBot, commands.AutoShardedBot):
    """The same client on shards: one gateway connection per shard of this process's range."""


def make_bot(asker: Asker, settings: DiscordConfig, updater: Updater | None = None,
             **options: Any) -> CitebotBot:
    """The client settings ask for: one gateway connection, or shard_ids of shard_count."""
    if not settings.shard_count and not settings.shard_ids:
        return CitebotBot(asker, settings, updater, **options)
    return ShardedCitebotBot(asker, settings, updater, shard_count=settings.shard_count,
                             shard_ids=check_shards(settings) or None, **options)


def check_shards(settings: DiscordConfig) -> list[int]:
    """The configured shard ids, checked against shard_count (CitebotError if they do not fit)."""
    count, ids = settings.shard_count, list(settings.shard_ids)
    if count < 1:
        raise CitebotError("config key discord.shard_ids needs discord.shard_count, the number "
                           "of shards over all the bot's processes")
    wrong = [i for i in ids if not isinstance(i, int) or not 0 <= i < count]
    if wrong or len(set(ids)) != len(ids):
        raise CitebotError(f"config key discord.shard_ids should list different shards from 0 "
                           f"to {count - 1} (discord.shard_count is {count}), not {ids}")
    return ids


def syncs_commands(settings: DiscordConfig) -> bool:
    """Whether this process registers the slash commands: with shards, the one running shard 0
    does it for all (they are the same everywhere; one sync spares Discord's rate limit)."""
    return not settings.shard_count or not settings.shard_ids or 0 in settings.shard_ids


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
        if cfg.discord.shard_count or cfg.discord.shard_ids:
            check_shards(cfg.discord)
        library = open_library(cfg, index_override)
        data = open_bot_data(cfg.discord.data, cfg.base_dir)
    except CitebotError as exc:
        print(f"citebot bot: {for_terminal(exc)}", file=sys.stderr)
        return 1
    asker = Asker(library, data, cfg.discord, cfg.conversation)
    specs = source_specs(cfg)
    updater = Updater(library, specs, cfg.discord, base=cfg.base_dir)
    watcher = watch_sources(library, cfg, specs) if cfg.index.watch else None
    try:
        return asyncio.run(serve(make_bot(asker, cfg.discord, updater), token))
    finally:
        if watcher:
            watcher.stop()
        asker.close()
        data.close()
