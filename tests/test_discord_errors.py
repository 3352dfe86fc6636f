"""bot/discord_errors.py: what a Discord member reads when something fails."""

from __future__ import annotations

import pytest

from bot.discord_errors import NEEDS_REBUILD, UNKNOWN, UPDATING, member_error_text
from index.errors import (
    BadQuery,
    CitebotError,
    IndexBusy,
    IndexCorrupt,
    IndexNotFound,
    ModelMismatch,
    SourceUnreadable,
)

SHELL = ("citebot ", "--rebuild", "`", "/srv", "/home", "~/")


@pytest.mark.parametrize("exc", [
    IndexNotFound("no index in /srv/citebot/index: build one with `citebot index build`"),
    IndexCorrupt("/srv/citebot/index/gen-2/index.sqlite is damaged: rebuild with --rebuild"),
    ModelMismatch("the index has format version 3, this citebot reads 4: rebuild it with "
                  "`citebot index build --rebuild`"),
])
def test_a_broken_index_asks_for_an_admin(exc):
    text = member_error_text(exc)
    assert text == NEEDS_REBUILD + "."
    assert not any(s in text for s in SHELL)


@pytest.mark.parametrize("exc, kept, gone", [
    (BadQuery("the question is 5,000 characters long; the limit is 2,000"),
     "the question is 5,000 characters long", ()),
    (SourceUnreadable("/home/bot/articles/x.txt is not UTF-8 text"),
     "x.txt is not UTF-8 text", ("/home", "articles")),
    (SourceUnreadable("https://news.example/a/b.html: HTTP 404 Not Found"),
     "https://news.example/a/b.html: HTTP 404 Not Found", ()),
    (CitebotError("~/citebot/seeds: no such file or folder; run `citebot index build PATH`"),
     "seeds: no such file or folder", ("~/", "`", "citebot")),
    (CitebotError("the manifest in ./index/gen-1/ is damaged: rebuild with --rebuild"),
     "the manifest in gen-1 is damaged", ("--rebuild", "./", "index/")),
])
def test_other_errors_keep_their_reason_but_lose_commands_and_paths(exc, kept, gone):
    text = member_error_text(exc)
    assert kept in text.replace("\\", "") and text.endswith(".")
    assert not any(s in text for s in gone) and "\n" not in text


def test_busy_and_unexpected_errors():
    assert member_error_text(IndexBusy("another update of /srv/x is running")) == UPDATING + "."
    assert member_error_text(RuntimeError("/srv/secret exploded")) == UNKNOWN + "."
    assert member_error_text(CitebotError("`citebot index build`")) == UNKNOWN + "."


def test_markup_in_a_reason_is_inert():
    text = member_error_text(SourceUnreadable("<@&123> @everyone **bold** has no text"))
    assert "@everyone" not in text and "\\<@&123\\>" in text and "\\*\\*bold" in text
