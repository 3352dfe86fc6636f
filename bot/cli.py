"""The `citebot` command line: parse, call the library, render. Heavy imports stay lazy.

About 500 lines because it holds every command's parser and a few-line handler (each calls
the library and a renderer); the rendering, the guard and the chat loop live in their own
modules.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from index import BadQuery, CitebotError

from .errors_text import for_terminal, terminal_remedy
from .guard import Output, crash_report, guarded, log_to_stderr, one_line

if TYPE_CHECKING:
    from .config import Config


EPILOG = """examples:
  citebot ask "who defended Darroch?"
  citebot search "Darroch resignation letter" -k 5 --json
  citebot index build seeds/ https://example.com/article.html
  citebot index list
  citebot eval ../shared/eval/dev_qa.jsonl --plot recall.png
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with the arguments it echoes in usage errors shown through render.safe."""

    def _print_message(self, message: str, file=None) -> None:
        from .render import safe

        super()._print_message(safe(message) if message else message, file)

    def error(self, message: str):
        super().error(message.replace("\n", "\\n"))  # an argument's newline: still one line


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                   help="config file (default: ./config.toml if present)")
    p.add_argument("--index", metavar="DIR", default=argparse.SUPPRESS,
                   help="index folder (overrides the config)")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="citebot", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Answer questions from your articles with quoted, cited passages.")
    _common(ap)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, func: Callable, help: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=func.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        p.set_defaults(func=func, parser=p)
        return p

    ix = sub.add_parser("index", help="build, update and inspect the index")
    ixs = ix.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    p = cmd("build", cmd_build, "index the given or configured sources (incremental)", ixs)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="file, folder or http(s) URL")
    p.add_argument("--rebuild", action="store_true", help="start from scratch")
    p.add_argument("--prune", action="store_true",
                   help="drop sources that vanished from the given folders")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="embed on a Ray cluster (default: a local Ray); needs citebot[ray]")
    p = cmd("add", cmd_add, "add or refresh sources in the index", ixs)
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p = cmd("remove", cmd_remove, "drop sources and their chunks", ixs)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="path, URL, folder or id")
    p = cmd("list", cmd_list, "what is indexed", ixs)
    p.add_argument("--json", action="store_true")
    p = cmd("stats", cmd_stats, "sizes and settings of the index", ixs)
    p.add_argument("--json", action="store_true")
    cmd("check", cmd_check, "verify the index's integrity", ixs)
    p = cmd("watch", cmd_watch, "keep the index in step with source folders as files change", ixs)
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="file or folder to watch")
    p.add_argument("--quiet", type=_seconds, default=None, metavar="SECONDS",
                   help="wait this long after the last change before updating (default 2)")

    p = cmd("search", cmd_search, "ranked passages for a query (for testing retrieval)")
    p.add_argument("query", nargs="?")
    p.add_argument("--queries", metavar="FILE", help="JSON lines with a `query` field")
    p.add_argument("-k", type=_positive, default=None, help="passages to return (default 10)")
    p.add_argument("--json", action="store_true")
    p = cmd("ask", cmd_ask, "answer a question with cited passages")
    p.add_argument("question", nargs="?")
    p.add_argument("--questions", metavar="FILE", help="JSON lines with a `query` field")
    p.add_argument("--json", action="store_true")
    p = cmd("eval", cmd_eval, "retrieval metrics on a labelled question file")
    p.add_argument("qa_file", metavar="QA_FILE", help="JSON lines with labels (see the README)")
    p.add_argument("-k", type=_positive, default=10, help="deepest rank counted (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="save recall@k for k=1..20 as a chart")
    p.add_argument("--no-answers", action="store_true",
                   help="retrieval only: skip asking, so no refusal rates (faster)")
    p = cmd("chat", cmd_chat, "a conversation in the terminal")
    p.add_argument("--json", action="store_true",
                   help="one question per line on stdin, one ask JSON object per line out")
    cmd("bot", cmd_bot, "run the Discord bot (token from DISCORD_TOKEN)")
    return ap


def _at_least(low: float, cast: Callable[[str], float], what: str) -> Callable[[str], float]:
    """An argparse type: a number cast from text, finite and at least low."""
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"must be {what} of at least {low}, not {text!r}")
        return value

    return parse


_positive = _at_least(1, int, "a whole number")
_seconds = _at_least(0, float, "a finite number of seconds")


_PATH_ARGS = ("config", "index", "sources", "queries", "questions", "qa_file", "plot")


def _check_paths(args) -> None:
    """Refuse what cannot be a file name before the OS calls deep inside raise on it: a NUL,
    or a surrogate that no bytes decode to (argv's undecodable bytes come as \\udc80-\\udcff,
    which are fine)."""
    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        for path in [value] if isinstance(value, str) else value or []:
            try:
                if "\0" in path:
                    raise ValueError("it holds a NUL character")
                os.fsencode(path)
            except (ValueError, UnicodeEncodeError) as exc:
                reason = exc.reason if isinstance(exc, UnicodeEncodeError) else exc
                raise CitebotError(f"{path!r} is not a file name ({reason})") from exc


def _config(args) -> Config:
    from .config import load_config  # loads the library's settings records: not for --help

    return load_config(getattr(args, "config", None))


def _library(args, build: bool = True, cfg: Config | None = None):
    from .app import open_library

    return open_library(cfg or _config(args), getattr(args, "index", None),
                        build_if_missing=build)


def _print_json(obj) -> None:
    from .render import json_line

    print(json_line(obj))


def cmd_build(args) -> int:
    """Index the given sources, or the config's; unchanged sources are not embedded again.

    example: citebot index build seeds/ --rebuild
    """
    from .app import make_library, progress_bar, source_specs
    from .render import render_report

    cfg = _config(args)
    specs = args.sources or source_specs(cfg)
    lib = make_library(cfg, getattr(args, "index", None))
    if ray := args.ray or cfg.index.ray:
        from index import RayEmbedder

        lib.embedder = RayEmbedder(lib.embedder, ray)
    report = lib.update(specs, rebuild=args.rebuild, prune=args.prune,
                        progress=progress_bar(lib.embedder))
    print(render_report(report))
    return 0


def cmd_add(args) -> int:
    """Add or refresh sources in the existing index.

    example: citebot index add notes/report.pdf https://example.com/story.html
    """
    from .app import make_library, progress_bar
    from .render import render_report

    lib = make_library(_config(args), getattr(args, "index", None))
    print(render_report(lib.update(args.sources, progress=progress_bar(lib.embedder))))
    return 0


def cmd_remove(args) -> int:
    """Drop sources (by path, folder, URL or id) and their chunks.

    example: citebot index remove seeds/004_f51d83ee9a022f67.txt
    """
    from .app import make_library
    from .render import render_report

    print(render_report(make_library(_config(args), getattr(args, "index", None))
                        .remove(args.sources)))
    return 0


def cmd_list(args) -> int:
    """List the indexed sources: chunks, when added, title, publisher, path or URL.

    example: citebot index list --json
    """
    from .render import render_sources

    sources = _library(args, build=False).sources()
    if args.json:
        for s in sources:
            _print_json({**s.to_json(), "chunks": s.chunks, "added_at": s.added_at})
    else:
        print(render_sources(sources))
    return 0


def cmd_stats(args) -> int:
    """Sizes and settings of the index.

    example: citebot index stats
    """
    from .render import safe

    stats = _library(args, build=False).stats()
    if args.json:
        _print_json(stats)
    else:
        print("\n".join(f"{k:>18}: {safe(v)}" for k, v in stats.items()))
    return 0


def cmd_check(args) -> int:
    """Verify that every vector has its chunk, every chunk its source, the manifest matches.

    example: citebot index check
    """
    from .render import safe

    problems = _library(args, build=False).check()
    if problems:
        print("\n".join(f"citebot: {safe(p)}" for p in [*problems, terminal_remedy("rebuild")]),
              file=sys.stderr)
        return 1
    print("index is sound")
    return 0


def cmd_watch(args) -> int:
    """Watch the given (or configured) files and folders; when files are added, changed or
    removed, update the index (with prune) once they have been quiet for a moment. Runs until
    Ctrl-C; killing it mid-update leaves the index as it was before that update.

    example: citebot index watch seeds/ --quiet 5
    """
    from index import SourceUnreadable, Watcher

    from .app import make_library, source_specs
    from .render import render_report, safe

    cfg = _config(args)
    quiet = cfg.index.watch_quiet if args.quiet is None else args.quiet
    watcher = Watcher(make_library(cfg, getattr(args, "index", None)),
                      args.sources or source_specs(cfg), quiet=quiet,
                      on_update=lambda r: print(render_report(r), flush=True),
                      on_error=lambda e: print(f"citebot: {safe(for_terminal(e))}",
                                             file=sys.stderr, flush=True))
    missing = next((s for s in watcher.specs if not os.path.exists(s)), None)
    if missing is not None:  # before the banner, so a typo is one line
        raise SourceUnreadable(f"{missing}: no such file or folder")
    print(safe(f"citebot: watching {', '.join(watcher.specs) or 'nothing'}; Ctrl-C stops"),
          file=sys.stderr, flush=True)
    try:
        watcher.run()
    except KeyboardInterrupt:  # the normal way to stop watching, not an error
        pass
    return 0


def _read_queries(path: str) -> list[dict]:
    from index import read_json_lines

    rows = read_json_lines(path)
    for n, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("query"), str):
            raise CitebotError(f"{path} line {n}: expected a JSON object with a \"query\" string")
    return [row for _, row in rows]


def _one_of(args, single: str | None, batch: str | None, what: str, flag: str) -> None:
    """Exactly one of a question and a batch file; anything else is a usage error (exit 2)."""
    if (single is None) == (batch is None):
        args.parser.error(f"give either a {what} or {flag} FILE, not "
                          f"{'both' if single is not None else 'neither'}")


def _batch(rows: list[dict], answer: Callable[[list[str]], list], show: Callable,
           json_errors: bool, *, batched: bool) -> int:
    """Answer every row in order; a row that cannot be asked gets its error (with json_errors
    an object with "error", in its place) and the next rows are answered. Exit 1 if any failed.

    batched: answer all rows in one call (one embedding batch), going row by row only when
    a row is refused; else row by row, each shown as soon as it is answered.
    """
    from .render import safe

    results = None
    if batched:
        try:
            results = answer([r["query"] for r in rows])
        except BadQuery:
            pass
    failed = 0
    for n, row in enumerate(rows, 1):
        try:
            result = (results[n - 1] if results is not None
                      else answer([row["query"]])[0])
        except BadQuery as exc:
            failed += 1
            if json_errors:
                _print_json({**({"id": row["id"]} if "id" in row else {}),
                             "query": row["query"], "error": str(exc)})
            else:
                where = f"question {n}: " if len(rows) > 1 else ""
                print(f"citebot: error: {where}{safe(exc)}", file=sys.stderr)
            continue
        show(row, result)
    if failed and len(rows) > 1:
        print(f"citebot: error: {failed} of {len(rows)} questions could not be asked",
              file=sys.stderr)
    return 1 if failed else 0


def cmd_search(args) -> int:
    """Ranked passages for a query, for testing retrieval.

    example: citebot search "who defended Darroch?" -k 5 --json
             citebot search --queries questions.jsonl -k 10 --json > results.jsonl
    """
    from .render import render_hits

    _one_of(args, args.query, args.queries, "query", "--queries")
    rows = _read_queries(args.queries) if args.queries else [{"query": args.query}]
    cfg = _config(args)
    lib = _library(args, cfg=cfg)
    k = args.k or cfg.retrieval.k

    def show(row: dict, hits: list) -> None:
        if args.json:
            out = {"query": row["query"], "results": [h.to_json() for h in hits]}
            _print_json({"id": row["id"], **out} if "id" in row else out)
        else:
            print(render_hits(hits))

    return _batch(rows, lambda qs: lib.search_many(qs, k), show,
                  args.json and bool(args.queries), batched=True)


def cmd_ask(args) -> int:
    """The answer to a question, with numbered citations quoting the sources.

    example: citebot ask "who defended Darroch?"
             citebot ask --questions questions.jsonl --json
    """
    from .render import render_answer

    _one_of(args, args.question, args.questions, "question", "--questions")
    rows = _read_queries(args.questions) if args.questions else [{"query": args.question}]
    lib = _library(args)

    def show(row: dict, ans) -> None:
        if args.json:
            _print_json({"id": row["id"], **ans.to_json()} if "id" in row else ans.to_json())
        else:
            print(render_answer(ans, color=sys.stdout.isatty()))

    return _batch(rows, lambda qs: [lib.ask(q) for q in qs], show,
                  args.json and bool(args.questions), batched=False)


def cmd_eval(args) -> int:
    """Recall@1/5/10, MRR@10, nDCG@10 on a labelled question file; misses; refusal rates.

    A passage is a hit by the rule of ../shared/eval/README.md. Refusal rates come from asking
    every question: unanswerable ones should be refused, answerable ones not.

    example: citebot eval ../shared/eval/dev_qa.jsonl
             citebot eval questions.jsonl -k 10 --json --plot recall.png
    """
    from index import evaluate_questions as evaluate
    from index import load_questions

    from .eval_render import render_eval, save_plot

    questions = load_questions(args.qa_file)
    lib = _library(args)
    report = evaluate(questions, lib.search_many, None if args.no_answers else lib.ask, k=args.k)
    if args.plot:
        save_plot(report, args.plot, title=os.path.basename(args.qa_file))
    if args.json:
        _print_json(report.to_json())
    else:
        print(render_eval(report, args.qa_file))
    return 0


def cmd_chat(args) -> int:
    """A conversation with the bot in the terminal; follow-up questions keep their context.

    A follow-up ("how old is he?", "and what did Hunt say?") is answered about the earlier
    questions' subject; [conversation] turns and idle_minutes in the config bound the memory.

    example: citebot chat          (type a question, an empty line or Ctrl-D to leave)
             printf 'what did Trump call Darroch?\\nhow old is he?\\n' | citebot chat --json
    """
    from index import ConversationStore

    from .chat import run_chat

    cfg = _config(args)
    store = ConversationStore(turns=cfg.conversation.turns,
                              idle=cfg.conversation.idle_minutes * 60)
    return run_chat(_library(args, cfg=cfg), json_mode=args.json, store=store)


def cmd_bot(args) -> int:
    """Run the Discord bot; the token comes from DISCORD_TOKEN or the config.

    example: DISCORD_TOKEN=... citebot bot
    """
    import aiohttp

    from .discord_bot import run_bot

    # discord.py's start-up notes (no voice support, "logging in using static token") are
    # not the operator's business; its errors still show.
    logging.getLogger("discord.client").setLevel(logging.ERROR)
    try:
        with log_to_stderr():
            return run_bot(_config(args), getattr(args, "index", None))
    except (OSError, aiohttp.ClientError) as exc:  # no network, DNS, Discord down
        raise CitebotError(f"cannot reach Discord ({one_line(exc)}); check the network "
                           "and try again") from exc


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure is one line on stderr and a non-zero exit code:
    1 for an error (an unexpected one's details go to the log file), 2 for a usage error."""
    with guarded() as out:
        return _run(argv, out)


def _run(argv: list[str] | None, out: Output) -> int:
    from .render import safe

    try:
        args = build_parser().parse_args(argv)
        _check_paths(args)
        code = args.func(args)
        out.flush()
        return code
    except CitebotError as exc:
        print(f"citebot: error: {safe(one_line(for_terminal(exc)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("citebot: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `citebot index list | head`: the reader had enough
        out.silence()
        return 0
    except Exception as exc:
        if isinstance(exc, OSError) and out.failed:
            out.silence()
            print(f"citebot: error: cannot write the output ({exc.strerror or exc})",
                  file=sys.stderr)
            return 1
        where = crash_report(exc)
        print(f"citebot: error: unexpected {type(exc).__name__}: "
              f"{safe(one_line(exc))[:200]} (a bug; details in {where})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
