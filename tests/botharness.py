"""The real citebot bot running on a thread against tests/fakediscord.py, for tests and docs.

tests/fakediscord.py fakes Discord and knows nothing of citebot; this wires citebot's own pieces
(BotData, Asker, CitebotBot, optionally an Updater) the way `citebot bot` does, and tears them
down in the right order, so each user does not repeat it.

    fake = FakeDiscord(heartbeat_ms=500)
    settings = DiscordConfig(guild_id=fake.guild_id, data=str(tmp / "bot.sqlite"))
    with running_bot(fake, library, settings) as run:
        reply = run.mention("who defended Darroch?")
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.common import ROOT  # not from conftest: see bot_process
from bot import discord_render as render
from bot.asker import Answerer, Asker
from bot.botdata import BotData, open_bot_data
from bot.config import DiscordConfig
from bot.discord_admin import Updater
from bot.discord_bot import CitebotBot, make_bot
from index.records import Answer, Citation, Source

from .fakediscord import BotThread, FakeDiscord, Request, invalid_message


@dataclass
class RunningBot:
    """A bot that is up and connected, and what a test needs to talk to it and look inside."""

    fake: FakeDiscord
    bot: CitebotBot
    asker: Asker
    data: BotData
    data_path: Path  # settings.data when it is a SQLite file

    def user(self) -> int:
        """A new user id, so the per-user cooldown never carries over between tests."""
        return self.fake.snowflake()

    def mention(self, question: str, *, user_id: int | None = None, **where) -> Request:
        """Ask by mention (in #general unless `where` says otherwise); the bot's reply."""
        mid = self.fake.say(f"<@{self.fake.bot_id}> {question}", user_id=user_id or self.user(),
                            **where)
        return self.fake.reply_to(mid)

    def command(self, name: str, *, timeout: float = 120, **kwargs) -> tuple[Request, Request]:
        """Run a slash command; its callback and the edit of the deferred response."""
        inter = self.fake.slash(name, user_id=kwargs.pop("user_id", None) or self.user(),
                                **kwargs)
        return self.fake.callback(inter), self.fake.original_edit(inter, timeout=timeout)


@contextmanager
def running_bot(fake: FakeDiscord, library: Answerer, settings: DiscordConfig, *,
                updater: Updater | None = None) -> Iterator[RunningBot]:
    """Start fake, run the bot against it with its data at settings.data; stop both after.

    settings.shard_count and shard_ids make it a sharded client, as in `citebot bot`.

    The fake is passed in unstarted rather than made here because settings usually name its
    ids (guild_id, allowed_channels), which exist as soon as it is constructed.
    """
    data_path = Path(settings.data)
    data = open_bot_data(settings.data)
    asker = Asker(library, data, settings)
    fake.start()
    try:
        with fake.redirect():
            bot = make_bot(asker, settings, updater, guild_ready_timeout=0.2)
            runner = BotThread(bot, fake.token)
            try:
                runner.start()
                yield RunningBot(fake, bot, asker, data, data_path)
            finally:
                runner.stop()
    finally:
        asker.close()  # whoever makes the asker closes it, as run_bot does
        data.close()
        fake.stop()


def bot_process(fake: FakeDiscord, config: Path, log: Path) -> subprocess.Popen:
    """A real `citebot --config CONFIG bot` process talking to fake (its stderr to log).

    Only discord.py's two addresses are changed, by `python -m tests.botharness`, before the
    CLI runs; everything else is the installed entry point's code. That child must not import
    tests/conftest.py, which makes a temporary session folder that only pytest removes: it
    gets the parent's temporary HOME and caches through its environment instead.
    """
    env = {**os.environ, "DISCORD_TOKEN": fake.token, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.botharness", fake.base_url, fake.gateway_url + "/",
             "--config", str(config), "bot"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)


def _main(argv: list[str]) -> int:
    """`python -m tests.botharness REST_URL GATEWAY_URL CITEBOT_ARGS...`: citebot's CLI with
    discord.py pointed at a fake Discord (what FakeDiscord.redirect does in-process)."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    from bot.cli import main

    Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = argv[0], yarl.URL(argv[1])
    return main(argv[2:])


@contextmanager
def postgres() -> Iterator[str]:
    """A real PostgreSQL server (pgserver's PostgreSQL 16) for as long as the block runs; its
    postgresql:// URL (the test extra installs the postgres one).

    Its files are in a temporary folder of its own, removed after: run as root, pgserver runs
    the server as another user, who cannot enter pytest's folders (pytest keeps them 0700).
    """
    pgserver = _pgserver()
    with tempfile.TemporaryDirectory(prefix="citebot-pg-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def _pgserver():
    """pgserver, first imported with its lock file in a temporary folder removed at exit (it
    picks the user's runtime folder once, on import, and would leave the file there)."""
    if "pgserver" not in sys.modules:
        # Its notes go nowhere: its exit hook logs after pytest has closed the streams.
        logging.getLogger("pgserver").propagate = False
        logging.getLogger("pgserver").addHandler(logging.NullHandler())
        runtime = tempfile.mkdtemp(prefix="citebot-pg-run-")  # 0700, as the XDG spec wants
        atexit.register(shutil.rmtree, runtime, True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("XDG_RUNTIME_DIR", runtime)
            return importlib.import_module("pgserver")
    return sys.modules["pgserver"]


# -- looking at what the bot sent ---------------------------------------------------------------

def plain(markdown: str) -> str:
    """What Discord shows for the bot's markdown: escapes resolved, bold markers gone."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("**", "")).replace("\u200b", "")


def huge_answer(question: str = "huge " * 3000) -> Answer:
    def source(i: int) -> Source:
        return Source(id=f"s{i}", title="A very long title " * 80 + str(i),
                      url="https://example.com/" + "a" * 3000, publisher="Publisher " * 100)

    cites = tuple(Citation(n=i + 1, quote="word " * 2000 + "@everyone **x** [y](https://e.x)",
                           source=source(i), start=0, end=10,
                           also_in=tuple(source(j) for j in range(40))) for i in range(30))
    return Answer(question=question, answered=True,
                  answer="This sentence names Darroch and runs on. " * 2000,
                  citations=cites, keywords=("darroch",), more=cites)


def assert_fits(embed: dict) -> None:
    assert invalid_message({"embeds": [embed]}) is None, invalid_message({"embeds": [embed]})
    assert render.embed_chars(embed) <= render.EMBED_TOTAL


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
