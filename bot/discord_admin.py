"""The Discord bot's admin side: /reindex and /add change the index while the bot serves.

`Updater` decides who may update and runs Library.update on a worker thread (plain asyncio, no
discord.py); `AdminCog` is the glue. Readers never wait for an update: they keep answering from
the live generation and switch to the new one when it is complete.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from index import (
    CitebotError,
    IndexBusy,
    Library,
    UpdateReport,
    Watcher,
    is_web_url,
    local_specs,
    path_within,
)

from . import discord_render as render
from .config import Config, DiscordConfig
from .discord_errors import member_error_text, member_text

log = logging.getLogger("citebot.discord")

NO_PINGS = discord.AllowedMentions.none()
NOT_ADMIN = ("Sorry, only members with the Manage Server permission (or one of the bot's admin "
             "roles) can change the index. You can still ask questions with /ask.")
UPDATE_RUNNING = ("An index update is already running; please try again when it has finished "
                  "(answers keep coming from the current index meanwhile).")
OOPS = "Sorry, the update failed on my side; the index is as it was and the error is in the log."
SHOWN = 5  # sources named per kind in a report; the rest are counted


class Updater:
    """Index updates for the bot's admins: who may, one at a time, off the event loop."""

    def __init__(self, library: Library, specs: Sequence[str], settings: DiscordConfig, *,
                 base: Path | None = None):
        self.library, self.specs, self.settings = library, list(specs), settings
        self.base = base or Path.cwd()

    def may_update(self, *, manage_guild: bool, roles: Iterable[tuple[int, str]]) -> bool:
        """Manage Server (or Administrator) or a configured admin role, by name or id."""
        wanted = {r.strip().casefold() for r in self.settings.admin_roles}
        return manage_guild or any(str(rid) in wanted or name.casefold() in wanted
                                   for rid, name in roles)

    async def reindex(self) -> str:
        """Re-index the configured sources, dropping files gone from their folders."""
        try:
            report = await self._update(self.specs, prune=True)
        except IndexBusy:
            return UPDATE_RUNNING
        except CitebotError as exc:
            return f"Re-indexing stopped: {member_error_text(exc)} The index is as it was."
        except Exception:  # the admin must hear back whatever broke; the log has the traceback
            log.exception("/reindex failed")
            return OOPS
        return summary("Re-indexed", report)

    async def add(self, source: str) -> str:
        """Add or refresh one source: an http(s) URL, or a file inside a source folder."""
        source = source.strip().strip("<>")  # Discord users often paste <url> to hide previews
        try:
            spec = self._spec(source)
            report = await self._update([spec])
        except IndexBusy:
            return UPDATE_RUNNING
        except CitebotError as exc:
            return f"I couldn't add {_inert(source)}: {member_error_text(exc)}"
        except Exception:
            log.exception("/add %r failed", source)
            return OOPS
        if report.duplicates:
            new, twin = report.duplicates[0]
            return (f"Not added: {_shown(new)} has the same text as {_shown(twin)}, which is "
                    f"already indexed.")
        if not report.wrote:
            return f"{_inert(source)} is already indexed and has not changed."
        return summary("Added", report)

    async def _update(self, specs: Sequence[str], *, prune: bool = False) -> UpdateReport:
        # wait=False: a second admin (or the folder watcher) gets "already running" at once
        # instead of a thread blocked on the lock for minutes.
        return await asyncio.to_thread(self.library.update, specs, prune=prune, wait=False)

    def _spec(self, source: str) -> str:
        if is_web_url(source):
            return source
        if not source:
            raise CitebotError("give an http(s) URL of an article")
        # A Discord admin is not necessarily the host's admin: only files in the configured
        # source folders can be added, so /add cannot publish other files of the bot's machine.
        path = Path(source).expanduser()
        path = path if path.is_absolute() else self.base / path
        if not any(path_within(str(path), root) for root in local_specs(self.specs)):
            raise CitebotError("that is not an http(s) URL, and only files inside the "
                               "configured source folders can be added by path")
        if not os.path.exists(path):
            raise CitebotError("no such file in the source folders")
        return os.path.relpath(path) if not os.path.isabs(source) else str(path)


def summary(done: str, r: UpdateReport) -> str:
    """A few lines for Discord: what changed, chunks embedded, time taken."""
    if not r.wrote:
        return (f"{done} in {r.seconds:.1f} s: nothing changed ({len(r.unchanged)} sources "
                f"checked, {r.chunks_total} passages in the index).")
    lines = [f"{done} in {r.seconds:.1f} s: {len(r.added)} added, {len(r.changed)} changed, "
             f"{len(r.removed)} removed, {len(r.unchanged)} unchanged; {r.chunks_embedded} "
             f"passages embedded, {r.chunks_total} in the index."]
    for kind, names in (("Added", r.added), ("Changed", r.changed), ("Removed", r.removed)):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            lines.append(f"{kind}: {', '.join(_shown(n) for n in names[:SHOWN])}{more}")
    lines += [f"Skipped {_shown(a)}: same text as {_shown(b)}" for a, b in r.duplicates[:SHOWN]]
    lines += [f"Skipped: {member_text(why)}" for _, why in r.skipped[:SHOWN]]
    return render.notice("\n".join(lines))


def _inert(text: str) -> str:
    return render.escape(render.clip(text, 200), line_start=False)


def _shown(source: str) -> str:
    """A source as members see it: a URL whole, a file by its name (not the server's path)."""
    return _inert(source if is_web_url(source) else os.path.basename(source))


def watch_sources(library: Library, cfg: Config, specs: Sequence[str]) -> Watcher:
    """Start watching the configured source folders for the bot (when [index] watch is on)."""
    watcher = Watcher(library, specs, quiet=cfg.index.watch_quiet,
                      on_update=lambda r: log.info("sources changed: %d added, %d changed, %d "
                                                   "removed; %d passages embedded", len(r.added),
                                                   len(r.changed), len(r.removed),
                                                   r.chunks_embedded),
                      on_error=lambda e: log.warning("updating from the source folders: %s", e))
    watcher.start()
    return watcher


class AdminCog(commands.Cog):
    """/reindex and /add: glue between Discord and the Updater."""

    def __init__(self, updater: Updater):
        self.updater = updater

    def _admitted(self, interaction: discord.Interaction) -> bool:
        perms = interaction.permissions  # resolved for the member in this channel by Discord
        roles = [(r.id, r.name) for r in getattr(interaction.user, "roles", [])]
        return interaction.guild_id is not None and self.updater.may_update(
            manage_guild=perms.manage_guild or perms.administrator, roles=roles)

    async def _run(self, interaction: discord.Interaction,
                   work: Callable[[], Awaitable[str]]) -> None:
        if not self._admitted(interaction):
            await interaction.response.send_message(NOT_ADMIN, ephemeral=True,
                                                    allowed_mentions=NO_PINGS)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await work()
        try:
            await interaction.edit_original_response(content=render.notice(text),
                                                     allowed_mentions=NO_PINGS)
        except discord.HTTPException as exc:  # e.g. the 15-minute interaction token expired
            log.warning("could not report an update to Discord (%s): %s", exc, text)

    @app_commands.command(name="reindex",
                          description="Admins: re-index the configured sources now.")
    @app_commands.guild_only()
    async def reindex(self, interaction: discord.Interaction) -> None:
        await self._run(interaction, self.updater.reindex)

    @app_commands.command(name="add", description="Admins: add one article to the index.")
    @app_commands.describe(url="The article's http(s) URL (or a file in a source folder)")
    @app_commands.guild_only()
    async def add(self, interaction: discord.Interaction, url: str) -> None:
        await self._run(interaction, partial(self.updater.add, url))
