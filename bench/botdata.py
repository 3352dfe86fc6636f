"""The bot's own data: what storing an answer, reading it for a button and voting cost, on the
SQLite file and on PostgreSQL (a real server from pgserver, over its local socket).

    python bench/botdata.py            # 300 rounds; writes results/botdata.md
    python bench/botdata.py --smoke    # 20 rounds: checks that it all runs

Each round stores one answer as the bot does (three citations, three more), reads it back as
the "More sources" button does, and records a vote. PostgreSQL is skipped (one row says so)
without the postgres extra. A server on another machine adds its network round trip to each
call; this measures the engine and the client, not a network.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make bench.* importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine_line, median, table, write_report


def answer(i: int):
    from index.records import Answer, Citation, Source

    def cite(n: int) -> Citation:
        src = Source(id=f"s{n}", title=f"Article {n}", url=f"https://news.example/{n}",
                     publisher="Example News")
        return Citation(n=n, quote="A quoted sentence of about this length. " * 3, source=src,
                        start=0, end=120)

    return Answer(question=f"question {i}?", answered=True, answer="An answer sentence. " * 4,
                  citations=tuple(cite(n) for n in (1, 2, 3)), keywords=("answer",),
                  more=tuple(cite(n) for n in (4, 5, 6)))


def measure(where: str, rounds: int) -> dict[str, float]:
    """Median ms of save_answer, answer and vote over rounds."""
    from bot.botdata import open_bot_data

    data = open_bot_data(where)
    times: dict[str, list[float]] = {"save_answer": [], "answer": [], "vote": []}

    def timed(name: str, call: Callable[[], object]) -> object:
        began = time.perf_counter()
        result = call()
        times[name].append(1000 * (time.perf_counter() - began))
        return result

    try:
        for i in range(rounds):
            a = answer(i)
            answer_id = timed("save_answer", lambda a=a: data.save_answer(a, user_id=1 << 60,
                                                                         channel_id=2))
            timed("answer", lambda answer_id=answer_id: data.answer(answer_id))
            timed("vote", lambda answer_id=answer_id: data.vote(answer_id, 1 << 60, 1))
    finally:
        data.close()
    return {name: median(t) for name, t in times.items()}


def postgres(folder: Path):
    """A PostgreSQL server from pgserver with its files in folder: (url, server), or
    ("", None) without the postgres extra."""
    if "pgserver" not in sys.modules and not os.environ.get("XDG_RUNTIME_DIR"):
        # pgserver keeps a lock file in the runtime folder it picks on import (and touches it
        # again at exit): a temporary one, removed after pgserver's own exit handler.
        runtime = tempfile.mkdtemp(prefix="citebot-pg-run-")
        atexit.register(shutil.rmtree, runtime, True)
        os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        import pgserver
    except ImportError:
        return "", None
    server = pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
    return server.get_uri(), server


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="20 rounds; no results file")
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--out", type=Path, help="write the report here")
    args = p.parse_args(argv)
    rounds = 20 if args.smoke else args.rounds
    rows = []
    with tempfile.TemporaryDirectory(prefix="citebot-botdata-") as tmp:
        ms = measure(str(Path(tmp) / "bot.sqlite"), rounds)
        rows.append(["SQLite file (WAL)", *(f"{ms[k]:.2f}" for k in ms)])
        url, server = postgres(Path(tmp))
        if server is None:
            rows.append(["PostgreSQL: not installed (pip install 'citebot[postgres]')",
                         "n/a", "n/a", "n/a"])
        else:
            try:
                ms = measure(url, rounds)
            finally:
                server.cleanup()
            rows.append(["PostgreSQL 16 (pgserver, local socket)",
                         *(f"{ms[k]:.2f}" for k in ms)])
    text = "\n".join([
        "# Bot data: SQLite and PostgreSQL", "", machine_line(), "",
        f"Median ms per call over {rounds} rounds (one process, one connection).", "",
        table(["backend", "save_answer ms", "answer ms", "vote ms"], rows), ""])
    write_report(text, "botdata", args.out, args.smoke)
    return text


if __name__ == "__main__":
    main()
