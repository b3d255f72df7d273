"""The alerts' entry points in the DAGs:

- :class:`TransmitFailureAlert` — a notifier given as ``on_failure_callback`` to the mapped
  transmit tasks of ``cfa_opco_daily`` (alert 1, or alert 2 when the OPCO refused the key);
- :func:`send_run_alerts` — the daily run's ``send_alerts`` task, after ``run_summary``
  (alerts 3, 4, 5);
- :func:`send_key_alerts` — from ``check_keys`` in ``cfa_opco_followup`` (alert 2).

All do nothing when alerts are off (:mod:`cfa_opco.alerts.config`)."""
from __future__ import annotations

import logging
from urllib.parse import quote

from airflow.sdk import BaseNotifier
from airflow.sdk.configuration import conf

from cfa_opco.alerts import channels, config, evaluate, journal, messages
from cfa_opco.report_location import run_report_url, site_report_url

log = logging.getLogger(__name__)
CONNECTOR = "cfa_connector"


def base_url() -> str:
    """The Airflow UI's address ([api] base_url), without the trailing slash."""
    try:
        url = conf.get("api", "base_url", fallback="http://localhost:8080/")
    except Exception:
        url = "http://localhost:8080/"
    return (url or "http://localhost:8080/").rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{base_url()}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def _send(cfg: config.AlertsConfig, alert: messages.Alert, connector: str, context=None, secrets=(),
          repeat_hours: int | None = None) -> list[str] | None:
    """Deliver unless already sent (journal); returns the channels, None when skipped."""
    if journal.already_sent(connector, alert.fingerprint, repeat_hours):
        log.info("alert %s already sent: not repeated", alert.fingerprint)
        return None
    done = channels.deliver(cfg, alert, context, secrets)
    journal.record(connector, alert.fingerprint, alert.kind, alert.clean(secrets).subject, done)
    return done


class TransmitFailureAlert(BaseNotifier):
    """``on_failure_callback`` of a transmit task: the OPCO, the SIREN, the batch's size, the
    error (secrets and personal data masked) and the links to the task's log and the run."""

    template_fields = ()

    def __init__(self, connector_conn_id: str = CONNECTOR, **kwargs):
        super().__init__(**kwargs)
        self.connector_conn_id = connector_conn_id

    def notify(self, context) -> None:
        cfg = config.load()
        if not cfg.enabled:
            return
        ti = context["ti"]
        batch = getattr(context.get("task"), "batch", None) or {}
        if not isinstance(batch, dict):
            batch = {}
        exc = context.get("exception")
        error = str(exc) if exc is not None else "la tâche a échoué (voir son journal)"
        alert = messages.transmission_failed(
            opco=batch.get("opco"), siren=batch.get("siren"), conn_id=batch.get("conn_id"),
            count=batch.get("count"), error=error or type(exc).__name__, run_id=ti.run_id,
            task=f"{ti.task_id}[{ti.map_index}]" if (ti.map_index is not None and ti.map_index >= 0) else ti.task_id,
            log_url=getattr(ti, "log_url", None), run_url=run_url(ti.dag_id, ti.run_id),
            try_number=getattr(ti, "try_number", None))
        if not cfg.wants(alert.kind):
            return
        secrets = _key_secrets([batch.get("conn_id")])
        done = _send(cfg, alert, self.connector_conn_id, context, secrets)
        log.info("transmission failure alert for %s: %s", batch.get("conn_id"), done or "not repeated")


def _key_secrets(conn_ids) -> list[str]:
    """The keys (and OAuth2 secrets) of these OPCO connections: kept out of any alert."""
    out = []
    for cid in conn_ids:
        if not cid:
            continue
        try:
            conn = channels._connection(cid)
        except Exception:
            continue
        extra = conn.extra_dejson or {}
        out += [conn.password or ""] + [str(v) for k, v in extra.items() if isinstance(v, str) and any(
            w in k.lower() for w in ("secret", "password", "token", "api_key", "apikey"))]
    return [s for s in out if s]


def send_run_alerts(context, connector: str = CONNECTOR) -> dict:
    """End of the daily run: dossiers in doubt, OPCO rates over their thresholds, one digest
    per site with new blocking anomalies. Returns what was sent (the task's XCom); raises
    when a channel failed, after every alert was tried (the task shows it, red)."""
    cfg = config.load()
    if not cfg.enabled:
        log.info("alerts are off (Variable %s not set or without a channel)", config.VARIABLE)
        return {"enabled": False, "sent": []}
    dag_run = context["dag_run"]
    run_id, dag_id = dag_run.run_id, dag_run.dag_id
    link = run_url(dag_id, run_id)
    alerts: list[messages.Alert] = []
    rows = evaluate._ledger(connector, run_id) if (cfg.wants("in_doubt") or cfg.wants("rates")) else []
    if cfg.wants("in_doubt"):
        doubt = evaluate.in_doubt(connector, run_id, rows)
        if doubt["by_opco"]:
            alerts.append(messages.in_doubt(run_id, doubt["by_opco"], doubt["examples"], doubt["reasons"], link))
    if cfg.wants("rates"):
        over = evaluate.rates_over(evaluate.opco_rates(connector, run_id, rows), cfg.refusal_rate_threshold,
                                   cfg.error_rate_threshold, cfg.min_dossiers)
        for opco, stats in over.items():
            alerts.append(messages.rates(run_id, opco, stats, refusal_threshold=cfg.refusal_rate_threshold,
                                         error_threshold=cfg.error_rate_threshold, run_url=link))
    if cfg.wants("site_anomalies"):
        report = base_url() + run_report_url(run_id)
        for site, found in evaluate.new_blocking_anomalies(connector, run_id).items():
            alerts.append(messages.site_anomalies(run_id, site, found["by_rule"], found["dossiers"], report,
                                                  base_url() + site_report_url(run_id, site)))
    sent, errors = [], []
    for alert in alerts:
        try:
            done = _send(cfg, alert, connector, context)
        except channels.AlertDeliveryError as exc:
            errors.append(str(exc))
            continue
        sent.append({"kind": alert.kind, "site": alert.site, "subject": alert.subject,
                     "channels": done or "déjà envoyée"})
        log.info("alert %s (%s): %s", alert.kind, alert.subject, done or "already sent")
    if errors:
        raise channels.AlertDeliveryError(f"{len(errors)} alerte(s) sur {len(alerts)} non délivrée(s) : "
                                          + " | ".join(errors))
    return {"enabled": True, "sent": sent}


def key_expiry_days(default: int) -> int:
    """The days before expiry from which a key is warned about: the alert settings'
    ``key_expiry_days`` when alerts are on and it is set, else ``default``."""
    try:
        cfg = config.load()
    except config.AlertsConfigError:
        return default
    return cfg.key_expiry_days if cfg.enabled and cfg.key_expiry_days is not None else default


def send_key_alerts(warnings: dict[str, str], days: int, context=None, connector: str = CONNECTOR) -> list[str]:
    """One alert per key expiring within ``days``, invalid or refused (at most once per
    ``repeat_hours`` for the same key); returns the connections alerted about."""
    cfg = config.load()
    if not cfg.wants("key") or not warnings:
        return []
    alerted, errors = [], []
    for conn_id, text in sorted(warnings.items()):
        alert = messages.key_warning(conn_id, text, days)
        try:
            done = _send(cfg, alert, connector, context, _key_secrets([conn_id]), repeat_hours=cfg.repeat_hours)
        except channels.AlertDeliveryError as exc:
            errors.append(str(exc))
            continue
        if done:
            alerted.append(conn_id)
    if errors:
        raise channels.AlertDeliveryError(" | ".join(errors))
    return alerted
