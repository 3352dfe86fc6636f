"""The terminal's rendering of answers, passages and reports (plain text, ANSI on a TTY)."""

from __future__ import annotations

import textwrap

from index import Answer, Hit, Source, UpdateReport, highlight_spans

BOLD, DIM, RESET = "\033[1m", "\033[2m", "\033[0m"


def _bold(text: str, keywords, color: bool) -> str:
    if not color:
        return text
    out, last = [], 0
    for a, b in highlight_spans(text, keywords):
        out += [text[last:a], BOLD, text[a:b], RESET]
        last = b
    return "".join(out + [text[last:]])


def source_line(s: Source) -> str:
    who = f"{s.title}, {s.publisher}" if s.publisher else s.title
    return f"{who} ({s.location})"


def render_answer(ans: Answer, color: bool = False) -> str:
    if not ans.answered:
        return "Not in the sources: nothing in the indexed articles answers that."
    lines = [_wrap(_bold(ans.answer, ans.keywords, color)), ""]
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
        out.append(textwrap.indent(textwrap.fill(h.chunk.text, 96), "    "))
    return "\n".join(out) if out else "no passages"


def render_sources(sources: list[Source]) -> str:
    if not sources:
        return "the index is empty"
    return "\n".join(f"{s.chunks:>4} chunks  {s.added_at or '':<20}  {source_line(s)}"
                     for s in sources)


def render_report(r: UpdateReport) -> str:
    parts = [f"{len(r.added)} added", f"{len(r.changed)} changed",
             f"{len(r.removed)} removed", f"{len(r.unchanged)} unchanged"]
    if r.duplicates:
        parts.append(f"{len(r.duplicates)} duplicate(s) skipped")
    head = (f"{', '.join(parts)}; {r.chunks_embedded} chunks embedded, {r.chunks_total} in "
            f"the index ({r.seconds:.1f} s)")
    lines = [head if r.wrote else head + "; nothing changed, index left as it was"]
    lines += [f"  duplicate: {a} has the same text as {b}" for a, b in r.duplicates]
    lines += [f"  skipped: {why}" for _, why in r.skipped]
    return "\n".join(lines)
