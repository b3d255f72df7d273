"""Where alerts go: e-mail through the SMTP provider's notifier, chats (Teams, Slack,
Mattermost...) through :class:`WebhookNotifier`, a generic notifier of ours that POSTs JSON
to the URL an Airflow connection holds.

Webhook connection (any type, "HTTP" in the UI): ``host`` is the full URL (``https://…``),
or host + schema + port with the path in the extra ``path``; the password, when set, goes
as ``Authorization: Bearer …`` (with a login: HTTP basic). Extra ``format``: ``generic``
(default: ``{"text", "title", "kind", "links", "facts"}``), ``slack`` (``{"text"}``) or
``teams`` (a MessageCard). The URL and the password are never logged nor put in an error.
"""
from __future__ import annotations

import logging
from typing import Any

import httpx
from airflow.sdk import BaseNotifier

from cfa_opco.alerts.config import AlertsConfig
from cfa_opco.alerts.messages import Alert
from cfa_opco.providers.opco.connections import airflow_connection

log = logging.getLogger(__name__)
TIMEOUT = 10.0


class AlertDeliveryError(RuntimeError):
    """A channel could not deliver (names the channel's connection, never its URL or secret)."""


def _connection(conn_id: str):
    return airflow_connection(conn_id)


def webhook_url(conn) -> str:
    host = (conn.host or "").strip()
    if host.startswith(("http://", "https://")):
        return host
    extra = conn.extra_dejson or {}
    port = f":{conn.port}" if conn.port else ""
    path = str(extra.get("path") or extra.get("endpoint") or "")
    return f"{conn.schema or 'https'}://{host}{port}/{path.lstrip('/')}"


def webhook_payload(alert: Alert, fmt: str = "generic") -> dict:
    if fmt == "slack":
        return {"text": f"*{alert.full_subject}*\n{alert.text()}"}
    if fmt == "teams":
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": alert.full_subject,
                "title": alert.full_subject, "text": alert.text().replace("\n", "  \n")}
    return {"title": alert.full_subject, "text": alert.text(), "kind": alert.kind, "site": alert.site,
            "links": alert.links, "facts": alert.facts}


class WebhookNotifier(BaseNotifier):
    """POST an alert as JSON to the URL of the connection ``webhook_conn_id``.

    No template field: an alert's text is data, never rendered by Jinja."""

    template_fields = ()

    def __init__(self, webhook_conn_id: str, alert: Alert, **kwargs: Any):
        super().__init__(**kwargs)
        self.webhook_conn_id = webhook_conn_id
        self.alert = alert

    def notify(self, context) -> None:
        conn = _connection(self.webhook_conn_id)
        extra = conn.extra_dejson or {}
        headers = {"Content-Type": "application/json; charset=utf-8"}
        auth = None
        if conn.password and conn.login:
            auth = (conn.login, conn.password)
        elif conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        payload = webhook_payload(self.alert.clean([conn.password or ""]), str(extra.get("format") or "generic"))
        try:
            resp = httpx.post(webhook_url(conn), json=payload, headers=headers, auth=auth,
                              timeout=float(extra.get("timeout") or TIMEOUT))
        except httpx.HTTPError as exc:   # its text may carry the URL: only the kind is kept
            raise AlertDeliveryError(f"webhook {self.webhook_conn_id} injoignable ({type(exc).__name__})") from None
        if resp.status_code >= 300:
            raise AlertDeliveryError(f"webhook {self.webhook_conn_id} : HTTP {resp.status_code}")
        log.info("alert %r sent to webhook %s", self.alert.kind, self.webhook_conn_id)


def email_notifier(cfg: AlertsConfig, alert: Alert, to: tuple[str, ...]):
    """The SMTP provider's SmtpNotifier for one alert (the connection ``email_conn_id``)."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier  # lazy: DAG parse time

    return SmtpNotifier(to=list(to), from_email=cfg.from_email, subject=alert.full_subject,
                        html_content=alert.html(), smtp_conn_id=cfg.email_conn_id)


def deliver(cfg: AlertsConfig, alert: Alert, context=None, secrets=()) -> list[str]:
    """Send one alert on every channel configured; returns the channels it went to
    (``email:<n> destinataire(s)``, ``webhook:<conn>``). Every channel is tried; if one failed,
    :class:`AlertDeliveryError` names them all after the others were tried."""
    alert = alert.clean(secrets)
    context = context if context is not None else {}
    done, failed = [], []
    to = cfg.recipients(alert.site)
    if cfg.email_on and to:
        try:
            email_notifier(cfg, alert, to).notify(context)   # notify: our texts are not Jinja templates
            done.append(f"email:{len(to)}")
            log.info("alert %r e-mailed to %d recipient(s) via %s", alert.kind, len(to), cfg.email_conn_id)
        except Exception as exc:
            failed.append(f"e-mail via {cfg.email_conn_id} ({type(exc).__name__}: {str(exc)[:200]})")
    if cfg.webhook_on:
        try:
            WebhookNotifier(cfg.webhook_conn_id, alert).notify(context)
            done.append(f"webhook:{cfg.webhook_conn_id}")
        except Exception as exc:
            failed.append(str(exc) if isinstance(exc, AlertDeliveryError)
                          else f"webhook {cfg.webhook_conn_id} ({type(exc).__name__})")
    if failed:
        raise AlertDeliveryError(f"alerte « {alert.subject} » non délivrée : " + " ; ".join(failed)
                                 + (f" (délivrée : {', '.join(done)})" if done else ""))
    return done
