"""/reindex and /add: admins change the index while the bot answers; others are refused.

The unmodified discord.py client runs against tests/fakediscord.py, with the real Library (real
model) over a private folder of articles; /add fetches pages from a local http.server.
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot import discord_admin, discord_bot
from bot.config import Config, DiscordConfig
from bot.discord_admin import Updater
from bot.discord_bot import run_bot
from index.library import Library, UpdateReport
from index.store import current_generation

from .botharness import RunningBot, running_bot
from .conftest import ROOT, SEEDS
from .conftest import library as library_at
from .fakediscord import MANAGE_GUILD, MEMBER_PERMISSIONS, FakeDiscord, Request

ADMIN = MEMBER_PERMISSIONS | MANAGE_GUILD
OWLS = """<html><head><title>Snowy owls return to Tromso</title></head><body>
<nav>Home | News | Weather</nav><article><h1>Snowy owls return to Tromso</h1>
<p>Snowy owls have returned to the tundra near Tromso this spring, researchers from the Arctic
University said on Monday.</p>
<p>The team counted forty-two nesting pairs, the most since records began in 1974, after a
winter with plenty of lemmings.</p>
<p>Lead researcher Ingrid Solberg said the owls nest on low hummocks where they can watch for
Arctic foxes.</p></article><footer>Copyright Tromso Daily</footer></body></html>"""


@dataclass
class Admin(RunningBot):
    """The running bot, and the articles, index and local web server its Updater works from."""

    library: Library
    updater: Updater
    folder: Path
    index: Path
    web: str  # base URL of the local web server


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def admin(seeds_library, tmp_path_factory):
    root = tmp_path_factory.mktemp("discord-admin")
    folder = root / "articles"
    folder.mkdir()
    for name in ("001_9edddd37269c8a59.txt", "002_41119d82aa048747.txt"):
        shutil.copy(SEEDS / name, folder / name)
    web = root / "web"
    web.mkdir()
    (web / "owls.html").write_text(OWLS)
    (web / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(web)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    library = library_at(root / "index", seeds_library)
    library.update([str(folder)])
    fake = FakeDiscord(heartbeat_ms=500)
    settings = DiscordConfig(guild_id=fake.guild_id, admin_roles=["librarian"],
                             cooldown_questions=0, data=str(root / "bot.sqlite"))
    updater = Updater(library, [str(folder)], settings, base=root)
    try:
        with running_bot(fake, library, settings, updater=updater) as run:
            yield Admin(**vars(run), library=library, updater=updater, folder=folder,
                        index=root / "index", web=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()


def _content(edit: Request) -> str:
    return edit.body["content"]


def test_an_update_report_names_files_without_the_servers_folders():
    report = UpdateReport(added=["/srv/citebot/articles/owls.txt", "https://news.example/a"],
                          removed=["/srv/citebot/articles/old.txt"],
                          duplicates=[("/srv/citebot/articles/copy.txt",
                                       "/srv/citebot/articles/owls.txt")],
                          skipped=[("/srv/citebot/articles/x.pdf",
                                    "/srv/citebot/articles/x.pdf is an encrypted PDF")],
                          chunks_total=3, generation="g2")
    text = discord_admin.summary("Re-indexed", report)
    assert "Added: owls.txt, https://news.example/a" in text and "Removed: old.txt" in text
    assert "Skipped copy.txt: same text as owls.txt" in text
    assert "Skipped: x.pdf is an encrypted PDF." in text and "/srv" not in text


def test_admin_commands_are_registered(admin):
    names = {c["name"]: c for c in admin.fake.commands[admin.fake.guild_id]}
    assert {"ask", "sources", "reindex", "add"} <= set(names)
    assert [o["name"] for o in names["add"]["options"]] == ["url"]


def test_members_without_manage_server_are_refused_politely(admin):
    before = current_generation(admin.index)
    for name, options in (("reindex", {}), ("add", {"url": f"{admin.web}/owls.html"})):
        inter = admin.fake.slash(name, user_id=admin.user(), **options)
        cb = admin.fake.callback(inter)
        assert cb.body["type"] == 4 and cb.body["data"]["flags"] == 64  # only they see it
        assert cb.body["data"]["content"] == discord_admin.NOT_ADMIN
    assert current_generation(admin.index) == before
    assert not any("owls" in (s.url or "") for s in admin.library.sources())


def test_reindex_reports_changes_and_the_bot_answers_from_them_at_once(admin, monkeypatch):
    (admin.folder / "badgers.txt").write_text(
        "Badgers of Wytham Woods\n\nThe badgers of Wytham Woods dig their setts under old beech "
        "trees. Researchers there have followed the same badger clans since 1987.\n")
    edited = admin.folder / "002_41119d82aa048747.txt"
    edited.write_text(edited.read_text() + "\nThe embassy declined to comment further.\n")
    (admin.folder / "001_9edddd37269c8a59.txt").unlink()

    real = admin.updater.library

    class Slow:  # makes the update long enough to ask a question while it runs
        def update(self, *args, **kwargs):
            time.sleep(2)
            return real.update(*args, **kwargs)

    monkeypatch.setattr(admin.updater, "library", Slow())
    inter = admin.fake.slash("reindex", user_id=admin.user(), permissions=ADMIN)
    cb = admin.fake.callback(inter)
    assert cb.body == {"type": 5, "data": {"flags": 64}}
    assert inter.callback_at - inter.sent_at < 3
    during = admin.mention("who defended Darroch?")  # answered while the update runs
    edit = admin.fake.original_edit(inter)
    assert during.body.get("embeds") and during.at < edit.at

    text = _content(edit)
    assert text.startswith("Re-indexed in ")
    assert "1 added, 1 changed, 1 removed" in text and "passages embedded" in text
    assert "badgers.txt" in text and "001\\_9edddd37269c8a59.txt" in text
    assert edit.body["allowed_mentions"]["parse"] == []
    names = {Path(s.path).name for s in admin.library.sources() if s.path}
    assert "badgers.txt" in names and "001_9edddd37269c8a59.txt" not in names

    reply = admin.mention("since when have researchers followed the badger clans?")
    fields = reply.body["embeds"][0].get("fields", [])
    assert fields and "Badgers of Wytham Woods" in fields[0]["name"]


def test_the_bot_answers_from_an_update_another_process_made(admin, tmp_path):
    story = tmp_path / "puffins.md"
    story.write_text("# Puffins of Skomer\n\nAtlantic puffins come back to the cliffs of "
                     "Skomer island every April, and the wardens counted 43,000 of them.\n")
    done = subprocess.run([sys.executable, "-m", "bot.cli", "index", "add", str(story),
                           "--index", str(admin.index)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "1 added" in done.stdout, done.stderr
    reply = admin.mention("how many puffins did the wardens count on Skomer?")
    fields = reply.body["embeds"][0].get("fields", [])
    assert fields and "Puffins of Skomer" in fields[0]["name"]


def test_an_admin_role_may_add_a_url_and_it_is_answered_from(admin):
    librarian = admin.user()
    cb, edit = admin.command("add", user_id=librarian, roles=[admin.fake.librarian_role],
                             url=f"<{admin.web}/owls.html>")
    assert cb.body == {"type": 5, "data": {"flags": 64}}
    text = _content(edit)
    assert text.startswith("Added in ") and "1 added" in text and "owls.html" in text
    reply = admin.mention("how many nesting pairs of snowy owls did the team count?")
    fields = reply.body["embeds"][0].get("fields", [])
    assert fields and "Snowy owls return to Tromso" in fields[0]["name"]
    assert f"({admin.web}/owls.html)" in fields[0]["value"]  # cited with its link

    _, again = admin.command("add", user_id=librarian, roles=[admin.fake.librarian_role],
                             url=f"{admin.web}/owls.html")
    assert "already indexed and has not changed" in _content(again)


@pytest.mark.parametrize("url, reason", [
    ("{web}/photo.png", "is not an article (content type image/png)"),
    ("{web}/missing.html", "HTTP 404"),
    ("http://127.0.0.1:9/nothing-listens-here", "cannot connect"),
    ("/etc/hostname", "only files inside the configured source folders"),
    ("not a url", "only files inside the configured source folders"),
])
def test_add_of_something_unreadable_is_a_clear_reply(admin, url, reason):
    before = current_generation(admin.index)
    url = url.format(web=admin.web)
    _, edit = admin.command("add", permissions=ADMIN, url=url)
    text = _content(edit)
    assert text.startswith("I couldn't add ") and reason in text, text
    assert "Traceback" not in text and current_generation(admin.index) == before
    assert admin.mention("who defended Darroch?").body.get("embeds")  # still serving


def test_a_second_update_is_told_one_is_running(admin):
    with open(admin.index / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # as a running `citebot index build` would
        _, edit = admin.command("reindex", permissions=ADMIN)
        _, edit_add = admin.command("add", permissions=ADMIN, url=f"{admin.web}/owls.html")
    assert _content(edit) == discord_admin.UPDATE_RUNNING
    assert _content(edit_add) == discord_admin.UPDATE_RUNNING


def test_feedback_and_old_answers_survive_reindex_and_rebuild(admin):
    rec = admin.mention("why did Darroch resign?")
    mid = int(rec.response["id"])
    more_id, up_id, _ = [c["custom_id"] for c in rec.body["components"][0]["components"]]
    voter = admin.user()
    assert "Thanks" in admin.fake.callback(
        admin.fake.click(mid, up_id, user_id=voter)).body["data"]["content"]

    (admin.folder / "herons.txt").write_text(
        "Grey herons\n\nGrey herons nest in colonies called heronries, high in tall trees.\n")
    _, edit = admin.command("reindex", permissions=ADMIN)
    assert "1 added" in _content(edit)
    admin.library.update([str(admin.folder)], rebuild=True)  # from scratch, while serving

    more = admin.fake.callback(admin.fake.click(mid, more_id, user_id=admin.user()))
    assert more.body["data"]["embeds"][0]["title"].startswith("More sources")
    with sqlite3.connect(admin.data_path) as db:
        rows = db.execute("SELECT question, vote FROM feedback WHERE user_id = ?",
                          (voter,)).fetchall()
    assert rows == [("why did Darroch resign?", 1)]


def test_bot_with_watch_on_picks_up_new_files(tmp_path, monkeypatch, seeds_library):
    folder = tmp_path / "articles"
    folder.mkdir()
    shutil.copy(SEEDS / "002_41119d82aa048747.txt", folder)
    library = library_at(tmp_path / "index", seeds_library)
    library.update([str(folder)])
    fake = FakeDiscord().start()
    cfg = Config(base_dir=tmp_path)
    cfg.index.sources, cfg.index.watch, cfg.index.watch_quiet = [str(folder)], True, 0.3
    cfg.discord.data, cfg.discord.guild_id = str(tmp_path / "bot.sqlite"), fake.guild_id
    monkeypatch.setenv("DISCORD_TOKEN", fake.token)
    monkeypatch.setattr(discord_bot, "open_library", lambda cfg, index=None: library)
    seen: list[str] = []

    def add_a_file_then_stop() -> None:
        try:
            fake.wait_until(lambda: fake.identifies == 1 and fake.connected)
            (folder / "otters.md").write_text("# Otters\n\nSea otters hold hands while asleep.")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not seen:
                seen.extend(s.title for s in library.sources() if s.title == "Otters")
                time.sleep(0.1)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=add_a_file_then_stop, daemon=True).start()
    try:
        with fake.redirect():
            assert run_bot(cfg) == 0
    finally:
        fake.stop()
    assert seen == ["Otters"]
    assert {"reindex", "add"} <= {c["name"] for c in fake.commands[fake.guild_id]}
