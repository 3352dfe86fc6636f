"""Ingest: load files, folders and URLs into cleaned Documents with their metadata."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from index.errors import CitebotError, SourceUnreadable, UnsupportedSource
from index.fetch import fetch, one_line
from index.records import Document, Source

SUPPORTED_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf"}
SIDECAR = "metadata.json"
MAX_BYTES = 20_000_000
MAX_SIDECAR_BYTES = 5_000_000

_SUPPORTED = ", ".join(sorted(SUPPORTED_SUFFIXES))
_HTML_TYPES = {"text/html", "application/xhtml+xml"}
_TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown"}
# Signatures of common binary files that might carry a text suffix by mistake.
_BINARY_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"%PDF-", b"PK\x03\x04", b"\x7fELF")

_JUNK = re.compile(r"info-icon", re.IGNORECASE | re.ASCII)
_NEWLINES = re.compile(r"\r\n?|[\v\f\x85\u2028\u2029]")
_ZERO_WIDTH = re.compile(r"[\u200b\u2060\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'",
                         "\u201c": '"', "\u201d": '"', "\u201f": '"'})
_MD_HEADING = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def clean_text(raw: str) -> str:
    """Normalise text without changing its meaning; idempotent."""
    text = _drop_junk(_NEWLINES.sub("\n", raw))
    text = unicodedata.normalize("NFC", _ZERO_WIDTH.sub("", text)).translate(_QUOTES)
    text = "\n".join(line.strip(" ") for line in _SPACES.sub(" ", text).split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def _drop_junk(text: str) -> str:
    """text without "info-icon", also where removing one joins the halves of another.

    One pass of a stack over the matches, so nesting ("info-info-iconicon") costs no more
    than a plain occurrence: linear in the text, whatever it holds.
    """
    text = _JUNK.sub("", text)
    if not _JUNK.search(text):
        return text
    out: list[str] = []
    for ch in text:
        out.append(ch)
        if len(out) >= 9 and ch in "nN" and "".join(out[-9:]).lower() == "info-icon":
            del out[-9:]
    return "".join(out)


def read_bounded(path: str | Path, max_bytes: int, *, what: str = "file",
                 regular_only: bool = True) -> bytes:
    """The bytes of a file, refusing it as soon as more than max_bytes have come.

    The size is checked while reading, never trusted from stat(): /proc files, devices and
    pipes report 0 or nothing. With regular_only, FIFOs, sockets and devices are refused
    before a byte is read (opening is non-blocking, so a FIFO without writer cannot hang).
    Raises OSError for the caller to word, SourceUnreadable for a non-regular file or too much.
    """
    shown = os.fspath(path)
    if regular_only:
        _check_regular(os.stat(path).st_mode, shown, what)
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | (os.O_NONBLOCK if regular_only else 0))
    with os.fdopen(fd, "rb", buffering=0) as fh:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "is a folder, not a file", shown)
        if regular_only:  # the path may have been replaced between stat() and open()
            _check_regular(mode, shown, what)
        data = bytearray()
        while chunk := fh.read(min(1 << 20, max_bytes + 1 - len(data))):
            data += chunk
            if len(data) > max_bytes:
                raise SourceUnreadable(f"{shown} is larger than {max_bytes:,} bytes")
    return bytes(data)


def _check_regular(mode: int, shown: str, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise SourceUnreadable(f"{shown} is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
        raise SourceUnreadable(f"{shown} is {kind}, not a regular {what}: only regular "
                               "files are read")


def load_path(path: str | Path, *, metadata: dict | None = None,
              max_bytes: int = MAX_BYTES) -> Document:
    """Load one file; metadata overrides the entry of the folder's metadata.json."""
    shown = _normpath(path)
    file = Path(shown)
    suffix = file.suffix.lower()
    try:
        if file.is_dir():
            raise SourceUnreadable(f"{shown} is a folder, not a file")
        if suffix not in SUPPORTED_SUFFIXES:
            raise UnsupportedSource(f"{shown}: citebot reads only {_SUPPORTED} files")
        data = read_bounded(shown, max_bytes)
    except OSError as exc:
        raise SourceUnreadable(_os_reason(shown, exc)) from exc
    except ValueError as exc:  # a NUL in the name
        raise SourceUnreadable(f"{shown!r} is not a file name ({exc})") from exc
    meta = {**_sidecar_entry(file), **(metadata or {})}
    if suffix == ".pdf":
        text, found = _extract_pdf(data, shown)
    elif suffix in (".html", ".htm"):
        text, found = _extract_html(_check_text(data, shown), shown)
    else:
        text = clean_text(_decode(_check_text(data, shown), "utf-8", shown))
        heading = _MD_HEADING.search(text) if suffix != ".txt" else None
        found = {"title": heading.group(1) if heading else None}
    found.update((key, value) for key, value in meta.items() if value)
    return _document(text, found, shown, id_key=shown, path=shown, stem=file.stem)


def load_url(url: str, *, timeout: float = 15.0, max_bytes: int = MAX_BYTES) -> Document:
    """Fetch one http(s) URL and extract its article text."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsupportedSource(f"{url} is not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UnsupportedSource(f"{url}: citebot reads only http and https URLs")
    ctype, charset, body = fetch(url, timeout, max_bytes)
    if ctype in _HTML_TYPES:
        html: bytes | str = body
        if charset:
            try:
                html = body.decode(charset, errors="replace")
            except LookupError:  # an unknown charset name: let trafilatura detect it
                pass
        text, found = _extract_html(html, url, url=url)
    elif ctype == "application/pdf":
        text, found = _extract_pdf(body, url)
    elif ctype in _TEXT_TYPES:
        text, found = clean_text(_decode(_check_text(body, url), charset or "utf-8", url)), {}
    else:
        raise SourceUnreadable(f"{url} is not an article (content type {ctype})")
    return _document(text, found, url, id_key=url, url=url,
                     stem=PurePosixPath(parts.path).stem or parts.hostname)


def is_web_url(spec: str) -> bool:
    """Whether a source spec is an http(s) URL (anything else is a path)."""
    return spec.startswith(("http://", "https://"))


def discover(specs: list[str]) -> list[str]:
    """Expand folders to the supported files they hold (sorted); URLs and files pass through."""
    found: dict[str, None] = {}  # an ordered set
    for spec in map(os.fspath, specs):
        if _URL.match(spec):
            found[spec] = None
        elif os.path.isdir(spec):
            found.update(dict.fromkeys(sorted(_walk(_normpath(spec)))))
        else:
            found[_normpath(spec)] = None
    return list(found)


def iter_documents(specs: list[str], *, timeout: float = 15.0, max_bytes: int = MAX_BYTES,
                   on_error: Callable[[str, CitebotError], None] | None = None
                   ) -> Iterator[Document]:
    """Load every file, folder and URL; with on_error(spec_or_file, err) loading goes on."""
    for spec in map(os.fspath, specs):
        try:
            targets = discover([spec])
            if not targets:
                raise SourceUnreadable(f"{spec} holds no {_SUPPORTED} files")
        except CitebotError as err:
            if on_error is None:
                raise
            on_error(spec, err)
            continue
        for target in targets:
            try:
                if _URL.match(target):
                    doc = load_url(target, timeout=timeout, max_bytes=max_bytes)
                else:
                    doc = load_path(target, max_bytes=max_bytes)
            except CitebotError as err:
                if on_error is None:
                    raise
                on_error(target, err)
                continue
            yield doc


def _document(text: str, meta: dict, where: str, *, id_key: str, stem: str,
              path: str | None = None, url: str | None = None) -> Document:
    if not text:
        raise SourceUnreadable(f"{where} has no text")
    first_line = text.split("\n", 1)[0]
    title = meta.get("title") or (first_line if len(first_line) <= 120 else stem)
    source = Source(
        id=hashlib.sha1(id_key.encode()).hexdigest()[:16],
        title=" ".join(str(title).split()) or stem,
        path=path,
        url=meta.get("url") or url,
        publisher=meta.get("publisher") or None,
        date=meta.get("date") or None,
        content_hash=hashlib.sha256(text.encode()).hexdigest(),
    )
    return Document(source=source, text=text)


def _extract_html(html: bytes | str, where: str, url: str | None = None) -> tuple[str, dict]:
    import trafilatura  # imported here: it takes ~0.3 s and only HTML needs it
    from trafilatura.utils import load_html

    tree = load_html(html)  # trafilatura's own decoding; no size limit (ours is applied)
    if tree is None:
        raise SourceUnreadable(f"{where} has no article text")
    _drop_empty_markup(tree)
    doc = trafilatura.bare_extraction(tree, url=url, with_metadata=True, include_comments=False)
    # trafilatura ends each block with one newline; a blank line keeps paragraphs apart.
    text = clean_text((doc.text or "").replace("\n", "\n\n")) if doc else ""
    if not text:
        raise SourceUnreadable(f"{where} has no article text")
    return text, {"title": doc.title, "publisher": doc.sitename, "date": doc.date}


# Elements kept although empty: they shape the text around them (line breaks, table cells).
_KEEP_EMPTY = frozenset({"br", "hr", "img", "td", "th", "tr"})
_NEVER_TEXT = ("script", "style", "noscript", "template", "svg", "iframe", "object")
_DROP = "citebot-drop"


def _drop_empty_markup(tree) -> None:
    """Remove what can hold no article text from the body: comments, scripts and elements
    without text anywhere below them, so a page of 19 MB of markup around three paragraphs
    reaches trafilatura (whose work and memory grow much faster than the page) as the three
    paragraphs. Text after a removed element is kept. Linear: one pass marks, lxml's
    strip_elements removes (dropping elements one by one costs a document each in lxml)."""
    from lxml import etree

    body = tree.find("body")
    if body is None:
        return
    etree.strip_elements(body, etree.Comment, etree.ProcessingInstruction, *_NEVER_TEXT,
                         with_tail=False)
    full = set()  # elements with text somewhere below them
    for el in reversed(list(body.iter())):  # children before their parents
        if (el is body or el.tag in _KEEP_EMPTY or (el.text and el.text.strip())
                or any(c in full or (c.tail and c.tail.strip()) for c in el)):
            full.add(el)
        else:
            el.tag = _DROP
    etree.strip_elements(body, _DROP, with_tail=False)


def _extract_pdf(data: bytes, where: str) -> tuple[str, dict]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        locked = reader.is_encrypted and not reader.decrypt("")
        pages = [] if locked else [page.extract_text() or "" for page in reader.pages]
        title = None if locked or not reader.metadata else reader.metadata.title
    except Exception as exc:  # pypdf raises many exception types on damaged files
        raise SourceUnreadable(f"{where} is not a readable PDF ({one_line(exc)})") from exc
    if locked:
        raise SourceUnreadable(f"{where} is an encrypted PDF")
    text = clean_text("\n\n".join(pages))
    if not text:
        raise SourceUnreadable(f"{where} has no extractable text (it may be a scanned image)")
    return text, {"title": str(title) if title else None}


def _check_text(data: bytes, where: str) -> bytes:
    if b"\x00" in data[:8192] or data.startswith(_BINARY_MAGIC):
        raise SourceUnreadable(f"{where} looks binary, not text")
    return data


def _decode(data: bytes, charset: str, where: str) -> str:
    try:
        return data.decode("utf-8-sig" if charset.lower() in ("utf-8", "utf8") else charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise SourceUnreadable(f"{where} is not {charset.upper()} text") from exc


def _sidecar_entry(file: Path) -> dict:
    sidecar = file.parent / SIDECAR
    try:
        stat = sidecar.stat()
    except OSError:
        return {}
    return _read_sidecar(str(sidecar), stat.st_mtime_ns, stat.st_size).get(file.name, {})


@lru_cache(maxsize=64)  # keyed on mtime and size, so an edited sidecar is read again
def _read_sidecar(sidecar: str, mtime_ns: int, size: int) -> dict:
    try:
        raw = read_bounded(sidecar, MAX_SIDECAR_BYTES, what="metadata file")
        entries = json.loads(raw.decode("utf-8-sig"))
        if not isinstance(entries, dict) or not all(
            isinstance(entry, dict) and all(v is None or isinstance(v, str) for v in entry.values())
            for entry in entries.values()
        ):
            raise ValueError("expected {file name: {title, publisher, date, url}}")
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise SourceUnreadable(f"{sidecar} is not valid metadata ({one_line(exc)})") from exc
    return entries


def _walk(folder: str) -> Iterator[str]:
    def fail(exc: OSError) -> None:
        raise SourceUnreadable(_os_reason(_normpath(exc.filename or folder), exc)) from exc

    for root, dirs, files in os.walk(folder, onerror=fail):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                yield _normpath(os.path.join(root, name))


def _normpath(path: str | os.PathLike) -> str:
    return Path(os.path.normpath(path)).as_posix()


def _os_reason(shown: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{shown}: no such file"
    if isinstance(exc, PermissionError):
        return f"{shown}: permission denied"
    return f"{shown}: {exc.strerror or one_line(exc)}"
