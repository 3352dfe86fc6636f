"""A library error said the way its reader needs it: the terminal user gets the command that
repairs it and the file concerned; a Discord member gets one sentence naming the next step,
never a shell command or a path on the server."""

from __future__ import annotations

from index import CitebotError

_TERMINAL = {
    "rebuild": "repair it with `citebot index build --rebuild`",
    "build": "build one with `citebot index build [SOURCE...]`",
}
_MEMBERS = {
    "rebuild": "the index needs rebuilding; please ask the bot's admin",
    "build": "there is no index yet; please ask the bot's admin to build one",
}


def terminal_remedy(remedy: str) -> str:
    """The command that carries out a remedy, as the terminal says it."""
    return _TERMINAL[remedy]


def for_terminal(exc: CitebotError) -> str:
    """One line for the CLI: the message, the file or folder concerned, the command to run."""
    text = str(exc)
    if exc.path:
        text += f" ({exc.path})"
    if exc.remedy in _TERMINAL:
        text += f": {_TERMINAL[exc.remedy]}"
    return text


def for_members(exc: CitebotError) -> str:
    """One sentence for a Discord member: an index problem is the admins' to fix, so it says
    whom to ask; other errors (a bad question, an unreadable source) are said as they are."""
    return _MEMBERS.get(exc.remedy or "", str(exc))
