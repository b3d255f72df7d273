"""Local receivers for the alert tests: a real SMTP server (aiosmtpd) and a webhook
receiver (http.server in a thread), each keeping what it was sent."""
from __future__ import annotations

import email
import email.policy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from cfa_opco.sandbox.testing import free_port


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html", "plain"))
        return part.get_content() if part is not None else ""

    @property
    def raw(self) -> str:
        return self.message.as_string()


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1:<free port>; ``mails`` holds every message received."""

    def __init__(self):
        self.mails: list[Mail] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):   # aiosmtpd handler hook
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"

    def start(self) -> "SmtpReceiver":
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller._thread is not None:   # stopped by a test already: nothing to do
            self._controller.stop()

    def connection(self, from_email: str = "airflow@cfa.test") -> str:
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_tls": True, "disable_ssl": True, "from_email": from_email,
                                     "retry_limit": 0, "timeout": 10}})


@dataclass
class Hit:
    path: str
    headers: dict
    body: dict = field(default_factory=dict)


class WebhookReceiver:
    """POST receiver on 127.0.0.1:<free port>; ``hits`` holds each request, ``status`` is
    what it answers (200 by default)."""

    def __init__(self):
        self.hits: list[Hit] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):   # http.server's hook
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                receiver.hits.append(Hit(self.path, dict(self.headers), json.loads(raw or "{}")))
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str = "/hooks/T0-secret-path") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def connection(self, password: str | None = "webhook-token-s3cret", fmt: str | None = None,
                   path: str = "/hooks/T0-secret-path") -> str:
        conn = {"conn_type": "http", "host": self.url(path)}
        if password:
            conn["password"] = password
        if fmt:
            conn["extra"] = {"format": fmt}
        return json.dumps(conn)
