"""`citebot chat`: the bot's conversation in a terminal, for people without a Discord token."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from index import BadQuery, ConversationStore, Library

from .render import json_line, render_answer, safe

ME = "terminal"  # one person per terminal: the store's only conversation
MAX_LINE_BYTES = 1_000_000  # far beyond any question's limit; a longer line is refused unread


def run_chat(lib: Library, *, json_mode: bool = False, store: ConversationStore | None = None,
             clock: Callable[[], float] = time.monotonic, stdin: TextIO | None = None) -> int:
    """Read questions line by line, answer each with the conversation so far as context.

    A follow-up ("how old is he?") is answered about what the earlier turns were about,
    until the conversation has been idle longer than the store allows. A question that cannot
    be asked gets its error (an object with "error" in JSON mode) and the next one is answered.
    """
    store = ConversationStore() if store is None else store
    stdin = sys.stdin if stdin is None else stdin
    interactive = stdin.isatty() and not json_mode
    if interactive:
        print("Ask a question about the indexed articles (empty line or Ctrl-D to leave).")
    for refused, line in _questions(stdin, interactive):
        if not line.strip() and not refused:
            if interactive:
                break
            continue
        now = clock()
        try:
            if refused:
                raise refused
            ans = lib.ask(line, context=store.context(ME, now))
        except BadQuery as exc:
            if json_mode:
                print(json_line({"question": line[:200], "error": str(exc)}), flush=True)
            else:
                print(f"citebot: {safe(exc)}", file=sys.stderr, flush=True)
            continue
        store.remember(ME, ans.question, ans, now)
        if json_mode:
            print(json_line(ans.to_json()), flush=True)
        else:
            print(render_answer(ans, color=sys.stdout.isatty()) + "\n", flush=True)
    return 0


def _questions(stdin: TextIO, interactive: bool) -> Iterator[tuple[BadQuery | None, str]]:
    """(None, line) for each line of stdin, (error, its start) for one too long to read.

    Typed lines come through input() (line editing); piped ones are read as bytes, at most
    MAX_LINE_BYTES at a time, undecodable bytes kept as surrogates (the library refuses them).
    """
    raw = getattr(stdin, "buffer", None)
    if interactive or raw is None:
        while True:
            try:
                yield None, input("> " if interactive else "")
            except EOFError:
                return
    while line := raw.readline(MAX_LINE_BYTES):
        if not line.endswith(b"\n") and len(line) == MAX_LINE_BYTES:
            while (rest := raw.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # the rest of an endless line is skipped, never held
            yield BadQuery(f"the line is longer than {MAX_LINE_BYTES:,} bytes; a question is "
                           "one short line"), line[:200].decode("utf-8", "replace")
            continue
        yield None, line.decode("utf-8", "surrogateescape").rstrip("\r\n")
