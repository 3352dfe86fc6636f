"""Every citebot command, fed anything: one line and a non-zero exit, never a traceback.

The property test draws hostile arguments (random bytes as a terminal would pass them,
surrogates, control and escape characters, option-like strings) for every command found in
the parser, so a new command is covered too. The session's model is shared: commands run
in this process through bot.cli.main.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot import cli
from bot.cli import build_parser, main

from .conftest import ROOT, index_files
from .test_cli import _commands
from .test_ingest import make_pdf

# Controls a terminal acts on, escape sequences that clear or retitle, bidi overrides,
# lone surrogates (undecodable bytes) and NUL.
NASTY = ["\x1b[2J", "\x1b]0;owned\x07", "\x9b31m", "\r", "\x00", "\ud800", "\udcff", "\u202e",
         "\x7f", "\x85", "\u2028", "\ufeff", "%", "#", "?", "-", "--", "\\", "\n"]
hostile = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),  # surrogates included
    st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")),  # argv bytes
    st.lists(st.sampled_from(NASTY) | st.text(max_size=4), max_size=6).map("".join),
)
COMMANDS = [c for c in _commands(build_parser())]
# Commands whose positional arguments name paths: at least one, so that none falls back to
# the config's sources (watch would then run forever, build would embed the seeds).
NEEDS_PATH = {("index", "build"), ("index", "watch"), ("index", "add"), ("index", "remove")}
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@pytest.fixture(scope="module")
def shared_index(seeds_index, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("hostile") / "index"
    shutil.copytree(seeds_index, dest)
    return dest


@contextmanager
def _stdin(data: bytes):
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = old


def _too_long(*_) -> None:
    raise AssertionError("the command ran for more than 120 s")


def _run(capsys, argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    old = signal.signal(signal.SIGALRM, _too_long)  # a hang fails the test, not the suite
    signal.alarm(120)
    with _stdin(stdin), mock.patch.dict(os.environ, {"DISCORD_TOKEN": ""}):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, or a usage error
            code = exc.code
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_clean(code: int, out: str, err: str, argv: list[str]) -> None:
    where = f"citebot {argv!r}: exit {code}\n{err[-800:]}"
    assert code in (0, 1, 2), where
    assert "Traceback" not in err and "Traceback" not in out, where
    assert "unexpected" not in err, where  # the guard fired: a bug, not a handled input
    assert not RAW_CONTROL.search(out) and not RAW_CONTROL.search(err), where
    lines = err.splitlines()
    if code == 1:
        assert lines and all(ln.startswith("citebot") for ln in lines), where
        if argv[0] != "chat":  # chat says one line per refused question
            assert len(lines) == 1, where
    elif code == 2:  # argparse: its usage, then one line naming the error
        assert lines and lines[-1].startswith("citebot") and "error:" in lines[-1], where
    if "--json" in argv and code == 0:
        for line in out.splitlines():
            json.loads(line)


@pytest.mark.parametrize("command", [" ".join(c) for c in COMMANDS])
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), json_flag=st.booleans(), separator=st.booleans(),
       k=st.none() | st.none() | st.integers(1, 20).map(str) | hostile,
       stdin=st.binary(max_size=120))
def test_every_command_fed_anything_answers_in_one_line(
        capsys, shared_index, tmp_path, monkeypatch, command, data, json_flag, separator, k,
        stdin):
    """Arguments fill the command's positional slots (so most reach the command rather than
    argparse); with separator they follow "--", so option-like strings are arguments too."""
    monkeypatch.chdir(tmp_path)  # relative hostile names land in an empty folder
    words = command.split()
    leaf = _leaf(build_parser(), words)
    args: list[str] = []
    for action in leaf._actions:
        if action.option_strings:
            continue
        low, high = {None: (1, 1), "?": (1, 1), "*": (0, 3), "+": (1, 3)}[action.nargs]
        args += data.draw(st.lists(hostile, min_size=low, max_size=high), label=action.dest)
    args = [a for a in args if not os.path.exists(a)]  # "." or "..": real folders, no test
    if tuple(words) in NEEDS_PATH:  # never none: watch would watch the config's sources
        args.append("missing\udcff.txt")
    options = {s for a in leaf._actions for s in a.option_strings}
    argv = list(words)
    if "--json" in options and json_flag:
        argv.append("--json")
    if "-k" in options and k is not None:
        argv += ["-k", k]
    argv += ["--index", str(shared_index), *(["--"] if separator and args else []),
             *args]
    before = index_files(shared_index)
    code, out, err = _run(capsys, argv, stdin)
    event(f"exit {code}")
    _assert_clean(code, out, err, argv)
    assert index_files(shared_index) == before, "the index changed"


def _leaf(parser, words: list[str]):
    """The parser of a leaf command."""
    import argparse

    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(index=hostile, config=st.none() | hostile)
def test_hostile_index_and_config_paths(capsys, tmp_path, monkeypatch, index, config):
    monkeypatch.chdir(tmp_path)
    argv = ["index", "list", "--index", index or "x"]
    if config is not None:
        argv = ["--config", config or "c", *argv]
    if any(os.path.exists(a) for a in argv[1:]):
        return
    _assert_clean(*_run(capsys, argv), argv)


# --- questions ----------------------------------------------------------------------------

def test_a_bad_question_in_a_batch_gets_an_error_object_and_the_rest_are_answered(
        capsys, seeds_index, tmp_path):
    qs = tmp_path / "q.jsonl"
    qs.write_text('{"id": "a", "query": "who defended Darroch?"}\n'
                  '{"id": "b", "query": "x\\ud800 who"}\n'
                  '{"id": "c", "query": "   "}\n'
                  '{"id": "d", "query": "how old is Darroch?"}\n', encoding="utf-8")
    for argv in (["search", "--queries", qs, "-k", "3"], ["ask", "--questions", qs]):
        code, out, err = _run(capsys, [*map(str, argv), "--json", "--index", str(seeds_index)])
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
        assert "error" in rows[1] and "UTF-8" in rows[1]["error"] and "error" in rows[2]
        assert "error" not in rows[0] and "error" not in rows[3]
        assert code == 1 and err == "citebot: error: 2 of 4 questions could not be asked\n"


def test_chat_json_survives_undecodable_and_endless_lines(capsys, seeds_index):
    from bot.chat import MAX_LINE_BYTES

    stdin = (b"who defended Darroch?\n\xff\xfe who?\n" + b"x" * (MAX_LINE_BYTES + 10) +
             b"\nhow old is he?\n")
    code, out, err = _run(capsys, ["chat", "--json", "--index", str(seeds_index)], stdin)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and err == "" and len(rows) == 4
    assert rows[0]["answered"] and "UTF-8" in rows[1]["error"] and "longer" in rows[2]["error"]
    assert "65" in rows[3]["answer"]  # the follow-up still has its context


@pytest.mark.parametrize("question", ["\udcff who defended Darroch?", "who\ud800", "\udcff"])
def test_a_bad_question_is_one_line(capsys, seeds_index, question):
    code, out, err = _run(capsys, ["ask", question, "--index", str(seeds_index)])
    assert (code, out) == (1, "") and err.startswith("citebot: error: ") and err.count("\n") == 1


# --- output -------------------------------------------------------------------------------

ESCAPES = "\x1b[2J\x1b]0;pwned\x07\x9b31m\u202eevil\r"


def test_escape_sequences_in_sources_never_reach_the_terminal(capsys, index_copy, tmp_path):
    name = tmp_path / f"report{ESCAPES}.txt"
    name.write_text(f"Title {ESCAPES} here\n\nThe zeppelin {ESCAPES} landed in the harbour at "
                    "dawn on a grey Tuesday.\n", encoding="utf-8")
    ix = ["--index", str(index_copy)]
    code, out, err = _run(capsys, ["index", "add", str(name), *ix])
    assert code == 0 and not RAW_CONTROL.search(out + err), err
    for argv in (["search", "zeppelin harbour", "-k", "2"], ["ask", "where did the zeppelin land?"],
                 ["index", "list"], ["index", "stats"]):
        code, out, err = _run(capsys, [*argv, *ix])
        assert code == 0 and not RAW_CONTROL.search(out + err), (argv, out)
        if argv[0] == "search" or argv[1] == "list":
            assert "\\x1b[2J" in out and "\\x9b31m" in out  # shown, as escapes
    for argv in (["search", "zeppelin harbour", "-k", "2"], ["index", "list"]):
        code, out, err = _run(capsys, [*argv, "--json", *ix])
        assert code == 0 and not RAW_CONTROL.search(out), (argv, out)
        assert str(name) in [_path(json.loads(line)) for line in out.splitlines()]


def _path(row: dict) -> str | None:
    """The source path of an `index list --json` row or a search's first result."""
    return row["results"][0]["source"]["path"] if "results" in row else row.get("path")


def test_json_escapes_c1_controls_and_round_trips():
    from bot.render import json_line, safe

    obj = {"text": "a\x9bb\x85c\u2028d\u202ee\udcff—é", "n": 1}
    line = json_line(obj)
    assert not RAW_CONTROL.search(line) and "—é" in line
    assert json.loads(line) == obj
    assert safe("x\x1b[2Jy\tz\nw") == "x\\x1b[2Jy\tz\nw"


# --- usage errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["search", "Darroch", "-k", "0"], "-k: must be a whole number of at least 1"),
    (["search", "Darroch", "-k", "-1"], "-k: must be a whole number of at least 1"),
    (["eval", "qa.jsonl", "-k", "0"], "-k: must be a whole number of at least 1"),
    (["search"], "give either a query or --queries FILE"),
    (["ask", "q", "--questions", "f"], "give either a question or --questions FILE, not both"),
    (["index", "watch", "s", "--quiet", "nan"], "--quiet: must be a finite number"),
])
def test_bad_flags_are_usage_errors(capsys, argv, message):
    code, out, err = _run(capsys, argv)
    assert code == 2 and message in err.splitlines()[-1] and "--querys" not in err


def test_watch_on_a_missing_folder_is_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, ["index", "watch", str(tmp_path / "gone"),
                                 "--index", str(tmp_path / "ix")])
    assert code == 1 and err == f"citebot: error: {tmp_path}/gone: no such file or folder\n"


def test_a_query_file_that_never_ends_is_refused(capsys, seeds_index):
    code, _, err = _run(capsys, ["search", "--queries", "/dev/zero", "--index", str(seeds_index)])
    assert code == 1 and err.count("\n") == 1 and "larger than" in err


# --- the guard ----------------------------------------------------------------------------

def test_an_unexpected_error_is_one_line_naming_the_log(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def broken(args):
        raise RuntimeError("boom\nsecond line \x1b[2J")

    monkeypatch.setattr(cli, "cmd_stats", broken)
    code, out, err = _run(capsys, ["index", "stats"])
    log = tmp_path / "state" / "citebot" / "citebot.log"
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("citebot: error: unexpected RuntimeError: boom second line \\x1b")
    assert str(log) in err
    text = log.read_text(encoding="utf-8")
    assert "Traceback" in text and "in broken" in text and "RuntimeError: boom" in text


# --- as real processes ----------------------------------------------------------------------

def _citebot(*argv: str | bytes, env: dict | None = None, stdout=subprocess.PIPE,
             code: str = "import sys; from bot.cli import main; sys.exit(main())"
             ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                          timeout=180)


def test_output_to_a_full_device_is_one_line(seeds_index):
    with open("/dev/full", "w") as full:
        done = _citebot("index", "list", "--index", str(seeds_index), stdout=full)
    assert done.returncode == 1
    assert done.stderr.decode() == ("citebot: error: cannot write the output (No space left "
                                    "on device)\n")


def test_an_ascii_terminal_and_raw_bytes_in_arguments(seeds_index):
    done = _citebot("ask", "who defended Darroch?", "--index", str(seeds_index),
                    env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and done.stderr == b"", done.stderr[-500:]
    assert b"\\u2014" in done.stdout  # the dash before each source, escaped
    done = _citebot(b"ask", b"\xff who defended Darroch?", b"--json", b"--index",
                    str(seeds_index).encode(), env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr == b"citebot: error: the question is not valid UTF-8 text\n"


def test_library_warnings_go_to_the_log_not_the_terminal(index_copy, tmp_path):
    pdf = make_pdf([["The harbour master said the ferry sails at noon every Sunday."]])
    at = pdf.rindex(b"startxref\n") + len(b"startxref\n")
    (tmp_path / "warped.pdf").write_bytes(pdf[:at] + b"7\n%%EOF\n")  # a wrong xref offset
    state = tmp_path / "state"
    done = _citebot("index", "add", str(tmp_path / "warped.pdf"), "--index", str(index_copy),
                    env={"XDG_STATE_HOME": str(state)})
    assert done.returncode == 0 and done.stderr == b"", done.stderr[-800:]
    assert b"1 added" in done.stdout
    assert "startxref" in (state / "citebot" / "citebot.log").read_text(encoding="utf-8")


BOT = """\
import sys
from discord.http import Route
Route.BASE = sys.argv[1]  # a closed port: no network
from bot.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_the_bot_without_network_is_one_line(seeds_index):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _citebot(f"http://127.0.0.1:{port}/api/v10", "bot", "--index", str(seeds_index),
                    env={"DISCORD_TOKEN": "garbage.garbage.garbage"}, code=BOT)
    err = done.stderr.decode()
    assert done.returncode == 1 and err.count("\n") == 1, err[-1500:]
    assert err.startswith("citebot: error: cannot reach Discord")
