"""bot/discord_render.py: answers, sources and notices drawn as Discord embeds (pure, no network).

Every drawn embed is checked against Discord's documented limits (fakediscord.invalid_message).
"""

from __future__ import annotations

import json

from bot import discord_render as render
from index.records import Answer, Citation, Source

from .botharness import assert_fits, huge_answer, plain


def test_clip_cuts_on_a_word_boundary():
    assert render.clip("short", 10) == "short"
    cut = render.clip("the quick brown fox jumps over the lazy dog", 20)
    assert cut == "the quick brown fox…" and len(cut) <= 20
    assert len(render.clip("x" * 5000, 100)) == 100
    assert render.clip("x" * 5000, 100).endswith("…")


def test_escape_keeps_text_readable_but_inert():
    nasty = ("**bold** __u__ ~~s~~ `code` ||spoiler|| [click](https://evil.example) "
             "<@123> <@&456> <#789> <t:1:R> <:e:1> @everyone @here see https://ok.example/a_b_c")
    out = render.escape("# heading " + nasty)
    assert out.startswith("\\# heading")
    for token in ("**", "__", "~~", "`", "||", "[click]", "<@", "<#", "<t:", "<:"):
        assert token not in out.replace("\\" + token[0], "")
    assert "@everyone" not in out and "@here" not in out
    assert "https://ok.example/a_b_c" in out  # links stay clickable, unescaped
    assert plain(out) == "# heading " + nasty.replace("@\u200b", "@")
    assert render.escape("> quote").startswith("\\>")
    assert render.escape("> quote") == "\\> quote" and render.escape("- x") == "\\- x"
    assert render.escape("12. item") == "12\\. item"  # "\\12." would show its backslash


def test_answer_embed_bolds_keywords_and_quotes_verbatim():
    src = Source(id="a", title="Darroch resigns", url="https://news.example/x",
                 publisher="Example News")
    other = Source(id="b", title="Copy of it", publisher="Wire")
    c = Citation(n=1, quote="Theresa May had defended Darroch.", source=src, start=0, end=30,
                 also_in=(other,))
    a = Answer(question="who defended Darroch?", answered=True,
               answer="Theresa May had defended Darroch.", citations=(c,),
               keywords=("defend", "darroch"))
    e = render.answer_embed(a)
    assert "**defended**" in e["description"] and "**Darroch**" in e["description"]
    f = e["fields"][0]
    assert f["name"] == "[1] Darroch resigns"
    assert plain(f["value"]).startswith("“Theresa May had defended Darroch.”")
    assert "[Example News](https://news.example/x)" in f["value"]
    assert "*also in:* Copy of it (Wire)" in f["value"]
    assert_fits(e)


def test_unanswered_says_so_plainly():
    e = render.answer_embed(Answer(question="q?", answered=False, answer="nope"))
    assert e["description"] == render.NOT_ANSWERED
    assert "fields" not in e


def test_huge_answer_is_cut_to_every_limit():
    a = huge_answer()
    for e in (render.answer_embed(a), render.more_embed(a)):
        assert_fits(e)
        assert e["title"].endswith("…")
        assert all(f["value"] for f in e.get("fields", []))
    e = render.answer_embed(a)
    assert e["description"].endswith("…") and len(e["fields"]) >= 3
    assert "@everyone" not in json.dumps(e, ensure_ascii=False)
    many = [Source(id=str(i), title="T" * 5000, chunks=i, publisher="P" * 500,
                   url="https://x.example/" + "b" * 600, added_at="2026-01-01T00:00:00Z")
            for i in range(95)]
    assert render.page_count(len(many)) == 10
    assert_fits(render.sources_embed(many, 10))
    assert render.sources_embed(many, 99)["footer"]["text"].startswith("Page 10 of 10")
    assert len(render.notice("n" * 5000)) == render.CONTENT
