"""Errors fit whoever reads them: the library says what is wrong and what kind of repair it
needs; the terminal adds the command, a Discord member never sees a command or a server path."""

from __future__ import annotations

import ast
import asyncio

import pytest

import index
from bot.asker import Asker
from bot.botdata import BotData
from bot.config import ConversationConfig, DiscordConfig
from bot.errors_text import for_members, for_terminal
from index import CitebotError, IndexCorrupt, IndexNotFound, ModelMismatch
from index.folder import STORE, current_generation

from .conftest import ROOT, library, run_cli

ERRORS = [getattr(index, n) for n in index.__all__
          if isinstance(getattr(index, n), type) and issubclass(getattr(index, n), CitebotError)]
SHELL = ("citebot ", "--rebuild", "`")


def test_every_error_has_its_own_kind_and_a_known_remedy():
    assert len(ERRORS) >= 9
    kinds = [cls.kind for cls in ERRORS]
    assert len(set(kinds)) == len(kinds)
    assert all(cls.remedy in (None, "rebuild", "build") for cls in ERRORS)
    assert IndexCorrupt.remedy == ModelMismatch.remedy == "rebuild"
    assert IndexNotFound.remedy == "build"
    err = CitebotError("the index was moved", remedy="rebuild", path="/srv/ix")
    assert (err.remedy, err.path, str(err)) == ("rebuild", "/srv/ix", "the index was moved")
    assert IndexCorrupt("x", remedy=None).remedy is None and IndexCorrupt("x").remedy == "rebuild"


def test_no_library_error_message_names_a_shell_command():
    """Raise sites in index/ say what is wrong; the remedy is a field, the command the CLI's."""
    found = []
    for path in sorted((ROOT / "index").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise):
                for const in ast.walk(node):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str) \
                            and any(s in const.value for s in ("citebot index", "--rebuild")):
                        found.append(f"{path.name}:{node.lineno}: {const.value}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("exc", [IndexCorrupt("the index database is damaged",
                                              path="/srv/citebot/ix/gen-3/index.sqlite"),
                                 ModelMismatch("the index was built with target_tokens=64"),
                                 IndexNotFound("there is no index yet", path="/srv/citebot/ix")])
def test_the_terminal_gets_the_command_and_members_a_sentence(exc):
    line = for_terminal(exc)
    assert str(exc) in line and "\n" not in line
    assert ("--rebuild" in line) == (exc.remedy == "rebuild")
    assert "`citebot index build" in line and (exc.path is None or exc.path in line)
    said = for_members(exc)
    assert "admin" in said and not any(s in said for s in SHELL) and "/srv" not in said


def test_a_fixable_input_error_is_said_as_it_is():
    exc = index.BadQuery("the question is longer than 2000 characters")
    assert for_members(exc) == for_terminal(exc) == str(exc)


@pytest.fixture
def damaged(index_copy):
    gen = current_generation(index_copy)
    (gen / STORE).write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    return index_copy


def test_a_damaged_index_in_the_cli_names_the_file_and_the_repair(capsys, damaged):
    code, out, err = run_cli(capsys, "search", "Darroch", "--index", damaged)
    assert code == 1 and err.count("\n") == 1
    assert STORE in err and "`citebot index build --rebuild`" in err
    code, out, err = run_cli(capsys, "index", "check", "--index", damaged)
    assert code == 1 and err.splitlines()[-1].endswith("`citebot index build --rebuild`")


def test_a_damaged_index_on_discord_asks_for_an_admin_without_commands_or_paths(
        damaged, seeds_library, tmp_path):
    lib = library(damaged, seeds_library)
    data = BotData(tmp_path / "bot.sqlite")
    asker = Asker(lib, data, DiscordConfig(max_concurrent=1), ConversationConfig())
    try:
        reply = asyncio.run(asker.ask("who defended Darroch?", user_id=1, channel_id=2))
    finally:
        asker.close()
        data.close()
    assert reply.answer is None and "rebuilding" in reply.notice and "admin" in reply.notice
    assert not any(s in reply.notice for s in SHELL) and str(tmp_path) not in reply.notice
    assert str(damaged) not in reply.notice and STORE not in reply.notice
