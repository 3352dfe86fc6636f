"""`citebot chat`: the bot's conversation in a terminal, for people without a Discord token."""

from __future__ import annotations

import json
import sys

from index.errors import BadQuery
from index.library import Library

from .render import render_answer

HISTORY = 3  # earlier questions passed as context to a follow-up


def run_chat(lib: Library, *, json_mode: bool = False) -> int:
    """Read questions line by line, answer each with the conversation so far as context."""
    history: list[str] = []
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
        try:
            ans = lib.ask(line, context=history[-HISTORY:])
        except BadQuery as exc:
            if json_mode:
                print(json.dumps({"question": line[:200], "error": str(exc)}))
            else:
                print(f"citebot: {exc}", file=sys.stderr)
            continue
        history.append(ans.question)
        if json_mode:
            print(json.dumps(ans.to_json(), ensure_ascii=False), flush=True)
        else:
            print(render_answer(ans, color=sys.stdout.isatty()) + "\n", flush=True)
    return 0
