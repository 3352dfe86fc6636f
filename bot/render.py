"""The terminal's rendering of answers, passages and reports (plain text, ANSI on a TTY).

Text from sources, file names and questions is shown through safe(): a source must not be able
to clear the screen, retitle the window or forge lines with escape sequences.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # render.safe serves --help's usage errors: no model stack for it
    from index import Answer, Hit, Source, UpdateReport

BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"

# C0 controls but tab and newline, DEL, C1 controls (U+009B is a one-character CSI), the line
# and paragraph separators, bidirectional overrides ("Trojan source") and lone surrogates.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
# What json.dumps(ensure_ascii=False) leaves raw although a terminal would act on it.
_JSON_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object) -> str:
    """str(text) with control characters written as escapes (ESC as \\x1b)."""
    return _UNSAFE.sub(_escape, str(text))


def json_line(obj: object, ascii_only: bool | None = None) -> str:
    """One JSON object on one line: readable Unicode, but no raw C1 control or separator.

    json.dumps escapes C0 controls itself; the rest are valid \\u escapes inside strings, the
    only place such characters can be. ascii_only (by default: when stdout is not UTF-8, as
    under PYTHONIOENCODING=ascii) escapes everything beyond ASCII.
    """
    if ascii_only is None:
        encoding = getattr(sys.stdout, "encoding", None) or ""
        ascii_only = encoding.lower().replace("-", "") != "utf8"
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=False)
    return text if ascii_only else _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _bold(text: str, keywords, color: bool) -> str:
    text = safe(text)
    if not color:
        return text
    out, last = [], 0
    from index import highlight_spans

    for a, b in highlight_spans(text, keywords):
        out += [text[last:a], BOLD, text[a:b], RESET]
        last = b
    return "".join(out + [text[last:]])


def source_line(s: Source) -> str:
    who = f"{s.title}, {s.publisher}" if s.publisher else s.title
    return safe(f"{who} ({s.location})")


HEDGED = "Not sure the sources answer this; the closest they come:"


def render_answer(ans: Answer, color: bool = False) -> str:
    if not ans.answered:
        return "Not in the sources: nothing in the indexed articles answers that."
    lines = [HEDGED, ""] if ans.hedged else []
    lines += [_wrap(_bold(ans.answer, ans.keywords, color)), ""]
    for c in ans.citations:
        lines.append(_wrap(f'[{c.n}] "{_bold(c.quote, ans.keywords, color)}"',
                           indent="    ", first=""))
        lines.append(f"    {DIM if color else ''}— {source_line(c.source)}{RESET if color else ''}")
        if c.also_in:
            lines.append("    also in: " + "; ".join(source_line(s) for s in c.also_in))
    return "\n".join(lines)


def _wrap(text: str, indent: str = "", first: str = "") -> str:
    return "\n".join(textwrap.wrap(text, width=100, initial_indent=first,
                                   subsequent_indent=indent, break_on_hyphens=False)) or text


def render_hits(hits: list[Hit]) -> str:
    out = []
    for h in hits:
        out.append(f"{h.rank:>2}. {h.score:.3f}  {source_line(h.source)}  [{h.chunk.start}:"
                   f"{h.chunk.end}]")
        out.append(textwrap.indent(textwrap.fill(safe(h.chunk.text), 96), "    "))
    return "\n".join(out) if out else "no passages"


def render_sources(sources: list[Source]) -> str:
    if not sources:
        return "the index is empty"
    return "\n".join(f"{s.chunks:>4} chunks  {safe(s.added_at or ''):<20}  {source_line(s)}"
                     for s in sources)


def render_report(r: UpdateReport) -> str:
    parts = [f"{len(r.added)} added", f"{len(r.changed)} changed",
             f"{len(r.removed)} removed", f"{len(r.unchanged)} unchanged"]
    if r.duplicates:
        parts.append(f"{len(r.duplicates)} duplicate(s) skipped")
    head = (f"{', '.join(parts)}; {r.chunks_embedded} chunks embedded, {r.chunks_total} in "
            f"the index ({r.seconds:.1f} s)")
    lines = [head if r.wrote else head + "; nothing changed, index left as it was"]
    lines += [safe(f"  duplicate: {a} has the same text as {b}") for a, b in r.duplicates]
    lines += [safe(f"  skipped: {why}") for _, why in r.skipped]
    return "\n".join(lines)
