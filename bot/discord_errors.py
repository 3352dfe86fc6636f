"""What a Discord member is told when something fails: one sentence, no shell, no server paths.

The library's messages are written for whoever runs citebot ("run `citebot index build
--rebuild`", "/srv/citebot/index is damaged"); a channel member can do nothing with that and
should not learn the host's folders. Every error text the bot sends goes through
`member_error_text` (or `member_text` for a reason that is already a string), so that how
errors read in Discord is decided here, once. A server path is cut to its last part: "x.pdf is
an encrypted PDF" still says which file.
"""

from __future__ import annotations

import os
import re

from index import CitebotError, IndexBusy, IndexCorrupt, IndexNotFound, ModelMismatch

from . import discord_render as render
from .errors_text import for_members

NEEDS_REBUILD = "the index needs rebuilding; please ask an admin"
UPDATING = "the index is being updated; please try again in a minute"
UNKNOWN = "something went wrong on my side; the error is in the bot's log"

# What the library says to someone at a shell: a command in backticks, with what leads into it.
_COMMAND = re.compile(r"[:;,]?\s*(?:\b(?:run|with|try|use)\s+)?`[^`]*`", re.IGNORECASE)
_REBUILD_FLAG = re.compile(r"[:;,]?\s*\brebuild with --\w[\w-]*", re.IGNORECASE)
# A server path: absolute, home-relative or ./-relative; not the path part of a URL.
_PATH = re.compile(r"(?<![\w/:.\-])(?:~|\.{1,2})?/[^\s:;,'\"()]+")


def member_error_text(exc: BaseException) -> str:
    """The reason to show a Discord member for exc: one escaped sentence, no command, no path."""
    if isinstance(exc, IndexNotFound | IndexCorrupt | ModelMismatch):
        return render.full_stop(NEEDS_REBUILD)
    if isinstance(exc, CitebotError) and exc.remedy:  # the admins' to fix: say whom to ask
        return render.full_stop(for_members(exc))
    if isinstance(exc, IndexBusy):
        return render.full_stop(UPDATING)
    if not isinstance(exc, CitebotError):
        return render.full_stop(UNKNOWN)
    return member_text(str(exc))


def member_text(reason: str) -> str:
    """A library's reason for a member: commands dropped, paths cut to their last part, escaped,
    as one sentence."""
    text = _REBUILD_FLAG.sub("", _COMMAND.sub("", reason))
    text = _PATH.sub(lambda m: os.path.basename(m.group().rstrip("/")) or "the server", text)
    text = " ".join(text.split()).rstrip(" :;,")
    if not text:
        return render.full_stop(UNKNOWN)
    return render.full_stop(render.escape(render.clip(text, 300), line_start=False))
