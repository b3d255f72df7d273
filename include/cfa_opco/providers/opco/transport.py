"""A lean HTTP/1.1 client for the OPCO hook: keep-alive connections per thread, each request
written in one call, the answer read with a small parser.

Why not requests or urllib3: a batch sends thousands of dossiers, and on a CFA's small
worker the client's own CPU per request is what bounds the rate (the benchmark measures
it). requests costs ~0.8 ms of CPU per POST, urllib3 ~0.3 ms, this ~0.1 ms. The OPCO API
is plain JSON over HTTPS: what it needs of HTTP/1.1 is small and covered here —
Content-Length and chunked bodies, interim 1xx answers skipped, ``Connection: close`` and
bodies read until the server closes, TLS with certificate and host name checks (certifi's
CA bundle when installed, else the system's), an HTTP proxy (CONNECT tunnel for https,
absolute URLs for http, Basic proxy credentials). No redirect following, no compression
(none is asked for); HEAD is not supported (the norm has no HEAD route).

Errors: :class:`TransportTimeout` (connect or read timeout), :class:`TransportError`
(cannot connect, connection dropped, malformed answer), each with ``sent``: False only when
the request provably did not reach the server whole (connect, TLS, proxy or write failure).
A request on a reused connection that the server closed in between (keep-alive race) is
retried once on a new connection when it is a GET, or when the write itself failed; a POST
that may have been received is never resent here: the caller decides (the ledger reads the
OPCO back before any resend).
"""
from __future__ import annotations

import base64
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

try:   # the CA bundle Airflow installs; the system's when absent
    import certifi
except ImportError:   # pragma: no cover
    certifi = None

MAX_LINE = 65536
MAX_HEADERS = 200


class TransportError(Exception):
    """No usable answer: connection refused or dropped, malformed response.
    ``sent``: False only when the request provably did not reach the server whole
    (connection refused, TLS or proxy failure, write failure): a resend is then safe."""

    def __init__(self, message: str = "", sent: bool = True):
        super().__init__(message)
        self.sent = sent


class TransportTimeout(TransportError):
    """Connect or read timeout."""


class _StaleConnection(TransportError):
    """A reused connection closed before any byte of the answer (keep-alive race)."""


@dataclass
class Response:
    status: int
    headers: dict = field(default_factory=dict)   # names as the server sent them
    data: bytes = b""
    reason: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.headers.items():
            if k.lower() == name:
                return v
        return default


class _Conn:
    __slots__ = ("sock", "reader", "reused", "poller")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.reused = False
        self.poller = None

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def peer_closed(self) -> bool:
        """An idle keep-alive connection that is readable was closed by the server
        (or holds stray bytes): either way it cannot carry a new request."""
        try:
            if self.poller is None:   # poll, not select(): no limit on the descriptor's number
                self.poller = select.poll()
                self.poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return bool(self.poller.poll(0))
        except (OSError, ValueError):
            return True


class Transport:
    """Thread-safe: each thread has its own keep-alive connection per (scheme, host, port)."""

    def __init__(self, timeout: float | tuple[float, float] = (3.05, 30.0), ca_certs: str | None = None,
                 proxy: str | None = None):
        self.connect_timeout, self.read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self._ca_certs = ca_certs
        self._proxy = None     # (host, port, Proxy-Authorization value or None)
        if proxy:
            pp = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if pp.scheme != "http" or not pp.hostname:
                raise ValueError("proxy: an http:// URL is expected (http://[user:password@]host:port)")
            auth = None
            if pp.username is not None:
                creds = f"{unquote(pp.username)}:{unquote(pp.password or '')}".encode()
                auth = "Basic " + base64.b64encode(creds).decode()
            self._proxy = (pp.hostname, pp.port or 3128, auth)
        self._ssl: ssl.SSLContext | None = None
        self._local = threading.local()
        self._all: set[_Conn] = set()
        self._lock = threading.Lock()
        self.connections_opened = 0
        self._targets: dict[str, tuple] = {}   # URL → what request() derives from it (same URL each dossier)

    # ---- connections ---------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            cafile = self._ca_certs
            if cafile is None and certifi is not None:
                cafile = certifi.where()
            self._ssl = ssl.create_default_context(cafile=cafile)
        return self._ssl

    def _open(self, scheme: str, host: str, port: int) -> _Conn:
        peer = (self._proxy[0], self._proxy[1]) if self._proxy else (host, port)
        try:
            sock = socket.create_connection(peer, timeout=self.connect_timeout)
        except socket.timeout as exc:
            raise TransportTimeout(f"connect timeout to {peer[0]}:{peer[1]}", sent=False) from exc
        except OSError as exc:
            raise TransportError(f"cannot connect to {peer[0]}:{peer[1]}: {type(exc).__name__}", sent=False) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._proxy and scheme == "https":
                self._tunnel(sock, host, port)
            if scheme == "https":
                sock = self._ssl_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.read_timeout)
        except socket.timeout as exc:
            sock.close()
            raise TransportTimeout(f"TLS handshake timeout with {host}:{port}", sent=False) from exc
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise TransportError(f"TLS with {host}:{port} failed: {type(exc).__name__}: {exc}", sent=False) from exc
        conn = _Conn(sock)
        with self._lock:
            self._all.add(conn)
            self.connections_opened += 1
        return conn

    def _tunnel(self, sock: socket.socket, host: str, port: int) -> None:
        """CONNECT through the proxy; the TLS session then runs end to end with the OPCO."""
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if self._proxy[2]:
            lines.append(f"Proxy-Authorization: {self._proxy[2]}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        reader = sock.makefile("rb", buffering=0)   # unbuffered: not one byte of TLS is read here
        try:
            status_line = _readline_unbuffered(reader)
            parts = status_line.decode("latin-1").split(" ", 2)
            while _readline_unbuffered(reader) not in (b"\r\n", b"\n", b""):
                pass
        finally:
            reader.close()
        if len(parts) < 2 or parts[1] != "200":
            raise TransportError(f"the proxy refused the tunnel to {host}:{port}: "
                                 f"{status_line.decode('latin-1').strip()[:120]}", sent=False)

    def _conns(self) -> dict:
        d = getattr(self._local, "conns", None)
        if d is None:
            d = self._local.conns = {}
        return d

    def _discard(self, key: tuple, conn: _Conn) -> None:
        conns = self._conns()
        if conns.get(key) is conn:
            del conns[key]
        with self._lock:
            self._all.discard(conn)
        conn.close()

    def close(self) -> None:
        """Close every connection of every thread."""
        with self._lock:
            conns, self._all = list(self._all), set()
        for c in conns:
            c.close()
        self._local = threading.local()

    # ---- one request ---------------------------------------------------------------
    def request(self, method: str, url: str, *, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        method = method.upper()
        if method == "HEAD":
            raise ValueError("HEAD is not supported by this transport")
        scheme, hostname, port, target, host_header = self._target(url)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
        if self._proxy and scheme == "http" and self._proxy[2]:
            lines.append(f"Proxy-Authorization: {self._proxy[2]}")
        for k, v in (headers or {}).items():
            if "\r" in k or "\n" in k or "\r" in str(v) or "\n" in str(v):
                raise ValueError(f"invalid header {k!r}")
            lines.append(f"{k}: {v}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        message = head + (body or b"")
        key = (scheme, hostname, port)
        for attempt in (1, 2):
            conn = self._conns().get(key)
            if conn is not None and conn.peer_closed():
                self._discard(key, conn)
                conn = None
            if conn is None:
                conn = self._open(scheme, hostname, port)
                self._conns()[key] = conn
            try:
                resp, keep = self._exchange(conn, message)
            except _StaleConnection as stale:
                self._discard(key, conn)
                if (method == "GET" or not stale.sent) and attempt == 1:
                    continue      # nothing reached the server (or a GET): a new connection, once
                raise TransportError("connection closed by the server before any answer", sent=stale.sent) from None
            except BaseException:
                self._discard(key, conn)
                raise
            if keep:
                conn.reused = True
            else:
                self._discard(key, conn)
            return resp
        raise AssertionError("unreachable")

    def _target(self, url: str) -> tuple[str, str, int, str, str]:
        """(scheme, host, port, request target, Host header) of ``url``, parsed once per URL:
        a batch POSTs every dossier to the same one."""
        got = self._targets.get(url)
        if got is not None:
            return got
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"URL not supported: {parts.scheme}://{parts.hostname or ''}")
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname and not host_header.startswith("["):   # IPv6 literal
            host_header = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
        if self._proxy and scheme == "http":   # plain http through a proxy: absolute URL
            target = f"http://{host_header}{target}"
        got = (scheme, parts.hostname, port, target, host_header)
        if len(self._targets) >= 256:   # read URLs carry their query: keep the table small
            self._targets.clear()
        self._targets[url] = got
        return got

    def _exchange(self, conn: _Conn, message: bytes) -> tuple[Response, bool]:
        try:
            conn.sock.sendall(message)
        except socket.timeout as exc:
            raise TransportTimeout("write timeout", sent=False) from exc
        except OSError as exc:
            if conn.reused:
                raise _StaleConnection(sent=False) from exc
            raise TransportError(f"connection dropped while sending: {type(exc).__name__}", sent=False) from exc
        try:
            return self._read_response(conn)
        except socket.timeout as exc:
            raise TransportTimeout("read timeout") from exc
        except _StaleConnection:
            raise
        except OSError as exc:
            raise TransportError(f"connection dropped while reading: {type(exc).__name__}") from exc

    def _read_response(self, conn: _Conn) -> tuple[Response, bool]:
        reader = conn.reader
        first = True
        while True:   # interim 1xx answers are skipped
            line = reader.readline(MAX_LINE + 1)
            if not line:
                if first and conn.reused:
                    raise _StaleConnection()
                raise TransportError("connection closed by the server before the status line")
            first = False
            try:
                version, status_text, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
                status = int(status_text)
            except ValueError:
                raise TransportError(f"malformed status line: {line[:80]!r}") from None
            if not version.startswith("HTTP/1.") or not 100 <= status <= 999:
                raise TransportError(f"malformed status line: {line[:80]!r}")
            headers = self._read_headers(reader)
            if 100 <= status < 200 and status != 101:
                continue
            break
        lower = {k.lower(): v for k, v in headers.items()}
        conn_tokens = {t.strip().lower() for t in lower.get("connection", "").split(",")}
        keep = ((version == "HTTP/1.1" and "close" not in conn_tokens)
                or (version == "HTTP/1.0" and "keep-alive" in conn_tokens))
        if status in (204, 304) or status == 101:
            data = b""
        elif "chunked" in lower.get("transfer-encoding", "").lower():
            data = self._read_chunked(reader)
        elif "content-length" in lower:
            try:
                n = int(lower["content-length"])
            except ValueError:
                raise TransportError("malformed Content-Length") from None
            data = reader.read(n) if n else b""
            if len(data) < n:
                raise TransportError(f"connection dropped in the body ({len(data)}/{n} bytes)")
        else:   # no length: the body runs until the server closes
            data = reader.read()
            keep = False
        return Response(status, headers, data, reason[0] if reason else ""), keep

    @staticmethod
    def _read_headers(reader) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = reader.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                raise TransportError("header line too long")
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise TransportError("connection closed in the headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise TransportError(f"malformed header line: {line[:80]!r}")
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raise TransportError("too many headers")

    @staticmethod
    def _read_chunked(reader) -> bytes:
        parts = []
        while True:
            line = reader.readline(MAX_LINE + 1)
            if not line:
                raise TransportError("connection dropped in a chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise TransportError(f"malformed chunk size: {line[:40]!r}") from None
            if size == 0:
                while True:   # trailers, up to the blank line
                    t = reader.readline(MAX_LINE + 1)
                    if t in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
            chunk = reader.read(size)
            if len(chunk) < size:
                raise TransportError("connection dropped in a chunked body")
            parts.append(chunk)
            if reader.readline(3) not in (b"\r\n", b"\n"):
                raise TransportError("malformed chunked body")


def _readline_unbuffered(reader) -> bytes:
    """A line read byte by byte (only for the proxy's short CONNECT answer)."""
    out = bytearray()
    while len(out) <= MAX_LINE:
        b = reader.read(1)
        if not b:
            break
        out += b
        if b == b"\n":
            break
    return bytes(out)
