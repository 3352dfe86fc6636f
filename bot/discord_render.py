"""How answers look in Discord: pure functions from records to embed dicts, within Discord's limits.

Nothing here touches the network or discord.py; the bot turns the dicts into `discord.Embed`s.
Text from the sources is escaped so that it can neither format nor fake the bot's message:
markdown, masked links, mentions, custom emoji and timestamps all show as plain characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from index import Answer, Citation, Source, highlight_spans, is_web_url

# Discord's limits, in characters (discord.com/developers/docs/resources/message#embed-limits).
CONTENT = 2000
TITLE = 256
DESCRIPTION = 4096
FIELD_NAME = 256
FIELD_VALUE = 1024
FOOTER = 2048
AUTHOR = 256
FIELDS = 25
EMBED_TOTAL = 6000  # title + description + field names and values + footer + author, per message
EMBEDS = 10

QUOTE_CHARS = 300  # a citation shows a short verbatim quote; the full passage is in the source
SOURCE_TITLE_CHARS = 120
SOURCES_PER_PAGE = 10
ELLIPSIS = "…"

ANSWERED_COLOUR = 0x5865F2
UNANSWERED_COLOUR = 0x99AAB5
HEDGED_COLOUR = 0xE6A23C  # answered, but "not sure the sources answer this"

NOT_ANSWERED = "I couldn't find an answer to that in the indexed sources."
HEDGED = "*Not sure the sources answer this; the closest they come:*"
NO_MORE = "There are no more sources for this question."


def full_stop(text: str) -> str:
    """The text as a sentence: a full stop added unless it already ends one."""
    return text if text.endswith((".", "!", "?")) else text + "."

_URL = re.compile(r"https?://[^\s<>]+")
_INLINE = re.compile(r"([\\*_~`|<>\[\]])")
# Markdown that only counts at the start of a line: headings, quotes, lists, "-#" subtext.
_LINE_START = re.compile(r"^(#{1,3}\s|>|-|\+\s|\d+[.)]\s)")
_MASS_MENTION = re.compile(r"@(everyone|here)", re.IGNORECASE)
_ZWSP = "\u200b"


# -- text ---------------------------------------------------------------------------------------

def clip(text: str, limit: int) -> str:
    """Text cut to at most limit characters, on a word boundary, ending with "…"."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[:limit]
    cut = text[: limit - len(ELLIPSIS)]
    if not text[len(cut)].isspace():  # mid-word: back to the last space, unless too far back
        space = max(cut.rfind(" "), cut.rfind("\n"))
        if space >= len(cut) * 0.6:
            cut = cut[:space]
    cut = cut.rstrip(" \n,;:-—")
    # A trailing lone backslash would escape the ellipsis (harmless) or, mid-markup, eat a char.
    if (len(cut) - len(cut.rstrip("\\"))) % 2:
        cut = cut[:-1]
    return cut + ELLIPSIS


def squash(text: str) -> str:
    """Whitespace collapsed to single spaces: a quote cannot start new markdown lines."""
    return " ".join(text.split())


def _escape_line_start(text: str) -> str:
    # "1. " needs its period escaped: a backslash before a digit would show.
    return _LINE_START.sub(lambda m: (re.sub(r"^(\d+)", r"\1\\", m.group(1))
                                      if m.group(1)[0].isdigit() else "\\" + m.group(1)), text)


def _escape_inline(text: str) -> str:
    parts, last = [], 0
    for m in _URL.finditer(text):  # links stay clickable: a backslash inside would break them
        parts += [_INLINE.sub(r"\\\1", text[last:m.start()]), m.group()]
        last = m.end()
    parts.append(_INLINE.sub(r"\\\1", text[last:]))
    return _MASS_MENTION.sub(lambda m: "@" + _ZWSP + m.group(1), "".join(parts))


def escape(text: str, *, line_start: bool = True) -> str:
    """Source or user text made inert: shows as typed, cannot format, link, mention or ping.

    Backslash escapes are invisible in Discord, so the text stays readable.
    """
    out = _escape_inline(squash(text))
    return _escape_line_start(out) if line_start else out


def _fit(raw: str, limit: int, render: Callable[[str], str]) -> str:
    """render(the longest clipped prefix of raw) that is at most limit characters long.

    render must not shorten its input (escaping only adds), so no prefix longer than limit
    can fit: the search stays small however huge raw is.
    """
    if len(raw) <= limit and len(whole := render(raw)) <= limit:
        return whole
    lo, hi, best = 0, min(len(raw), limit), render(clip(raw, 1))
    while lo <= hi:
        mid = (lo + hi) // 2
        out = render(clip(raw, mid))
        if len(out) <= limit:
            best, lo = out, mid + 1
        else:
            hi = mid - 1
    return best if len(best) <= limit else clip(best, limit)


def emphasise(text: str, keywords: Sequence[str], *, line_start: bool = True) -> str:
    """Escaped text with the words matching keywords in **bold**."""
    text = squash(text)
    urls = [m.span() for m in _URL.finditer(text)]
    out, last = [], 0
    for a, b in highlight_spans(text, keywords):
        if any(u0 < b and a < u1 for u0, u1 in urls):
            continue
        out += [_escape_inline(text[last:a]), "**", _escape_inline(text[a:b]), "**"]
        last = b
    out.append(_escape_inline(text[last:]))
    joined = "".join(out)
    return _escape_line_start(joined) if line_start else joined


def _safe_url(url: str | None) -> str | None:
    """A URL usable as a masked-link target, or None (not http(s), or too long to be worth it)."""
    if not url or not is_web_url(url) or len(url) > 512:
        return None
    for ch, code in ((" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E")):
        url = url.replace(ch, code)
    return url


def _link(label: str, url: str | None) -> str:
    """An escaped label, linked when the URL is usable."""
    target = _safe_url(url)
    return f"[{label}]({target})" if target else label


def source_name(source: Source) -> str:
    """What a source is called: its title, else its location."""
    return squash(source.title or source.location) or source.id


def _domain(url: str | None) -> str:
    return urlsplit(url).netloc.removeprefix("www.") if url else ""


# -- answers ------------------------------------------------------------------------------------

def _also_in(sources: Sequence[Source], budget: int) -> str:
    """ "*also in:* A (Publisher), B and 2 more" within budget characters; "" if none."""
    if not sources or budget < 20:
        return ""
    shown: list[str] = []
    for i, s in enumerate(sources):
        title = escape(clip(source_name(s), 80), line_start=False)
        item = _link(title, s.url) + (f" ({escape(s.publisher, line_start=False)})"
                                      if s.publisher else "")
        rest = len(sources) - i - 1
        tail = f" and {rest} more" if rest else ""
        candidate = "*also in:* " + ", ".join([*shown, item]) + tail
        if len(candidate) > budget:
            break
        shown.append(item)
    if not shown:
        return clip(f"also in {len(sources)} other source" + ("s" if len(sources) > 1 else ""),
                    budget)
    hidden = len(sources) - len(shown)
    return "*also in:* " + ", ".join(shown) + (f" and {hidden} more" if hidden else "")


def citation_field(c: Citation, keywords: Sequence[str] = (), *,
                   value_limit: int = FIELD_VALUE) -> dict:
    """One citation as an embed field: number and title; quote, publisher (linked), also-in."""
    name = _fit(source_name(c.source), FIELD_NAME - len(f"[{c.n}] "),
                lambda t: escape(t, line_start=False))
    s = c.source
    who = escape(s.publisher, line_start=False) if s.publisher else _domain(_safe_url(s.url))
    byline = "— " + _link(escape(clip(who, 100), line_start=False) or "source", s.url) \
        if (who or _safe_url(s.url)) else ""
    value_limit = min(value_limit, FIELD_VALUE)
    also = _also_in(c.also_in, max(0, min(400, value_limit - len(byline) - 120)))
    tail = "".join("\n" + part for part in (byline, also) if part)
    quote_budget = max(value_limit - len(tail), 8)
    quote = _fit(clip(squash(c.quote), QUOTE_CHARS), quote_budget,
                 lambda t: "“" + emphasise(t, keywords, line_start=False) + "”")
    return {"name": f"[{c.n}] {name}", "value": clip(quote + tail, value_limit),
            "inline": False}


def _fields(citations: Sequence[Citation], keywords: Sequence[str], total: int) -> list[dict]:
    """Citation fields whose names and values add up to at most total characters."""
    citations = list(citations)[:FIELDS]
    while citations:
        per = total // len(citations)
        fields = [citation_field(c, keywords, value_limit=min(FIELD_VALUE, per - 60))
                  for c in citations]
        if per >= 160 and sum(len(f["name"]) + len(f["value"]) for f in fields) <= total:
            return fields
        citations.pop()  # too many to show readably: keep the best ones
    return []


def answer_embed(answer: Answer) -> dict:
    """The embed for an answer: answer sentences with keywords in bold, numbered citations."""
    title = _fit(squash(answer.question), TITLE, lambda t: escape(t, line_start=False))
    if answer.answered:
        footer = ("Quotes are verbatim from the indexed sources. "
                  "More sources: the button below.")
        colour = ANSWERED_COLOUR
        render = lambda t: emphasise(t, answer.keywords)  # noqa: E731
        text = squash(answer.answer)
        if answer.hedged:
            plain = render
            render = lambda t: HEDGED + "\n" + plain(t)  # noqa: E731
            colour = HEDGED_COLOUR
    else:
        footer = "Try rephrasing the question, or see what is indexed with /sources."
        colour = UNANSWERED_COLOUR
        render = lambda t: t  # noqa: E731
        text = NOT_ANSWERED + ("\nThe closest passages are below; they do not answer it."
                               if answer.citations else "")
    if not answer.more:
        footer = footer.split(" More sources")[0]
    budget = EMBED_TOTAL - len(title) - len(footer)
    natural = _fields(answer.citations, answer.keywords, budget)
    field_chars = sum(len(f["name"]) + len(f["value"]) for f in natural)
    description = _fit(text, min(DESCRIPTION, max(budget - field_chars, budget // 3)), render)
    fields = natural
    if field_chars > budget - len(description):
        fields = _fields(answer.citations, answer.keywords, budget - len(description))
    return fit_embed({"title": title, "description": description, "color": colour,
                      "fields": fields, "footer": {"text": footer}})


def more_embed(answer: Answer) -> dict:
    """The next citations beyond those shown (answer.more), for the "More sources" button."""
    title = _fit("More sources: " + squash(answer.question), TITLE,
                 lambda t: escape(t, line_start=False))
    if not answer.more:
        return fit_embed({"title": title, "description": NO_MORE, "color": UNANSWERED_COLOUR})
    fields = _fields(answer.more, answer.keywords, EMBED_TOTAL - len(title))
    return fit_embed({"title": title, "color": ANSWERED_COLOUR, "fields": fields})


# -- sources ------------------------------------------------------------------------------------

def page_count(items: int, per_page: int = SOURCES_PER_PAGE) -> int:
    return max(1, math.ceil(items / per_page))


def source_line(i: int, s: Source) -> str:
    """One line of /sources: title (linked), publisher, passages, date added."""
    title = _link(escape(clip(source_name(s), SOURCE_TITLE_CHARS), line_start=False), s.url)
    bits = [f"**{i}.** {title}"]
    if s.publisher:
        bits.append(escape(clip(squash(s.publisher), 60), line_start=False))
    bits.append(f"{s.chunks} passage" + ("" if s.chunks == 1 else "s"))
    if s.added_at:
        bits.append("added " + escape(s.added_at[:10], line_start=False))
    return " · ".join(bits)


def sources_embed(sources: Sequence[Source], page: int = 1,
                  per_page: int = SOURCES_PER_PAGE) -> dict:
    """One page (1-based, clamped) of the index listing, sorted by title."""
    pages = page_count(len(sources), per_page)
    page = min(max(page, 1), pages)
    ordered = sorted(sources, key=lambda s: (source_name(s).casefold(), s.id))
    first = (page - 1) * per_page
    lines = [clip(source_line(first + i + 1, s), DESCRIPTION // per_page - 1)
             for i, s in enumerate(ordered[first:first + per_page])]
    passages = sum(s.chunks for s in sources)
    return fit_embed({
        "title": f"Indexed sources ({len(sources)})",
        "description": "\n".join(lines) or "Nothing is indexed yet.",
        "color": ANSWERED_COLOUR,
        "footer": {"text": f"Page {page} of {pages} · {passages} passages in all"},
    })


# -- limits -------------------------------------------------------------------------------------

def notice(text: str) -> str:
    """A plain message of the bot's own (not source text) within the content limit."""
    return clip(text, CONTENT)


def embed_chars(embed: dict) -> int:
    """Characters that count toward the 6,000 per message."""
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + sum(len(f.get("name", "")) + len(f.get("value", "")) for f in embed.get("fields", []))
            + len(embed.get("footer", {}).get("text", ""))
            + len(embed.get("author", {}).get("name", "")))


def fit_embed(embed: dict) -> dict:
    """The embed with every part within Discord's limits (a last guard; builders aim lower)."""
    out = dict(embed)
    for key, limit in (("title", TITLE), ("description", DESCRIPTION)):
        if out.get(key):
            out[key] = clip(out[key], limit)
        else:
            out.pop(key, None)
    for key, limit in (("footer", FOOTER), ("author", AUTHOR)):
        if key in out:
            part = dict(out[key])
            part["text" if key == "footer" else "name"] = clip(
                part.get("text" if key == "footer" else "name", ""), limit)
            out[key] = part
    fields = [{**f, "name": clip(f["name"] or "\u200b", FIELD_NAME),
               "value": clip(f["value"] or "\u200b", FIELD_VALUE)}
              for f in out.get("fields", [])[:FIELDS]]
    out["fields"] = fields
    while embed_chars(out) > EMBED_TOTAL and fields:
        fields.pop()
    excess = embed_chars(out) - EMBED_TOTAL
    if excess > 0 and out.get("description"):
        out["description"] = clip(out["description"], max(1, len(out["description"]) - excess))
    if not fields:
        out.pop("fields")
    return out
