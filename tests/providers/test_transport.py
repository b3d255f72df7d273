"""The hook's HTTP/1.1 transport against scripted servers: framing (length, chunked, until
close), interim answers, keep-alive reuse and the keep-alive race, timeouts, TLS."""
from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from contextlib import contextmanager

import pytest

from cfa_opco.providers.opco.transport import Transport, TransportError, TransportTimeout
from tests.helpers import SOFTWARE



def _read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One request (head + Content-Length body) from ``buf``/``conn``; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        rest += conn.recv(65536)
    buf[:] = rest[length:]
    return head + b"\r\n\r\n" + rest[:length]


@contextmanager
def scripted_server(answers, tls: ssl.SSLContext | None = None):
    """Serves ``answers`` in order, one per request, across connections. An answer is bytes
    (written as is), or "close" (close without answering), or ("close_after", bytes)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    state = {"requests": [], "connections": 0}
    queue = list(answers)
    lock = threading.Lock()

    def handle(conn):
        buf = bytearray()
        with conn:
            while True:
                try:
                    req = _read_request(conn, buf)
                except OSError:
                    return
                if req is None:
                    return
                with lock:
                    state["requests"].append(req)
                    answer = queue.pop(0) if queue else b"HTTP/1.1 500 X\r\nContent-Length: 0\r\n\r\n"
                if answer == "close":
                    return
                if isinstance(answer, tuple):
                    conn.sendall(answer[1])
                    return
                conn.sendall(answer)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            state["connections"] += 1
            if tls is not None:
                try:
                    conn = tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield port, state
    finally:
        srv.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


def test_keep_alive_reuses_one_connection_and_frames_each_answer():
    answers = [OK,
               b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Id: 1\r\n\r\n"
               b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nTrailer: x\r\n\r\n",
               b"HTTP/1.1 204 No Content\r\n\r\n",
               b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 422 Unprocessable\r\nContent-Length: 2\r\n\r\n{}"]
    with scripted_server(answers) as (port, state):
        t = Transport(timeout=5)
        url = f"http://127.0.0.1:{port}/x/ApiEchangeCFA/v1/dossiers?a=1"
        r1 = t.request("POST", url, body=b'{"n":1}', headers={"X-API-KEY": "k"})
        r2 = t.request("GET", url)
        r3 = t.request("GET", url)
        r4 = t.request("POST", url, body=b"{}")
        assert (r1.status, r1.data) == (200, b'{"ok":true}')
        assert (r2.status, r2.data, r2.header("x-id")) == (201, b'{"a":1}', "1")
        assert (r3.status, r3.data) == (204, b"")
        assert (r4.status, r4.data) == (422, b"{}")
        assert state["connections"] == 1 and t.connections_opened == 1
        first = state["requests"][0]
        assert first.startswith(b"POST /x/ApiEchangeCFA/v1/dossiers?a=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nContent-Length: 7\r\n" in first and first.endswith(b'{"n":1}')
        t.close()


def test_connection_close_and_body_until_close_open_a_new_connection():
    answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nA1",
               ("close_after", b"HTTP/1.1 200 OK\r\n\r\nuntil-close"),
               b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nA3",
               OK]
    with scripted_server(answers) as (port, state):
        t = Transport(timeout=5)
        url = f"http://127.0.0.1:{port}/"
        assert [t.request("GET", url).data for _ in range(4)] == [b"A1", b"until-close", b"A3", b'{"ok":true}']
        assert state["connections"] == 4


def test_idle_connection_closed_by_the_server_is_not_reused():
    answers = [("close_after", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA1"), OK]
    with scripted_server(answers) as (port, state):
        t = Transport(timeout=5)
        url = f"http://127.0.0.1:{port}/"
        assert t.request("GET", url).data == b"A1"
        import time

        time.sleep(0.2)   # the server has closed the idle connection
        assert t.request("POST", url, body=b"{}").status == 200
        assert state["connections"] == 2


def test_keep_alive_race_a_get_is_retried_a_post_is_not():
    # the server reads the request then closes without a word: on a reused connection
    with scripted_server([OK, "close", OK]) as (port, state):
        t = Transport(timeout=5)
        url = f"http://127.0.0.1:{port}/"
        t.request("GET", url)
        assert t.request("GET", url).status == 200      # retried once on a new connection
        assert len(state["requests"]) == 3
    with scripted_server([OK, "close", OK]) as (port, state):
        t = Transport(timeout=5)
        url = f"http://127.0.0.1:{port}/"
        t.request("GET", url)
        with pytest.raises(TransportError):
            t.request("POST", url, body=b"{}")           # never resent by the transport
        assert len(state["requests"]) == 2
        assert t.request("POST", url, body=b"{}").status == 200


@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
])
def test_malformed_answers_are_transport_errors(answer):
    with scripted_server([("close_after", answer)]) as (port, _):
        with pytest.raises(TransportError):
            Transport(timeout=5).request("GET", f"http://127.0.0.1:{port}/")


def test_timeouts_refused_connections_and_bad_input():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)   # accepts (backlog) but never answers
    try:
        with pytest.raises(TransportTimeout):
            Transport(timeout=(2, 0.3)).request("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/")
    finally:
        silent.close()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(TransportError) as err:
        Transport(timeout=1).request("GET", f"http://127.0.0.1:{port}/")
    assert not isinstance(err.value, TransportTimeout)
    with pytest.raises(ValueError):
        Transport().request("GET", "ftp://example.org/")
    with pytest.raises(ValueError):
        Transport().request("GET", "http://127.0.0.1:1/", headers={"X": "a\r\nInjected: 1"})


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_checks_the_certificate_and_the_host_name(tmp_path):
    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with scripted_server([OK, OK], tls=ctx) as (port, state):
        t = Transport(timeout=5, ca_certs=cert)
        assert t.request("GET", f"https://localhost:{port}/").data == b'{"ok":true}'
        assert t.request("GET", f"https://localhost:{port}/").status == 200 and state["connections"] == 1
        with pytest.raises(TransportError, match="TLS"):   # the certificate names localhost only
            Transport(timeout=5, ca_certs=cert).request("GET", f"https://127.0.0.1:{port}/")
        with pytest.raises(TransportError, match="TLS"):   # an unknown authority
            Transport(timeout=5).request("GET", f"https://localhost:{port}/")


@contextmanager
def connect_proxy(expect_auth: str | None = None):
    """A CONNECT proxy relaying bytes both ways; refuses with 407 when credentials differ."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    seen: list[bytes] = []

    def relay(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle(client):
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        seen.append(head)
        target = head.split(b" ")[1].decode()
        if expect_auth and f"Proxy-Authorization: {expect_auth}".encode() not in head:
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host if host != "localhost" else "127.0.0.1", int(port)))
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
        threading.Thread(target=relay, args=(upstream, client), daemon=True).start()

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1], seen
    finally:
        srv.close()


def test_https_through_a_connect_proxy_with_credentials(tmp_path):
    import base64

    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    auth = "Basic " + base64.b64encode(b"cfa:s3cr\xc3\xa9t").decode()
    with scripted_server([OK, OK], tls=ctx) as (port, state), connect_proxy(auth) as (pport, seen):
        t = Transport(timeout=5, ca_certs=cert, proxy=f"http://cfa:s3cr%C3%A9t@127.0.0.1:{pport}")
        assert t.request("POST", f"https://localhost:{port}/v2/dossiers", body=b"{}").status == 200
        assert t.request("GET", f"https://localhost:{port}/v1/status").data == b'{"ok":true}'
        assert len(seen) == 1 and seen[0].startswith(f"CONNECT localhost:{port} HTTP/1.1".encode())
        assert state["requests"][0].startswith(b"POST /v2/dossiers HTTP/1.1")   # end to end in the tunnel
        with pytest.raises(TransportError, match="407"):
            Transport(timeout=5, ca_certs=cert, proxy=f"http://cfa:wrong@127.0.0.1:{pport}").request(
                "GET", f"https://localhost:{port}/")


def test_plain_http_through_a_proxy_uses_absolute_urls():
    with scripted_server([OK]) as (pport, state):   # the scripted server plays the proxy
        t = Transport(timeout=5, proxy=f"127.0.0.1:{pport}")
        assert t.request("GET", "http://opco.example:8080/ApiEchangeCFA/v1/status?x=1").status == 200
        assert state["requests"][0].startswith(
            b"GET http://opco.example:8080/ApiEchangeCFA/v1/status?x=1 HTTP/1.1\r\nHost: opco.example:8080\r\n")
    with pytest.raises(ValueError):
        Transport(proxy="socks5://127.0.0.1:1080")


def test_the_hook_goes_through_the_proxy_of_its_connection(opco_conn, sandbox):
    from cfa_opco.providers.opco.hooks.opco import OpcoHook

    # the connection's proxy is used: for plain http the request goes to the proxy with an
    # absolute URL; the sandbox itself can play that proxy (uvicorn accepts absolute targets)
    conn_id = opco_conn("atlas", proxy=f"http://127.0.0.1:{sandbox.port}")
    hook = OpcoHook(conn_id, software=SOFTWARE)
    assert hook.status().ok
    assert hook.get_conn()._proxy[:2] == ("127.0.0.1", sandbox.port)
    bad = OpcoHook(opco_conn("atlas", proxy="http://127.0.0.1:9"), software=SOFTWARE, max_attempts=1)
    from cfa_opco.providers.opco.exceptions import OpcoUnavailable

    with pytest.raises(OpcoUnavailable):     # the proxy is down: nothing reaches the OPCO
        bad.status()
