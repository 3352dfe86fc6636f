"""`citebot chat`: the bot's conversation in a terminal, for people without a Discord token."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from index import BadQuery, ConversationStore, Library

from .render import render_answer

ME = "terminal"  # one person per terminal: the store's only conversation


def run_chat(lib: Library, *, json_mode: bool = False, store: ConversationStore | None = None,
             clock: Callable[[], float] = time.monotonic) -> int:
    """Read questions line by line, answer each with the conversation so far as context.

    A follow-up ("how old is he?") is answered about what the earlier turns were about,
    until the conversation has been idle longer than the store allows.
    """
    store = ConversationStore() if store is None else store
    interactive = sys.stdin.isatty() and not json_mode
    if interactive:
        print("Ask a question about the indexed articles (empty line or Ctrl-D to leave).")
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            if interactive:
                break
            continue
        now = clock()
        try:
            ans = lib.ask(line, context=store.context(ME, now))
        except BadQuery as exc:
            if json_mode:
                print(json.dumps({"question": line[:200], "error": str(exc)}), flush=True)
            else:
                print(f"citebot: {exc}", file=sys.stderr)
            continue
        store.remember(ME, ans.question, ans, now)
        if json_mode:
            print(json.dumps(ans.to_json(), ensure_ascii=False), flush=True)
        else:
            print(render_answer(ans, color=sys.stdout.isatty()) + "\n", flush=True)
    return 0
