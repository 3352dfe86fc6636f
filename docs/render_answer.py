"""Draw docs/answer.png: an answer exactly as the bot sends it, shown the way Discord shows it.

Runs the real bot (real model and index over seeds/) against the fake Discord from the tests,
asks one question by mention, takes the embed the bot sent from the fake server's record,
renders it as HTML in Discord's dark theme and screenshots that with headless Chromium.

    python docs/render_answer.py                      # -> docs/answer.png
    python docs/render_answer.py --question "why did Darroch resign?" --out /tmp/a.png

Needs chromium (apt-get install chromium). Nothing reaches the internet.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.app import open_library  # noqa: E402
from bot.config import Config  # noqa: E402
from tests.botharness import running_bot  # noqa: E402
from tests.fakediscord import FakeDiscord  # noqa: E402

WIDTH = 640
_LINK = re.compile(r"\[((?:\\.|[^\]\\])*)\]\((https?://[^)\s]+)\)")

CSS = """
body { margin: 0; background: #313338; color: #dbdee1; width: %dpx;
       font: 16px/1.375 "Liberation Sans", "DejaVu Sans", "Noto Color Emoji", sans-serif; }
.msg { position: relative; padding: 8px 48px 12px 72px; }
.reply { display: flex; align-items: center; gap: 4px; font-size: 14px; color: #b5bac1;
         margin-bottom: 4px; position: relative; }
.reply::before { content: ""; position: absolute; left: -36px; top: 9px; width: 30px;
                 height: 12px; border-left: 2px solid #4e5058; border-top: 2px solid #4e5058;
                 border-top-left-radius: 6px; }
.reply .mini { width: 16px; height: 16px; border-radius: 50%%; background: #f0b232; }
.reply b { color: #f2f3f5; font-weight: 600; opacity: .9; }
.mention { background: rgba(88,101,242,.3); color: #c9cdfb; border-radius: 3px; padding: 0 2px; }
.avatar { position: absolute; left: 16px; top: 34px; width: 40px; height: 40px;
          border-radius: 50%%; background: #5865f2; color: white; font-weight: 700;
          display: flex; align-items: center; justify-content: center; font-size: 18px; }
.head { display: flex; align-items: baseline; gap: 6px; }
.name { color: #f2f3f5; font-weight: 600; }
.tag { background: #5865f2; color: white; font-size: 10px; font-weight: 700; padding: 1px 4px;
       border-radius: 3px; position: relative; top: -2px; }
.time { color: #949ba4; font-size: 12px; }
.embed { margin-top: 4px; max-width: 516px; background: #2b2d31; border-radius: 4px;
         border-left: 4px solid #5865f2; padding: 8px 16px 16px 12px; box-sizing: border-box; }
.title { color: #f2f3f5; font-weight: 700; font-size: 16px; margin-top: 8px; }
.desc { font-size: 14px; margin-top: 8px; white-space: normal; }
.field { margin-top: 8px; font-size: 14px; }
.field .fname { color: #f2f3f5; font-weight: 600; margin-bottom: 2px; }
.footer { font-size: 12px; color: #b5bac1; margin-top: 8px; }
a { color: #00a8fc; text-decoration: none; }
strong { color: #f2f3f5; }
.buttons { display: flex; gap: 8px; margin-top: 8px; }
.button { background: #4e5058; color: white; border-radius: 3px; height: 32px; padding: 0 16px;
          display: flex; align-items: center; gap: 4px; font-size: 14px; font-weight: 500; }
.button.off { opacity: .5; }
"""


def md(text: str) -> str:
    """HTML for the subset of Discord markdown the bot sends: escapes, **bold**, *italic*,
    links."""
    out, i, bold, italic = [], 0, False, False
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(html.escape(text[i + 1]))
            i += 2
        elif text.startswith("**", i):
            out.append("</strong>" if bold else "<strong>")
            bold, i = not bold, i + 2
        elif text[i] == "*":
            out.append("</em>" if italic else "<em>")
            italic, i = not italic, i + 1
        elif (m := _LINK.match(text, i)):
            out.append(f'<a href="{html.escape(m[2])}">{md(m[1])}</a>')
            i = m.end()
        elif text[i] == "\n":
            out.append("<br>")
            i += 1
        else:
            out.append(html.escape(text[i]))
            i += 1
    return "".join(out) + ("</em>" if italic else "") + ("</strong>" if bold else "")


def page(question: str, body: dict) -> str:
    e = body["embeds"][0]
    colour = f"#{e.get('color', 0x5865F2):06x}"
    fields = "".join(f'<div class="field"><div class="fname">{md(f["name"])}</div>'
                     f'<div>{md(f["value"])}</div></div>' for f in e.get("fields", []))
    buttons = "".join(
        f'<div class="button{" off" if c.get("disabled") else ""}">'
        f'<span>{html.escape((c.get("emoji") or {}).get("name", ""))}</span>'
        f'<span>{html.escape(c.get("label", ""))}</span></div>'
        for row in body.get("components", []) for c in row["components"])
    now = datetime.now().strftime("%H:%M")
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>{CSS % WIDTH}</style>
</head><body><div class="msg">
<div class="reply"><span class="mini"></span><b>@reader</b>
<span><span class="mention">@citebot</span> {html.escape(question)}</span></div>
<div class="avatar">c</div>
<div class="head"><span class="name">citebot</span><span class="tag">APP</span>
<span class="time">Today at {now}</span></div>
<div class="embed" style="border-left-color: {colour}">
<div class="title">{md(e.get("title", ""))}</div>
<div class="desc">{md(e.get("description", ""))}</div>{fields}
<div class="footer">{md(e.get("footer", {}).get("text", ""))}</div></div>
<div class="buttons">{buttons}</div></div>
<script>document.title = "height=" +
  Math.ceil(document.querySelector(".msg").getBoundingClientRect().bottom);</script>
</body></html>"""


def ask_the_bot(question: str, workdir: Path) -> dict:
    """The message body the bot sends in reply to a mention, as the fake Discord recorded it."""
    cfg = Config()
    cfg.index.dir = str(workdir / "index")
    cfg.index.sources = [str(ROOT / "seeds")]
    fake = FakeDiscord()
    cfg.discord.guild_id, cfg.discord.data = fake.guild_id, str(workdir / "bot.sqlite")
    with running_bot(fake, open_library(cfg), cfg.discord) as run:
        return run.mention(question).body


def chromium(*args: str) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        sys.exit("render_answer: chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def screenshot(page_html: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "answer.html"
        src.write_text(page_html, encoding="utf-8")
        dom = chromium("--dump-dom", f"--window-size={WIDTH},2000", src.as_uri())
        height = int(re.search(r"height=(\d+)", dom)[1])
        chromium(f"--screenshot={out}", f"--window-size={WIDTH},{height}", src.as_uri())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="who defended Darroch?")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "answer.png")
    parser.add_argument("--html", type=Path, help="also keep the HTML page here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        body = ask_the_bot(args.question, Path(tmp))
    html_page = page(args.question, body)
    if args.html:
        args.html.write_text(html_page, encoding="utf-8")
    screenshot(html_page, args.out.resolve())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
