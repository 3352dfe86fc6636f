"""Fetching one http(s) URL for ingest: a whole-request deadline and a bounded body.

A socket timeout bounds each read, not the request, so a server that trickles its headers
would hold an update (and its lock) for ever; _Deadline shuts the request's sockets when its
time is up. Every failure is a SourceUnreadable of one line.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.error
import urllib.request

from .errors import SourceUnreadable

USER_AGENT = "citebot/0.1"


def fetch(url: str, timeout: float, max_bytes: int) -> tuple[str, str | None, bytes]:
    """Return the content type, charset and at most max_bytes of body of url.

    timeout bounds the whole request, redirects, headers and body included.
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with _Deadline(timeout) as deadline:
        try:
            with deadline.opener().open(request, timeout=timeout) as response:
                return _read_body(response, url, max_bytes, deadline)
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                raise SourceUnreadable(f"{url}: too many redirects (HTTP {exc.code}; a "
                                       "redirect loop?)") from exc
            raise SourceUnreadable(f"{url}: HTTP {exc.code} {one_line(exc.reason)}".rstrip()
                                   ) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            if deadline.expired or isinstance(exc, TimeoutError) or isinstance(
                    getattr(exc, "reason", None), TimeoutError):
                raise SourceUnreadable(f"{url}: timed out after {timeout:g} s") from exc
            if isinstance(exc, urllib.error.URLError):
                raise SourceUnreadable(f"{url}: cannot connect ({one_line(exc.reason)})"
                                       ) from exc
            raise SourceUnreadable(f"{url}: download failed ({one_line(exc)})") from exc


def _read_body(response, url: str, max_bytes: int, deadline: _Deadline
               ) -> tuple[str, str | None, bytes]:
    declared = response.headers.get("Content-Length", "").strip()
    length = int(declared) if declared.isdigit() else None
    if length is not None and length > max_bytes:
        raise SourceUnreadable(f"{url} is larger than {max_bytes:,} bytes")
    body = bytearray()
    while chunk := response.read1(min(65536, max_bytes + 1 - len(body))):
        body += chunk
        if len(body) > max_bytes:
            raise SourceUnreadable(f"{url} is larger than {max_bytes:,} bytes")
    if deadline.expired:
        raise TimeoutError
    if length is not None and len(body) < length:  # http.client's read1 does not complain
        raise SourceUnreadable(f"{url}: the download ended early ({len(body):,} of "
                               f"{length:,} bytes)")
    return response.headers.get_content_type(), response.headers.get_content_charset(), bytes(body)


class _Deadline:
    """Shuts the sockets of one request when its time is up, whatever they are waiting for.

    A socket timeout bounds each read, not the request: a server that sends its status line
    a byte every half second never trips it, so a timer ends the request instead.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)

    def _watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def _connection(self, base: type[http.client.HTTPConnection]) -> type:
        deadline = self

        class Connection(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
                create = self._create_connection  # the raw socket, before any TLS handshake
                self._create_connection = lambda *a, **kw: deadline._watch(create(*a, **kw))

        return Connection

    def opener(self) -> urllib.request.OpenerDirector:
        http_conn = self._connection(http.client.HTTPConnection)
        https_conn = self._connection(http.client.HTTPSConnection)

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(http_conn, req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(https_conn, req, context=self._context)

        return urllib.request.build_opener(HTTP(), HTTPS())


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def one_line(exc: object) -> str:
    """An exception's text on one line (its class name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__
