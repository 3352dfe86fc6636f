"""Tests of the ingest stage with real files, real PDFs and a real local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pypdf import PdfWriter

from index.errors import SourceUnreadable, UnsupportedSource
from index.ingest import (
    SUPPORTED_SUFFIXES,
    clean_text,
    discover,
    iter_documents,
    load_path,
    load_url,
)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
SEED_META = json.loads((SEEDS / "metadata.json").read_text(encoding="utf-8"))

ARTICLE = (
    "The British ambassador to the United States resigned on Wednesday after leaked cables "
    "described the administration as inept and dysfunctional."
)
SECOND = (
    "In his letter, the diplomat said the current situation made it impossible for him to "
    "carry out his role as he would like, and that he wished to end the speculation."
)
THIRD = (
    "The Foreign Office said it regretted the decision and praised a long career of public "
    "service spanning more than four decades in several capitals."
)
PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Ambassador resigns after leak | The Daily Record</title>
<meta property="og:title" content="Ambassador resigns after leak">
<meta property="og:site_name" content="The Daily Record">
<meta property="article:published_time" content="2019-07-10T09:00:00Z">
</head><body>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/world">World news</a></li>
<li><a href="/sport">Sport</a></li><li><a href="/subscribe">Subscribe today</a></li></ul>
</nav></header>
<div class="cookie-banner" id="cookie-consent"><p>We use cookies to improve your experience.
<button>Accept all cookies</button></p></div>
<main><article>
<h1>Ambassador resigns after leak</h1>
<p class="byline">By A. Reporter</p>
<p>{ARTICLE}</p>
<p>{SECOND}</p>
<p>{THIRD}</p>
</article>
<aside class="related"><h3>Most read</h3><ul><li><a href="/a">Ten tips for summer gardens</a></li>
</ul></aside></main>
<footer><p>Copyright 2019 The Daily Record. All rights reserved.</p>
<a href="/privacy">Privacy policy</a> <a href="/terms">Terms of use</a></footer>
</body></html>"""


def sha16(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """Write a minimal valid PDF by hand: one Helvetica text stream per page."""
    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{kids}] /Count {count} >>",
               "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    for i, lines in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>")
        shown = " 0 -16 Td ".join(f"({line}) Tj" for line in lines)
        stream = f"BT /F1 12 Tf 72 720 Td {shown} ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    if title:
        objects.append(f"<< /Title ({title}) >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


# --- clean_text ---------------------------------------------------------------------------

def test_clean_text_removes_only_the_info_icon_token():
    raw = ("the United Statesinfo-icon, USinfo-icon President and Twitterinfo-icon 'diplomacy'; "
           "Britaininfo-icon's INFO-ICON position. An information icon and info icon stay.")
    assert clean_text(raw) == (
        "the United States, US President and Twitter 'diplomacy'; "
        "Britain's position. An information icon and info icon stay.")


def test_clean_text_normalises_quotes_spaces_and_lines():
    raw = ("  \u201cInept,\u201d he said \u2014 \u2018twice\u2019 \u2013 on\u00a0Monday.\u2009 \r\n"
           "second\t\t  line   \r\n\r\n\r\n\n\n  third paragraph\u202f \n")
    assert clean_text(raw) == (
        "\"Inept,\" he said \u2014 'twice' \u2013 on Monday.\nsecond line\n\nthird paragraph")


def test_clean_text_composes_unicode_nfc():
    assert clean_text("cafe\u0301 nai\u0308ve") == "caf\u00e9 na\u00efve"


@pytest.mark.parametrize("raw", [
    "infoinfo-icon-icon and info-info-iconicon",
    "e\u0301 info-icon\u0301 \u00a0 \u2018x\u2019",
    "a \r\r\n\n \t\n\u2028b\u00a0\u00a0\n\n\n\nc  ",
    "\ufeffzero\u200bwidth  \u201cq\u201d\n \n \n end",
    (SEEDS / "000_cc900589cab259ee.txt").read_text(encoding="utf-8"),
    (SEEDS / "004_f51d83ee9a022f67.txt").read_text(encoding="utf-8"),
])
def test_clean_text_is_idempotent(raw):
    once = clean_text(raw)
    assert clean_text(once) == once
    assert "info-icon" not in once.lower()


# --- seeds and sidecar metadata -----------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SEED_META))
def test_every_seed_loads_with_its_metadata(name):
    doc = load_path(SEEDS / name)
    meta = SEED_META[name]
    assert doc.source.title == meta["title"]
    assert doc.source.publisher == meta["publisher"]
    assert doc.source.date == meta["date"]
    assert doc.source.url is None
    assert doc.source.path == (SEEDS / name).as_posix()
    assert doc.source.content_hash == hashlib.sha256(doc.text.encode()).hexdigest()
    assert len(doc.text) > 1000 and clean_text(doc.text) == doc.text
    assert not any(c in doc.text for c in "\u201c\u201d\u2018\u2019\u00a0\r")


def test_seed_publisher_and_info_icon_cleanup():
    assert load_path(SEEDS / "004_f51d83ee9a022f67.txt").source.publisher == "Los Angeles Times"
    text = load_path(SEEDS / "000_cc900589cab259ee.txt").text
    assert "info-icon" not in text
    assert "ambassador to the United States, as a diplomatic row" in text
    assert "about US President Donald Trump." in text


def test_seed_folder_loads_every_seed_in_order():
    docs = list(iter_documents([str(SEEDS)]))
    assert [Path(d.source.path).name for d in docs] == sorted(SEED_META)


def test_ids_are_the_normalised_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("docs").mkdir()
    Path("docs/a.txt").write_text("Alpha\n\nBody text.", encoding="utf-8")
    doc = load_path("./docs/../docs//a.txt")
    assert doc.source.path == "docs/a.txt"
    assert doc.source.id == sha16("docs/a.txt")
    absolute = load_path(tmp_path / "docs" / "a.txt")
    assert absolute.source.id == sha16((tmp_path / "docs" / "a.txt").as_posix())
    assert absolute.source.content_hash == doc.source.content_hash


def test_sidecar_applies_is_reread_when_edited_and_explicit_metadata_wins(tmp_path):
    (tmp_path / "a.txt").write_text("First line here\n\nBody.", encoding="utf-8")
    sidecar = tmp_path / "metadata.json"
    sidecar.write_text(json.dumps({"a.txt": {"title": "Sidecar", "publisher": None,
                                             "url": "https://example.org/a"}}))
    doc = load_path(tmp_path / "a.txt")
    assert (doc.source.title, doc.source.publisher, doc.source.url) == (
        "Sidecar", None, "https://example.org/a")
    sidecar.write_text(json.dumps({"a.txt": {"title": "Edited title", "publisher": "Gazette"}}))
    doc = load_path(tmp_path / "a.txt")
    assert (doc.source.title, doc.source.publisher) == ("Edited title", "Gazette")
    assert load_path(tmp_path / "a.txt", metadata={"title": "Given"}).source.title == "Given"


def test_malformed_sidecar_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("Some text", encoding="utf-8")
    (tmp_path / "metadata.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SourceUnreadable, match="metadata.json"):
        load_path(tmp_path / "a.txt")
    (tmp_path / "metadata.json").write_text('["a.txt"]', encoding="utf-8")
    with pytest.raises(SourceUnreadable, match="metadata.json"):
        load_path(tmp_path / "a.txt")


# --- titles and formats -------------------------------------------------------------------

def test_titles_fall_back_from_heading_to_first_line_to_stem(tmp_path):
    (tmp_path / "n.md").write_text("Intro line\n\n# The *Real* Title #\n\nText.", encoding="utf-8")
    (tmp_path / "short.txt").write_text("  A short first line \nMore text.", encoding="utf-8")
    (tmp_path / "long-notes.txt").write_text("word " * 40 + "\n\nMore.", encoding="utf-8")
    doc = load_path(tmp_path / "n.md")
    assert doc.source.title == "The *Real* Title"
    assert doc.text.startswith("Intro line\n\n# The *Real* Title #")  # markdown kept as is
    assert load_path(tmp_path / "short.txt").source.title == "A short first line"
    assert load_path(tmp_path / "long-notes.txt").source.title == "long-notes"


def test_html_keeps_the_article_and_drops_boilerplate(tmp_path):
    (tmp_path / "page.html").write_text(PAGE, encoding="utf-8")
    doc = load_path(tmp_path / "page.html")
    assert f"{ARTICLE}\n\n{SECOND}\n\n{THIRD}" in doc.text
    for junk in ("cookies", "Subscribe today", "Privacy policy", "All rights reserved",
                 "World news", "<p>"):
        assert junk not in doc.text
    assert doc.source.title == "Ambassador resigns after leak"
    assert doc.source.publisher == "The Daily Record"
    assert doc.source.date == "2019-07-10"


def test_html_without_article_text(tmp_path):
    (tmp_path / "empty.htm").write_text(
        "<html><head><title>Nothing</title></head><body></body></html>", encoding="utf-8")
    with pytest.raises(SourceUnreadable, match="has no article text"):
        load_path(tmp_path / "empty.htm")


def test_pdf_pages_and_title(tmp_path):
    pdf = make_pdf([["First page line one.", "First page line two."], ["Second page text."]],
                   title="A Report on Cables")
    (tmp_path / "report.pdf").write_bytes(pdf)
    doc = load_path(tmp_path / "report.pdf")
    assert doc.source.title == "A Report on Cables"
    assert "First page line one.\nFirst page line two.\n\nSecond page text." == doc.text
    (tmp_path / "untitled.pdf").write_bytes(make_pdf([["Opening words."]]))
    assert load_path(tmp_path / "untitled.pdf").source.title == "Opening words."


def test_pdf_failures_are_source_unreadable(tmp_path):
    blank = PdfWriter()
    blank.add_blank_page(200, 200)
    buffer = io.BytesIO()
    blank.write(buffer)
    (tmp_path / "scan.pdf").write_bytes(buffer.getvalue())
    with pytest.raises(SourceUnreadable, match="scanned"):
        load_path(tmp_path / "scan.pdf")
    blank.encrypt(user_password="secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    blank.write(buffer)
    (tmp_path / "locked.pdf").write_bytes(buffer.getvalue())
    with pytest.raises(SourceUnreadable, match="encrypted"):
        load_path(tmp_path / "locked.pdf")
    (tmp_path / "broken.pdf").write_bytes(make_pdf([["Cut short."]])[:60])
    with pytest.raises(SourceUnreadable, match="not a readable PDF"):
        load_path(tmp_path / "broken.pdf")


def test_utf8_bom_is_dropped(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffTitle line\nText".encode())
    assert load_path(tmp_path / "bom.txt").text == "Title line\nText"


# --- unreadable and unsupported files -----------------------------------------------------

@pytest.mark.parametrize("name, data, message", [
    ("nul.txt", b"text\x00with nul bytes", "looks binary"),
    ("picture.txt", b"\x89PNG\r\n\x1a\n IHDR without nul bytes", "looks binary"),
    ("latin1.md", "caf\u00e9 au lait".encode("latin-1"), "is not UTF-8 text"),
    ("empty.txt", b"", "has no text"),
    ("blank.md", " \n\t\r\n\u00a0 ".encode(), "has no text"),
])
def test_unreadable_text_files(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(SourceUnreadable, match=message) as caught:
        load_path(tmp_path / name)
    assert "\n" not in str(caught.value)


def test_missing_file_folder_and_size_cap(tmp_path):
    with pytest.raises(SourceUnreadable, match="no such file"):
        load_path(tmp_path / "gone.txt")
    with pytest.raises(SourceUnreadable, match="is a folder"):
        load_path(tmp_path)
    (tmp_path / "big.txt").write_text("x" * 100, encoding="utf-8")
    with pytest.raises(SourceUnreadable, match="larger than 50 bytes"):
        load_path(tmp_path / "big.txt", max_bytes=50)
    assert load_path(tmp_path / "big.txt", max_bytes=100).text == "x" * 100


def test_unsupported_suffix_names_the_supported_ones(tmp_path):
    (tmp_path / "sheet.docx").write_bytes(b"PK\x03\x04")
    with pytest.raises(UnsupportedSource) as caught:
        load_path(tmp_path / "sheet.docx")
    assert all(suffix in str(caught.value) for suffix in SUPPORTED_SUFFIXES)
    with pytest.raises(UnsupportedSource):
        list(iter_documents([str(tmp_path / "sheet.docx")]))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden", encoding="utf-8")
    secret.chmod(0)
    try:
        with pytest.raises(SourceUnreadable, match="permission denied"):
            load_path(secret)
    finally:
        secret.chmod(0o644)


# --- folders ------------------------------------------------------------------------------

def make_tree(root: Path) -> None:
    for name, text in {"b.txt": "Bee", "a/z.md": "# Zed\nText", "a/c/deep.txt": "Deep",
                       ".hidden.txt": "no", ".git/config.txt": "no", "a/_b.htm": "",
                       "image.png": "no", "a/notes.docx": "no", "a/metadata.json": "{}"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_discover_recurses_sorted_and_skips_hidden_and_unsupported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("docs").mkdir()
    make_tree(Path("docs"))
    found = discover(["./docs/", "https://example.org/x", "docs/b.txt", "missing.txt"])
    assert found == ["docs/a/_b.htm", "docs/a/c/deep.txt", "docs/a/z.md", "docs/b.txt",
                     "https://example.org/x", "missing.txt"]


def test_iter_documents_reports_errors_and_goes_on(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "empty").mkdir()
    specs = [str(tmp_path), str(tmp_path / "empty"), str(tmp_path / "gone.txt")]
    errors: list[tuple[str, Exception]] = []
    docs = list(iter_documents(specs, on_error=lambda spec, err: errors.append((spec, err))))
    assert [d.text for d in docs] == ["Deep", "# Zed\nText", "Bee"]
    assert [(Path(spec).name, type(err)) for spec, err in errors] == [
        ("_b.htm", SourceUnreadable), ("empty", SourceUnreadable), ("gone.txt", SourceUnreadable)]
    with pytest.raises(SourceUnreadable, match="_b.htm"):
        list(iter_documents(specs))


# --- URLs ---------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    agents: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        Handler.agents.append(self.headers.get("User-Agent", ""))
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as tested
            pass

    def route(self) -> None:
        if self.path == "/article":
            self.send(200, "text/html; charset=utf-8", PAGE.encode())
        elif self.path == "/cp1251":  # no <meta charset>: only the header names the encoding
            page = PAGE.replace('<meta charset="utf-8">', "").replace(
                "<p>The British", "<p>\u041a\u0430\u0444\u0435 report. The British")
            self.send(200, "text/html; charset=windows-1251", page.encode("cp1251"))
        elif self.path == "/notes.txt":
            self.send(200, "text/plain", "Plain notes\n\nwith \u201cquotes\u201d".encode())
        elif self.path == "/paper.pdf":
            self.send(200, "application/pdf", make_pdf([["Served PDF text."]], title="Paper"))
        elif self.path == "/image.png":
            self.send(200, "image/png", b"\x89PNG\r\n\x1a\n")
        elif self.path == "/big":
            self.send(200, "text/plain", b"y" * 5000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self.send(200, "text/plain", b"late")
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/trickle-headers":  # a byte of the status line every 0.1 s
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Slow: " + b"x" * 200:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/short":  # promises 1,000 bytes, sends 20, hangs up
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only twenty bytes....")
            self.close_connection = True
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send(404, "text/html", b"<h1>Not Found</h1>")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_html_article(server):
    url = f"{server}/article"
    doc = load_url(url)
    assert f"{ARTICLE}\n\n{SECOND}" in doc.text
    assert "cookies" not in doc.text and "Privacy policy" not in doc.text
    assert (doc.source.title, doc.source.publisher) == (
        "Ambassador resigns after leak", "The Daily Record")
    assert (doc.source.url, doc.source.path, doc.source.id) == (url, None, sha16(url))
    assert Handler.agents[-1] == "citebot/0.1"


def test_url_charset_from_headers(server):
    assert "\u041a\u0430\u0444\u0435 report. The British" in load_url(f"{server}/cp1251").text


def test_url_text_and_pdf(server):
    notes = load_url(f"{server}/notes.txt")
    assert notes.text == 'Plain notes\n\nwith "quotes"'
    assert notes.source.title == "Plain notes"
    paper = load_url(f"{server}/paper.pdf")
    assert (paper.text, paper.source.title) == ("Served PDF text.", "Paper")


@pytest.mark.parametrize("path, kwargs, message", [
    ("/nowhere", {}, r": HTTP 404"),
    ("/image.png", {}, r"is not an article \(content type image/png\)"),
    ("/big", {"max_bytes": 1000}, r"larger than 1,000 bytes"),
    ("/slow", {"timeout": 0.3}, r"timed out after 0.3 s"),
    ("/trickle", {"timeout": 0.3}, r"timed out after 0.3 s"),
    # The timeout bounds the whole request: trickled headers never trip a per-read timeout.
    ("/trickle-headers", {"timeout": 0.5}, r"timed out after 0.5 s"),
    ("/short", {}, r"the download ended early \(21 of 1,000 bytes\)"),
    ("/loop", {}, r"too many redirects"),
])
def test_url_failures(server, path, kwargs, message):
    started = time.monotonic()
    with pytest.raises(SourceUnreadable, match=message) as caught:
        load_url(f"{server}{path}", **kwargs)
    assert str(caught.value).startswith(f"{server}{path}") and "\n" not in str(caught.value)
    assert time.monotonic() - started < 1.2


def test_url_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnreadable, match="cannot connect"):
        load_url(f"http://127.0.0.1:{port}/", timeout=2)


@pytest.mark.parametrize("url", ["ftp://example.org/a.txt", "file:///etc/passwd", "http://"])
def test_only_http_and_https(url):
    with pytest.raises(UnsupportedSource):
        load_url(url)


def test_iter_documents_mixes_urls_and_files(server, tmp_path):
    (tmp_path / "a.txt").write_text("Local file", encoding="utf-8")
    errors: list[str] = []
    docs = list(iter_documents([f"{server}/article", str(tmp_path), f"{server}/nowhere"],
                               timeout=5, on_error=lambda spec, err: errors.append(spec)))
    assert [d.source.title for d in docs] == ["Ambassador resigns after leak", "Local file"]
    assert errors == [f"{server}/nowhere"]
