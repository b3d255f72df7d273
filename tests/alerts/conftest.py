"""Fixtures of the alert tests: the local SMTP and webhook receivers, and ``alerts_on`` to
turn alerts on (the Variable and the two connections, as environment variables)."""
from __future__ import annotations

import json

import pytest

import tests.conftest  # noqa: F401  (the test database and Airflow home)

from tests.alerts.receivers import SmtpReceiver, WebhookReceiver

SMTP_CONN, HOOK_CONN = "alerts_smtp", "alerts_webhook"
WEBHOOK_TOKEN = "webhook-token-s3cret"


@pytest.fixture
def smtp():
    server = SmtpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def webhook():
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def alerts_on(monkeypatch, smtp, webhook):
    """alerts_on(**settings) -> the settings written to the Variable cfa_opco_alerts (e-mail
    to ops@cfa.test through ``smtp``, webhook through ``webhook``, unless overridden)."""
    def configure(webhook_format: str | None = None, **settings) -> dict:
        monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONN.upper()}", smtp.connection())
        monkeypatch.setenv(f"AIRFLOW_CONN_{HOOK_CONN.upper()}", webhook.connection(WEBHOOK_TOKEN, webhook_format))
        value = {"email_conn_id": SMTP_CONN, "to": ["ops@cfa.test"], "webhook_conn_id": HOOK_CONN, **settings}
        monkeypatch.setenv("AIRFLOW_VAR_CFA_OPCO_ALERTS", json.dumps(value))
        return value
    return configure
