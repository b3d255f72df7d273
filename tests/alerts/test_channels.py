"""Delivery to a real local SMTP server (aiosmtpd, through the SMTP provider's notifier)
and to a local webhook receiver; no secret, no full NIR, no birth date ever leaves."""
from __future__ import annotations

import pytest

from cfa_opco.alerts import channels, config, messages
from tests.alerts.conftest import HOOK_CONN, SMTP_CONN, WEBHOOK_TOKEN

NIR = "185057512345678"
NIR_SPACED = "1 85 05 75 123 456 78"
KEY = "demo-atlas-775672272"


def _failure(error: str) -> messages.Alert:
    return messages.transmission_failed(
        opco="atlas", siren="775672272", conn_id="opco_atlas_775672272", count=42, error=error,
        run_id="manual__2026-09-01T06:00:00+00:00", task="opco_atlas.transmit[0]",
        log_url="http://airflow.cfa.test/dags/cfa_opco_daily/runs/r/tasks/opco_atlas.transmit/mapped/0",
        run_url="http://airflow.cfa.test/dags/cfa_opco_daily/runs/r", try_number=1)


def test_an_alert_is_e_mailed_through_the_smtp_provider(alerts_on, smtp, webhook):
    cfg = config.parse(alerts_on(from_email="cfa-alertes@cfa.test"))
    done = channels.deliver(cfg, _failure("L'API de l'OPCO Atlas ne répond pas (dossiers) après 6 tentatives : 503"))
    assert done == ["email:1", f"webhook:{HOOK_CONN}"]
    [mail] = smtp.mails
    assert mail.rcpt_tos == ["ops@cfa.test"] and mail.mail_from == "cfa-alertes@cfa.test"
    assert mail.subject == "[CFA-OPCO] Échec de transmission : OPCO Atlas, SIREN 775672272"
    body = mail.html
    assert "lot de 42 dossier(s)" in body and "opco_atlas_775672272" in body
    assert "ne répond pas" in body and "manual__2026-09-01T06:00:00+00:00" in body
    assert "href='http://airflow.cfa.test/dags/cfa_opco_daily/runs/r/tasks/opco_atlas.transmit/mapped/0'" in body


def test_the_webhook_gets_json_with_its_token_and_never_shows_its_url(alerts_on, webhook):
    cfg = config.parse(alerts_on(email_conn_id=None))
    channels.deliver(cfg, _failure("boom"))
    [hit] = webhook.hits
    assert hit.path == "/hooks/T0-secret-path"
    assert hit.headers["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    assert hit.body["title"] == "[CFA-OPCO] Échec de transmission : OPCO Atlas, SIREN 775672272"
    assert hit.body["kind"] == "transmission_failed"
    assert hit.body["facts"]["dossiers"] == 42 and hit.body["facts"]["conn_id"] == "opco_atlas_775672272"
    assert "Journal de la tâche : http://airflow.cfa.test/" in hit.body["text"]
    # a receiver that refuses: the error names the connection, not its URL nor its token
    webhook.status = 500
    with pytest.raises(channels.AlertDeliveryError) as err:
        channels.deliver(cfg, _failure("boom"))
    assert f"webhook {HOOK_CONN} : HTTP 500" in str(err.value)
    assert "T0-secret-path" not in str(err.value) and WEBHOOK_TOKEN not in str(err.value)


@pytest.mark.parametrize("fmt, key", [("slack", "text"), ("teams", "title")])
def test_chat_formats(alerts_on, webhook, fmt, key):
    cfg = config.parse(alerts_on(email_conn_id=None, webhook_format=fmt))
    channels.deliver(cfg, _failure("boom"))
    [hit] = webhook.hits
    assert "Échec de transmission : OPCO Atlas" in hit.body[key]
    if fmt == "teams":
        assert hit.body["@type"] == "MessageCard"


def test_an_unreachable_smtp_server_is_named_and_the_webhook_still_gets_the_alert(alerts_on, smtp, webhook):
    cfg = config.parse(alerts_on())
    smtp.stop()
    with pytest.raises(channels.AlertDeliveryError) as err:
        channels.deliver(cfg, _failure("boom"))
    assert f"e-mail via {SMTP_CONN}" in str(err.value) and f"délivrée : webhook:{HOOK_CONN}" in str(err.value)
    assert len(webhook.hits) == 1


def test_no_key_no_full_nir_no_birth_date_in_any_alert(alerts_on, smtp, webhook):
    """The error text of a task may quote anything: what leaves is masked."""
    cfg = config.parse(alerts_on())
    error = (f"La clé API de l'OPCO Atlas pour le SIREN 775672272 est refusée (HTTP 401 : clé {KEY} inconnue) ; "
             f"dossier de l'apprenti NIR {NIR} / {NIR_SPACED}, corps : {{\"dateNaissance\": \"2007-03-14\"}}")
    channels.deliver(cfg, _failure(error), secrets=[KEY])
    [mail] = smtp.mails
    [hit] = webhook.hits
    for text in (mail.raw, mail.html, mail.subject, str(hit.body), str(hit.headers)):
        assert KEY not in text
        assert NIR not in text and NIR_SPACED not in text
        assert "2007-03-14" not in text
    assert "Clé API refusée" in mail.subject and "***" in mail.html   # a key alert (2), masked
    assert hit.body["kind"] == "key"


def test_a_secret_airflow_masks_is_masked_without_being_named(alerts_on, smtp):
    from airflow.sdk.log import mask_secret

    mask_secret("oauth-client-s3cret-value")
    cfg = config.parse(alerts_on(webhook_conn_id=None))
    channels.deliver(cfg, _failure("client refusé : oauth-client-s3cret-value"))
    assert "oauth-client-s3cret-value" not in smtp.mails[0].raw


def test_a_batch_sent_with_a_siret_key_names_the_siret():
    alert = messages.transmission_failed(
        opco="atlas", siren="775672272", conn_id="opco_atlas_77567227200025", count=3, error="boom",
        run_id="r", task="opco_atlas.transmit[1]", log_url=None, run_url=None)
    assert alert.subject == "Échec de transmission : OPCO Atlas, SIRET 77567227200025"
